#include "worker/engine/engine.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <fstream>
#include <limits>
#include <map>
#include <random>
#include <set>

#include "common/float16.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/engine/generator.h"
#include "worker/policy/in_process_policy_client.h"
#include "worker/testing/fixtures.h"
#include "worker/testing/goldens.h"

namespace a2sf::worker {
namespace {

using testing::FixturesDir;
using testing::GoldenLogits;
using testing::Goldens;

std::unique_ptr<ModelWeights> Load(const std::string& name) {
  auto weights = LoadModel(FixturesDir() + "/" + name);
  EXPECT_TRUE(weights.ok()) << weights.status();
  return weights.ok() ? std::move(*weights) : nullptr;
}



const int kGoldenTokens[16] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426};

class GoldenLogitsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenLogitsTest, SixteenPositionsWithinOneTenThousandth) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load(GetParam());
  ASSERT_NE(weights, nullptr);
  auto engine = *Engine::Create(weights.get(), {});
  const std::vector<float> golden = GoldenLogits();
  float worst = 0.0f;
  for (int pos = 0; pos < 16; ++pos) {
    ASSERT_TRUE(engine->Forward(kGoldenTokens[pos], pos).ok());
    for (int v = 0; v < 512; ++v) worst = std::max(worst, std::fabs(engine->logits()[v] - golden[pos * 512 + v]));
  }
  EXPECT_LT(worst, 1e-4f) << GetParam();
}

// An fp16 KV cache rounds each key and value to 11 significant bits, as f16 weights round each weight:
// the same bound as f16 weights below (measured: 0.015), and the logits do move (the fp16 path ran).
TEST(GoldenLogits, AnF16KvCacheStaysCloseToTheGoldens) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  const std::vector<float> golden = GoldenLogits();
  EngineOptions options;
  options.kv_type = WeightType::kF16;
  auto half = *Engine::Create(weights.get(), options);
  auto full = *Engine::Create(weights.get(), {});
  EXPECT_EQ(half->cache().bytes_allocated() * 2, full->cache().bytes_allocated());
  float worst = 0.0f, moved = 0.0f;
  for (int pos = 0; pos < 16; ++pos) {
    ASSERT_TRUE(half->Forward(kGoldenTokens[pos], pos).ok());
    ASSERT_TRUE(full->Forward(kGoldenTokens[pos], pos).ok());
    for (int v = 0; v < 512; ++v) {
      worst = std::max(worst, std::fabs(half->logits()[v] - golden[pos * 512 + v]));
      moved = std::max(moved, std::fabs(half->logits()[v] - full->logits()[v]));
    }
  }
  EXPECT_LT(worst, 2e-2f);
  EXPECT_GT(moved, 0.0f);
}

// A q8_0 KV cache rounds each key and value to 8 bits of its block's largest magnitude (the fixture's
// heads are 8 wide: one block of 8 a row, 10 bytes against f32's 32). Measured worst distance from the
// goldens over 16 positions: 0.50 (its top-1 agreement with an f32 cache over the corpus is 0.981,
// docs/EVALUATION.md); the bound is twice that, and the logits do move.
TEST(GoldenLogits, AQ8_0KvCacheStaysCloseToTheGoldens) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  const std::vector<float> golden = GoldenLogits();
  EngineOptions options;
  options.kv_type = WeightType::kQ8_0;
  auto quantized = *Engine::Create(weights.get(), options);
  auto full = *Engine::Create(weights.get(), {});
  EXPECT_EQ(quantized->cache().bytes_allocated() * 32, full->cache().bytes_allocated() * 10);
  float worst = 0.0f, moved = 0.0f;
  for (int pos = 0; pos < 16; ++pos) {
    ASSERT_TRUE(quantized->Forward(kGoldenTokens[pos], pos).ok());
    ASSERT_TRUE(full->Forward(kGoldenTokens[pos], pos).ok());
    for (int v = 0; v < 512; ++v) {
      worst = std::max(worst, std::fabs(quantized->logits()[v] - golden[pos * 512 + v]));
      moved = std::max(moved, std::fabs(quantized->logits()[v] - full->logits()[v]));
    }
  }
  EXPECT_LT(worst, 1.0f);
  EXPECT_GT(moved, 0.0f);
}

// The KV cache holds f32, f16 or q8_0 only, and the CUDA engine f32 only: both refused before any GPU
// is looked for, so the refusal is the same with or without one.
TEST(Engine, RefusesKvTypesItDoesNotHold) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  EngineOptions options;
  for (WeightType type : {WeightType::kQ4_0, WeightType::kBF16}) {
    options.kv_type = type;
    absl::StatusOr<std::unique_ptr<Engine>> refused = Engine::Create(weights.get(), options);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(refused.status().message().find("f32, f16 or q8_0"), std::string::npos) << refused.status();
  }
  options.device = EngineDevice::kCuda;
  for (WeightType type : {WeightType::kF16, WeightType::kQ8_0}) {
    options.kv_type = type;
    absl::StatusOr<std::unique_ptr<Engine>> gpu = Engine::Create(weights.get(), options);
    EXPECT_EQ(gpu.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(gpu.status().message().find("CUDA"), std::string::npos) << gpu.status();
    EXPECT_NE(gpu.status().message().find(WeightTypeName(type)), std::string::npos) << gpu.status();
  }
}

// The int8 export is held as q8_0 with its scales rounded to fp16 (worker/model/model.h), so it is
// within fp16 rounding of the goldens, not bit-near like the fp32 files.
TEST(GoldenLogits, EveryWeightTypeStaysCloseToTheFp32Goldens) {
  A2SF_REQUIRE_FIXTURES();
  const std::vector<float> golden = GoldenLogits();
  const struct {
    const char* file;
    std::optional<WeightType> type;
    float bound;  // max |logit - golden| over 16 positions x 512 logits (logits span about 30)
  } cases[] = {{"stories260K_q80.bin", std::nullopt, 2e-2f},         {"stories260K-dq.bin", WeightType::kF16, 2e-2f},
               {"stories260K-dq.bin", WeightType::kBF16, 0.15f},         {"stories260K-dq.bin", WeightType::kQ8_0, 3e-2f},
               {"stories260K-dq.bin", WeightType::kQ4_0, 6.0f},  // q4_0 of a 260K model: loose, reported
               {"stories260K-hf", WeightType::kBF16, 0.15f}};
  for (const auto& c : cases) {
    LoadOptions options;
    options.weights = c.type;
    auto weights = LoadModel(FixturesDir() + "/" + c.file, options);
    ASSERT_TRUE(weights.ok()) << weights.status();
    auto engine = *Engine::Create(weights->get(), {});
    float worst = 0.0f;
    for (int pos = 0; pos < 16; ++pos) {
      ASSERT_TRUE(engine->Forward(kGoldenTokens[pos], pos).ok());
      for (int v = 0; v < 512; ++v) worst = std::max(worst, std::fabs(engine->logits()[v] - golden[pos * 512 + v]));
    }
    const std::string what = std::string(c.file) + " as " + (*weights)->weight_types();
    EXPECT_LT(worst, c.bound) << what;
    EXPECT_GT(worst, 0.0f) << what << ": a converted model cannot match fp32 exactly";
    std::cout << what << ": worst logit error " << worst << "\n";
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, GoldenLogitsTest,
                         ::testing::Values("stories260K-dq.bin", "stories260K-hf"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.index == 0 ? std::string("bin_fp32") : "hf";
                         });

std::vector<int> Greedy(Engine* engine, EvictionPolicyClient* policy, const std::vector<int>& prompt, int steps,
                        bool bulk = false) {
  GenerateOptions options;
  options.max_new_tokens = steps - int(prompt.size()) + 1;
  options.bulk_prefill = bulk;
  auto result = Generate(engine, policy, prompt, options);
  EXPECT_TRUE(result.ok()) << result.status();
  std::vector<int> ids = prompt;
  if (result.ok()) ids.insert(ids.end(), result->generated.begin(), result->generated.end());
  return ids;
}

TEST(Engine, GreedyIdsEqualTheGoldensForEveryPrompt) {
  A2SF_REQUIRE_FIXTURES();
  for (const char* model : {"stories260K-dq.bin", "stories260K-hf"}) {
    auto weights = Load(model);
    auto engine = *Engine::Create(weights.get(), {});
    const nlohmann::json goldens = Goldens();
    EXPECT_EQ(Greedy(engine.get(), nullptr, {1}, 256), goldens["bos_only"]["ids"].get<std::vector<int>>()) << model;
    for (const auto& p : goldens["prompts"]) {
      EXPECT_EQ(Greedy(engine.get(), nullptr, p["prompt_ids"].get<std::vector<int>>(), p["steps"].get<int>()),
                p["ids"].get<std::vector<int>>())
          << model << ": " << p["prompt"];
    }
  }
}

TEST(Engine, TwoThreadsGiveBitIdenticalLogits) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  auto one = *Engine::Create(weights.get(), {1, 0});
  auto two = *Engine::Create(weights.get(), {2, 0});
  for (int pos = 0; pos < 16; ++pos) {
    ASSERT_TRUE(one->Forward(kGoldenTokens[pos], pos).ok());
    ASSERT_TRUE(two->Forward(kGoldenTokens[pos], pos).ok());
    ASSERT_TRUE(std::equal(one->logits().begin(), one->logits().end(), two->logits().begin()));
  }
}

// Past 256 cached slots one row's attention (slots x head_dim 8 x 8 query heads) reaches the pass's
// parallel threshold, and its KV heads run on several threads: logits and scores stay bit for bit
// those of one thread.
TEST(Engine, ThreadCountsGiveBitIdenticalLogitsAndScoresAtLongContexts) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  ASSERT_GE(size_t(weights->config().seq_len), size_t(300));
  ASSERT_GE(size_t(300) * weights->config().head_dim * weights->config().n_heads, ForwardPass::kParallelAttentionWork);
  std::vector<std::unique_ptr<Engine>> engines;
  for (int threads : {1, 2, 3}) engines.push_back(*Engine::Create(weights.get(), {threads, 0}));
  for (int pos = 0; pos < 300; ++pos) {
    const int token = pos < 16 ? kGoldenTokens[pos] : 1 + (pos * 37) % (weights->config().vocab_size - 1);
    for (auto& engine : engines) ASSERT_TRUE(engine->Forward(token, pos).ok());
    for (size_t e = 1; e < engines.size(); ++e) {
      ASSERT_TRUE(std::equal(engines[0]->logits().begin(), engines[0]->logits().end(), engines[e]->logits().begin()))
          << "position " << pos << ", engine " << e;
      ASSERT_TRUE(std::equal(engines[0]->step_scores().begin(), engines[0]->step_scores().end(),
                             engines[e]->step_scores().begin()))
          << "position " << pos << ", engine " << e;
    }
  }
}

std::unique_ptr<InProcessPolicyClient> Policy(const ModelWeights& w, const std::string& name, uint32_t budget,
                                        std::optional<double> alpha = {}, uint32_t lag = 0) {
  cachemgr::PolicySpec spec;
  spec.name = name;
  spec.alpha = alpha;
  cachemgr::BudgetSpec b;
  b.tokens = budget;
  auto policy = InProcessPolicyClient::Create(w.config(), spec, b, lag);
  EXPECT_TRUE(policy.ok()) << policy.status();
  return std::move(*policy);
}

TEST(Engine, LocalWithABudgetCoveringTheSequenceEqualsFull) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  const std::vector<int> prompt = {1, 317, 269, 274, 287, 263, 377, 267, 265, 282, 295, 433};
  auto full_engine = *Engine::Create(weights.get(), {});
  const std::vector<int> full = Greedy(full_engine.get(), nullptr, prompt, 120);
  for (const char* name : {"local", "a2sf", "h2o"}) {
    auto policy = Policy(*weights, name, 120);
    auto engine = *Engine::Create(weights.get(), {1, 121});
    EXPECT_EQ(Greedy(engine.get(), policy.get(), prompt, 120), full) << name;
  }
  // And a small budget changes the output (the test above could not fail otherwise).
  auto policy = Policy(*weights, "local", 8);
  auto engine = *Engine::Create(weights.get(), {1, 9});
  EXPECT_NE(Greedy(engine.get(), policy.get(), prompt, 120), full);
  EXPECT_EQ(engine->cache().bytes_allocated(), size_t(5 * 4 * 9 * 8 * 2 * 4));  // budget + 1 slots, not 512
}

// A slow reference forward in double precision over the whole history, where each (layer, KV head)
// attends only to the positions in visible[layer][kv_head].
class MaskedReference {
 public:
  explicit MaskedReference(const ModelWeights* w) : w_(w), c_(w->config()) {}

  std::vector<double> Forward(int token, int pos, const std::vector<std::vector<std::set<int>>>& visible) {
    const int dim = c_.dim, hd = c_.head_dim;
    std::vector<double> x(dim);
    std::vector<float> row(dim);
    w_->token_embedding().RowToFloat(token, row.data());
    for (int i = 0; i < dim; ++i) x[i] = row[i];
    if (int(keys_.size()) < c_.n_layers) keys_.resize(c_.n_layers), values_.resize(c_.n_layers);
    for (int l = 0; l < c_.n_layers; ++l) {
      const LayerWeights& lw = w_->layer(l);
      std::vector<double> xb = Norm(x, lw.rms_att);
      std::vector<double> q = Mul(lw.wq, xb, c_.q_dim()), k = Mul(lw.wk, xb, c_.kv_dim()), v = Mul(lw.wv, xb, c_.kv_dim());
      Rope(&q, pos);
      Rope(&k, pos);
      keys_[l].push_back(k);
      values_[l].push_back(v);
      std::vector<double> out(c_.q_dim(), 0.0);
      for (int h = 0; h < c_.n_heads; ++h) {
        const int g = h / c_.group_size();
        std::vector<std::pair<int, double>> att;
        double max = -1e300;
        for (int t : visible[l][g]) {
          double dot = 0;
          for (int i = 0; i < hd; ++i) dot += q[h * hd + i] * keys_[l][t][g * hd + i];
          att.push_back({t, dot / std::sqrt(double(hd))});
          max = std::max(max, att.back().second);
        }
        double sum = 0;
        for (auto& a : att) sum += (a.second = std::exp(a.second - max));
        for (auto& [t, a] : att) {
          for (int i = 0; i < hd; ++i) out[h * hd + i] += a / sum * values_[l][t][g * hd + i];
        }
      }
      std::vector<double> o = Mul(lw.wo, out, dim);
      for (int i = 0; i < dim; ++i) x[i] += o[i];
      xb = Norm(x, lw.rms_ffn);
      std::vector<double> a = Mul(lw.w1, xb, c_.hidden_dim), b = Mul(lw.w3, xb, c_.hidden_dim);
      for (int i = 0; i < c_.hidden_dim; ++i) a[i] = a[i] / (1 + std::exp(-a[i])) * b[i];
      std::vector<double> f = Mul(lw.w2, a, dim);
      for (int i = 0; i < dim; ++i) x[i] += f[i];
    }
    return Mul(w_->classifier(), Norm(x, w_->rms_final()), c_.vocab_size);
  }

 private:
  std::vector<double> Norm(const std::vector<double>& x, const float* weight) {
    double ss = 0;
    for (double v : x) ss += v * v;
    ss = 1.0 / std::sqrt(ss / x.size() + c_.norm_eps);
    std::vector<double> out(x.size());
    for (size_t i = 0; i < x.size(); ++i) out[i] = weight[i] * ss * x[i];
    return out;
  }
  std::vector<double> Mul(const WeightMatrix& w, const std::vector<double>& x, int rows) {
    std::vector<double> out(rows, 0.0);
    std::vector<float> row(x.size());
    for (int r = 0; r < rows; ++r) {
      w.RowToFloat(r, row.data());
      for (size_t i = 0; i < x.size(); ++i) out[r] += double(row[i]) * x[i];
    }
    return out;
  }
  void Rope(std::vector<double>* v, int pos) {
    for (size_t i = 0; i < v->size(); i += 2) {
      const double angle = pos / std::pow(double(c_.rope_theta), double(i % c_.head_dim) / c_.head_dim);
      const double a = (*v)[i], b = (*v)[i + 1];
      (*v)[i] = a * std::cos(angle) - b * std::sin(angle);
      (*v)[i + 1] = a * std::sin(angle) + b * std::cos(angle);
    }
  }
  const ModelWeights* w_;
  const ModelConfig c_;
  std::vector<std::vector<std::vector<double>>> keys_, values_;
};

TEST(Engine, EvictionChangesLogitsOnlyThroughTheEvictedEntries) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  const ModelConfig& c = weights->config();
  const std::vector<int> ids = Goldens()["bos_only"]["ids"].get<std::vector<int>>();
  for (const char* name : {"a2sf", "h2o", "streaming_llm", "local"}) {
    SCOPED_TRACE(name);
    auto policy = Policy(*weights, name, 7, std::string(name) == "a2sf" ? std::optional<double>(0.5) : std::nullopt);
    auto engine = *Engine::Create(weights.get(), {1, 8});
    MaskedReference reference(weights.get());
    // Expected visible positions, maintained from the decisions alone.
    std::vector<std::vector<std::set<int>>> visible(c.n_layers, std::vector<std::set<int>>(c.n_kv_heads));
    double worst = 0;
    for (int pos = 0; pos < 40; ++pos) {
      for (auto& layer : visible) {
        for (auto& head : layer) head.insert(pos);
      }
      ASSERT_TRUE(engine->Forward(ids[pos], pos).ok());
      const std::vector<double> expected = reference.Forward(ids[pos], pos, visible);
      for (int v = 0; v < c.vocab_size; ++v) worst = std::max(worst, std::fabs(engine->logits()[v] - expected[v]));
      auto decision = policy->Step(pos, pos, engine->step_scores());
      ASSERT_TRUE(decision.ok()) << decision.status();
      ASSERT_TRUE(engine->Evict(decision->evictions_per_head, decision->evicted_slots, decision->evicted_positions).ok());
      for (uint32_t h = 0; h < uint32_t(c.n_layers * c.n_kv_heads); ++h) {
        for (uint32_t j = 0; j < decision->evictions_per_head; ++j) {
          const int p = int(decision->evicted_positions[h * decision->evictions_per_head + j]);
          ASSERT_EQ(visible[h / c.n_kv_heads][h % c.n_kv_heads].erase(p), 1u);
        }
      }
    }
    EXPECT_LT(worst, 1e-4);
    EXPECT_EQ(engine->cache().entries(), 7);
  }
}

// Passes everything to a policy and keeps the decisions it hands out, by step.
class RecordingPolicy final : public EvictionPolicyClient {
 public:
  explicit RecordingPolicy(EvictionPolicyClient* inner) : inner_(inner) {}
  absl::StatusOr<EvictionDecision> Step(uint64_t step, uint32_t position, absl::Span<const float> scores) override {
    return inner_->Step(step, position, scores);
  }
  absl::Status SubmitStep(uint64_t step, uint32_t position, absl::Span<const float> scores) override {
    submitted_.push_back(step);
    return inner_->SubmitStep(step, position, scores);
  }
  absl::StatusOr<EvictionDecision> AwaitDecision() override {
    auto decision = inner_->AwaitDecision();
    if (decision.ok()) decisions[submitted_[decisions.size()]] = *decision;
    return decision;
  }
  absl::StatusOr<EvictionDecision> BulkPrefill(uint32_t, uint32_t, absl::Span<const float>) override {
    return absl::UnimplementedError("not used");
  }
  uint32_t decision_lag() const override { return inner_->decision_lag(); }
  uint32_t budget_tokens() const override { return inner_->budget_tokens(); }
  bool evicts() const override { return inner_->evicts(); }
  std::map<uint64_t, EvictionDecision> decisions;

 private:
  EvictionPolicyClient* inner_;
  std::vector<uint64_t> submitted_;
};

TEST(Engine, PipelinedDecisionsAreAppliedKStepsLateByPosition) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  const ModelConfig& c = weights->config();
  const std::vector<int> ids = Goldens()["bos_only"]["ids"].get<std::vector<int>>();
  constexpr uint32_t kBudget = 7, kLag = 3;
  auto inner = Policy(*weights, "a2sf", kBudget, 0.5, kLag);
  RecordingPolicy policy(inner.get());
  const int capacity = RequiredCacheCapacity(&policy, 1, 40, false);
  EXPECT_EQ(capacity, int(kBudget + 1 + kLag + 1));  // K pending victims, one slot for a fallback
  auto engine = *Engine::Create(weights.get(), {1, capacity});
  DecisionApplier applier(engine.get(), &policy);
  MaskedReference reference(weights.get());
  std::vector<std::vector<std::set<int>>> visible(c.n_layers, std::vector<std::set<int>>(c.n_kv_heads));
  double worst = 0;
  int most_entries = 0;
  for (int pos = 0; pos < 40; ++pos) {
    // The rule: decision t is in effect from the token of step t + K + 1 on.
    if (pos >= int(kLag) + 1) {
      const uint64_t due = uint64_t(pos) - kLag - 1;
      ASSERT_TRUE(policy.decisions.count(due)) << "decision " << due << " was not collected before step " << pos;
      const EvictionDecision& d = policy.decisions[due];
      EXPECT_TRUE(d.evicted_slots.empty());
      for (uint32_t h = 0; h < uint32_t(c.n_layers * c.n_kv_heads); ++h) {
        for (uint32_t j = 0; j < d.evictions_per_head; ++j) {
          ASSERT_EQ(visible[h / c.n_kv_heads][h % c.n_kv_heads].erase(int(d.evicted_positions[h * d.evictions_per_head + j])), 1u);
        }
      }
    }
    for (auto& layer : visible) {
      for (auto& head : layer) head.insert(pos);
    }
    ASSERT_TRUE(engine->Forward(ids[pos], pos).ok()) << "pos " << pos;
    most_entries = std::max(most_entries, engine->cache().entries());
    const std::vector<double> expected = reference.Forward(ids[pos], pos, visible);
    for (int v = 0; v < c.vocab_size; ++v) worst = std::max(worst, std::fabs(engine->logits()[v] - expected[v]));
    ASSERT_TRUE(applier.AfterToken(uint64_t(pos), uint32_t(pos)).ok());
  }
  EXPECT_LT(worst, 1e-4);
  EXPECT_EQ(most_entries, int(kBudget + 1 + kLag));  // never more than K over the synchronous cache
  EXPECT_EQ(applier.evictions(), uint64_t(40 - kBudget - kLag) * c.n_layers * c.n_kv_heads);
}

// Local keeps the newest entries; with decisions K steps late the engine attends to K more of them,
// which is exactly synchronous Local with a budget K larger.
TEST(Engine, PipelinedLocalEqualsSynchronousLocalWithKMoreBudget) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  const std::vector<int> prompt = {1, 317, 269, 274, 287};
  for (uint32_t lag : {1u, 3u, 6u}) {
    auto lagged = Policy(*weights, "local", 8, {}, lag);
    auto wider = Policy(*weights, "local", 8 + lag);
    auto e1 = *Engine::Create(weights.get(), {1, RequiredCacheCapacity(lagged.get(), 5, 150, false)});
    auto e2 = *Engine::Create(weights.get(), {1, RequiredCacheCapacity(wider.get(), 5, 150, false)});
    EXPECT_EQ(Greedy(e1.get(), lagged.get(), prompt, 150), Greedy(e2.get(), wider.get(), prompt, 150)) << lag;
  }
}

// Element `e` of a slot's key (value: `values`) as a float, in any of the cache's types (q8_0 rows by
// the weights' decoder).
float RowAt(const KvCacheSlots& cache, int layer, int head, int slot, int e, bool values = false) {
  const void* rows = values ? cache.values(layer, head) : cache.keys(layer, head);
  const size_t at = size_t(slot) * cache.head_dim() + e;
  if (cache.kv_type() == WeightType::kF16) return HalfToFloat(static_cast<const uint16_t*>(rows)[at]);
  if (cache.kv_type() == WeightType::kQ8_0) {
    std::vector<float> row(cache.head_dim());
    const uint8_t* bytes = static_cast<const uint8_t*>(rows) + size_t(slot) * Q8_0Bytes(cache.head_dim());
    Traits(WeightType::kQ8_0).to_float(bytes, row.data(), cache.head_dim());
    return row[e];
  }
  return static_cast<const float*>(rows)[at];
}

// A row as a cache of `type` holds it: rounded to fp16, or through q8_0's encoder and decoder.
std::vector<float> Held(WeightType type, std::vector<float> row) {
  if (type == WeightType::kF16) {
    for (float& v : row) v = HalfToFloat(FloatToHalf(v));
  } else if (type == WeightType::kQ8_0) {
    std::vector<uint8_t> bytes(Q8_0Bytes(int64_t(row.size())));
    Traits(type).from_float(row.data(), bytes.data(), int64_t(row.size()));
    Traits(type).to_float(bytes.data(), row.data(), int64_t(row.size()));
  }
  return row;
}

class KvCacheTypes : public ::testing::TestWithParam<WeightType> {};

TEST_P(KvCacheTypes, EvictPositionsFindsTheSlotsAndRefusesUnknownPositions) {
  // A row of 3: 12 bytes in f32, 6 in f16, one short q8_0 block of 2 + 3 bytes.
  const size_t row_bytes = GetParam() == WeightType::kF16 ? 6 : GetParam() == WeightType::kQ8_0 ? 5 : 12;
  KvCacheSlots cache(1, 2, 3, 6, GetParam());  // 1 layer, 2 heads, head_dim 3, 6 slots
  EXPECT_EQ(cache.bytes_allocated(), 2 * 6 * 2 * row_bytes);
  // Every element of every row distinct (small integers and halves: exact in fp16 too; q8_0 holds
  // them as its encoder rounds them).
  auto raw_key = [](uint32_t p, int g, int e) { return float(p * 10 + g) + 0.5f * float(e); };
  auto key_of = [&](uint32_t p, int g, int e) {
    return Held(GetParam(), {raw_key(p, g, 0), raw_key(p, g, 1), raw_key(p, g, 2)})[e];
  };
  auto value_of = [&](uint32_t p, int g, int e) {
    return Held(GetParam(), {-raw_key(p, g, 0), -raw_key(p, g, 1), -raw_key(p, g, 2)})[e];
  };
  for (uint32_t p = 10; p < 15; ++p) {
    for (int g = 0; g < 2; ++g) {
      float key[3], value[3];
      for (int e = 0; e < 3; ++e) key[e] = raw_key(p, g, e), value[e] = -raw_key(p, g, e);
      cache.Store(0, g, cache.append_slot(), key, value);
      cache.set_position(0, g, cache.append_slot(), p);
    }
    cache.CommitAppend();
  }
  EXPECT_EQ(cache.bytes_held(), 5 * 2 * 2 * row_bytes);
  // Head 0 drops 11 and 13, head 1 drops 14 and 10.
  ASSERT_TRUE(cache.EvictPositions(2, std::vector<uint32_t>{11, 13, 14, 10}).ok());
  EXPECT_EQ(cache.entries(), 3);
  std::multiset<uint32_t> head0, head1;
  for (int s = 0; s < 3; ++s) {
    head0.insert(cache.position(0, 0, s));
    head1.insert(cache.position(0, 1, s));
    for (int g = 0; g < 2; ++g) {  // whole keys and values moved with their positions
      for (int e = 0; e < 3; ++e) {
        EXPECT_EQ(RowAt(cache, 0, g, s, e), key_of(cache.position(0, g, s), g, e)) << g << " " << s << " " << e;
        EXPECT_EQ(RowAt(cache, 0, g, s, e, /*values=*/true), value_of(cache.position(0, g, s), g, e));
      }
    }
  }
  EXPECT_EQ(head0, (std::multiset<uint32_t>{10, 12, 14}));
  EXPECT_EQ(head1, (std::multiset<uint32_t>{11, 12, 13}));
  // Swap-remove in descending slot order: head 0 held [10..14]; slot 3 (13) <- 14 gives
  // [10, 11, 12, 14], then slot 1 (11) <- the new last, 14.
  EXPECT_EQ(cache.position(0, 0, 0), 10u);
  EXPECT_EQ(cache.position(0, 0, 1), 14u);
  EXPECT_EQ(cache.position(0, 0, 2), 12u);
  // An unknown position, or one named twice, changes nothing.
  EXPECT_EQ(cache.EvictPositions(1, std::vector<uint32_t>{10, 99}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cache.EvictPositions(2, std::vector<uint32_t>{10, 10, 11, 12}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(cache.EvictPositions(1, std::vector<uint32_t>{10}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache.entries(), 3);
  EXPECT_EQ(cache.position(0, 0, 0), 10u);
}

// fp16 saturates: a magnitude beyond 65504 (the largest finite fp16) is held as +-65504, never as
// infinity, whose next scores would be NaN; NaN stays NaN, and values in range round to nearest.
TEST(KvCacheSlots, F16HoldsOutOfRangeValuesAtTheLargestFiniteHalf) {
  // Rows of 8 and of 3: the vector conversion (F16C, eight at a time) and the scalar one.
  for (int head_dim : {8, 3}) {
    KvCacheSlots cache(1, 1, head_dim, 2, WeightType::kF16);
    const float inf = std::numeric_limits<float>::infinity();
    const float key[8] = {1e6f, -1e6f, inf, -inf, 65504.0f, 1.0f + 1.0f / 4096, 3e38f, -0.5f};
    const float value[8] = {std::nanf(""), 65519.0f, 65520.0f, -70000.0f, 0.0f, -2.5f, 1e-9f, 7.0f};
    cache.Store(0, 0, 0, key, value);
    const float keys_held[8] = {65504.0f, -65504.0f, 65504.0f, -65504.0f, 65504.0f, 1.0f, 65504.0f, -0.5f};
    // 65519 rounds down to 65504, 65520 up (to infinity, then held at 65504); 1e-9 underflows to 0.
    const float values_held[8] = {0.0f, 65504.0f, 65504.0f, -65504.0f, 0.0f, -2.5f, 0.0f, 7.0f};
    for (int e = 0; e < head_dim; ++e) {
      EXPECT_EQ(RowAt(cache, 0, 0, 0, e), keys_held[e]) << head_dim << " " << e;
      if (e == 0) {
        EXPECT_TRUE(std::isnan(RowAt(cache, 0, 0, 0, 0, /*values=*/true))) << head_dim;
      } else {
        EXPECT_EQ(RowAt(cache, 0, 0, 0, e, /*values=*/true), values_held[e]) << head_dim << " " << e;
      }
    }
  }
}

// q8_0 saturates too: values beyond 65504 x 127 (where the block's fp16 scale would be infinite) are
// held at +-65504 x 127, and a NaN as 0, so no row holds a non-finite value; a block's other values
// keep their 8 bits of its largest magnitude.
TEST(KvCacheSlots, Q8_0HoldsOutOfRangeValuesFinite) {
  const float inf = std::numeric_limits<float>::infinity(), largest = 65504.0f * 127.0f;
  // head_dim 40: a full block of 32, then a short one of 8 (the values below land in both).
  KvCacheSlots cache(1, 1, 40, 2, WeightType::kQ8_0);
  std::vector<float> key(40, 0.0f), value(40, 0.0f);
  key[0] = inf, key[1] = -1e30f, key[2] = std::nanf(""), key[3] = 1.0f;
  key[33] = 100.0f, key[34] = -50.0f, key[35] = 1e-3f;
  value[32] = std::nanf(""), value[39] = -inf;
  cache.Store(0, 0, 0, key.data(), value.data());
  EXPECT_EQ(RowAt(cache, 0, 0, 0, 0), largest);
  EXPECT_EQ(RowAt(cache, 0, 0, 0, 1), -largest);
  EXPECT_EQ(RowAt(cache, 0, 0, 0, 2), 0.0f);
  EXPECT_EQ(RowAt(cache, 0, 0, 0, 3), 0.0f);  // 1 is below half a step of 65504
  // The short block's scale is 100 / 127 in fp16; -50 / (100 / 127) = -63.5 rounds away from zero.
  const float step = HalfToFloat(FloatToHalf(100.0f / 127.0f));
  EXPECT_EQ(RowAt(cache, 0, 0, 0, 33), 127.0f * step);
  EXPECT_EQ(RowAt(cache, 0, 0, 0, 34), -64.0f * step);
  EXPECT_EQ(RowAt(cache, 0, 0, 0, 35), 0.0f);
  EXPECT_EQ(RowAt(cache, 0, 0, 0, 32, /*values=*/true), 0.0f);
  EXPECT_EQ(RowAt(cache, 0, 0, 0, 39, /*values=*/true), -largest);
  for (int e = 0; e < 40; ++e) {
    EXPECT_TRUE(std::isfinite(RowAt(cache, 0, 0, 0, e))) << e;
    EXPECT_TRUE(std::isfinite(RowAt(cache, 0, 0, 0, e, /*values=*/true))) << e;
  }
  // A block of tiny values, whose scale (amax / 127) has an infinite inverse: held as zeros (its
  // fp16 scale is 0), never through a conversion of infinity to int8.
  std::vector<float> tiny(40, 0.0f);
  tiny[0] = 1e-37f, tiny[1] = -5e-38f, tiny[2] = 3e-38f, tiny[32] = 1e-40f;
  cache.Store(0, 0, 1, tiny.data(), tiny.data());
  for (int e = 0; e < 40; ++e) EXPECT_EQ(RowAt(cache, 0, 0, 1, e), 0.0f) << e;
}

// A q8_0 cache whose heads are whole blocks (head_dim 64: two blocks of 32 a row) on a random model
// of that shape: its logits stay near an f32 cache's (the attention is over keys and values rounded
// to 8 bits; measured worst 0.6% of the largest logit, bound 2%), and several engines' rows in one pass --
// attention shared out over (row, KV head) -- give the same logits and scores bit for bit on 1, 2
// and 3 threads, and the same as each engine's rows run on their own.
TEST(Engine, Q8_0KvCacheOnWholeBlocksAndBatchedRowsOnAnyThreadCount) {
  ModelConfig c;
  c.dim = 128, c.hidden_dim = 256, c.n_layers = 2, c.n_heads = 2, c.n_kv_heads = 2, c.vocab_size = 64;
  c.seq_len = 256, c.head_dim = 64;
  auto weights = MakeSyntheticModel(c, 5, WeightType::kF32);
  ASSERT_TRUE(weights.ok()) << weights.status();
  constexpr int kRows = 40;  // per engine and pass: 2 engines x 40 rows x 20 slots x 64 x 2 > the threshold
  ASSERT_GE(size_t(2) * kRows * (kRows / 2) * c.head_dim * c.n_heads, ForwardPass::kParallelAttentionWork);
  struct Run {
    std::vector<float> logits, scores;
  };
  auto run = [&](int threads, WeightType kv_type, bool together) {
    EngineOptions options;
    options.kv_type = kv_type;
    std::unique_ptr<Engine> engines[2] = {*Engine::Create(weights->get(), options),
                                          *Engine::Create(weights->get(), options)};
    ForwardPass pass(weights->get(), threads);
    Run out;
    for (int chunk = 0; chunk < 3; ++chunk) {  // 120 positions in chunks of 40 rows per engine
      std::vector<ForwardRow> rows;
      for (int e = 0; e < 2; ++e) {
        for (int r = 0; r < kRows; ++r) {
          const int position = chunk * kRows + r;
          rows.push_back({engines[e].get(), 1 + (position * 7 + e * 13) % (c.vocab_size - 1), position});
        }
      }
      if (together) {
        EXPECT_TRUE(pass.Run(rows).ok());
      } else {
        EXPECT_TRUE(pass.Run(absl::MakeConstSpan(rows).subspan(0, kRows)).ok());
        EXPECT_TRUE(pass.Run(absl::MakeConstSpan(rows).subspan(kRows)).ok());
      }
      for (auto& engine : engines) {
        for (int r = 0; r < kRows; ++r) {
          out.logits.insert(out.logits.end(), engine->logits(r).begin(), engine->logits(r).end());
          out.scores.insert(out.scores.end(), engine->step_scores(r).begin(), engine->step_scores(r).end());
        }
      }
    }
    return out;
  };
  const Run one = run(1, WeightType::kQ8_0, true);
  for (int threads : {2, 3}) {
    for (bool together : {true, false}) {
      const Run other = run(threads, WeightType::kQ8_0, together);
      EXPECT_EQ(one.logits, other.logits) << threads << " threads, together " << together;
      EXPECT_EQ(one.scores, other.scores) << threads << " threads, together " << together;
    }
  }
  const Run exact = run(1, WeightType::kF32, true);
  ASSERT_EQ(exact.logits.size(), one.logits.size());
  float largest = 0.0f, worst = 0.0f;
  for (size_t i = 0; i < one.logits.size(); ++i) {
    largest = std::max(largest, std::fabs(exact.logits[i]));
    worst = std::max(worst, std::fabs(one.logits[i] - exact.logits[i]));
  }
  EXPECT_LT(worst, 0.02f * largest);
  EXPECT_GT(worst, 0.0f);  // the q8_0 path ran
}

INSTANTIATE_TEST_SUITE_P(EveryKvType, KvCacheTypes,
                         ::testing::Values(WeightType::kF32, WeightType::kF16, WeightType::kQ8_0),
                         [](const ::testing::TestParamInfo<WeightType>& info) { return WeightTypeName(info.param); });

TEST(Engine, ScoresAreTheGroupSumsOfSoftmaxRows) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  auto engine = *Engine::Create(weights.get(), {});
  for (int pos = 0; pos < 6; ++pos) {
    ASSERT_TRUE(engine->Forward(kGoldenTokens[pos], pos).ok());
    auto scores = engine->step_scores();
    ASSERT_EQ(scores.size(), size_t(5 * 4 * (pos + 1)));
    // Each KV head sums two softmax rows: its scores add up to 2.
    for (int h = 0; h < 20; ++h) {
      double sum = 0;
      for (int t = 0; t <= pos; ++t) sum += scores[h * (pos + 1) + t];
      EXPECT_NEAR(sum, 2.0, 1e-5);
    }
  }
}

TEST(Engine, BulkPrefillKeepsTheBudgetAndEqualsPerTokenWhenNothingIsEvicted) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  const std::vector<int> prompt = {1, 291, 376, 400, 428, 286, 296, 418, 329, 429, 412, 425, 372};
  // Budget >= the whole sequence: bulk and per-token agree exactly.
  auto per_token = Policy(*weights, "a2sf", 60, 0.5);
  auto bulk = Policy(*weights, "a2sf", 60, 0.5);
  auto e1 = *Engine::Create(weights.get(), {1, 61});
  auto e2 = *Engine::Create(weights.get(), {1, 61});
  EXPECT_EQ(Greedy(e1.get(), per_token.get(), prompt, 50), Greedy(e2.get(), bulk.get(), prompt, 50, true));
  // A budget smaller than the prompt: one decision after the prompt leaves exactly the budget.
  auto small = Policy(*weights, "a2sf", 5, 0.5);
  auto e3 = *Engine::Create(weights.get(), {1, 13});
  GenerateOptions options;
  options.max_new_tokens = 1;
  options.bulk_prefill = true;
  auto result = Generate(e3.get(), small.get(), prompt, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(e3->cache().entries(), 5);
  EXPECT_EQ(result->evictions, uint64_t(13 - 5) * 20);
}

TEST(Engine, BadInputsAreRejectedWithoutHarm) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  auto engine = *Engine::Create(weights.get(), {1, 3});
  EXPECT_EQ(engine->Forward(512, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Forward(-1, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Forward(1, 512).code(), absl::StatusCode::kInvalidArgument);
  for (int p = 0; p < 3; ++p) ASSERT_TRUE(engine->Forward(kGoldenTokens[p], p).ok());
  EXPECT_EQ(engine->Forward(1, 3).code(), absl::StatusCode::kFailedPrecondition);  // full
  // Malformed decisions change nothing.
  const std::vector<uint32_t> ascending(20 * 2, 0);
  EXPECT_EQ(engine->Evict(2, ascending).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Evict(1, std::vector<uint32_t>(19, 0)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Evict(1, std::vector<uint32_t>(20, 3)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Evict(1, std::vector<uint32_t>(20, 0), std::vector<uint32_t>(20, 2)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine->cache().entries(), 3);
  EXPECT_TRUE(engine->Evict(1, std::vector<uint32_t>(20, 0), std::vector<uint32_t>(20, 0)).ok());
  EXPECT_EQ(engine->cache().position(0, 0, 0), 2u);  // the last entry moved into slot 0
  EXPECT_FALSE(Engine::Create(weights.get(), {0, 0}).ok());
  EXPECT_FALSE(Engine::Create(weights.get(), {1, 513}).ok());

  auto big = *Engine::Create(weights.get(), {});
  GenerateOptions options;
  options.max_new_tokens = 10;
  EXPECT_EQ(Generate(big.get(), nullptr, {}, options).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Generate(big.get(), nullptr, {1, 9999}, options).status().code(), absl::StatusCode::kInvalidArgument);
  options.max_new_tokens = 512;
  EXPECT_NE(Generate(big.get(), nullptr, {1, 2, 3}, options).status().message().find("context"), std::string::npos);
  options.max_new_tokens = 5;
  options.sampling.top_p = 1.5f;
  EXPECT_NE(Generate(big.get(), nullptr, {1}, options).status().message().find("top_p"), std::string::npos);
}

TEST(Engine, SeededSamplingIsReproducibleAndCancelStops) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  auto engine = *Engine::Create(weights.get(), {});
  GenerateOptions options;
  options.max_new_tokens = 80;
  options.sampling = {1.0f, 0.9f, 42};
  auto a = Generate(engine.get(), nullptr, {1}, options);
  auto b = Generate(engine.get(), nullptr, {1}, options);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->generated, b->generated);
  options.sampling.seed = 43;
  EXPECT_NE(Generate(engine.get(), nullptr, {1}, options)->generated, a->generated);
  int seen = 0;
  GenerateCallbacks callbacks;
  callbacks.on_token = [&](const TokenEvent&) { return ++seen < 3 ? TokenVerdict::kContinue : TokenVerdict::kCancel; };
  auto cancelled = Generate(engine.get(), nullptr, {1}, options, callbacks);
  ASSERT_TRUE(cancelled.ok());
  EXPECT_EQ(cancelled->generated.size(), 3u);
  EXPECT_EQ(cancelled->finish_reason, FinishReason::kCancelled);
}

}  // namespace
}  // namespace a2sf::worker

namespace a2sf::worker {
namespace {

TEST(Generate, ZeroMaxTokensRunsUntilTheContextIsFull) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  auto engine = *Engine::Create(weights.get(), {});
  GenerateOptions options;
  options.max_new_tokens = 0;
  options.stop_on_eos = false;
  auto result = Generate(engine.get(), nullptr, {1, 403}, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->finish_reason, FinishReason::kContextFull);
  EXPECT_EQ(int(result->generated.size()), weights->config().seq_len - 1);  // 2 + n - 1 = seq_len
}

TEST(Generate, StopTokenIdsEndTheJobAndMinTokensBansThemUntilReached) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  auto engine = *Engine::Create(weights.get(), {});
  GenerateOptions options;
  options.max_new_tokens = 40;
  options.stop_on_eos = false;
  auto free_run = Generate(engine.get(), nullptr, {1}, options);
  ASSERT_TRUE(free_run.ok());
  const int stop = free_run->generated[5];
  const size_t first = std::find(free_run->generated.begin(), free_run->generated.end(), stop) - free_run->generated.begin();
  options.stop_token_ids = {stop};
  auto stopped = Generate(engine.get(), nullptr, {1}, options);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->finish_reason, FinishReason::kStopToken);
  EXPECT_EQ(stopped->generated,
            std::vector<int>(free_run->generated.begin(), free_run->generated.begin() + first + 1));
  options.min_tokens = int(first) + 3;
  auto delayed = Generate(engine.get(), nullptr, {1}, options);
  ASSERT_TRUE(delayed.ok());
  ASSERT_GE(int(delayed->generated.size()), options.min_tokens);
  for (int i = 0; i < options.min_tokens - 1; ++i) EXPECT_NE(delayed->generated[i], stop) << i;
  options.min_tokens = 41;
  EXPECT_NE(Generate(engine.get(), nullptr, {1}, options).status().message().find("min_tokens"), std::string::npos);
  options.min_tokens = 0;
  options.stop_token_ids = {512};
  EXPECT_NE(Generate(engine.get(), nullptr, {1}, options).status().message().find("stop_token_ids"), std::string::npos);
}

TEST(Generate, PromptLogitsAreTheEnginesAtEachPromptPosition) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  auto engine = *Engine::Create(weights.get(), {});
  auto reference = *Engine::Create(weights.get(), {});
  const std::vector<int> prompt(kGoldenTokens, kGoldenTokens + 8);
  std::vector<int> positions;
  float worst = 0;
  GenerateCallbacks callbacks;
  callbacks.on_prompt_logits = [&](int position, absl::Span<const float> logits) {
    positions.push_back(position);
    EXPECT_TRUE(reference->Forward(prompt[position], position).ok());
    for (size_t v = 0; v < logits.size(); ++v) worst = std::max(worst, std::fabs(logits[v] - reference->logits()[v]));
  };
  GenerateOptions options;
  options.max_new_tokens = 2;
  ASSERT_TRUE(Generate(engine.get(), nullptr, prompt, options, callbacks).ok());
  EXPECT_EQ(positions, (std::vector<int>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(worst, 0.0f);
}

// The GPU kernels read rows: an engine on the GPU refuses a model loaded in panels (checked before
// looking for a GPU, so this runs anywhere), and a model loaded in rows gets past that check.
TEST(Engine, TheGpuEngineRefusesAModelInPanels) {
  EngineOptions options;
  options.device = EngineDevice::kCuda;
  auto panels = MakeSyntheticModel(*NamedShape("stories260K"), 1);
  ASSERT_TRUE(panels.ok());
  absl::StatusOr<std::unique_ptr<Engine>> refused = Engine::Create(panels->get(), options);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("panels"), std::string::npos) << refused.status();
  auto rows = MakeSyntheticModel(*NamedShape("stories260K"), 1, WeightType::kF32, /*panels=*/false);
  ASSERT_TRUE(rows.ok());
  EXPECT_NE(Engine::Create(rows->get(), options).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace a2sf::worker
