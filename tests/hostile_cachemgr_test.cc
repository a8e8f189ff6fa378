// A cache manager that breaks the score streams' protocol mid-job (HostileCacheManager: on the batch
// stream a decision for another session, for another step, one missing, one extra, a malformed one,
// or the stream ended after a batch; on a session's own stream, --batch_scores=false, a decision for
// another step, one extra, a malformed one, or the stream ended) is a cache manager the worker has
// lost: its jobs fail with
// UNAVAILABLE under --on_cachemgr_failure=fail and continue in-process under continue, within
// seconds, never hanging; the worker serves the next job on a new stream.
#include <memory>
#include <string>

#include "cachemgr/service/testing/hostile_cache_manager.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "worker/service/generation_service.h"
#include "worker/testing/fixtures.h"
#include "worker/testing/local_stack.h"

namespace a2sf {
namespace {

using cachemgr::testing::Breach;

class HostileCacheManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    A2SF_REQUIRE_FIXTURES();
    hostile_ = stack_.hostile();
  }

  std::unique_ptr<worker::testing::LocalWorker> Worker(bool fallback, bool batch_scores, uint32_t decision_lag = 0) {
    worker::WorkerOptions options;
    options.decision_lag = decision_lag;
    options.cache_manager = worker::testing::PlaintextChannel(stack_.hostile_address());
    options.fallback_in_process = fallback;
    options.batch_scores = batch_scores;
    options.decision_timeout = absl::Seconds(20);  // far above the bound checked: the violation ends it
    return std::make_unique<worker::testing::LocalWorker>(std::move(options));
  }

  static v1::GenerateRequest Job() {
    v1::GenerateRequest request;
    request.set_text("Lily and Tom went to the park");
    request.set_max_tokens(64);
    request.mutable_stop()->set_stop_on_eos(false);
    request.mutable_policy()->set_name("a2sf");
    request.mutable_policy()->set_alpha(0.3);
    request.mutable_budget()->set_tokens(16);
    return request;
  }

  cachemgr::testing::HostileCacheManagerStack stack_;
  cachemgr::testing::HostileCacheManager* hostile_ = nullptr;
};

struct Case {
  bool batch_scores;
  Breach breach;
};
constexpr Case kCases[] = {
    // (A swap of two sessions' decisions needs two sessions in one batch: score_batcher_test has it.)
    {true, Breach::kUnknownSession}, {true, Breach::kMissingDecision}, {true, Breach::kExtraDecision},
    {true, Breach::kWrongStep},      {true, Breach::kCutStream},       {true, Breach::kMalformed},
    {false, Breach::kExtraDecision}, {false, Breach::kWrongStep},      {false, Breach::kCutStream},
    {false, Breach::kMalformed},
};

std::string Name(const Case& c) {
  return std::string(c.batch_scores ? "batch stream: " : "a stream per session: ") +
         cachemgr::testing::BreachName(c.breach);
}

// Every token step from step 30 on (the job is decoding by then) is answered with the breach.
void TargetFromStep30(cachemgr::testing::HostileCacheManager& hostile, Breach breach) {
  hostile.Target([](const v1::ScoreStep& step) { return step.step() >= 30; }, breach);
}

TEST_F(HostileCacheManagerTest, InFailModeTheJobFailsUnavailableAndTheNextJobIsServed) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(Name(c));
    auto worker = Worker(/*fallback=*/false, c.batch_scores);
    TargetFromStep30(*hostile_, c.breach);
    const int breaches = hostile_->breaches();
    const absl::Time start = absl::Now();
    auto result = worker->client().Generate(Job(), nullptr, 0, absl::Seconds(30));
    EXPECT_LT(absl::Now() - start, absl::Seconds(10));
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
    EXPECT_NE(result.status().message().find("lost its cache manager"), std::string::npos) << result.status();
    // The job ends at the first breach it can see: on a session's own stream a decision sent twice
    // shows only when the next step reads it.
    const bool seen_next_step = !c.batch_scores && c.breach == Breach::kExtraDecision;
    EXPECT_EQ(hostile_->breaches(), breaches + (seen_next_step ? 2 : 1));
    hostile_->Target(nullptr, Breach::kNone);
    auto next = worker->client().Generate(Job(), nullptr, 0, absl::Seconds(30));
    ASSERT_TRUE(next.ok()) << next.status();
    EXPECT_EQ(next->finished.policy_location(), v1::POLICY_LOCATION_REMOTE);
  }
}

TEST_F(HostileCacheManagerTest, InContinueModeTheJobFinishesInProcess) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(Name(c));
    auto worker = Worker(/*fallback=*/true, c.batch_scores);
    TargetFromStep30(*hostile_, c.breach);
    const absl::Time start = absl::Now();
    auto result = worker->client().Generate(Job(), nullptr, 0, absl::Seconds(30));
    EXPECT_LT(absl::Now() - start, absl::Seconds(10));
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->ids.size(), 64u);
    EXPECT_EQ(result->finished.policy_location(), v1::POLICY_LOCATION_FALLBACK_IN_PROCESS);
    hostile_->Target(nullptr, Breach::kNone);
  }
}

// A cache manager lost while a prompt's chunk is being submitted row by row (the chunk's rows were
// all forwarded in one pass, so the engine already caches the rows the policy has not seen): the
// in-process take-over holds only the entries the policy knew of, and the job finishes in-process --
// synchronous (the lost decision is the newest step's) and pipelined (several lost in flight).
TEST_F(HostileCacheManagerTest, InContinueModeALossInsideAPrefillChunkFinishesInProcess) {
  for (uint32_t lag : {0u, 2u}) {
    for (bool batch_scores : {true, false}) {
      for (Breach breach : {Breach::kCutStream, Breach::kWrongStep, Breach::kMalformed}) {
        SCOPED_TRACE(Name({batch_scores, breach}) + ", decision lag " + std::to_string(lag));
        auto worker = Worker(/*fallback=*/true, batch_scores, lag);
        hostile_->Target([](const v1::ScoreStep& step) { return step.step() >= 3; }, breach);
        auto result = worker->client().Generate(Job(), nullptr, 0, absl::Seconds(30));
        ASSERT_TRUE(result.ok()) << result.status();
        EXPECT_EQ(result->ids.size(), 64u);
        EXPECT_EQ(result->finished.policy_location(), v1::POLICY_LOCATION_FALLBACK_IN_PROCESS);
        EXPECT_GE(result->finished.prompt_tokens(), 6u);  // step 3 lies inside the prompt's one chunk
        hostile_->Target(nullptr, Breach::kNone);
      }
    }
  }
}

}  // namespace
}  // namespace a2sf
