// Remote sessions sharing one ScoreBatcher against a real cache-manager service (127.0.0.1, port 0):
// one message per worker step, the same decisions as a stream per session, and a session that fails
// fails alone.
#include "worker/service/score_batcher.h"

#include <random>

#include "cachemgr/service/cache_manager_service.h"
#include "cachemgr/policy_library.h"
#include "common/grpc/server.h"
#include "gtest/gtest.h"
#include "worker/service/remote_policy_client.h"

namespace a2sf::worker {
namespace {

class ScoreBatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    manager_ = std::make_unique<cachemgr::SessionManager>(std::make_unique<cachemgr::CpuScoreStore>(2),
                                                          &cachemgr::PolicyRegistry::Builtin(),
                                                          cachemgr::SessionManagerOptions{});
    service_ = std::make_unique<cachemgr::CacheManagerService>(manager_.get());
    ServerOptions options;
    options.listen_addresses = {"127.0.0.1:0"};
    options.plaintext = true;
    server_ = std::move(*RunningServer::Start(options, {service_.get()}));
    ChannelOptions channel_options;
    channel_options.plaintext = true;
    channel_ = *MakeChannel(server_->dial_address(0), channel_options);
    model_.n_layers = 2;
    model_.n_heads = 4;
    model_.n_kv_heads = 2;
    model_.seq_len = 64;
  }

  std::unique_ptr<RemotePolicyClient> Open(std::shared_ptr<ScoreBatcher> batcher) {
    v1::PolicySpec policy;
    policy.set_name("a2sf");
    policy.set_alpha(0.5);
    v1::Budget budget;
    budget.set_tokens(4);
    RemotePolicyOptions options;
    options.score_dtype = kv::ScoreDType::kFp32;
    options.batcher = std::move(batcher);
    auto remote = RemotePolicyClient::Open(channel_, model_, &policy, budget, options);
    EXPECT_TRUE(remote.ok()) << remote.status();
    return remote.ok() ? std::move(*remote) : nullptr;
  }

  std::unique_ptr<cachemgr::SessionManager> manager_;
  std::unique_ptr<cachemgr::CacheManagerService> service_;
  std::unique_ptr<RunningServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  ModelConfig model_;
};

TEST_F(ScoreBatcherTest, OneMessagePerStepAndTheDecisionsOfAStreamPerSession) {
  constexpr int kSessions = 4, kSteps = 10;
  auto batcher = std::make_shared<ScoreBatcher>(channel_, absl::Seconds(10));
  std::vector<std::unique_ptr<RemotePolicyClient>> batched, alone;
  for (int i = 0; i < kSessions; ++i) {
    batched.push_back(Open(batcher));
    alone.push_back(Open(nullptr));
    ASSERT_NE(batched.back(), nullptr);
    ASSERT_NE(alone.back(), nullptr);
  }
  std::mt19937 random(7);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<uint32_t> entries(kSessions, 0);
  for (int step = 0; step < kSteps; ++step) {
    std::vector<std::vector<float>> scores(kSessions);
    // As the batch scheduler drives its sequences: every submit first, then the decisions.
    for (int i = 0; i < kSessions; ++i) {
      scores[i].resize(size_t(4) * (entries[i] + 1));
      for (float& v : scores[i]) v = uniform(random);
      ASSERT_TRUE(batched[i]->SubmitStep(step, step, scores[i]).ok());
      ASSERT_TRUE(alone[i]->SubmitStep(step, step, scores[i]).ok());
    }
    for (int i = 0; i < kSessions; ++i) {
      auto got = batched[i]->AwaitDecision();
      auto want = alone[i]->AwaitDecision();
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_TRUE(want.ok()) << want.status();
      EXPECT_EQ(got->evicted_slots, want->evicted_slots);
      EXPECT_EQ(got->evicted_positions, want->evicted_positions);
      EXPECT_EQ(got->entries_after, want->entries_after);
      entries[i] = got->entries_after;
    }
  }
  EXPECT_EQ(entries[0], 4u);  // the budget was reached: the decisions did evict
  EXPECT_EQ(batcher->batches_sent(), uint64_t(kSteps));
  EXPECT_EQ(batcher->steps_sent(), uint64_t(kSteps * kSessions));
}

TEST_F(ScoreBatcherTest, ASessionThatFailsInABatchFailsAlone) {
  auto batcher = std::make_shared<ScoreBatcher>(channel_, absl::Seconds(10));
  std::vector<std::unique_ptr<RemotePolicyClient>> sessions;
  for (int i = 0; i < 3; ++i) sessions.push_back(Open(batcher));
  std::vector<float> first(4, 0.5f), second(8, 0.5f);
  for (auto& s : sessions) ASSERT_TRUE(s->Step(0, 0, first).ok());
  // The cache manager loses session 1 (closed behind the worker's back): its step fails NOT_FOUND,
  // the two others of the same batch are decided.
  ASSERT_TRUE(manager_->Close(sessions[1]->session_id()).ok());
  for (auto& s : sessions) ASSERT_TRUE(s->SubmitStep(1, 1, second).ok());
  EXPECT_TRUE(sessions[0]->AwaitDecision().ok());
  EXPECT_EQ(sessions[1]->AwaitDecision().status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(sessions[2]->AwaitDecision().ok());
  EXPECT_EQ(batcher->batches_sent(), 4u);  // three Step calls alone, then the three submits together
  EXPECT_FALSE(batcher->broken());
  // A step of the wrong size fails alone too; the batcher keeps serving.
  EXPECT_EQ(sessions[0]->Step(2, 2, first).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(sessions[2]->Step(2, 2, std::vector<float>(12, 0.5f)).ok());
}

TEST_F(ScoreBatcherTest, ACacheManagerThatGoesAwayFailsTheWaitingSessionsWithUnavailable) {
  auto batcher = std::make_shared<ScoreBatcher>(channel_, absl::Seconds(10));
  auto a = Open(batcher), b = Open(batcher);
  std::vector<float> first(4, 0.5f);
  ASSERT_TRUE(a->SubmitStep(0, 0, first).ok());
  ASSERT_TRUE(b->SubmitStep(0, 0, first).ok());
  ASSERT_TRUE(a->AwaitDecision().ok());
  ASSERT_TRUE(b->AwaitDecision().ok());
  server_->Shutdown(absl::ZeroDuration());
  std::vector<float> second(8, 0.5f);
  absl::Status sent = a->SubmitStep(1, 1, second);
  absl::Status status = sent.ok() ? a->AwaitDecision().status() : sent;
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_TRUE(batcher->broken());
}

}  // namespace
}  // namespace a2sf::worker
