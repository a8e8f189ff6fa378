#include <cmath>
#include <fstream>

#include "eval/fidelity.h"
#include "eval/multiple_choice.h"
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
  auto same = CompareWeightTypes(*weights_, two, refs);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->top1_agreement, 1.0);
  EXPECT_EQ(same->mean_kl, 0.0);
  worker::LoadOptions options;
  options.weights = worker::WeightType::kQ4_0;
  auto q4 = worker::LoadModel(FixturesDir() + "/stories260K-dq.bin", options);
  ASSERT_TRUE(q4.ok()) << q4.status();
  auto f = CompareWeightTypes(**q4, two, refs);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_LT(f->top1_agreement, 0.99);
  EXPECT_GT(f->mean_kl, 1e-3);
  EXPECT_GT(f->perplexity_policy, f->perplexity_full);
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
  // Independently: the first question's first choice by one engine pass.
  const std::vector<int> prefix = *tokenizer->Encode(task->questions[0].context, true);
  const std::vector<int> cont = *tokenizer->Encode(task->questions[0].choices[0], false);
  auto engine = *worker::Engine::Create(weights_.get(), {});
  double ll = 0;
  std::vector<int> all = prefix;
  all.insert(all.end(), cont.begin(), cont.end());
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
