// OpenAiServer: the worker's OpenAI-compatible HTTP endpoint (cpp-httplib). It serves
//   POST /v1/completions, POST /v1/chat/completions (JSON, or server-sent events with "stream": true),
//   GET /v1/models and GET /health,
// and runs every job through the worker's own Generation service over the channel it is given (an
// in-process channel to the same gRPC server), so HTTP and gRPC jobs share one path, one job table and
// one set of limits. A request's choices (`n`, batches of prompts) are a job each, admitted together
// or not at all and run together. A client that disconnects cancels its jobs at once, streaming or not
// (the ConnectionWatcher sees the hang-up while they run). The mapping between the two APIs is
// openai_api.h.
//
// Thread-safety: httplib serves each connection on a thread of its own (ConnectionPool); the server
// holds no per-request state. Ownership: the channel is shared; the tokenizer must outlive the server.
#ifndef A2SF_WORKER_HTTP_OPENAI_SERVER_H_
#define A2SF_WORKER_HTTP_OPENAI_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "a2sf/v1/generation.grpc.pb.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/grpc/server.h"
#include "worker/http/connection_watcher.h"
#include "worker/http/openai_api.h"

namespace httplib {
class ContentReader;
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace a2sf::worker::http {

struct OpenAiServerOptions {
  std::string listen;                   // "host:port" (port 0: any free port)
  bool plaintext = false;               // as the gRPC port: TLS unless chosen explicitly
  ServerTlsOptions tls;                 // the gRPC port's certificate, key and client CA
  size_t max_body_bytes = 4 << 20;      // larger bodies are refused with 413
  // Bytes of request bodies all connections hold at once while they are read and mapped (as 32
  // bodies of 4 MiB); past it 503.
  size_t max_body_bytes_in_flight = size_t(128) << 20;
  // A request body must have arrived this long after its headers (else 408): a client that dribbles
  // its body holds its thread and its reservation no longer.
  absl::Duration body_deadline = absl::Seconds(30);
  // Connections are served one thread each (a stream holds its thread): `threads` are kept, more
  // start on demand up to `max_connections` (ConnectionPool); beyond that connections wait.
  int threads = 32;
  int max_connections = 512;
  // Connections waiting for a thread past max_connections; past this httplib stops accepting until
  // there is room (0: no bound).
  int max_queued_connections = 1024;
};

class OpenAiServer {
 public:
  // Binds and starts. INVALID_ARGUMENT for a malformed address or TLS without a certificate, NOT_FOUND
  // for unreadable TLS files, UNAVAILABLE when the address cannot be bound (or TLS cannot be set up).
  static absl::StatusOr<std::unique_ptr<OpenAiServer>> Start(const OpenAiServerOptions& options, ServedModel model,
                                                             std::shared_ptr<grpc::Channel> generation);
  // A worker's --http_listen: null when `options.listen` is empty, else Start's result, logged.
  static absl::StatusOr<std::unique_ptr<OpenAiServer>> StartIfAsked(const OpenAiServerOptions& options,
                                                                    ServedModel model,
                                                                    std::shared_ptr<grpc::Channel> generation);
  OpenAiServer(const OpenAiServer&) = delete;
  OpenAiServer& operator=(const OpenAiServer&) = delete;
  ~OpenAiServer();  // stops accepting and waits for the requests being served

  int port() const { return port_; }

 private:
  OpenAiServer() = default;
  void Routes();
  // Reads, parses and maps a POST's body (its bytes reserved in body_bytes_in_flight_ meanwhile);
  // null, with the error sent, when it fails.
  std::shared_ptr<MappedRequest> ReadRequest(const httplib::ContentReader& content, Endpoint endpoint,
                                             httplib::Response& response);
  // Runs the job and answers it (JSON, or a stream of events).
  void Generate(const httplib::Request& request, std::shared_ptr<MappedRequest> mapped, httplib::Response& response,
                Endpoint endpoint);

  OpenAiServerOptions options_;
  ServedModel model_;
  std::unique_ptr<v1::Generation::Stub> stub_;
  std::atomic<size_t> body_bytes_in_flight_{0};  // BodyReservations of the requests being read
  // Set before the server stops (ConnectionPool: a full queue's wait ends).
  std::atomic<bool> stopping_{false};
  std::unique_ptr<ConnectionWatcher> watcher_;  // notices clients that hang up; outlives the requests
  int64_t created_ = 0;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace a2sf::worker::http

#endif  // A2SF_WORKER_HTTP_OPENAI_SERVER_H_
