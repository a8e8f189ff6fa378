#include "worker/testing/local_stack.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/testing/temp_socket.h"
#include "gtest/gtest.h"
#include "worker/testing/fixtures.h"

namespace a2sf::worker::testing {
namespace {

// A test stack whose server cannot start is no stack: every later call would use it, so the test
// binary stops here with the reason instead of failing on a null server later.
std::unique_ptr<RunningServer> StartedOrAbort(absl::StatusOr<std::unique_ptr<RunningServer>> started) {
  if (!started.ok()) {
    std::fprintf(stderr, "test stack: the server did not start: %s\n", std::string(started.status().message()).c_str());
    std::abort();
  }
  return *std::move(started);
}

}  // namespace

std::unique_ptr<ModelWeights> LoadFixtureWeights() {
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = LoadModel(FixturesDir() + "/stories260K-dq.bin");
  EXPECT_TRUE(weights.ok()) << weights.status();
  return weights.ok() ? std::move(*weights) : nullptr;
}

std::unique_ptr<Tokenizer> LoadFixtureTokenizer() {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadLlama2cTokenizer(FixturesDir() + "/tok512.bin", 512);
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

std::shared_ptr<grpc::Channel> PlaintextChannel(const std::string& address) {
  ChannelOptions plaintext;
  plaintext.plaintext = true;
  return *MakeChannel(address, plaintext);
}

std::string UniqueSocketPath() { return a2sf::testing::TempSocketPath("stack"); }

cachemgr::testing::GatedScoreStore* InstallGate(LocalCacheManagerOptions* options) {
  auto gated = std::make_unique<cachemgr::testing::GatedScoreStore>(std::make_unique<cachemgr::CpuScoreStore>(1));
  cachemgr::testing::GatedScoreStore* gate = gated.get();
  options->store = std::move(gated);
  return gate;
}

LocalCacheManager::LocalCacheManager(LocalCacheManagerOptions options) {
  std::unique_ptr<cachemgr::ScoreStore> store =
      options.store != nullptr ? std::move(options.store) : std::make_unique<cachemgr::CpuScoreStore>(1);
  manager_ = std::make_unique<cachemgr::SessionManager>(std::move(store), &cachemgr::PolicyRegistry::Builtin(),
                                                        options.sessions);
  ServerOptions server;
  server.listen_addresses = {absl::StrCat("127.0.0.1:", options.port)};
  socket_path_ = options.unix_socket;
  if (!socket_path_.empty()) {
    absl::StatusOr<std::unique_ptr<RingHandoffServer>> handoff =
        RingHandoffServer::Start(RingSocketPath(socket_path_), 0600);
    EXPECT_TRUE(handoff.ok()) << handoff.status();
    if (handoff.ok()) ring_handoff_ = std::move(*handoff);
    options.service.ring_handoff = ring_handoff_.get();
    server.listen_addresses.push_back("unix:" + socket_path_);
  }
  cache_service_ = std::make_unique<cachemgr::CacheManagerService>(manager_.get(), options.service);
  admin_service_ = std::make_unique<cachemgr::PolicyAdminService>(manager_.get(), options.admin_token);
  server.plaintext = options.tls.cert_chain_path.empty();
  server.tls = options.tls;
  server_ = StartedOrAbort(RunningServer::Start(server, {cache_service_.get(), admin_service_.get()}));
}

void LocalCacheManager::Stop() {
  server_->Shutdown(absl::ZeroDuration());
  server_->Wait();
}

LocalWorker::LocalWorker(WorkerOptions options, std::unique_ptr<ModelWeights> weights) {
  if (options.weights == nullptr) {
    weights_ = weights != nullptr ? std::move(weights) : LoadFixtureWeights();
    options.weights = weights_.get();
  }
  if (options.tokenizer == nullptr) {
    tokenizer_ = LoadFixtureTokenizer();
    options.tokenizer = tokenizer_.get();
  }
  weights_view_ = options.weights;
  tokenizer_view_ = options.tokenizer;
  service_ = std::make_unique<GenerationService>(options);
  ServerOptions server;
  server.listen_addresses = {"127.0.0.1:0"};
  server.plaintext = true;
  server_ = StartedOrAbort(RunningServer::Start(server, {service_.get()}));
  channel_ = PlaintextChannel(server_->dial_address(0));
}

}  // namespace a2sf::worker::testing
