// In-process serving stacks for cross-component tests: the stories260K fixture model, a worker
// (GenerationService on a RunningServer at 127.0.0.1:<free port>) and a cache manager
// (CacheManagerService, and PolicyAdminService, on 127.0.0.1:<free port> and, when asked, on a
// unique Unix socket with its ring socket for shared-memory rings). Each object owns what it starts
// and stops it when destroyed. Construction asserts success (a test that cannot start its stack
// cannot test anything); tests check A2SF_REQUIRE_FIXTURES() first. Not thread-safe to construct; the
// servers themselves are.
#ifndef A2SF_WORKER_TESTING_LOCAL_STACK_H_
#define A2SF_WORKER_TESTING_LOCAL_STACK_H_

#include <memory>
#include <string>

#include "cachemgr/policy_library.h"
#include "cachemgr/service/cache_manager_service.h"
#include "cachemgr/store/testing/gated_score_store.h"
#include "client/client.h"
#include "common/grpc/server.h"
#include "common/shm/ring_handoff.h"
#include "worker/service/generation_service.h"

namespace a2sf::worker::testing {

// stories260K-dq.bin and tok512.bin from FixturesDir().
std::unique_ptr<ModelWeights> LoadFixtureWeights();
std::unique_ptr<Tokenizer> LoadFixtureTokenizer();

// A plaintext channel to `address` ("127.0.0.1:port", "unix:/path").
std::shared_ptr<grpc::Channel> PlaintextChannel(const std::string& address);

// A Unix socket path unique among concurrent tests and within one (common/testing/temp_socket.h).
std::string UniqueSocketPath();

struct LocalCacheManagerOptions {
  cachemgr::SessionManagerOptions sessions;
  cachemgr::CacheManagerServiceOptions service;  // ring_handoff is set by `unix_socket`
  // Null: a CpuScoreStore with one thread.
  std::unique_ptr<cachemgr::ScoreStore> store;
  // Also listen on this Unix socket (e.g. UniqueSocketPath()), with a ring socket beside it for
  // shared-memory rings; empty: TCP only.
  std::string unix_socket;
  ServerTlsOptions tls;  // set: the TCP port speaks TLS; empty: plaintext
  int port = 0;          // 0: any free port
  std::string admin_token;  // PolicyAdmin's
};

// Makes `options`' store a GatedScoreStore over a one-thread CpuScoreStore; returns the gate (owned by
// the cache manager's session manager once it starts).
cachemgr::testing::GatedScoreStore* InstallGate(LocalCacheManagerOptions* options);

class LocalCacheManager {
 public:
  explicit LocalCacheManager(LocalCacheManagerOptions options = {});

  std::string tcp_address() const { return server_->dial_address(0); }
  int port() const { return server_->bound_port(0); }
  // The Unix socket ("unix:/tmp/...") and its ring socket; only with `unix_socket`.
  std::string unix_address() const { return "unix:" + socket_path_; }
  std::string ring_socket() const { return RingSocketPath(socket_path_); }
  cachemgr::SessionManager* manager() { return manager_.get(); }
  const cachemgr::CacheManagerService* service() const { return cache_service_.get(); }
  // Stops serving at once (in-flight calls are cancelled) and waits for the handlers; the object keeps
  // its state. Destroying it stops it too.
  void Stop();

 private:
  std::string socket_path_;
  std::unique_ptr<cachemgr::SessionManager> manager_;
  std::unique_ptr<RingHandoffServer> ring_handoff_;
  std::unique_ptr<cachemgr::CacheManagerService> cache_service_;
  std::unique_ptr<cachemgr::PolicyAdminService> admin_service_;
  std::unique_ptr<RunningServer> server_;
};

class LocalWorker {
 public:
  // `options.weights` and `options.tokenizer`, when null, are the fixture's (or `weights`, when given).
  explicit LocalWorker(WorkerOptions options, std::unique_ptr<ModelWeights> weights = nullptr);

  client::WorkerClient client(const std::string& admin_token = "") const {
    return client::WorkerClient(channel_, admin_token);
  }
  std::unique_ptr<v1::Generation::Stub> stub() const { return v1::Generation::NewStub(channel_); }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  RunningServer* server() { return server_.get(); }
  GenerationService* service() { return service_.get(); }
  const ModelWeights& weights() const { return *weights_view_; }
  const Tokenizer& tokenizer() const { return *tokenizer_view_; }

 private:
  std::unique_ptr<ModelWeights> weights_;  // when the worker owns them
  std::unique_ptr<Tokenizer> tokenizer_;
  const ModelWeights* weights_view_ = nullptr;
  const Tokenizer* tokenizer_view_ = nullptr;
  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<RunningServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

}  // namespace a2sf::worker::testing

#endif  // A2SF_WORKER_TESTING_LOCAL_STACK_H_
