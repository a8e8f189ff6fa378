// InProcessPolicyClient::TakeOver inside a prefill chunk: the engine already caches every row of a
// chunk forwarded in one pass, but a session taking over at row k knows only the entries before it;
// the chunk's later rows join as their steps are submitted. A synthetic stories260K-shaped model (no
// fixtures needed).
#include "worker/policy/in_process_policy_client.h"

#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "worker/engine/engine.h"
#include "worker/model/model.h"

namespace a2sf::worker {
namespace {

class TakeOverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    weights_ = std::move(*MakeSyntheticModel(*NamedShape("stories260K"), 5));
    EngineOptions options;
    options.cache_capacity = 32;
    engine_ = std::move(*Engine::Create(weights_.get(), options));
    pass_ = std::make_unique<ForwardPass>(weights_.get(), 1);
    // One chunk of kRows prompt rows at positions 0..kRows-1, forwarded together.
    std::vector<ForwardRow> rows;
    for (int p = 0; p < kRows; ++p) rows.push_back({engine_.get(), 1 + p, p});
    ASSERT_TRUE(pass_->Run(rows).ok());
    spec_.name = "a2sf";
    spec_.alpha = 0.5;
  }

  // The session's steps for rows from..kRows-1 of the chunk, each with its own row of scores.
  absl::Status StepRows(InProcessPolicyClient* local, int from) {
    for (int row = from; row < kRows; ++row) {
      absl::StatusOr<EvictionDecision> decision = local->Step(uint64_t(row), uint32_t(row), engine_->step_scores(row));
      if (!decision.ok()) return decision.status();
      if (decision->evictions_per_head != 0) return absl::InternalError("evicted below the budget");
    }
    return absl::OkStatus();
  }

  static constexpr int kRows = 6;
  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<ForwardPass> pass_;
  cachemgr::PolicySpec spec_;
};

TEST_F(TakeOverTest, TakingOverMidChunkHoldsTheEntriesBeforeTheStepAndTakesTheRestStepByStep) {
  for (int at : {0, 1, 3, kRows - 1}) {
    SCOPED_TRACE(at);
    auto local = InProcessPolicyClient::TakeOver(*engine_, spec_, /*budget_tokens=*/16, uint64_t(at), uint32_t(at));
    ASSERT_TRUE(local.ok()) << local.status();
    // Each row's scores cover the entries up to it: they fit the session only if it holds exactly the
    // `at` entries before the step (the store refuses a score count that disagrees with its entries).
    EXPECT_TRUE(StepRows(local->get(), at).ok()) << StepRows(local->get(), at);
  }
}

TEST_F(TakeOverTest, ASessionHoldingTheChunksLaterRowsRefusesTheirSteps) {
  // Taking over after the whole chunk (every entry) leaves no row of it to submit: stepping row 2
  // again is out of order, which shows that entries past `next_position` are not silently held.
  auto all = InProcessPolicyClient::TakeOver(*engine_, spec_, 16, uint64_t(kRows), uint32_t(kRows));
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_FALSE((*all)->Step(2, 2, engine_->step_scores(2)).ok());
  auto mid = InProcessPolicyClient::TakeOver(*engine_, spec_, 16, 2, 2);
  ASSERT_TRUE(mid.ok()) << mid.status();
  EXPECT_TRUE((*mid)->Step(2, 2, engine_->step_scores(2)).ok());
}

}  // namespace
}  // namespace a2sf::worker
