#include <algorithm>
#include <cmath>
#include <fstream>
#include <iterator>
#include <set>

#include "eval/fidelity.h"
#include "eval/multiple_choice.h"
#include "eval/plots.h"
#include "eval/sweep.h"
#include "gtest/gtest.h"
#include "worker/engine/engine.h"
#include "worker/testing/fixtures.h"

namespace a2sf::eval {
namespace {

using worker::testing::FixturesDir;

TEST(Metrics, HandComputedCases) {
  std::vector<double> lp;
  LogSoftmax(std::vector<float>{0.0f, 0.0f}, &lp);
  EXPECT_NEAR(lp[0], std::log(0.5), 1e-12);
  const std::vector<double> p = {std::log(0.5), std::log(0.5)}, q = {std::log(0.25), std::log(0.75)};
  EXPECT_EQ(KlDivergence(p, p), 0.0);
  // 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75)
  EXPECT_NEAR(KlDivergence(p, q), 0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0), 1e-12);
  EXPECT_NEAR(CosineSimilarity(std::vector<float>{1, 0}, std::vector<float>{0, 1}), 0.0, 1e-12);
  EXPECT_NEAR(CosineSimilarity(std::vector<float>{1, 2}, std::vector<float>{2, 4}), 1.0, 1e-12);
  EXPECT_NEAR(CosineSimilarity(std::vector<float>{1, 0}, std::vector<float>{-1, 0}), -1.0, 1e-12);
  EXPECT_EQ(CosineSimilarity(std::vector<float>{0, 0}, std::vector<float>{0, 0}), 1.0);
}

class EvalOnFixtures : public ::testing::Test {
 protected:
  void SetUp() override {
    if (FixturesDir().empty()) GTEST_SKIP() << "stories260K fixtures not found (set A2SF_FIXTURES)";
    weights_ = std::move(*worker::LoadModel(FixturesDir() + "/stories260K-dq.bin"));
    auto corpus = ReadCorpus(FixturesDir() + "/corpus_t1_p09_seeds1-20.jsonl");
    ASSERT_TRUE(corpus.ok()) << corpus.status();
    ASSERT_EQ(corpus->size(), 20u);
    corpus_ = *corpus;
  }
  std::unique_ptr<worker::ModelWeights> weights_;
  std::vector<std::vector<int>> corpus_;
};

TEST_F(EvalOnFixtures, FullRunReproducesTheGoldenLogits) {
  const std::vector<int> ids = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426, 338};
  auto ref = RunFullCache(*weights_, ids);
  ASSERT_TRUE(ref.ok());
  std::ifstream in(FixturesDir() + "/golden_logits16.f32", std::ios::binary);
  std::vector<float> golden(16 * 512);
  in.read(reinterpret_cast<char*>(golden.data()), golden.size() * 4);
  std::vector<double> golden_lp;
  for (int t = 0; t < 16; ++t) {
    LogSoftmax(absl::MakeConstSpan(golden).subspan(t * 512, 512), &golden_lp);
    for (int v = 0; v < 512; ++v) ASSERT_NEAR(ref->log_probs[t][v], golden_lp[v], 2e-4) << t << " " << v;
    EXPECT_EQ(ref->argmax[t], ids[t + 1]);
  }
}

TEST_F(EvalOnFixtures, WeightTypesAreComparedWithTheF32FullCache) {
  std::vector<std::vector<int>> two(corpus_.begin(), corpus_.begin() + 2);
  std::vector<FullReference> refs;
  for (const auto& ids : two) refs.push_back(*RunFullCache(*weights_, ids));
  auto same = CompareTypes(*weights_, two, refs);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->top1_agreement, 1.0);
  EXPECT_EQ(same->mean_kl, 0.0);
  worker::LoadOptions options;
  options.weights = worker::WeightType::kQ4_0;
  auto q4 = worker::LoadModel(FixturesDir() + "/stories260K-dq.bin", options);
  ASSERT_TRUE(q4.ok()) << q4.status();
  auto f = CompareTypes(**q4, two, refs);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_LT(f->top1_agreement, 0.99);
  EXPECT_GT(f->mean_kl, 1e-3);
  EXPECT_GT(f->perplexity_policy, f->perplexity_full);
}

// An f16 KV cache against the f32 one (full caches, the same weights): nearly always the same top-1
// (issue 12's bar for f16 weights is 0.999; measured over the whole corpus: 0.9995), a tiny but
// nonzero KL; and references taken with f16 caches agree with the f16 cells exactly.
TEST_F(EvalOnFixtures, AnF16KvCacheIsComparedWithTheF32One) {
  std::vector<std::vector<int>> four(corpus_.begin(), corpus_.begin() + 4);
  std::vector<FullReference> f32_refs, f16_refs;
  for (const auto& ids : four) {
    f32_refs.push_back(*RunFullCache(*weights_, ids));
    f16_refs.push_back(*RunFullCache(*weights_, ids, worker::WeightType::kF16));
  }
  auto f = CompareTypes(*weights_, four, f32_refs, worker::WeightType::kF16);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_GE(f->top1_agreement, 0.995);
  EXPECT_GT(f->mean_kl, 0.0);
  EXPECT_LT(f->mean_kl, 1e-4);
  auto same = CompareTypes(*weights_, four, f16_refs, worker::WeightType::kF16);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->top1_agreement, 1.0);
  EXPECT_EQ(same->mean_kl, 0.0);
}

TEST_F(EvalOnFixtures, ABudgetCoveringTheSequenceScoresExactlyAsFull) {
  std::vector<std::vector<int>> two(corpus_.begin(), corpus_.begin() + 2);
  std::vector<FullReference> refs;
  for (const auto& ids : two) refs.push_back(*RunFullCache(*weights_, ids));
  Cell whole;
  whole.policy.name = "a2sf";
  whole.policy.alpha = 0.3;
  whole.budget_ratio = 1.0;
  auto f = EvaluateCell(*weights_, two, refs, whole);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->top1_agreement, 1.0);
  EXPECT_EQ(f->mean_kl, 0.0);
  EXPECT_DOUBLE_EQ(f->perplexity_policy, f->perplexity_full);
  EXPECT_NEAR(f->mean_cosine, 1.0, 1e-9);
  EXPECT_EQ(f->evictions, 0u);
  // A small window is measurably worse (the metrics can fail).
  Cell small = whole;
  small.policy.name = "local";
  small.policy.alpha.reset();
  small.budget_ratio = 0.1;
  auto g = EvaluateCell(*weights_, two, refs, small);
  ASSERT_TRUE(g.ok());
  EXPECT_LT(g->top1_agreement, 0.95);
  EXPECT_GT(g->mean_kl, 0.01);
  EXPECT_GT(g->perplexity_policy, g->perplexity_full);
  EXPECT_LT(g->mean_cosine, 0.99);
  EXPECT_GT(g->evictions, 0u);
  // KV bytes: the whole sequence's cache vs the 10% window's budget B (+ the entry awaiting eviction).
  const auto& c = weights_->config();
  const double token_bytes = double(c.n_layers) * c.kv_dim() * 2 * sizeof(float);
  double whole_bytes = 0, low = 0, high = 0;
  for (const auto& ids : two) {
    whole_bytes += (ids.size() - 1) * token_bytes / 2;
    const double budget = std::max(1.0, std::floor(0.1 * ids.size()));
    low += budget * token_bytes / 2;
    high += (budget + 1) * token_bytes / 2;
  }
  EXPECT_DOUBLE_EQ(f->kv_bytes_peak, whole_bytes);
  EXPECT_GE(g->kv_bytes_peak, low);
  EXPECT_LE(g->kv_bytes_peak, high);
}

TEST_F(EvalOnFixtures, SweepHasEveryCellAndCsvRows) {
  const auto cells = SweepCells({0.2, 0.5});
  EXPECT_EQ(cells.size(), 2u * (4 + 12 * 2));
  std::vector<std::vector<int>> one(corpus_.begin(), corpus_.begin() + 1);
  std::vector<FullReference> refs = {*RunFullCache(*weights_, one[0])};
  std::vector<Cell> few(cells.begin(), cells.begin() + 6);
  auto results = RunSweep(*weights_, one, refs, few, 2);
  ASSERT_TRUE(results.ok()) << results.status();
  const std::string csv = ToCsv(*results);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 7);
  EXPECT_NE(csv.find("streaming_llm"), std::string::npos);
}

TEST_F(EvalOnFixtures, LagCellsCostFidelityAndLagZeroIsTheSynchronousCell) {
  cachemgr::PolicySpec a2sf;
  a2sf.name = "a2sf";
  a2sf.alpha = 0.3;
  const auto cells = LagCells({a2sf}, 0.2, {0, 8});
  ASSERT_EQ(cells.size(), 3u);  // lag 0, lag 8, and synchronous with 8 more tokens of budget
  EXPECT_EQ(CellLabel(cells[1]), "a2sf(0.3) lag 8");
  EXPECT_EQ(CellLabel(cells[2]), "a2sf(0.3) budget+8");
  std::vector<std::vector<int>> two(corpus_.begin(), corpus_.begin() + 2);
  std::vector<FullReference> refs;
  for (const auto& ids : two) refs.push_back(*RunFullCache(*weights_, ids));
  auto sync = EvaluateCell(*weights_, two, refs, cells[0]);
  auto lagged = EvaluateCell(*weights_, two, refs, cells[1]);
  ASSERT_TRUE(sync.ok() && lagged.ok());
  Cell plain;
  plain.policy = a2sf;
  plain.budget_ratio = 0.2;
  auto same = EvaluateCell(*weights_, two, refs, plain);
  EXPECT_EQ(sync->mean_kl, same->mean_kl);
  EXPECT_NE(lagged->mean_kl, sync->mean_kl);
  // Late decisions evict the same number of entries per step once the cache is full, K steps later.
  EXPECT_LT(lagged->evictions, sync->evictions);
  EXPECT_NE(ToCsv({{cells[1], CellLabel(cells[1]), *lagged}}).find(",0.20,8,"), std::string::npos);
}

TEST_F(EvalOnFixtures, MultipleChoiceFullMatchesADirectEngineComputation) {
  auto tokenizer = *worker::LoadLlama2cTokenizer(FixturesDir() + "/tok512.bin", 512);
  auto task = ReadMcTask("eval/testdata/stories_mc.jsonl");
  ASSERT_TRUE(task.ok()) << task.status();
  EXPECT_EQ(task->name, "stories_mc");
  McPolicy full;
  full.spec.name = "full";
  auto result = ScoreMcTask(*weights_, *tokenizer, *task, 0, full);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->accuracy, 1.0);
  EXPECT_EQ(result->accuracy_norm, 1.0);
  // Independently: the first question's first choice by one engine pass over context + " " + choice
  // encoded as one string, scored from the context's own token count on (lm-eval's split).
  const std::vector<int> prefix = *tokenizer->Encode(task->questions[0].context, true);
  const std::vector<int> all = *tokenizer->Encode(task->questions[0].context + " " + task->questions[0].choices[0], true);
  ASSERT_GT(all.size(), prefix.size());
  auto engine = *worker::Engine::Create(weights_.get(), {});
  double ll = 0;
  std::vector<double> lp;
  for (size_t t = 0; t + 1 < all.size(); ++t) {
    ASSERT_TRUE(engine->Forward(all[t], int(t)).ok());
    if (t + 1 >= prefix.size()) {
      LogSoftmax(engine->logits(), &lp);
      ll += lp[all[t + 1]];
    }
  }
  EXPECT_NEAR(result->log_likelihoods[0][0], ll, 1e-9);
  // One-shot prompts and a policy run too.
  McPolicy local;
  local.spec.name = "local";
  local.budget_ratio = 0.3;
  auto one_shot = ScoreMcTask(*weights_, *tokenizer, *task, 1, local);
  ASSERT_TRUE(one_shot.ok()) << one_shot.status();
  EXPECT_EQ(one_shot->questions, 4u);
}

TEST_F(EvalOnFixtures, EncodePairFollowsLmEvalsRule) {
  auto tokenizer = *worker::LoadLlama2cTokenizer(FixturesDir() + "/tok512.bin", 512);
  const std::string context = "She was very happy and said, \"Thank";
  for (const std::string& continuation : {std::string(" you"), std::string("you"), std::string(" brick wall")}) {
    auto pair = EncodePair(*tokenizer, context, continuation);
    ASSERT_TRUE(pair.ok()) << pair.status();
    const std::vector<int> whole = *tokenizer->Encode(context + continuation, true);
    const std::vector<int> alone = *tokenizer->Encode(context, true);
    EXPECT_EQ(pair->context, alone);
    EXPECT_EQ(pair->continuation, std::vector<int>(whole.begin() + alone.size(), whole.end())) << continuation;
  }
  // Trailing context spaces move to the continuation: "ctx " + "you" splits as "ctx" + " you".
  auto moved = EncodePair(*tokenizer, context + "  ", "you");
  auto written = EncodePair(*tokenizer, context, "  you");
  ASSERT_TRUE(moved.ok() && written.ok());
  EXPECT_EQ(moved->context, *tokenizer->Encode(context, true));
  EXPECT_EQ(moved->continuation, written->continuation);
  // The joined string is not the separate encodings glued: "Thank" + "you" merges across the split.
  auto glued = EncodePair(*tokenizer, context, "you");
  const std::vector<int> separate = *tokenizer->Encode("you", false);
  EXPECT_NE(glued->continuation, separate);
  EXPECT_EQ(EncodePair(*tokenizer, context, "").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EvalOnFixtures, ChoicesWithALeadingSpaceScoreAsTheDelimiterWouldMakeThem) {
  auto tokenizer = *worker::LoadLlama2cTokenizer(FixturesDir() + "/tok512.bin", 512);
  const std::string dir = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  // lm-eval's default target_delimiter " " with bare choices, and choices written with their leading
  // space under target_delimiter "": the same strings, so the same log-likelihoods.
  std::ofstream(dir + "/bare.jsonl") << R"({"context": "Tom and his mom went to the", "choices": ["park", "zzq plo"], "gold": 0})" "\n";
  std::ofstream(dir + "/spaced.jsonl")
      << R"({"context": "Tom and his mom went to the", "choices": [" park", " zzq plo"], "gold": 0, "target_delimiter": ""})" "\n";
  std::ofstream(dir + "/double.jsonl") << R"({"context": "Tom and his mom went to the", "choices": [" park", " zzq plo"], "gold": 0})" "\n";
  McPolicy full;
  full.spec.name = "full";
  auto bare = ScoreMcTask(*weights_, *tokenizer, *ReadMcTask(dir + "/bare.jsonl"), 0, full);
  auto spaced = ScoreMcTask(*weights_, *tokenizer, *ReadMcTask(dir + "/spaced.jsonl"), 0, full);
  auto doubled = ScoreMcTask(*weights_, *tokenizer, *ReadMcTask(dir + "/double.jsonl"), 0, full);
  ASSERT_TRUE(bare.ok() && spaced.ok() && doubled.ok());
  EXPECT_EQ(bare->log_likelihoods, spaced->log_likelihoods);
  EXPECT_EQ(bare->accuracy, 1.0);
  // A leading space under the default delimiter is a second space: a different continuation.
  EXPECT_NE(bare->log_likelihoods[0][0], doubled->log_likelihoods[0][0]);
}

TEST(MultipleChoice, PolicySpecsExpandOverAlphasAndRatios) {
  const std::string dir = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  std::ofstream(dir + "/calibrated.json") << R"({"name": "a2sf", "layer_alphas": [0.5, 0.9, 0.7, 0.3, 0.9]})" "\n";
  auto policies = ParseMcPolicies(
      "full, local,a2sf,a2sf+recent,{\"name\": \"a2sf\", \"alpha\": 0.9, \"recent_window\": 2},"
      "{\"name\":\"streaming_llm\",\"sinks\":1},@" + dir + "/calibrated.json",
      {0.5, 0.9}, {0.1, 0.2});
  ASSERT_TRUE(policies.ok()) << policies.status();
  // full once; local x 2 ratios; a2sf and a2sf+recent x 2 alphas x 2 ratios; the JSON specs x 2 ratios.
  ASSERT_EQ(policies->size(), 1u + 2 + 4 + 4 + 2 + 2 + 2);
  EXPECT_EQ((*policies)[0].spec.name, "full");
  EXPECT_EQ((*policies)[0].budget_ratio, 1.0);
  EXPECT_EQ((*policies)[3].spec.alpha, 0.5);
  EXPECT_EQ((*policies)[3].budget_ratio, 0.1);
  EXPECT_EQ((*policies)[6].spec.alpha, 0.9);
  EXPECT_EQ((*policies)[6].budget_ratio, 0.2);
  EXPECT_FALSE((*policies)[6].recent_half_budget);
  EXPECT_TRUE((*policies)[7].recent_half_budget);
  EXPECT_EQ((*policies)[11].spec.recent_window, 2u);
  EXPECT_EQ((*policies)[13].spec.sinks, 1u);
  EXPECT_EQ((*policies)[15].spec.layer_alphas.size(), 5u);
  EXPECT_FALSE((*policies)[15].spec.alpha.has_value());
  EXPECT_NE(McPolicyLabel((*policies)[7]).find("+recent r0.1"), std::string::npos) << McPolicyLabel((*policies)[7]);
  // Bad items are refused before any scoring, naming the item.
  for (const std::string bad : {"nope", "h2o+recent", "{\"name\": \"a2sf\", \"alpha\": 1.5}", "{\"name\": 3}",
                                 "{\"name\": \"local\", \"wat\": 1}"}) {
    auto r = ParseMcPolicies(bad, {0.3}, {0.2});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad << ": " << r.status();
  }
  EXPECT_EQ(ParseMcPolicies("@/nonexistent.json", {0.3}, {0.2}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ParseMcPolicies("local", {0.3}, {1.5}).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Plots, EverySeriesHasItsOwnStyleAndEveryPlotItsSource) {
  std::set<std::string> styles, colour_dash;
  for (size_t i = 0; i < 55; ++i) {
    const std::string style = SeriesStyle(i);
    styles.insert(style);
    colour_dash.insert(style.substr(0, style.find(" pointtype")));
  }
  EXPECT_EQ(colour_dash.size(), 55u);  // colour + dash alone tell 55 series apart
  EXPECT_EQ(styles.size(), 55u);
  const std::string dir = std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp";
  std::vector<CellResult> results;
  for (double ratio : {0.1, 0.2}) {
    for (const std::string label : {"local", "a2sf(0.9)+recent"}) {
      CellResult r;
      r.label = label;
      r.cell.budget_ratio = ratio;
      r.fidelity.mean_kl = ratio / 10;
      r.fidelity.kv_bytes_peak = ratio * 10240;
      results.push_back(r);
    }
  }
  WritePlots(dir, results, {0.1, 0.2}, "model.bin, corpus.jsonl (2 sequences)");
  std::ifstream gp_in(dir + "/plots.gp");
  const std::string gp((std::istreambuf_iterator<char>(gp_in)), std::istreambuf_iterator<char>());
  // 3 metrics x (budget, alpha, KV bytes) plots, each titled with the source.
  size_t titles = 0;
  for (size_t at = gp.find("corpus.jsonl (2 sequences)"); at != std::string::npos;
       at = gp.find("corpus.jsonl (2 sequences)", at + 1)) {
    ++titles;
  }
  EXPECT_EQ(titles, 9u);
  EXPECT_NE(gp.find("title 'a2sf(0.9)+recent'"), std::string::npos);
  EXPECT_NE(gp.find("'0.001' 1e-3"), std::string::npos);  // log decades in plain numbers
  // The KV-bytes data: per ratio, (KiB, metric) for each policy: local's 0.1 row is 1 KiB and KL 0.01.
  std::ifstream kv(dir + "/kl_vs_kv_bytes.dat");
  double ratio, kib, kl;
  ASSERT_TRUE(kv >> ratio >> kib >> kl);
  EXPECT_EQ(ratio, 0.1);
  EXPECT_DOUBLE_EQ(kib, 1.0);
  EXPECT_DOUBLE_EQ(kl, 0.01);
}

TEST(MultipleChoice, BadTaskFilesNameTheLine) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") + "/bad.jsonl";
  std::ofstream(path) << "{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 0}\n"
                      << "{\"context\": \"b\", \"choices\": [\"x\"], \"gold\": 0}\n";
  auto task = ReadMcTask(path);
  ASSERT_FALSE(task.ok());
  EXPECT_NE(task.status().message().find(":2:"), std::string::npos) << task.status();
  std::ofstream(path) << "{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"gold\": 5}\n";
  EXPECT_NE(ReadMcTask(path).status().message().find("gold"), std::string::npos);
  EXPECT_EQ(ReadMcTask("/nonexistent.jsonl").status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace a2sf::eval
