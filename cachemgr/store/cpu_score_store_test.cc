#include "cachemgr/store/cpu_score_store.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "cachemgr/policy/registry.h"
#include "cachemgr/store/head_kernels.h"
#include "cachemgr/store/testing/reference_cache.h"
#include "cachemgr/store/testing/store_steps.h"
#include "gtest/gtest.h"

namespace a2sf::cachemgr {
namespace {

using testing::ReferenceCache;

using testing::BuiltinRule;

// Runs one step on a one-head session and returns the evicted slots.
std::vector<uint32_t> Step(CpuScoreStore* store, SessionHandle session, const EvictionRule& rule,
                           uint32_t position, const std::vector<float>& scores) {
  kv::EvictionDecision decision;
  const absl::Status status = testing::RunTokenStep(store, session, rule, position, scores, &decision);
  EXPECT_TRUE(status.ok()) << status;
  return decision.evicted_slots;
}

TEST(AccumulateAndFindMin, PaperWorkedExample) {
  // Jo & Shin, alpha = 0.8: after step 1 A = (0.4, 0.3); step 2 adds (0.5, 0.2) -> (0.82, 0.44).
  const float a_old[2] = {0.4f, 0.3f};
  const float s[2] = {0.5f, 0.2f};
  const uint32_t positions[2] = {0, 1};
  float a_new[2];
  HeadScan scan = AccumulateAndFindMin(a_old, s, kv::ScoreDType::kFp32, a_new, positions, 2, 0.8f, 0, 100);
  EXPECT_NEAR(a_new[0], 0.82f, 1e-6);
  EXPECT_NEAR(a_new[1], 0.44f, 1e-6);
  EXPECT_EQ(scan.best_slot, 1u);
  EXPECT_FALSE(scan.invalid);
}

TEST(AccumulateAndFindMin, VectorPathMatchesScalarOnLongHeadsWithTies) {
  std::mt19937 rng(7);
  for (uint32_t n : {1u, 7u, 8u, 9u, 31u, 64u, 819u, 1000u}) {
    std::vector<float> a_old(n), s(n), a_new(n), expected(n);
    std::vector<uint32_t> positions(n);
    for (uint32_t i = 0; i < n; ++i) {
      a_old[i] = float(rng() % 4) * 0.25f;  // few distinct values: many ties
      s[i] = float(rng() % 3) * 0.5f;
      positions[i] = (i * 7919u) % 100003u;  // distinct, unordered
    }
    a_old[n - 1] = 0.0f;
    const uint32_t lo = 3, hi = 90000;
    HeadScan scan = AccumulateAndFindMin(a_old.data(), s.data(), kv::ScoreDType::kFp32, a_new.data(),
                                         positions.data(), n, 0.5f, lo, hi);
    // Brute force.
    uint32_t best = kNoSlot, above = 0;
    for (uint32_t i = 0; i < n; ++i) {
      expected[i] = 0.5f * a_old[i] + s[i];
      above += positions[i] >= hi;
      if (positions[i] < lo || positions[i] >= hi) continue;
      if (best == kNoSlot || expected[i] < expected[best] ||
          (expected[i] == expected[best] && positions[i] < positions[best])) {
        best = i;
      }
    }
    EXPECT_EQ(a_new, expected) << "n=" << n;
    EXPECT_EQ(scan.best_slot, best) << "n=" << n;
    EXPECT_EQ(scan.count_at_or_above_hi, above) << "n=" << n;
  }
}

TEST(AccumulateAndFindMin, HalfAndBfloatInputsDecodeExactly) {
  // fp16: 0x3C00 = 1, 0x3800 = 0.5, 0x3400 = 0.25, 0x0001 = 2^-24 (subnormal); bf16 0x3F80 = 1.
  const uint16_t half[9] = {0x3C00, 0x3800, 0x3400, 0x0001, 0, 0x3C00, 0x3800, 0x3400, 0x4000};
  const uint16_t bf16[9] = {0x3F80, 0x3F00, 0x3E80, 0x0000, 0, 0x3F80, 0x3F00, 0x3E80, 0x4000};
  const float expected_half[9] = {1, 0.5f, 0.25f, std::ldexp(1.0f, -24), 0, 1, 0.5f, 0.25f, 2};
  const float expected_bf16[9] = {1, 0.5f, 0.25f, 0, 0, 1, 0.5f, 0.25f, 2};
  std::vector<float> zero(9, 0.0f), out(9);
  std::vector<uint32_t> positions = {0, 1, 2, 3, 4, 5, 6, 7, 8};
  AccumulateAndFindMin(zero.data(), half, kv::ScoreDType::kFp16, out.data(), positions.data(), 9, 0.5f, 0, 100);
  for (int i = 0; i < 9; ++i) EXPECT_EQ(out[i], expected_half[i]) << i;
  AccumulateAndFindMin(zero.data(), bf16, kv::ScoreDType::kBf16, out.data(), positions.data(), 9, 0.5f, 0, 100);
  for (int i = 0; i < 9; ++i) EXPECT_EQ(out[i], expected_bf16[i]) << i;
}

TEST(CpuScoreStore, ThreeStepsByHand) {
  CpuScoreStore store;
  auto session = store.CreateSession({1, 1}, 4);
  ASSERT_TRUE(session.ok());
  const EvictionRule rule = BuiltinRule("a2sf", 1, 10, 0.8);
  Step(&store, *session, rule, 0, {1.0f});
  Step(&store, *session, rule, 1, {0.4f, 0.3f});
  Step(&store, *session, rule, 2, {0.5f, 0.2f, 0.3f});
  auto head = store.ReadHead(*session, 0, 0);
  ASSERT_TRUE(head.ok());
  // A0 = 0.8 * (0.8 * 1 + 0.4) + 0.5 = 1.46; A1 = 0.8 * 0.3 + 0.2 = 0.44; A2 = 0.3.
  EXPECT_EQ(head->positions, (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_NEAR(head->scores[0], 1.46f, 1e-6);
  EXPECT_NEAR(head->scores[1], 0.44f, 1e-6);
  EXPECT_NEAR(head->scores[2], 0.3f, 1e-6);
}

TEST(CpuScoreStore, AlphaOneGivesPlainSumsAndAlphaZeroTheLatestRow) {
  for (double alpha : {1.0, 0.0}) {
    CpuScoreStore store;
    auto session = store.CreateSession({1, 1}, 4);
    const EvictionRule rule = BuiltinRule("a2sf", 1, 10, alpha);
    Step(&store, *session, rule, 0, {0.5f});
    Step(&store, *session, rule, 1, {0.25f, 0.75f});
    Step(&store, *session, rule, 2, {0.125f, 0.5f, 0.375f});
    auto head = store.ReadHead(*session, 0, 0);
    if (alpha == 1.0) {
      EXPECT_EQ(head->scores, (std::vector<float>{0.875f, 1.25f, 0.375f}));
    } else {
      EXPECT_EQ(head->scores, (std::vector<float>{0.125f, 0.5f, 0.375f}));
    }
  }
}

// Budget 3, five tokens; each policy's evictions worked out by hand.
TEST(CpuScoreStore, EvictionOrderOfEachPolicyOnAHandTrace) {
  // Step t appends position t; rows are s for entries in slot order.
  const std::vector<std::vector<float>> rows = {
      {1.0f},
      {0.5f, 0.5f},
      {0.2f, 0.7f, 0.1f},
      {0.1f, 0.1f, 0.1f, 0.7f},  // 4 entries > budget 3: first eviction
      {0.3f, 0.3f, 0.2f, 0.2f},  // after the swap-remove of step 3
  };
  struct Case {
    EvictionRule rule;
    std::vector<std::vector<uint32_t>> evicted_positions;  // per step
  };
  auto run = [&](const EvictionRule& rule) {
    CpuScoreStore store;
    auto session = store.CreateSession({1, 1}, 4);
    std::vector<std::vector<uint32_t>> positions;
    for (uint32_t t = 0; t < rows.size(); ++t) {
      kv::EvictionDecision decision;
      absl::Status status = testing::RunTokenStep(&store, *session, rule, t, rows[t], &decision);
      EXPECT_TRUE(status.ok()) << status;
      positions.push_back(decision.evicted_positions);
    }
    return positions;
  };
  using V = std::vector<std::vector<uint32_t>>;
  // Local: evicts the oldest each time.
  EXPECT_EQ(run(BuiltinRule("local", 1, 3)), (V{{}, {}, {}, {0}, {1}}));
  // StreamingLLM with 1 sink: position 0 stays; then the oldest of the rest.
  EXPECT_EQ(run(BuiltinRule("streaming_llm", 1, 3, std::nullopt, 1)), (V{{}, {}, {}, {1}, {2}}));
  // H2O (alpha 1, recent = 1): step 3 sums A = (1.8, 1.3, 0.2, 0.7), recent {3} protected -> evict 2.
  // Slots become (0, 1, 3) with A (1.8, 1.3, 0.7); step 4 adds (0.3, 0.3, 0.2) and the new 0.2:
  // A = (2.1, 1.6, 0.9, 0.2); recent {4} protected -> evict 3 (0.9).
  EXPECT_EQ(run(BuiltinRule("h2o", 1, 3)), (V{{}, {}, {}, {2}, {3}}));
  // TOVA (alpha 0): step 3 row (0.1, 0.1, 0.1, 0.7): three-way tie, the smallest position 0 goes.
  // Slots become (3, 1, 2) with A (0.7, 0.1, 0.1); step 4: A = (0.3, 0.3, 0.2, 0.2) for positions
  // (3, 1, 2, 4): tie 0.2 between positions 2 and 4 -> 2 goes.
  EXPECT_EQ(run(BuiltinRule("tova", 1, 3)), (V{{}, {}, {}, {0}, {2}}));
  // A2SF alpha 0.5: step 3 A = (0.5*(0.5*(0.5*1+0.5)+0.2)+0.1, 0.5*(0.5*0.5+0.7)+0.1, 0.5*0.1+0.1, 0.7)
  //                            = (0.45, 0.575, 0.15, 0.7) -> evict position 2.
  // Slots (0, 1, 3): A (0.45, 0.575, 0.7); step 4: (0.525, 0.5875, 0.55, 0.2) -> evict position 4.
  EXPECT_EQ(run(BuiltinRule("a2sf", 1, 3, 0.5)), (V{{}, {}, {}, {2}, {4}}));
}

TEST(CpuScoreStore, DecisionSlotsFollowSwapRemove) {
  CpuScoreStore store;
  auto session = store.CreateSession({1, 1}, 4);
  const EvictionRule rule = BuiltinRule("local", 1, 2);
  Step(&store, *session, rule, 0, {1});
  Step(&store, *session, rule, 1, {1, 1});
  EXPECT_EQ(Step(&store, *session, rule, 2, {1, 1, 1}), (std::vector<uint32_t>{0}));
  // Position 2 moved into slot 0: slots are (2, 1).
  auto head = store.ReadHead(*session, 0, 0);
  EXPECT_EQ(head->positions, (std::vector<uint32_t>{2, 1}));
  // Next eviction is position 1 in slot 1 (the last slot: nothing moves).
  EXPECT_EQ(Step(&store, *session, rule, 3, {1, 1, 1}), (std::vector<uint32_t>{1}));
  head = store.ReadHead(*session, 0, 0);
  EXPECT_EQ(head->positions, (std::vector<uint32_t>{2, 3}));
}

struct RandomCase {
  std::string policy;
  std::optional<double> alpha;
  std::optional<uint32_t> extra;
};

class RandomAgainstReference : public ::testing::TestWithParam<RandomCase> {};

TEST_P(RandomAgainstReference, PerTokenDecisionsAndScoresMatchTheSlowReference) {
  const RandomCase& c = GetParam();
  const uint32_t layers = 3, kv_heads = 2, budget = 13, steps = 80;
  const EvictionRule rule = BuiltinRule(c.policy, layers, budget, c.alpha, c.extra);
  for (int threads : {1, 2}) {
    CpuScoreStore store(threads);
    auto session = store.CreateSession({layers, kv_heads}, budget + 1);
    ReferenceCache reference(layers, kv_heads);
    std::mt19937 rng(1234);
    uint32_t entries = 0, position = 0;
    for (uint32_t t = 0; t < steps; ++t) {
      position += 1 + rng() % 3;  // gaps in positions are allowed
      const uint32_t n = entries + 1;
      std::vector<float> scores(layers * kv_heads * n);
      // Quantised values make ties common, which exercises the tie rule.
      for (float& v : scores) v = float(rng() % 8) / 8.0f;
      kv::EvictionDecision decision;
      absl::Status status = testing::RunTokenStep(&store, *session, rule, position, scores, &decision);
      ASSERT_TRUE(status.ok()) << status;
      const auto expected = reference.Step(rule, position, scores);
      for (uint32_t h = 0; h < layers * kv_heads; ++h) {
        std::vector<uint32_t> got(decision.evicted_slots.begin() + h * decision.evictions_per_head,
                                  decision.evicted_slots.begin() + (h + 1) * decision.evictions_per_head);
        ASSERT_EQ(got, expected[h]) << "step " << t << " head " << h;
      }
      entries = decision.entries_after;
      for (uint32_t h = 0; h < layers * kv_heads; ++h) {
        auto head = store.ReadHead(*session, h / kv_heads, h % kv_heads);
        const auto& ref = reference.head(h);
        ASSERT_EQ(head->positions.size(), ref.size());
        for (size_t i = 0; i < ref.size(); ++i) {
          ASSERT_EQ(head->positions[i], ref[i].position);
          if (rule.uses_scores()) {
            ASSERT_EQ(head->scores[i], ref[i].score) << "step " << t;
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Policies, RandomAgainstReference,
    ::testing::Values(RandomCase{"full", {}, {}}, RandomCase{"local", {}, {}},
                      RandomCase{"streaming_llm", {}, 4u}, RandomCase{"h2o", {}, {}},
                      RandomCase{"tova", {}, {}}, RandomCase{"a2sf", 0.3, {}}, RandomCase{"a2sf", 0.9, 5u},
                      RandomCase{"a2sf", 1.0, {}}),
    [](const ::testing::TestParamInfo<RandomCase>& info) {
      return info.param.policy + "_" + std::to_string(info.index);
    });

TEST(CpuScoreStore, BulkPrefillEqualsPerTokenScoresAndTheFinalTopBudget) {
  const uint32_t layers = 2, kv_heads = 2, P = 40, budget = 11;
  std::mt19937 rng(99);
  std::vector<float> matrix(layers * kv_heads * P * P, 0.0f);
  for (uint32_t h = 0; h < layers * kv_heads; ++h) {
    for (uint32_t q = 0; q < P; ++q) {
      for (uint32_t k = 0; k <= q; ++k) matrix[(h * P + q) * P + k] = float(rng() % 16) / 16.0f;
    }
  }
  for (const char* name : {"a2sf", "h2o", "tova", "local", "streaming_llm"}) {
    SCOPED_TRACE(name);
    const EvictionRule rule = BuiltinRule(name, layers, budget, std::string(name) == "a2sf" ? std::optional<double>(0.7) : std::nullopt);
    // Per-token with no eviction (Full's rule with the same alphas) reaches the same accumulators.
    EvictionRule keep_all = rule;
    keep_all.key = rule.uses_scores() ? EvictionRule::Key::kScore : EvictionRule::Key::kPosition;
    keep_all.budget = P;
    CpuScoreStore store;
    auto per_token = store.CreateSession({layers, kv_heads}, P);
    for (uint32_t q = 0; q < P; ++q) {
      std::vector<float> row;
      for (uint32_t h = 0; h < layers * kv_heads; ++h) {
        for (uint32_t k = 0; k <= q; ++k) row.push_back(matrix[(h * P + q) * P + k]);
      }
      kv::EvictionDecision decision;
      absl::Status status = testing::RunTokenStep(&store, *per_token, keep_all, q, row, &decision);
      ASSERT_TRUE(status.ok());
    }
    auto bulk = store.CreateSession({layers, kv_heads}, P);
    auto decision = store.ProcessBulkPrefill({*bulk, &rule, 0, P, {kv::ScoreDType::kFp32, matrix.data(), matrix.size()}});
    ASSERT_TRUE(decision.ok()) << decision.status();
    EXPECT_EQ(decision->entries_after, budget);
    EXPECT_EQ(decision->evictions_per_head, P - budget);
    ReferenceCache reference(layers, kv_heads);
    const auto expected = reference.Bulk(rule, 0, P, matrix);
    for (uint32_t h = 0; h < layers * kv_heads; ++h) {
      // The kept set is the top `budget` of the per-token accumulators (protections included).
      auto full = store.ReadHead(*per_token, h / kv_heads, h % kv_heads);
      auto kept = store.ReadHead(*bulk, h / kv_heads, h % kv_heads);
      for (size_t i = 0; i < kept->positions.size(); ++i) {
        const uint32_t p = kept->positions[i];
        if (rule.uses_scores()) {
          EXPECT_EQ(kept->scores[i], full->scores[p]);
        }
      }
      std::vector<uint32_t> got(decision->evicted_slots.begin() + h * (P - budget),
                                decision->evicted_slots.begin() + (h + 1) * (P - budget));
      EXPECT_EQ(got, expected[h]) << "head " << h;
      ASSERT_EQ(kept->positions.size(), reference.head(h).size());
      for (size_t i = 0; i < kept->positions.size(); ++i) {
        EXPECT_EQ(kept->positions[i], reference.head(h)[i].position);
      }
    }
  }
}

class InvalidStep : public ::testing::Test {
 protected:
  void SetUp() override {
    session_ = *store_.CreateSession({2, 2}, 6);
    rule_ = BuiltinRule("a2sf", 2, 3, 0.5);
    for (uint32_t t = 0; t < 5; ++t) {
      std::vector<float> scores(4 * std::min(t + 1, 4u), 0.25f);
      scores[t % scores.size()] = 0.5f;
      Step(&store_, session_, rule_, t, scores);
    }
    before_ = Snapshot();
  }
  std::vector<HeadSnapshot> Snapshot() {
    std::vector<HeadSnapshot> all;
    for (uint32_t h = 0; h < 4; ++h) all.push_back(*store_.ReadHead(session_, h / 2, h % 2));
    return all;
  }
  absl::Status Try(const std::vector<float>& scores, uint32_t position) {
    kv::EvictionDecision decision;
    absl::Status status = testing::RunTokenStep(&store_, session_, rule_, position, scores, &decision);
    return status;
  }
  void ExpectUnchanged() {
    auto after = Snapshot();
    for (uint32_t h = 0; h < 4; ++h) {
      EXPECT_EQ(after[h].positions, before_[h].positions);
      EXPECT_EQ(after[h].scores, before_[h].scores);
    }
    EXPECT_EQ(*store_.EntriesPerHead(session_), 3u);
  }
  CpuScoreStore store_;
  SessionHandle session_;
  EvictionRule rule_;
  std::vector<HeadSnapshot> before_;
};

TEST_F(InvalidStep, NanInTheLastHeadLeavesEveryHeadUnchanged) {
  std::vector<float> scores(16, 0.1f);
  scores[15] = std::nanf("");
  absl::Status status = Try(scores, 5);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("NaN"), std::string::npos);
  ExpectUnchanged();
}

TEST_F(InvalidStep, InfinityAndNegativeScoresAreRejected) {
  std::vector<float> scores(16, 0.1f);
  scores[9] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(Try(scores, 5).code(), absl::StatusCode::kInvalidArgument);
  scores[9] = -0.001f;
  EXPECT_EQ(Try(scores, 5).code(), absl::StatusCode::kInvalidArgument);
  ExpectUnchanged();
}

TEST_F(InvalidStep, WrongEntryCountNamesTheExpectedShape) {
  absl::Status status = Try(std::vector<float>(12, 0.1f), 5);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("2 layers x 2 KV heads x 4 entries"), std::string::npos) << status;
  ExpectUnchanged();
}

TEST_F(InvalidStep, PositionNotAfterTheNewestIsRejected) {
  absl::Status status = Try(std::vector<float>(16, 0.1f), 4);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("position"), std::string::npos);
  ExpectUnchanged();
  // A valid step still works afterwards.
  EXPECT_TRUE(Try(std::vector<float>(16, 0.1f), 5).ok());
}

TEST_F(InvalidStep, HalfPrecisionNanInfinityAndNegativeAreRejected) {
  // fp16 0.25 = 0x3400; NaN 0x7E00; +Inf 0x7C00; -0.5 0xB800.
  for (uint16_t bad : {uint16_t{0x7E00}, uint16_t{0x7C00}, uint16_t{0xB800}}) {
    std::vector<uint16_t> scores(16, 0x3400);
    scores[10] = bad;
    TokenStep step{session_, &rule_, 5, {kv::ScoreDType::kFp16, scores.data(), scores.size()}};
    absl::Status status;
    kv::EvictionDecision decision;
    store_.ProcessTokenSteps({&step, 1}, {&status, 1}, {&decision, 1});
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << std::hex << bad;
  }
  ExpectUnchanged();
}

TEST(CpuScoreStore, BadBulkPrefillsAreRejectedAndLeaveTheSessionEmpty) {
  CpuScoreStore store;
  const EvictionRule rule = BuiltinRule("a2sf", 1, 2, 0.5);
  auto session = *store.CreateSession({1, 1}, 4);
  std::vector<float> matrix = {1.0f, 0.0f, 0.0f, 0.5f, 0.5f, 0.0f, 0.2f, 0.3f, 0.5f};  // P = 3
  auto bulk = [&](uint32_t P, const std::vector<float>& m) {
    return store.ProcessBulkPrefill({session, &rule, 0, P, {kv::ScoreDType::kFp32, m.data(), m.size()}}).status();
  };
  EXPECT_NE(bulk(2, matrix).message().find("1 x 1 x 2 x 2 = 4 values, got 9"), std::string::npos);
  EXPECT_EQ(bulk(0, {}).code(), absl::StatusCode::kInvalidArgument);
  std::vector<float> nan_matrix = matrix;
  nan_matrix[7] = std::nanf("");
  EXPECT_NE(bulk(3, nan_matrix).message().find("row 2, entry 1"), std::string::npos);
  nan_matrix[7] = -1.0f;
  EXPECT_EQ(bulk(3, nan_matrix).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*store.EntriesPerHead(session), 0u);
  EXPECT_TRUE(store.ReadHead(session, 0, 0)->positions.empty());
  // Values above the diagonal are ignored, even invalid ones.
  std::vector<float> upper = matrix;
  upper[1] = std::nanf("");
  ASSERT_TRUE(bulk(3, upper).ok());
  EXPECT_EQ(*store.EntriesPerHead(session), 2u);
  // A second bulk prefill on a non-empty session is refused.
  EXPECT_EQ(bulk(3, matrix).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(CpuScoreStore, UnknownSessionIsNotFound) {
  CpuScoreStore store;
  EvictionRule rule = BuiltinRule("local", 1, 2);
  float s = 1.0f;
  TokenStep step{42, &rule, 0, {kv::ScoreDType::kFp32, &s, 1}};
  absl::Status status;
  kv::EvictionDecision decision;
  store.ProcessTokenSteps({&step, 1}, {&status, 1}, {&decision, 1});
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store.DestroySession(42).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store.CreateSession({0, 4}, 4).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CpuScoreStore, SwappingTheRuleTakesOverTheScoresFromTheNextStep) {
  // Same inputs; after step 5 one run switches from alpha 0.9 to alpha 0.1. Scores up to step 5 are
  // identical; from step 6 they follow the new alpha applied to the old accumulators.
  const std::vector<float> row = {0.5f, 0.25f, 0.125f, 0.125f};
  const EvictionRule slow = BuiltinRule("a2sf", 1, 10, 0.9);
  const EvictionRule fast = BuiltinRule("a2sf", 1, 10, 0.1);
  CpuScoreStore store;
  auto a = *store.CreateSession({1, 1}, 8);
  auto b = *store.CreateSession({1, 1}, 8);
  for (uint32_t t = 0; t < 4; ++t) {
    std::vector<float> s(row.begin(), row.begin() + t + 1);
    Step(&store, a, slow, t, s);
    Step(&store, b, slow, t, s);
  }
  const auto before = *store.ReadHead(b, 0, 0);
  std::vector<float> s = {0.1f, 0.2f, 0.3f, 0.2f, 0.2f};
  Step(&store, a, slow, 4, s);
  Step(&store, b, fast, 4, s);
  const auto after = *store.ReadHead(b, 0, 0);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(after.scores[i], 0.1f * before.scores[i] + s[i]);
  EXPECT_NE(store.ReadHead(a, 0, 0)->scores, after.scores);
}

TEST(CpuScoreStore, BatchOfSessionsOnSeveralThreadsMatchesOneAtATime) {
  const uint32_t sessions = 9;
  CpuScoreStore batched(2), serial(1);
  const EvictionRule rule = BuiltinRule("a2sf", 2, 7, 0.6);
  std::vector<SessionHandle> hb, hs;
  for (uint32_t i = 0; i < sessions; ++i) {
    hb.push_back(*batched.CreateSession({2, 3}, 8));
    hs.push_back(*serial.CreateSession({2, 3}, 8));
  }
  std::mt19937 rng(5);
  uint32_t entries = 0;
  for (uint32_t t = 0; t < 30; ++t) {
    std::vector<std::vector<float>> scores(sessions, std::vector<float>(6 * (entries + 1)));
    for (auto& v : scores) {
      for (float& x : v) x = float(rng() % 100) / 100.0f;
    }
    std::vector<TokenStep> steps;
    for (uint32_t i = 0; i < sessions; ++i) {
      steps.push_back({hb[i], &rule, t, {kv::ScoreDType::kFp32, scores[i].data(), scores[i].size()}});
    }
    std::vector<absl::Status> statuses(sessions);
    std::vector<kv::EvictionDecision> decisions(sessions);
    batched.ProcessTokenSteps(absl::MakeConstSpan(steps), absl::MakeSpan(statuses), absl::MakeSpan(decisions));
    for (uint32_t i = 0; i < sessions; ++i) {
      ASSERT_TRUE(statuses[i].ok());
      TokenStep one = steps[i];
      one.session = hs[i];
      absl::Status status;
      kv::EvictionDecision decision;
      serial.ProcessTokenSteps({&one, 1}, {&status, 1}, {&decision, 1});
      EXPECT_EQ(decision.evicted_slots, decisions[i].evicted_slots);
      entries = decision.entries_after;
    }
  }
  EXPECT_GT(batched.BytesHeld(), 0u);
}

}  // namespace
}  // namespace a2sf::cachemgr
