// a2sf-cachemgr: the KV-cache manager server (CacheManager + PolicyAdmin, health, reflection).
//   a2sf-cachemgr --listen=0.0.0.0:50051 --unix_socket=/run/a2sf/cachemgr.sock --tls_cert=... --tls_key=...
//   a2sf-cachemgr --listen=127.0.0.1:50051 --plaintext     (logged as such)

#include <csignal>
#include <thread>

#include "common/cli.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "cachemgr/service/cache_manager_service.h"
#include "cachemgr/store/cpu_score_store.h"
#include "cachemgr/store/cuda_score_store.h"
#include "common/grpc/server.h"
#include "common/grpc/server_main.h"
#include "common/log.h"
#include "common/memory_limit.h"
#include "common/metrics/metrics_server.h"
#include "common/shm/ring_handoff.h"

namespace {

bool ParseOctal(const std::string& text, int* mode) {
  if (text.empty() || text.size() > 4 || text.find_first_not_of("01234567") != std::string::npos) return false;
  *mode = int(std::strtol(text.c_str(), nullptr, 8));
  return true;
}

}  // namespace

ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "comma-separated host:port addresses (port 0: any free port)");
ABSL_FLAG(std::string, unix_socket, "",
          "also listen on this Unix socket path (co-located workers), and for shared-memory rings on <path>.ring; "
          "a non-socket or a live server's socket there is refused, a stale socket replaced");
ABSL_FLAG(std::string, unix_socket_mode, "0660", "file mode (octal) of the Unix sockets: who may connect");
ABSL_FLAG(bool, plaintext, false, "serve TCP without TLS (must be chosen explicitly)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain");
ABSL_FLAG(std::string, tls_key, "", "PEM private key");
ABSL_FLAG(std::string, tls_client_ca, "", "PEM CA: require client certificates signed by it (mutual TLS)");
ABSL_FLAG(std::string, admin_token, "", "bearer token PolicyAdmin changes require (empty: none; also $A2SF_ADMIN_TOKEN)");
ABSL_FLAG(int, max_sessions, 1024, "session capacity (RESOURCE_EXHAUSTED beyond it)");
ABSL_FLAG(int, max_sessions_per_peer, 256,
          "sessions one peer may hold (TLS identity, else IP address; every Unix-socket client is one peer; 0: no "
          "limit beyond --max_sessions)");
ABSL_FLAG(int64_t, max_store_bytes, 0, "score-store bytes all sessions may hold (0: a quarter of the memory the process may use: physical "
          "memory, or its cgroup's (container's) limit when lower)");
ABSL_FLAG(int64_t, max_session_bytes, 0, "score-store bytes one session may hold (0: a quarter of --max_store_bytes)");
ABSL_FLAG(int64_t, max_peer_store_bytes, 0,
          "score-store bytes the sessions of one peer may hold together, so that one peer cannot fill the store "
          "for the others (0: no limit beyond --max_store_bytes; every worker on the Unix socket counts as one peer)");
ABSL_FLAG(int, max_streams, 256,
          "concurrent score streams (StreamScores and StreamScoreBatches) of all peers together "
          "(RESOURCE_EXHAUSTED beyond it; 0: no limit)");
ABSL_FLAG(int, max_streams_per_peer, 128,
          "concurrent score streams one peer may hold (TLS identity, else IP address; every Unix-socket client is "
          "one peer; RESOURCE_EXHAUSTED beyond it; 0: no limit beyond --max_streams). A worker on the ring holds "
          "one per running job (--max_batch: 16 by default; queued jobs hold none), plus one batch stream once "
          "any job's scores go inline");
ABSL_FLAG(int, stream_idle_timeout_s, 120,
          "cancel a score stream (and free its session) after this long without a message or ring step (0: never)");
ABSL_FLAG(int, max_threads, 512, "most server threads (gRPC resource quota; calls beyond get RESOURCE_EXHAUSTED)");
ABSL_FLAG(int, idle_timeout_s, 600, "free sessions idle this long (0: never)");
ABSL_FLAG(std::string, backend, "auto", "score store: cpu, cuda, or auto (cuda when a GPU is usable)");
ABSL_FLAG(int, threads, 1, "CPU score-store threads");
ABSL_FLAG(int, max_message_mb, 64, "largest request message in MiB");
ABSL_FLAG(std::string, metrics_listen, "", "serve Prometheus metrics over HTTP here, e.g. 0.0.0.0:9091 (empty: off)");
ABSL_FLAG(int, max_streams_per_connection, 64, "concurrent calls one client connection may hold (0: gRPC's default)");
ABSL_FLAG(std::string, port_file, "", "write the first bound TCP port here once serving (for scripts and tests)");

namespace a2sf {
namespace {

// Makes the score store --backend names (auto: the GPU's when one is usable, else the CPU's).
// Returns 0, or the exit code once it has logged why there is none.
int MakeScoreStore(std::unique_ptr<cachemgr::ScoreStore>* store) {
  const std::string backend = absl::GetFlag(FLAGS_backend);
  if (backend == "cuda" || backend == "auto") {
    auto cuda = cachemgr::CudaScoreStore::Create();
    if (cuda.ok()) {
      *store = std::move(*cuda);
    } else if (backend == "cuda") {
      A2SF_LOG(ERROR) << "--backend=cuda: " << cuda.status().message();
      return 1;
    } else {
      A2SF_LOG(INFO) << "no GPU for the score store (" << cuda.status().message() << ")";
    }
  } else if (backend != "cpu") {
    A2SF_LOG(ERROR) << "--backend: cpu, cuda or auto";
    return 2;
  }
  if (*store == nullptr) *store = std::make_unique<cachemgr::CpuScoreStore>(absl::GetFlag(FLAGS_threads));
  A2SF_LOG(INFO) << "score store: " << (*store)->backend();
  return 0;
}

// The session and byte limits and the idle timeout from the flags; logs the limits.
cachemgr::SessionManagerOptions SessionOptionsFromFlags() {
  cachemgr::SessionManagerOptions options;
  options.max_sessions = size_t(std::max(1, absl::GetFlag(FLAGS_max_sessions)));
  options.max_sessions_per_peer = size_t(std::max(0, absl::GetFlag(FLAGS_max_sessions_per_peer)));
  // A container's memory limit, not the node's memory, where there is one.
  options.max_store_bytes = absl::GetFlag(FLAGS_max_store_bytes) > 0 ? uint64_t(absl::GetFlag(FLAGS_max_store_bytes))
                                                                      : MemoryLimitBytes() / 4;
  options.max_session_bytes = absl::GetFlag(FLAGS_max_session_bytes) > 0
                                  ? uint64_t(absl::GetFlag(FLAGS_max_session_bytes))
                                  : options.max_store_bytes / 4;
  options.max_peer_store_bytes = uint64_t(std::max<int64_t>(0, absl::GetFlag(FLAGS_max_peer_store_bytes)));
  A2SF_LOG(INFO) << "limits: " << options.max_sessions << " sessions, " << options.max_sessions_per_peer
                 << " per peer, " << options.max_store_bytes << " store bytes, " << options.max_session_bytes
                 << " per session, " << options.max_peer_store_bytes << " per peer (0: none)";
  options.idle_timeout = absl::Seconds(absl::GetFlag(FLAGS_idle_timeout_s));
  return options;
}

// --admin_token, else $A2SF_ADMIN_TOKEN; warns when there is neither.
std::string AdminToken() {
  std::string admin_token = absl::GetFlag(FLAGS_admin_token);
  if (admin_token.empty() && std::getenv("A2SF_ADMIN_TOKEN") != nullptr) admin_token = std::getenv("A2SF_ADMIN_TOKEN");
  if (admin_token.empty()) A2SF_LOG(WARNING) << "no --admin_token: PolicyAdmin changes are open to every client";
  return admin_token;
}

// Starts the shared-memory ring handoff beside `unix_socket` (none without one). Returns 0, or the
// exit code once it has logged why it could not start.
int StartRingHandoff(const std::string& unix_socket, int socket_mode, std::unique_ptr<RingHandoffServer>* ring) {
  if (unix_socket.empty()) return 0;
  absl::StatusOr<std::unique_ptr<RingHandoffServer>> started =
      RingHandoffServer::Start(RingSocketPath(unix_socket), socket_mode);
  if (!started.ok()) {
    A2SF_LOG(ERROR) << "ring socket: " << started.status().message();
    return 1;
  }
  *ring = std::move(*started);
  return 0;
}

// The services' stream limits from the flags, with their metrics and ring handoff; logs the limits.
cachemgr::CacheManagerServiceOptions ServiceOptionsFromFlags(cachemgr::CacheManagerMetrics* metrics,
                                                            RingHandoffServer* ring_handoff) {
  cachemgr::CacheManagerServiceOptions service_options;
  service_options.metrics = metrics;
  service_options.ring_handoff = ring_handoff;
  service_options.max_streams = size_t(std::max(0, absl::GetFlag(FLAGS_max_streams)));
  service_options.max_streams_per_peer = size_t(std::max(0, absl::GetFlag(FLAGS_max_streams_per_peer)));
  service_options.stream_idle_timeout = absl::Seconds(std::max(0, absl::GetFlag(FLAGS_stream_idle_timeout_s)));
  A2SF_LOG(INFO) << "streams: " << service_options.max_streams << ", " << service_options.max_streams_per_peer
                 << " per peer";
  return service_options;
}

// The gRPC server's listeners, TLS and limits from the flags (the Unix socket, if any, last).
ServerOptions ServerOptionsFromFlags(const std::string& unix_socket, int socket_mode) {
  ServerOptions server_options;
  server_options.name = "a2sf-cachemgr";
  server_options.listen_addresses = SplitAddresses(absl::GetFlag(FLAGS_listen));
  server_options.max_concurrent_streams_per_connection = absl::GetFlag(FLAGS_max_streams_per_connection);
  server_options.unix_socket_mode = socket_mode;
  server_options.max_threads = absl::GetFlag(FLAGS_max_threads);
  if (!unix_socket.empty()) server_options.listen_addresses.push_back("unix:" + unix_socket);
  server_options.plaintext = absl::GetFlag(FLAGS_plaintext);
  server_options.tls = {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_client_ca)};
  server_options.max_receive_message_bytes = absl::GetFlag(FLAGS_max_message_mb) << 20;
  return server_options;
}

// Expires idle sessions every 5 s until a termination signal, then shuts the server down, letting
// in-flight steps finish (up to 10 s).
void ServeUntilTerminated(RunningServer& server, cachemgr::SessionManager& manager) {
  absl::Notification stop_expiry;
  std::thread expiry([&] {
    while (!stop_expiry.WaitForNotificationWithTimeout(absl::Seconds(5))) {
      if (size_t n = manager.ExpireIdleSessions()) A2SF_LOG(INFO) << "expired " << n << " idle sessions";
    }
  });
  WaitForTerminationSignal();
  stop_expiry.Notify();
  A2SF_LOG(INFO) << "shutting down: finishing in-flight steps (up to 10 s)";
  server.Shutdown(absl::Seconds(10));
  server.Wait();
  expiry.join();
}

}  // namespace
}  // namespace a2sf

int main(int argc, char** argv) {
  using namespace a2sf;
  ParseCommandLine(argc, argv,
                   {"a2sf-cachemgr",
                    "the A2SF KV-cache manager: keeps eviction-policy state for workers' sessions and answers each "
                    "step with eviction decisions.\n  a2sf-cachemgr --listen=127.0.0.1:50051 --plaintext "
                    "[--unix_socket=/run/a2sf/cachemgr.sock]",
                    {}});

  std::unique_ptr<cachemgr::ScoreStore> store;
  if (int exit_code = MakeScoreStore(&store); exit_code != 0) return exit_code;
  const cachemgr::SessionManagerOptions options = SessionOptionsFromFlags();
  int socket_mode = 0;
  if (!ParseOctal(absl::GetFlag(FLAGS_unix_socket_mode), &socket_mode)) {
    A2SF_LOG(ERROR) << "--unix_socket_mode: an octal file mode such as 0660";
    return 2;
  }
  cachemgr::SessionManager manager(std::move(store), &cachemgr::PolicyRegistry::Builtin(), options);
  const std::string admin_token = AdminToken();
  absl::StatusOr<std::unique_ptr<MetricsServer>> metrics_server =
      MetricsServer::StartIfAsked(absl::GetFlag(FLAGS_metrics_listen));
  if (!metrics_server.ok()) {
    A2SF_LOG(ERROR) << metrics_server.status().message();
    return 1;
  }
  std::shared_ptr<cachemgr::CacheManagerMetrics> metrics;  // shared with the scrape hook, which may outlive main's
  if (*metrics_server != nullptr) {
    metrics = std::make_shared<cachemgr::CacheManagerMetrics>(&(*metrics_server)->registry());
    (*metrics_server)->OnScrape([metrics, &manager] { metrics->Refresh(manager); });
  }
  const std::string unix_socket = absl::GetFlag(FLAGS_unix_socket);
  std::unique_ptr<RingHandoffServer> ring_handoff;
  if (int exit_code = StartRingHandoff(unix_socket, socket_mode, &ring_handoff); exit_code != 0) return exit_code;
  cachemgr::CacheManagerService cache_service(&manager, ServiceOptionsFromFlags(metrics.get(), ring_handoff.get()));
  cachemgr::PolicyAdminService admin_service(&manager, admin_token);

  auto server =
      RunningServer::Start(ServerOptionsFromFlags(unix_socket, socket_mode), {&cache_service, &admin_service});
  if (!server.ok()) {
    A2SF_LOG(ERROR) << server.status().message();
    return 1;
  }
  WritePortFile(absl::GetFlag(FLAGS_port_file), (*server)->bound_port(0));
  ServeUntilTerminated(**server, manager);
  return 0;
}
