// Finite but huge scores from a peer must not overflow the accumulators to inf: values above
// kMaxScoreValue are refused (INVALID_ARGUMENT, the session unchanged), on the vector and scalar
// paths, in token steps and in a bulk prefill, and the largest valid value accumulated over many
// steps stays finite.
#include <cmath>
#include <vector>

#include "cachemgr/store/cpu_score_store.h"
#include "cachemgr/store/head_kernels.h"
#include "cachemgr/store/testing/store_steps.h"
#include "gtest/gtest.h"

namespace a2sf::cachemgr {
namespace {

EvictionRule H2oRule(uint32_t budget) { return testing::BuiltinRule("h2o", 1, budget); }

using testing::RunTokenStep;

TEST(ScoreBounds, KernelFlagsValuesAboveTheBoundOnBothPaths) {
  for (uint32_t n : {3u, 19u}) {  // scalar tail only, and vector + tail
    std::vector<float> a_old(n, 0.0f), a_new(n), s(n, 1.0f);
    std::vector<uint32_t> positions(n);
    for (uint32_t i = 0; i < n; ++i) positions[i] = i;
    EXPECT_FALSE(AccumulateAndFindMin(a_old.data(), s.data(), kv::ScoreDType::kFp32, a_new.data(), positions.data(), n,
                                      1.0f, 0, 1000).invalid);
    s[n - 1] = 3e38f;  // finite, but two of them make inf
    EXPECT_TRUE(AccumulateAndFindMin(a_old.data(), s.data(), kv::ScoreDType::kFp32, a_new.data(), positions.data(), n,
                                     1.0f, 0, 1000).invalid) << n;
    s[n - 1] = kMaxScoreValue;
    EXPECT_FALSE(AccumulateAndFindMin(a_old.data(), s.data(), kv::ScoreDType::kFp32, a_new.data(), positions.data(), n,
                                      1.0f, 0, 1000).invalid) << n;
  }
}

TEST(ScoreBounds, HugeFiniteScoresAreRefusedAndTheSessionStaysUsable) {
  CpuScoreStore store(1);
  const EvictionRule rule = H2oRule(4);
  auto session = store.CreateSession({1, 1}, 64);
  ASSERT_TRUE(session.ok()) << session.status();
  ASSERT_TRUE(RunTokenStep(&store, *session, rule, 0, {1.0f}).ok());
  const absl::Status huge = RunTokenStep(&store, *session, rule, 1, {3e38f, 3e38f});
  EXPECT_EQ(huge.code(), absl::StatusCode::kInvalidArgument) << huge;
  EXPECT_NE(huge.message().find("65536"), std::string::npos) << huge;
  // The refused step changed nothing: the same step with valid scores goes through.
  EXPECT_TRUE(RunTokenStep(&store, *session, rule, 1, {0.5f, 0.5f}).ok());
}

TEST(ScoreBounds, TheLargestValidScoresAccumulateToFiniteValues) {
  CpuScoreStore store(1);
  const EvictionRule rule = H2oRule(8);  // alpha = 1: nothing decays
  auto session = store.CreateSession({1, 1}, 512);
  ASSERT_TRUE(session.ok());
  std::vector<float> scores;
  for (uint32_t p = 0; p < 300; ++p) {
    scores.assign(std::min<size_t>(p + 1, 9), kMaxScoreValue);
    ASSERT_TRUE(RunTokenStep(&store, *session, rule, p, scores).ok()) << p;
  }
  auto head = store.ReadHead(*session, 0, 0);
  ASSERT_TRUE(head.ok());
  for (float a : head->scores) EXPECT_TRUE(std::isfinite(a)) << a;
}

TEST(ScoreBounds, BulkPrefillRefusesHugeScores) {
  CpuScoreStore store(1);
  const EvictionRule rule = H2oRule(2);
  auto session = store.CreateSession({1, 1}, 64);
  ASSERT_TRUE(session.ok());
  std::vector<float> scores(9, 0.1f);
  scores[8] = 1e30f;
  BulkPrefill prefill;
  prefill.session = *session;
  prefill.rule = &rule;
  prefill.prompt_length = 3;
  prefill.scores = {kv::ScoreDType::kFp32, scores.data(), scores.size()};
  auto decision = store.ProcessBulkPrefill(prefill);
  ASSERT_FALSE(decision.ok());
  EXPECT_EQ(decision.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace a2sf::cachemgr
