#include "common/grpc/server.h"

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/unix_socket.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace a2sf {

namespace {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> TcpCredentials(const ServerOptions& options) {
  const ServerTlsOptions& tls = options.tls;
  const bool has_tls = !tls.cert_chain_path.empty() || !tls.private_key_path.empty();
  if (options.plaintext && has_tls) {
    return absl::InvalidArgumentError("plaintext and TLS certificate options are mutually exclusive");
  }
  if (options.plaintext) return grpc::InsecureServerCredentials();
  if (tls.cert_chain_path.empty() || tls.private_key_path.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs both a certificate chain and a private key (or choose plaintext explicitly)");
  }
  absl::StatusOr<std::string> cert = ReadFileToString(tls.cert_chain_path);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadFileToString(tls.private_key_path);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl_options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  ssl_options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!tls.client_ca_path.empty()) {
    absl::StatusOr<std::string> ca = ReadFileToString(tls.client_ca_path);
    if (!ca.ok()) return ca.status();
    ssl_options.pem_root_certs = *ca;
    ssl_options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl_options);
}

// The TCP listeners' credentials (TcpCredentials), checked only where there is a TCP listener.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ListenerCredentials(const ServerOptions& options) {
  bool has_tcp_listener = false;
  for (const std::string& address : options.listen_addresses) {
    if (!absl::StartsWith(address, "unix:")) has_tcp_listener = true;
  }
  if (!has_tcp_listener) return grpc::InsecureServerCredentials();
  return TcpCredentials(options);
}

// Adds every listen address to `builder`; a TCP one reports its bound port into (*bound_ports)[i].
absl::Status AddListeners(const ServerOptions& options, const std::shared_ptr<grpc::ServerCredentials>& tcp_credentials,
                          grpc::ServerBuilder* builder, std::vector<int>* bound_ports) {
  for (size_t i = 0; i < options.listen_addresses.size(); ++i) {
    const std::string& address = options.listen_addresses[i];
    if (absl::StartsWith(address, "unix:")) {
      // gRPC would silently unlink whatever is at the path: claim it first.
      if (absl::Status s = ClaimUnixSocketPath(address.substr(5)); !s.ok()) return s;
      builder->AddListeningPort(address, grpc::InsecureServerCredentials());
    } else {
      builder->AddListeningPort(address, tcp_credentials, &(*bound_ports)[i]);
    }
  }
  return absl::OkStatus();
}

// Message sizes, streams per connection, client keepalive pings and the thread quota.
void SetLimits(const ServerOptions& options, grpc::ServerBuilder* builder) {
  builder->SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  builder->SetMaxSendMessageSize(options.max_send_message_bytes);
  if (options.max_concurrent_streams_per_connection > 0) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                                options.max_concurrent_streams_per_connection);
  }
  // Clients' keepalive pings (ChannelOptions.keepalive_time), also on connections without calls.
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                              int(absl::ToInt64Milliseconds(kMinClientPingInterval)));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  if (options.max_threads > 0) {
    grpc::ResourceQuota quota(options.name + "-threads");
    quota.SetMaxThreads(options.max_threads);
    builder->SetResourceQuota(quota);
  }
}

// UNAVAILABLE naming every address, for a server that did not start.
absl::Status NotStarted(const ServerOptions& options) {
  std::string addresses;
  for (const std::string& a : options.listen_addresses) absl::StrAppend(&addresses, " ", a);
  return absl::UnavailableError(absl::StrCat("could not start ", options.name, " on", addresses,
                                             " (address in use or not bindable?)"));
}

// How a listener is secured, for its "listening on" log line.
const char* ListenerKind(const std::string& address, const ServerOptions& options) {
  return absl::StartsWith(address, "unix:") ? " (Unix socket)"
         : options.plaintext                ? " (PLAINTEXT: no TLS)"
         : options.tls.client_ca_path.empty() ? " (TLS)"
                                              : " (mutual TLS)";
}

// After the server started: every TCP address bound and every Unix socket given its mode, each
// listener logged; else the server is shut down and the error returned.
absl::Status CheckListeners(RunningServer& running, const ServerOptions& options) {
  for (size_t i = 0; i < options.listen_addresses.size(); ++i) {
    const std::string& address = options.listen_addresses[i];
    if (!absl::StartsWith(address, "unix:") && running.bound_port(i) == 0) {
      running.server()->Shutdown();
      return absl::UnavailableError(absl::StrCat("could not bind ", address));
    }
    if (absl::StartsWith(address, "unix:")) {
      if (absl::Status s = SetSocketMode(address.substr(5), mode_t(options.unix_socket_mode)); !s.ok()) {
        running.server()->Shutdown();
        return s;
      }
    }
    A2SF_LOG(INFO) << options.name << " listening on " << running.dial_address(i) << ListenerKind(address, options);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RunningServer>> RunningServer::Start(
    const ServerOptions& options, const std::vector<grpc::Service*>& services) {
  if (options.listen_addresses.empty()) {
    return absl::InvalidArgumentError("no listen address given");
  }
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tcp_credentials = ListenerCredentials(options);
  if (!tcp_credentials.ok()) return tcp_credentials.status();

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  std::unique_ptr<RunningServer> running(new RunningServer());
  running->options_ = options;
  running->bound_ports_.assign(options.listen_addresses.size(), 0);

  grpc::ServerBuilder builder;
  if (absl::Status s = AddListeners(options, *tcp_credentials, &builder, &running->bound_ports_); !s.ok()) return s;
  SetLimits(options, &builder);
  for (grpc::Service* service : services) builder.RegisterService(service);

  {
    ScopedUmask umask;  // Unix sockets appear as 0600 and get their mode below
    running->server_ = builder.BuildAndStart();
  }
  if (running->server_ == nullptr) return NotStarted(options);
  if (absl::Status s = CheckListeners(*running, options); !s.ok()) return s;
  running->SetServing(true);
  return running;
}

RunningServer::~RunningServer() {
  if (server_ != nullptr && !shut_down_) Shutdown(absl::ZeroDuration());
}

std::string RunningServer::dial_address(size_t index) const {
  const std::string& address = options_.listen_addresses[index];
  if (absl::StartsWith(address, "unix:")) return address;
  std::string host = address.substr(0, address.rfind(':'));
  if (host.empty() || host == "0.0.0.0" || host == "[::]") host = "127.0.0.1";
  return absl::StrCat(host, ":", bound_ports_[index]);
}

void RunningServer::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health != nullptr) health->SetServingStatus(serving);
}

void RunningServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  SetServing(false);
  server_->Shutdown(absl::ToChronoTime(absl::Now() + grace));
}

void RunningServer::Wait() { server_->Wait(); }

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ChannelOptions& options) {
  if (target.empty()) return absl::InvalidArgumentError("empty server address");
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_receive_message_bytes);
  args.SetMaxSendMessageSize(64 << 20);
  if (!options.load_balancing_policy.empty()) args.SetLoadBalancingPolicyName(options.load_balancing_policy);
  if (options.keepalive_time > absl::ZeroDuration()) {
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, int(absl::ToInt64Milliseconds(options.keepalive_time)));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, int(absl::ToInt64Milliseconds(options.keepalive_timeout)));
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // a stalled peer sends no data to reset the count
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.plaintext || absl::StartsWith(target, "unix:")) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    if (!options.ca_cert_path.empty()) {
      absl::StatusOr<std::string> ca = ReadFileToString(options.ca_cert_path);
      if (!ca.ok()) return ca.status();
      ssl.pem_root_certs = *ca;
    }
    if (!options.client_cert_chain_path.empty() || !options.client_private_key_path.empty()) {
      absl::StatusOr<std::string> cert = ReadFileToString(options.client_cert_chain_path);
      if (!cert.ok()) return cert.status();
      absl::StatusOr<std::string> key = ReadFileToString(options.client_private_key_path);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    if (!options.tls_server_name_override.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name_override);
    }
    credentials = grpc::SslCredentials(ssl);
  }
  return grpc::CreateCustomChannel(target, credentials, args);
}

}  // namespace a2sf
