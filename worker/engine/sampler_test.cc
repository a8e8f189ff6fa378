// Sampling options and logprobs on hand-made logits, against values computed by hand or
// independently in the test (no model involved).
#include "worker/engine/sampler.h"

#include <cmath>
#include <map>
#include <set>

#include "gtest/gtest.h"
#include "worker/engine/logprobs.h"

namespace a2sf::worker {
namespace {

std::set<int> CandidateSet(const SamplingOptions& o, const std::vector<float>& logits) {
  Candidates c;
  SamplingCandidates(o, logits, &c);
  return std::set<int>(c.ids.begin(), c.ids.end());
}

// Probabilities of logits {ln 5, ln 3, ln 1, ln 1}: {0.5, 0.3, 0.1, 0.1}.
const std::vector<float> kQuarters = {std::log(5.0f), std::log(3.0f), 0.0f, 0.0f};

TEST(Sampler, TopKKeepsTheKMostLikelyTiesToLowerIds) {
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_k = 2;
  EXPECT_EQ(CandidateSet(o, kQuarters), (std::set<int>{0, 1}));
  o.top_k = 3;  // tokens 2 and 3 tie: the lower id stays
  EXPECT_EQ(CandidateSet(o, kQuarters), (std::set<int>{0, 1, 2}));
  o.top_k = 10;  // more than the vocabulary: no limit
  EXPECT_EQ(CandidateSet(o, kQuarters), (std::set<int>{0, 1, 2, 3}));
}

TEST(Sampler, MinPDropsTokensBelowAFractionOfTheMostLikely) {
  SamplingOptions o;
  o.temperature = 1.0f;
  o.min_p = 0.5f;  // threshold 0.25: keeps 0.5 and 0.3
  EXPECT_EQ(CandidateSet(o, kQuarters), (std::set<int>{0, 1}));
  o.min_p = 0.19f;  // threshold 0.095: keeps all
  EXPECT_EQ(CandidateSet(o, kQuarters), (std::set<int>{0, 1, 2, 3}));
  o.min_p = 0.61f;  // threshold 0.305
  EXPECT_EQ(CandidateSet(o, kQuarters), (std::set<int>{0}));
}

TEST(Sampler, TopPIsTakenOverWhatTopKKept) {
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_p = 0.7f;  // over the whole distribution: 0.5 + 0.3 > 0.7
  EXPECT_EQ(CandidateSet(o, kQuarters), (std::set<int>{0, 1}));
  o.top_k = 2;
  o.top_p = 0.6f;  // renormalized over {0.5, 0.3}: 0.625 > 0.6 already
  EXPECT_EQ(CandidateSet(o, kQuarters), (std::set<int>{0}));
}

TEST(Sampler, DrawsFollowTheTruncatedDistribution) {
  SamplingOptions o;
  o.temperature = 1.0f;
  o.top_k = 2;
  o.seed = 7;
  Sampler sampler(o, 4);
  std::map<int, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) counts[sampler.Sample(kQuarters)]++;
  EXPECT_EQ(counts.size(), 2u);
  EXPECT_NEAR(counts[0] / double(n), 0.5 / 0.8, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.3 / 0.8, 0.02);
}

TEST(Sampler, PenaltiesMatchHandComputedLogits) {
  SamplingOptions o;
  o.repetition_penalty = 2.0f;
  o.presence_penalty = 0.5f;
  o.frequency_penalty = 0.25f;
  TokenHistory history(5);
  history.AddPrompt(std::vector<int>{0, 1});
  history.AddOutput(1);
  history.AddOutput(1);
  history.AddOutput(2);
  std::vector<float> logits = {4.0f, 3.0f, -1.0f, 2.0f, -2.0f};
  ApplyPenalties(o, history, absl::MakeSpan(logits));
  EXPECT_FLOAT_EQ(logits[0], 2.0f);                       // prompt only: 4 / 2
  EXPECT_FLOAT_EQ(logits[1], 3.0f / 2 - 2 * 0.25f - 0.5f);  // 1.5 - 0.5 - 0.5
  EXPECT_FLOAT_EQ(logits[2], -1.0f * 2 - 0.25f - 0.5f);   // negative: multiplied
  EXPECT_FLOAT_EQ(logits[3], 2.0f);                       // never seen
  EXPECT_FLOAT_EQ(logits[4], -2.0f);
}

TEST(Sampler, GreedyWithPenaltiesAvoidsRepeatingAndBannedTokensAreNeverPicked) {
  SamplingOptions o;
  o.frequency_penalty = 2.0f;
  Sampler sampler(o, 3);
  const std::vector<float> logits = {3.0f, 2.0f, 0.0f};
  EXPECT_EQ(sampler.Sample(logits), 0);  // 3 vs 2
  EXPECT_EQ(sampler.Sample(logits), 1);  // 3 - 2 = 1 < 2
  EXPECT_EQ(sampler.Sample(logits), 0);  // 1 vs 2 - 2 = 0
  Sampler plain(SamplingOptions{}, 3);
  EXPECT_EQ(plain.Sample(logits, std::vector<int>{0}), 1);
  SamplingOptions hot;
  hot.temperature = 5.0f;
  Sampler banned(hot, 3);
  for (int i = 0; i < 200; ++i) EXPECT_NE(banned.Sample(logits, std::vector<int>{0, 2}), 0);
}

TEST(Sampler, ValidationNamesTheField) {
  auto message = [](SamplingOptions o) { return std::string(ValidateSampling(o).message()); };
  SamplingOptions o;
  EXPECT_TRUE(ValidateSampling(o).ok());
  o.min_p = 1.5f;
  EXPECT_NE(message(o).find("min_p"), std::string::npos);
  o = {};
  o.repetition_penalty = 0.0f;
  EXPECT_NE(message(o).find("repetition_penalty"), std::string::npos);
  o = {};
  o.presence_penalty = 2.5f;
  EXPECT_NE(message(o).find("presence_penalty"), std::string::npos);
  o = {};
  o.frequency_penalty = NAN;
  EXPECT_NE(message(o).find("frequency_penalty"), std::string::npos);
  o = {};
  o.top_k = -1;
  EXPECT_NE(message(o).find("top_k"), std::string::npos);
}

TEST(Logprobs, EqualLogSoftmaxWithRankAndAlternatives) {
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, -2.0f};
  double z = 0;
  for (float x : logits) z += std::exp(double(x));
  const LogprobReport r = ReportLogprobs(logits, 2, 3);
  EXPECT_NEAR(r.token.logprob, 3.0 - std::log(z), 1e-6);
  EXPECT_EQ(r.rank, 2);  // ties with token 1, which has the lower id
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].id, 1);
  EXPECT_EQ(r.top[1].id, 2);
  EXPECT_EQ(r.top[2].id, 0);
  EXPECT_NEAR(r.top[2].logprob, 1.0 - std::log(z), 1e-6);
  EXPECT_EQ(ReportLogprobs(logits, 3, 0).rank, 4);
  EXPECT_TRUE(ReportLogprobs(logits, 3, 0).top.empty());
  EXPECT_EQ(ReportLogprobs(logits, 0, 50).top.size(), 4u);
}

}  // namespace
}  // namespace a2sf::worker
