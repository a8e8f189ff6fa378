// Remote sessions sharing one ScoreBatcher against a real cache-manager service (127.0.0.1, port 0):
// one message per worker step, the same decisions as a stream per session, and a session that fails
// fails alone. Against a cache manager that breaks the batch protocol (HostileCacheManager), every
// session on that stream fails at once with UNAVAILABLE naming the violation, and sessions on other
// streams go on.
#include "worker/service/score_batcher.h"

#include <random>

#include "cachemgr/service/testing/hostile_cache_manager.h"
#include "gtest/gtest.h"
#include "worker/service/remote_policy_client.h"
#include "worker/service/testing/remote_session.h"

namespace a2sf::worker {
namespace {

class ScoreBatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    manager_ = stack_.manager();
    hostile_ = stack_.hostile();
    server_ = stack_.honest_server();
    channel_ = stack_.honest_channel();
    hostile_channel_ = stack_.hostile_channel();
  }

  // The tests' a2sf session (testing::OpenA2sfSession) on `channel` (null: the honest service), its
  // steps through `batcher` (null: a stream of its own).
  std::unique_ptr<RemotePolicyClient> Open(std::shared_ptr<ScoreBatcher> batcher,
                                           std::shared_ptr<grpc::Channel> channel = nullptr) {
    RemotePolicyOptions options;
    options.batcher = std::move(batcher);
    return testing::OpenA2sfSession(channel != nullptr ? channel : channel_, options);
  }

  // The honest service (server_, channel_) and the hostile one over it (hostile_channel_).
  cachemgr::testing::HostileCacheManagerStack stack_;
  cachemgr::SessionManager* manager_ = nullptr;
  cachemgr::testing::HostileCacheManager* hostile_ = nullptr;
  RunningServer* server_ = nullptr;
  std::shared_ptr<grpc::Channel> channel_;
  std::shared_ptr<grpc::Channel> hostile_channel_;
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

using cachemgr::testing::Breach;

// Sessions a and b share one batch stream to the hostile cache manager, c has a batch stream of its
// own to the same server. At step 1 the answer to a and b's batch breaks the protocol: both fail at
// once (long before the 10 s decision deadline) with UNAVAILABLE naming the violation, the batcher is
// broken, and c, on the other stream, is decided as usual then and after.
TEST_F(ScoreBatcherTest, ACacheManagerThatBreaksTheBatchProtocolFailsEverySessionOnTheStreamAndNoOther) {
  for (Breach breach : {Breach::kWrongSession, Breach::kUnknownSession, Breach::kMissingDecision,
                        Breach::kExtraDecision, Breach::kWrongStep, Breach::kCutStream, Breach::kMalformed,
                        Breach::kWrongStepThenHold}) {
    SCOPED_TRACE(cachemgr::testing::BreachName(breach));
    auto broken = std::make_shared<ScoreBatcher>(hostile_channel_, absl::Seconds(10));
    auto other = std::make_shared<ScoreBatcher>(hostile_channel_, absl::Seconds(10));
    auto a = Open(broken, hostile_channel_), b = Open(broken, hostile_channel_), c = Open(other, hostile_channel_);
    ASSERT_TRUE(a && b && c);
    std::vector<float> first(4, 0.5f), second(8, 0.5f), third(12, 0.5f);
    for (auto* s : {a.get(), b.get(), c.get()}) ASSERT_TRUE(s->Step(0, 0, first).ok());
    const std::string a_id = a->session_id(), b_id = b->session_id();
    hostile_->Target([a_id, b_id](const v1::ScoreStep& step) { return step.session_id() == a_id || step.session_id() == b_id; },
                     breach);
    const int breaches = hostile_->breaches();
    ASSERT_TRUE(a->SubmitStep(1, 1, second).ok());
    ASSERT_TRUE(b->SubmitStep(1, 1, second).ok());
    ASSERT_TRUE(c->SubmitStep(1, 1, second).ok());
    const absl::Time start = absl::Now();
    absl::Status a_status = a->AwaitDecision().status(), b_status = b->AwaitDecision().status();
    EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "the sessions waited for the deadline, not the violation";
    EXPECT_EQ(hostile_->breaches(), breaches + 1) << "a and b travelled in one batch";
    for (const absl::Status& status : {a_status, b_status}) {
      EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
      const bool named = breach == Breach::kCutStream
                             ? status.message().find("closed the score stream") != std::string::npos
                             : status.message().find("broke the protocol: score batch: ") != std::string::npos;
      EXPECT_TRUE(named) << status;
    }
    EXPECT_TRUE(broken->broken());
    // Later steps of a and b fail at once; the other stream is unharmed.
    EXPECT_EQ(a->SubmitStep(2, 2, third).code(), absl::StatusCode::kUnavailable);
    auto c_decision = c->AwaitDecision();
    ASSERT_TRUE(c_decision.ok()) << c_decision.status();
    EXPECT_TRUE(c->Step(2, 2, third).ok());
    EXPECT_FALSE(other->broken());
    hostile_->Target(nullptr, Breach::kNone);
  }
}

// A refusal is not a violation: the cache manager's own error for one step of a batch fails that
// step alone (checked above against the honest service), also on the hostile server when it does not
// tamper.
TEST_F(ScoreBatcherTest, TheCheckedAnswerStillPassesRefusalsThroughAlone) {
  auto batcher = std::make_shared<ScoreBatcher>(hostile_channel_, absl::Seconds(10));
  auto a = Open(batcher, hostile_channel_), b = Open(batcher, hostile_channel_);
  std::vector<float> first(4, 0.5f);
  ASSERT_TRUE(a->SubmitStep(0, 0, first).ok());
  ASSERT_TRUE(b->SubmitStep(0, 0, std::vector<float>(5, 0.5f)).ok());  // the wrong size: refused
  EXPECT_TRUE(a->AwaitDecision().ok());
  EXPECT_EQ(b->AwaitDecision().status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(batcher->broken());
  // The refused session's transport is broken: its next step fails at once and is not sent; a's goes on.
  const uint64_t steps_sent = batcher->steps_sent();
  const absl::Status sent = b->SubmitStep(1, 1, std::vector<float>(8, 0.5f));
  EXPECT_EQ(sent.code(), absl::StatusCode::kUnavailable) << sent;
  EXPECT_EQ(sent.message(), "the stream to the cache manager is broken") << sent;
  EXPECT_TRUE(a->Step(1, 1, std::vector<float>(8, 0.5f)).ok());
  EXPECT_EQ(batcher->steps_sent(), steps_sent + 1) << "only a's step travelled";
}

// A bulk prefill travels apart from the batch (a unary SubmitStep): a broken answer to it fails that
// session alone with UNAVAILABLE "the cache manager broke the protocol", and its next step fails at
// once; the batch stream and the other session on it go on.
TEST_F(ScoreBatcherTest, ABrokenBulkPrefillAnswerFailsItsSessionAloneAndEndsItsSteps) {
  constexpr uint32_t kPrompt = 6;
  for (Breach breach : {Breach::kWrongStep, Breach::kMalformed}) {
    SCOPED_TRACE(cachemgr::testing::BreachName(breach));
    auto batcher = std::make_shared<ScoreBatcher>(hostile_channel_, absl::Seconds(10));
    auto a = Open(batcher, hostile_channel_), b = Open(batcher, hostile_channel_);
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(b->Step(0, 0, std::vector<float>(4, 0.5f)).ok());
    hostile_->Target([](const v1::ScoreStep& step) { return step.kind() == v1::STEP_KIND_BULK_PREFILL; }, breach);
    const absl::Status status = a->BulkPrefill(0, kPrompt, testing::BulkPrefillScores(kPrompt)).status();
    hostile_->Target(nullptr, Breach::kNone);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_EQ(status.message().rfind("the cache manager broke the protocol: ", 0), 0u) << status;
    const absl::Status sent = a->SubmitStep(1, kPrompt, std::vector<float>(16, 0.5f));
    EXPECT_EQ(sent.code(), absl::StatusCode::kUnavailable) << sent;
    EXPECT_EQ(sent.message(), "the stream to the cache manager is broken") << sent;
    auto session = manager_->Get(a->session_id());
    ASSERT_TRUE(session.ok()) << session.status();
    EXPECT_EQ(session->steps, 1u) << "the cache manager got no step after the bulk prefill";
    EXPECT_TRUE(b->Step(1, 1, std::vector<float>(8, 0.5f)).ok());
    EXPECT_FALSE(batcher->broken());
  }
}

}  // namespace
}  // namespace a2sf::worker
