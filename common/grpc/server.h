// RunningServer: starts a gRPC server with the project's standard equipment -- grpc.health.v1
// health checking, server reflection, TCP and Unix-socket listeners, TLS or mutual TLS, and
// message-size limits -- around the services a binary provides. A Unix-socket path is claimed safely
// (a non-socket or a socket a live server answers on is refused, only a stale socket is replaced) and
// the socket gets an explicit file mode; the server's threads are bounded by a gRPC resource quota.
//
// Thread-safety: Start() returns a started server; Shutdown() and Wait() may be called from any
// thread. The services must outlive the server.
#ifndef A2SF_COMMON_GRPC_SERVER_H_
#define A2SF_COMMON_GRPC_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/files.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace a2sf {

struct ServerTlsOptions {
  std::string cert_chain_path;   // PEM certificate chain of the server
  std::string private_key_path;  // PEM private key of the server
  // PEM CA bundle. When set, clients must present a certificate signed by it (mutual TLS).
  std::string client_ca_path;
};

struct ServerOptions {
  // "host:port" (port 0 picks a free one) or "unix:/path/to.sock". At least one.
  std::vector<std::string> listen_addresses;
  // Must be true to serve without TLS; refusing by default keeps plaintext a deliberate choice.
  // Unix-socket listeners are always plaintext (the socket's file permissions guard them).
  bool plaintext = false;
  // File mode of every Unix socket listened on (created 0600, then set to this).
  int unix_socket_mode = 0660;
  // Most threads the server may run (gRPC resource quota; 0: unbounded). Each synchronous call in
  // progress holds one: beyond the limit new calls fail with RESOURCE_EXHAUSTED.
  int max_threads = 0;
  ServerTlsOptions tls;
  int max_receive_message_bytes = 64 << 20;
  int max_send_message_bytes = 64 << 20;
  // Limits concurrent streams per client connection (0: gRPC's default).
  int max_concurrent_streams_per_connection = 0;
  // Name used in log lines.
  std::string name = "server";
};

class RunningServer {
 public:
  // Builds, binds and starts the server. Errors: INVALID_ARGUMENT for inconsistent options,
  // NOT_FOUND for unreadable TLS files, UNAVAILABLE when an address cannot be bound,
  // FAILED_PRECONDITION for a Unix-socket path that holds a non-socket or a live server's socket.
  static absl::StatusOr<std::unique_ptr<RunningServer>> Start(const ServerOptions& options,
                                                              const std::vector<grpc::Service*>& services);

  RunningServer(const RunningServer&) = delete;
  RunningServer& operator=(const RunningServer&) = delete;
  ~RunningServer();

  // The TCP port bound for listen_addresses[index] (0 for a Unix socket).
  int bound_port(size_t index) const { return bound_ports_[index]; }
  // "127.0.0.1:<port>"-style address a local client can dial for listen_addresses[index].
  std::string dial_address(size_t index) const;

  // Marks the whole server (and every service) serving or not serving for health checks.
  void SetServing(bool serving);

  // Stops accepting calls, lets in-flight calls finish until `grace`, then cancels the rest.
  void Shutdown(absl::Duration grace);
  void Wait();

  grpc::Server* server() { return server_.get(); }

 private:
  RunningServer() = default;

  ServerOptions options_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<int> bound_ports_;
  std::vector<std::string> service_names_;
  bool shut_down_ = false;
};

struct ChannelOptions {
  bool plaintext = false;
  std::string ca_cert_path;           // PEM roots to verify the server (empty: system roots)
  std::string client_cert_chain_path;  // for mutual TLS
  std::string client_private_key_path;
  std::string tls_server_name_override;  // e.g. "localhost" when dialling 127.0.0.1
  int max_receive_message_bytes = 64 << 20;
  // gRPC load-balancing policy, e.g. "round_robin" for dns:/// or ipv4: targets with many hosts.
  std::string load_balancing_policy;
  // HTTP/2 keepalive: a PING after this long without traffic, the connection declared dead when the
  // answer takes longer than keepalive_timeout (calls on it then fail with UNAVAILABLE). Zero: off.
  // Servers started by RunningServer accept pings every kMinClientPingInterval.
  absl::Duration keepalive_time = absl::ZeroDuration();
  absl::Duration keepalive_timeout = absl::Seconds(5);
};

// How often RunningServer lets a client ping (more often earns a GOAWAY "too_many_pings").
inline constexpr absl::Duration kMinClientPingInterval = absl::Seconds(1);

// Creates a channel to `target` ("host:port", "unix:/path", "dns:///name:port", "ipv4:a,b").
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ChannelOptions& options);

}  // namespace a2sf

#endif  // A2SF_COMMON_GRPC_SERVER_H_
