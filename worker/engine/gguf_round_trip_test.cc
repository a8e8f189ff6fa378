// GGUF end to end: the fixture model converted to GGUF (with tok512 as its tokenizer) gives run.c's
// golden logits and greedy ids again through the engine, and a q8_0 GGUF written by us generates.
#include <cmath>
#include <fstream>
#include <iostream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/engine/engine.h"
#include "worker/engine/generator.h"
#include "worker/model/gguf.h"
#include "worker/model/model_writers.h"
#include "worker/testing/fixtures.h"
#include "worker/testing/goldens.h"
#include "worker/tokenizer/vocabulary.h"

namespace a2sf::worker {
namespace {

using testing::FixturesDir;
using testing::GoldenLogits;
using testing::Goldens;

const int kGoldenTokens[16] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426};

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
}

// `source` (a fixture) written as GGUF in `type` with tok512 as its tokenizer, as a2sf-convert does.
std::string Convert(const std::string& source, std::optional<WeightType> type, const std::string& name) {
  auto model = LoadModel(FixturesDir() + "/" + source);
  EXPECT_TRUE(model.ok()) << model.status();
  gguf::GgufWriter writer;
  AddVocabularyToGguf(*ReadLlama2cVocabulary(FixturesDir() + "/tok512.bin", 512), &writer);
  const std::string path = TempPath(name);
  EXPECT_TRUE(WriteGgufModel(**model, type, &writer, path).ok());
  return path;
}



// Largest |logit - golden| over the 16 golden positions, and how many argmaxes agree.
std::pair<float, int> CompareWithGoldens(const ModelWeights& weights) {
  auto engine = *Engine::Create(&weights, {});
  const std::vector<float> golden = GoldenLogits();
  float worst = 0;
  int same_argmax = 0;
  for (int pos = 0; pos < 16; ++pos) {
    EXPECT_TRUE(engine->Forward(kGoldenTokens[pos], pos).ok());
    const absl::Span<const float> logits = engine->logits();
    int best = 0, golden_best = 0;
    for (int v = 0; v < 512; ++v) {
      worst = std::max(worst, std::fabs(logits[v] - golden[pos * 512 + v]));
      if (logits[v] > logits[best]) best = v;
      if (golden[pos * 512 + v] > golden[pos * 512 + golden_best]) golden_best = v;
    }
    same_argmax += best == golden_best;
  }
  return {worst, same_argmax};
}

std::vector<int> Greedy(const ModelWeights& weights, const std::vector<int>& prompt, int steps) {
  auto engine = *Engine::Create(&weights, {});
  GenerateOptions options;
  options.max_new_tokens = steps - int(prompt.size()) + 1;
  auto result = Generate(engine.get(), nullptr, prompt, options);
  EXPECT_TRUE(result.ok()) << result.status();
  std::vector<int> ids = prompt;
  if (result.ok()) ids.insert(ids.end(), result->generated.begin(), result->generated.end());
  return ids;
}

TEST(GgufRoundTrip, Fp32FromTheBinAndFromTheHfFolderGiveTheGoldens) {
  A2SF_REQUIRE_FIXTURES();
  for (const char* source : {"stories260K-dq.bin", "stories260K-hf"}) {
    const std::string path = Convert(source, WeightType::kF32, "golden.gguf");
    auto weights = LoadModel(path);
    ASSERT_TRUE(weights.ok()) << weights.status();
    const auto [worst, same_argmax] = CompareWithGoldens(**weights);
    EXPECT_LT(worst, 1e-4f) << source;  // the fp32 engine's tolerance (fixtures README)
    EXPECT_EQ(same_argmax, 16) << source;
    // The file's own tokenizer encodes the golden prompts; greedy ids equal run.c's.
    auto tokenizer = LoadTokenizerForModel(path, "");
    ASSERT_TRUE(tokenizer.ok() && *tokenizer != nullptr) << tokenizer.status();
    const nlohmann::json goldens = Goldens();
    for (const auto& p : goldens["prompts"]) {
      const std::vector<int> prompt = *(*tokenizer)->Encode(p["prompt"].get<std::string>(), true);
      EXPECT_EQ(prompt, p["prompt_ids"].get<std::vector<int>>());
      EXPECT_EQ(Greedy(**weights, prompt, p["steps"].get<int>()), p["ids"].get<std::vector<int>>())
          << source << ": " << p["prompt"];
    }
  }
}

TEST(GgufRoundTrip, Q8_0WrittenByUsLoadsAndGenerates) {
  A2SF_REQUIRE_FIXTURES();
  auto weights = LoadModel(Convert("stories260K-dq.bin", WeightType::kQ8_0, "q8.gguf"));
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ((*weights)->layer(0).wq.type, WeightType::kQ8_0);
  const auto [worst, same_argmax] = CompareWithGoldens(**weights);
  std::cout << "q8_0 vs golden logits: max |diff| " << worst << ", argmax agrees at " << same_argmax << "/16\n";
  EXPECT_EQ(same_argmax, 16);
  EXPECT_LT(worst, 0.05f);  // measured 0.009: the fixture is itself a dequantized q8_0 model
  const nlohmann::json goldens = Goldens();
  const std::vector<int> want = goldens["bos_only"]["ids"].get<std::vector<int>>();
  const std::vector<int> got = Greedy(**weights, {1}, 256);
  ASSERT_EQ(got.size(), want.size());
  size_t agree = 0;
  while (agree < got.size() && got[agree] == want[agree]) ++agree;
  std::cout << "q8_0 greedy follows the fp32 goldens for " << agree << " of " << want.size() << " ids\n";
  EXPECT_GE(agree, 128u);  // measured: all 257
}

}  // namespace
}  // namespace a2sf::worker
