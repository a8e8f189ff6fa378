// Pipelined sessions (decision lag K) against the rules of docs/POLICIES.md, "Pipelined decisions":
// a simulated worker keeps pending victims in its cache until their decision is K steps old and
// sends scores in its own slot order; the decisions must equal those of the slow reference policy fed
// the same scores for the entries it still holds.
#include <algorithm>
#include <deque>
#include <map>
#include <random>

#include "cachemgr/session/session_manager.h"
#include "cachemgr/store/cpu_score_store.h"
#include "cachemgr/store/testing/reference_cache.h"
#include "gtest/gtest.h"

namespace a2sf::cachemgr {
namespace {

using testing::ReferenceCache;

constexpr uint32_t kLayers = 2, kKvHeads = 3, kHeads = kLayers * kKvHeads;

std::unique_ptr<SessionManager> MakeManager() {
  SessionManagerOptions options;
  options.idle_timeout = absl::ZeroDuration();
  return std::make_unique<SessionManager>(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(), options);
}

PolicySpec Spec(const std::string& name, std::optional<double> alpha = {}) {
  PolicySpec spec;
  spec.name = name;
  spec.alpha = alpha;
  return spec;
}

EvictionRule RuleOf(const PolicySpec& spec, uint32_t budget) {
  return *(*PolicyRegistry::Builtin().Create(spec))->RuleFor(kLayers, budget);
}

// The worker's side, written from the rules: entries appended at the end; decision t removed just
// before the token of step t + K + 1, each victim found by position, swap-remove in descending slots.
struct SimulatedWorker {
  uint32_t lag = 0;
  std::vector<std::vector<uint32_t>> positions = std::vector<std::vector<uint32_t>>(kHeads);
  std::deque<std::pair<uint64_t, std::vector<uint32_t>>> undelivered;  // step, [heads][k] positions

  void BeforeToken(uint64_t step) {
    while (!undelivered.empty() && undelivered.front().first + lag + 1 <= step) {
      const std::vector<uint32_t>& victims = undelivered.front().second;
      const size_t k = victims.size() / kHeads;
      for (uint32_t h = 0; h < kHeads; ++h) {
        std::vector<uint32_t> slots;
        for (size_t j = 0; j < k; ++j) {
          auto it = std::find(positions[h].begin(), positions[h].end(), victims[h * k + j]);
          ASSERT_NE(it, positions[h].end()) << "decision names a position the worker does not hold";
          slots.push_back(uint32_t(it - positions[h].begin()));
        }
        std::sort(slots.rbegin(), slots.rend());
        for (uint32_t slot : slots) {
          positions[h][slot] = positions[h].back();
          positions[h].pop_back();
        }
      }
      undelivered.pop_front();
    }
  }
};

// Positions a reference step evicted, per head, sorted.
std::vector<std::vector<uint32_t>> VictimPositions(const std::vector<std::vector<testing::ReferenceEntry>>& before,
                                                   const std::vector<std::vector<uint32_t>>& slots) {
  std::vector<std::vector<uint32_t>> out(kHeads);
  for (uint32_t h = 0; h < kHeads; ++h) {
    // Replay the reference's own swap-removes to name the positions it dropped.
    std::vector<testing::ReferenceEntry> entries = before[h];
    for (uint32_t slot : slots[h]) {
      out[h].push_back(entries[slot].position);
      entries[slot] = entries.back();
      entries.pop_back();
    }
    std::sort(out[h].begin(), out[h].end());
  }
  return out;
}

struct Scenario {
  PolicySpec first, second;  // `second` takes over at step `swap_at` (never, if swap_at is 0)
  uint32_t budget, lag, steps, swap_at = 0;
};

void RunAgainstReference(const Scenario& scenario, uint32_t seed) {
  auto manager = MakeManager();
  SessionConfig config;
  config.geometry = {kLayers, kKvHeads};
  config.policy = scenario.first;
  config.budget.tokens = scenario.budget;
  config.decision_lag = scenario.lag;
  auto info = manager->Open(config);
  ASSERT_TRUE(info.ok()) << info.status();

  ReferenceCache reference(kLayers, kKvHeads);
  EvictionRule rule = RuleOf(scenario.first, scenario.budget);
  SimulatedWorker worker;
  worker.lag = scenario.lag;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  size_t max_held = 0;
  for (uint64_t t = 0; t < scenario.steps; ++t) {
    SCOPED_TRACE(::testing::Message() << "step " << t << " lag " << scenario.lag << " seed " << seed);
    if (scenario.swap_at != 0 && t == scenario.swap_at) {
      ASSERT_TRUE(manager->SetPolicy(info->id, scenario.second).ok());
      rule = RuleOf(scenario.second, scenario.budget);
    }
    worker.BeforeToken(t);
    const uint32_t position = uint32_t(3 * t + 1);  // gaps are allowed; only order matters
    for (auto& head : worker.positions) head.push_back(position);
    max_held = std::max(max_held, worker.positions[0].size());
    // Scores by the worker's slots; the reference sees those of the entries it still holds.
    const size_t n = worker.positions[0].size();
    std::vector<float> sent(kHeads * n);
    std::vector<std::map<uint32_t, float>> by_position(kHeads);
    for (uint32_t h = 0; h < kHeads; ++h) {
      for (size_t i = 0; i < n; ++i) {
        sent[h * n + i] = uniform(rng);
        by_position[h][worker.positions[h][i]] = sent[h * n + i];
      }
    }
    std::vector<std::vector<testing::ReferenceEntry>> before(kHeads);
    const size_t live = reference.head(0).size() + 1;
    std::vector<float> expected_input(kHeads * live);
    for (uint32_t h = 0; h < kHeads; ++h) {
      before[h] = reference.head(h);
      before[h].push_back({position, 0.0f});
      for (size_t i = 0; i < live; ++i) expected_input[h * live + i] = by_position[h].at(before[h][i].position);
    }
    const auto reference_slots = reference.Step(rule, position, expected_input);
    const auto expected = VictimPositions(before, reference_slots);

    auto result = manager->Step(info->id, t, position, {kv::ScoreDType::kFp32, sent.data(), sent.size()});
    ASSERT_TRUE(result.ok()) << result.status();
    const kv::EvictionDecision& d = result->decision;
    EXPECT_TRUE(d.evicted_slots.empty()) << "a pipelined decision names positions, not slots";
    ASSERT_EQ(d.evicted_positions.size(), size_t(kHeads) * d.evictions_per_head);
    for (uint32_t h = 0; h < kHeads; ++h) {
      std::vector<uint32_t> got(d.evicted_positions.begin() + h * d.evictions_per_head,
                                d.evicted_positions.begin() + (h + 1) * d.evictions_per_head);
      std::sort(got.begin(), got.end());
      ASSERT_EQ(got, expected[h]) << "head " << h;
    }
    EXPECT_EQ(d.entries_after, reference.head(0).size());
    if (d.evictions_per_head > 0) worker.undelivered.push_back({t, d.evicted_positions});
  }
  // The worker never holds more than budget + 1 + K entries.
  EXPECT_LE(max_held, size_t(scenario.budget) + 1 + scenario.lag);
  if (scenario.steps > scenario.budget + scenario.lag + 2) {
    EXPECT_EQ(max_held, size_t(scenario.budget) + 1 + scenario.lag);
  }
}

TEST(PipelinedSession, DecisionsEqualTheReferenceForEveryPolicyAndLag) {
  const std::vector<PolicySpec> policies = {Spec("a2sf", 0.5), Spec("h2o"), Spec("local"), Spec("streaming_llm"),
                                            Spec("tova")};
  for (const PolicySpec& policy : policies) {
    for (uint32_t lag : {1u, 2u, 5u}) {
      SCOPED_TRACE(policy.name);
      RunAgainstReference({policy, {}, 6, lag, 40}, 17 + lag);
    }
  }
}

TEST(PipelinedSession, SwapTakesEffectFromTheNextDecision) {
  RunAgainstReference({Spec("h2o"), Spec("a2sf", 0.3), 8, 3, 60, 25}, 5);
  RunAgainstReference({Spec("a2sf", 0.9), Spec("a2sf", 0.1), 5, 1, 40, 11}, 6);
}

TEST(PipelinedSession, LagZeroIsSynchronousAndLagIsBounded) {
  auto manager = MakeManager();
  SessionConfig config;
  config.geometry = {1, 1};
  config.policy = Spec("local");
  config.budget.tokens = 2;
  config.decision_lag = kMaxDecisionLag + 1;
  auto rejected = manager->Open(config);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(rejected.status().message().find("decision_lag"), std::string::npos);
  config.decision_lag = 0;
  auto info = manager->Open(config);
  ASSERT_TRUE(info.ok());
  std::vector<float> scores = {1, 1, 1};
  ASSERT_TRUE(manager->Step(info->id, 0, 0, {kv::ScoreDType::kFp32, scores.data(), 1}).ok());
  ASSERT_TRUE(manager->Step(info->id, 1, 1, {kv::ScoreDType::kFp32, scores.data(), 2}).ok());
  auto third = manager->Step(info->id, 2, 2, {kv::ScoreDType::kFp32, scores.data(), 3});
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(third->decision.evicted_slots, std::vector<uint32_t>{0});  // synchronous: slots are given
}

TEST(PipelinedSession, RejectedStepChangesNothingAndCanBeRetried) {
  auto manager = MakeManager();
  SessionConfig config;
  config.geometry = {1, 1};
  config.policy = Spec("a2sf", 0.5);
  config.budget.tokens = 2;
  config.decision_lag = 2;
  auto info = manager->Open(config);
  ASSERT_TRUE(info.ok());
  // Steps 0..3: the worker holds 1, 2, 3, 4 entries (decisions 2 and 3 evict, none applied yet).
  std::vector<std::vector<float>> rows = {{1}, {1, 2}, {0.1f, 5, 3}, {9, 0.2f, 9, 9}};
  std::vector<uint32_t> victims;
  for (uint64_t t = 0; t < rows.size(); ++t) {
    auto r = manager->Step(info->id, t, t, {kv::ScoreDType::kFp32, rows[t].data(), rows[t].size()});
    ASSERT_TRUE(r.ok()) << r.status();
    victims.insert(victims.end(), r->decision.evicted_positions.begin(), r->decision.evicted_positions.end());
  }
  // By hand (alpha 0.5): after step 2, A = {p0: .85, p1: 6, p2: 3} -> p0 goes; after step 3 (p0's value
  // dropped), A = {p1: 3.2, p2: 10.5, p3: 9} -> p1 goes.
  EXPECT_EQ(victims, (std::vector<uint32_t>{0, 1}));
  // Step 4: the worker applied decision 1 (empty) only, so it sends 5 entries. A wrong count is refused.
  std::vector<float> wrong(4, 1.0f), nan_scores = {1, 1, std::nanf(""), 1, 1}, good = {1, 1, 1, 1, 1};
  auto r = manager->Step(info->id, 4, 4, {kv::ScoreDType::kFp32, wrong.data(), wrong.size()});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_NE(r.status().message().find("expected 5 values"), std::string::npos) << r.status();
  // NaN on a live entry (position 2, slot 2 in the worker's layout) is refused; then the step goes through.
  r = manager->Step(info->id, 4, 4, {kv::ScoreDType::kFp32, nan_scores.data(), nan_scores.size()});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  r = manager->Step(info->id, 4, 4, {kv::ScoreDType::kFp32, good.data(), good.size()});
  ASSERT_TRUE(r.ok()) << r.status();
  // Step 5: decision 2 (position 0) has now been applied by the worker: 5 - 1 + 1 = 5 entries.
  r = manager->Step(info->id, 5, 5, {kv::ScoreDType::kFp32, good.data(), good.size()});
  ASSERT_TRUE(r.ok()) << r.status();
}

TEST(PipelinedSession, BulkPrefillDecisionIsAppliedLateToo) {
  auto manager = MakeManager();
  SessionConfig config;
  config.geometry = {1, 1};
  config.policy = Spec("local");
  config.budget.tokens = 2;
  config.decision_lag = 1;
  auto info = manager->Open(config);
  ASSERT_TRUE(info.ok());
  std::vector<float> matrix(16, 0.25f);
  auto bulk = manager->BulkPrefill(info->id, 0, 10, 4, {kv::ScoreDType::kFp32, matrix.data(), matrix.size()});
  ASSERT_TRUE(bulk.ok()) << bulk.status();
  EXPECT_TRUE(bulk->decision.evicted_slots.empty());
  EXPECT_EQ(bulk->decision.evicted_positions, (std::vector<uint32_t>{11, 10}));
  // Step 1 (position 14): decision 0 is not applied yet; the worker holds 4 + 1 entries.
  std::vector<float> five(5, 0.2f), four(4, 0.2f);
  auto r = manager->Step(info->id, 1, 14, {kv::ScoreDType::kFp32, five.data(), five.size()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->decision.evicted_positions, std::vector<uint32_t>{12});
  // Step 2: decision 0 applied (2 gone): 3 + 1 entries.
  r = manager->Step(info->id, 2, 15, {kv::ScoreDType::kFp32, four.data(), four.size()});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->decision.evicted_positions, std::vector<uint32_t>{13});
}

}  // namespace
}  // namespace a2sf::cachemgr
