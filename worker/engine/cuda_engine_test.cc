// The engine's CUDA backend against the fixtures' goldens and against the CPU backend, step by step,
// with evictions. Every GPU test skips, saying why, when cudaGetDeviceCount reports no usable GPU.
#include <cmath>
#include <fstream>
#include <random>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "common/cuda/ipc.h"
#include "worker/engine/cuda/cuda_forward.h"
#include "worker/engine/engine.h"
#include "worker/engine/matmul.h"
#include "worker/engine/generator.h"
#include "worker/policy/in_process_policy_client.h"
#include "worker/testing/fixtures.h"

namespace a2sf::worker {
namespace {

using testing::FixturesDir;

#define A2SF_REQUIRE_GPU()                                                                     \
  if (absl::Status gpu = CheckEngineDevice(EngineDevice::kCuda); !gpu.ok()) {                   \
    GTEST_SKIP() << "no usable GPU, CUDA engine tests skipped: " << gpu.message();           \
  }

std::unique_ptr<ModelWeights> Load(const std::string& name) {
  auto weights = LoadModel(FixturesDir() + "/" + name);
  EXPECT_TRUE(weights.ok()) << weights.status();
  return weights.ok() ? std::move(*weights) : nullptr;
}

std::unique_ptr<Engine> MakeEngine(const ModelWeights* weights, EngineDevice device, int capacity = 0) {
  EngineOptions options;
  options.device = device;
  options.cache_capacity = capacity;
  auto engine = Engine::Create(weights, options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? std::move(*engine) : nullptr;
}

TEST(CudaEngine, WithoutAGpuCreateIsUnavailableWithTheReason) {
  if (CheckEngineDevice(EngineDevice::kCuda).ok()) GTEST_SKIP() << "a GPU is present: this test covers machines without one";
  auto weights = MakeSyntheticModel(*NamedShape("stories260K"), 1);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EngineOptions options;
  options.device = EngineDevice::kCuda;
  auto engine = Engine::Create(weights->get(), options);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(engine.status().message().find("no usable GPU"), std::string::npos) << engine.status();
  EXPECT_EQ(ParseEngineDevice("cuda").value(), EngineDevice::kCuda);
  EXPECT_EQ(ParseEngineDevice("tpu").status().code(), absl::StatusCode::kInvalidArgument);
}

class CudaGoldenLogitsTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaGoldenLogitsTest, SixteenPositionsWithinOneTenThousandth) {
  A2SF_REQUIRE_GPU();
  A2SF_REQUIRE_FIXTURES();
  const int tokens[16] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 395, 317, 426};
  auto weights = Load(GetParam());
  ASSERT_NE(weights, nullptr);
  auto engine = MakeEngine(weights.get(), EngineDevice::kCuda);
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->device(), EngineDevice::kCuda);
  std::ifstream in(FixturesDir() + "/golden_logits16.f32", std::ios::binary);
  std::vector<float> golden(16 * 512);
  in.read(reinterpret_cast<char*>(golden.data()), golden.size() * 4);
  float worst = 0.0f;
  for (int pos = 0; pos < 16; ++pos) {
    ASSERT_TRUE(engine->Forward(tokens[pos], pos).ok());
    for (int v = 0; v < 512; ++v) worst = std::max(worst, std::fabs(engine->logits()[v] - golden[pos * 512 + v]));
  }
  EXPECT_LT(worst, 1e-4f);
}

INSTANTIATE_TEST_SUITE_P(Formats, CudaGoldenLogitsTest,
                         ::testing::Values("stories260K-dq.bin", "stories260K-hf"));

// Each weight type's GPU product (cuBLAS Sgemv / GemmEx, the q8_0 and q4_0 kernels) against the CPU
// kernel of the same weights. f16/bf16 products round x to the weights' type (GemmEx takes A and B
// of one type), hence their wider bounds.
TEST(CudaMatVec, EveryWeightTypeMatchesTheCpuKernel) {
  A2SF_REQUIRE_GPU();
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (WeightType type : {WeightType::kF32, WeightType::kF16, WeightType::kBF16, WeightType::kQ8_0, WeightType::kQ4_0}) {
    const int64_t rows = 300, cols = 256;
    std::vector<float> values(size_t(rows) * cols), x(cols);
    for (float& v : values) v = normal(rng);
    for (float& v : x) v = normal(rng);
    std::vector<uint8_t> bytes(size_t(rows) * RowBytes(type, cols));
    for (int64_t r = 0; r < rows; ++r) {
      Traits(type).from_float(values.data() + r * cols, bytes.data() + r * RowBytes(type, cols), cols);
    }
    const WeightMatrix w{type, bytes.data(), rows, cols};
    std::vector<float> cpu(rows), gpu(rows);
    MatMulRows(KernelIsa::kScalar, cpu.data(), w, x.data(), 1, 0, rows);
    std::string error;
    ASSERT_EQ(cuda::MatVecOnce({int(type), bytes.data(), rows, cols, bytes.size()}, x.data(), gpu.data(), &error), 0)
        << error;
    const double relative = type == WeightType::kBF16 ? 0x1p-7 : type == WeightType::kF16 ? 0x1p-10 : 1e-5;
    for (int64_t r = 0; r < rows; ++r) {
      EXPECT_NEAR(gpu[r], cpu[r], relative * std::sqrt(double(cols)) * 4 + 1e-4) << WeightTypeName(type) << " row " << r;
    }
  }
}

TEST(CudaEngine, EveryWeightTypeFollowsTheCpuEngineOfThatType) {
  A2SF_REQUIRE_GPU();
  A2SF_REQUIRE_FIXTURES();
  const int tokens[8] = {1, 403, 407, 261, 378, 432, 383, 286};
  for (WeightType type : {WeightType::kF16, WeightType::kBF16, WeightType::kQ8_0, WeightType::kQ4_0}) {
    LoadOptions options;
    options.weights = type;
    auto weights = LoadModel(FixturesDir() + "/stories260K-dq.bin", options);
    ASSERT_TRUE(weights.ok()) << weights.status();
    auto cpu = MakeEngine(weights->get(), EngineDevice::kCpu);
    auto gpu = MakeEngine(weights->get(), EngineDevice::kCuda);
    ASSERT_NE(gpu, nullptr);
    float worst = 0.0f;
    for (int pos = 0; pos < 8; ++pos) {
      ASSERT_TRUE(cpu->Forward(tokens[pos], pos).ok());
      ASSERT_TRUE(gpu->Forward(tokens[pos], pos).ok());
      for (int v = 0; v < 512; ++v) worst = std::max(worst, std::fabs(cpu->logits()[v] - gpu->logits()[v]));
    }
    const float bound = type == WeightType::kBF16 ? 0.2f : type == WeightType::kF16 ? 3e-2f : 1e-3f;
    EXPECT_LT(worst, bound) << WeightTypeName(type);
  }
}

std::vector<int> Greedy(Engine* engine, const std::vector<int>& prompt, int steps) {
  GenerateOptions options;
  options.max_new_tokens = steps - int(prompt.size()) + 1;
  auto result = Generate(engine, nullptr, prompt, options);
  EXPECT_TRUE(result.ok()) << result.status();
  std::vector<int> ids = prompt;
  if (result.ok()) ids.insert(ids.end(), result->generated.begin(), result->generated.end());
  return ids;
}

TEST(CudaEngine, GreedyIdsEqualTheGoldens) {
  A2SF_REQUIRE_GPU();
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  auto engine = MakeEngine(weights.get(), EngineDevice::kCuda);
  std::ifstream in(FixturesDir() + "/golden_greedy.json");
  const nlohmann::json goldens = nlohmann::json::parse(in);
  EXPECT_EQ(Greedy(engine.get(), {1}, 256), goldens["bos_only"]["ids"].get<std::vector<int>>());
  for (const auto& p : goldens["prompts"]) {
    EXPECT_EQ(Greedy(engine.get(), p["prompt_ids"].get<std::vector<int>>(), p["steps"].get<int>()),
              p["ids"].get<std::vector<int>>())
        << p["prompt"];
  }
}

// Both backends run the same tokens and apply the same decisions (a policy fed the CPU engine's
// scores): logits and scores must agree at every step, through hundreds of evictions.
TEST(CudaEngine, MatchesTheCpuEngineStepByStepWithEvictions) {
  A2SF_REQUIRE_GPU();
  A2SF_REQUIRE_FIXTURES();
  auto weights = Load("stories260K-dq.bin");
  const ModelConfig& c = weights->config();
  for (uint32_t lag : {0u, 2u}) {
    cachemgr::PolicySpec spec;
    spec.name = "a2sf";
    spec.alpha = 0.5;
    cachemgr::BudgetSpec budget;
    budget.tokens = 12;
    auto policy = std::move(*InProcessPolicyClient::Create(c, spec, budget, lag));
    const int capacity = RequiredCacheCapacity(policy.get(), 1, 200, false);
    auto cpu = MakeEngine(weights.get(), EngineDevice::kCpu, capacity);
    auto gpu = MakeEngine(weights.get(), EngineDevice::kCuda, capacity);
    DecisionApplier cpu_applier(cpu.get(), policy.get());
    float worst_logit = 0, worst_score = 0;
    int token = c.bos_id;
    std::vector<EvictionDecision> applied;
    for (int pos = 0; pos < 200; ++pos) {
      ASSERT_TRUE(cpu->Forward(token, pos).ok());
      ASSERT_TRUE(gpu->Forward(token, pos).ok());
      for (int v = 0; v < c.vocab_size; ++v) worst_logit = std::max(worst_logit, std::fabs(cpu->logits()[v] - gpu->logits()[v]));
      ASSERT_EQ(cpu->step_scores().size(), gpu->step_scores().size());
      for (size_t i = 0; i < cpu->step_scores().size(); ++i) {
        worst_score = std::max(worst_score, std::fabs(cpu->step_scores()[i] - gpu->step_scores()[i]));
      }
      const uint64_t before = cpu_applier.evictions();
      const int entries_before = cpu->cache().entries();
      ASSERT_TRUE(cpu_applier.AfterToken(uint64_t(pos), uint32_t(pos)).ok());
      // Replay on the GPU engine whatever the CPU engine just evicted, by position.
      if (cpu_applier.evictions() != before) {
        const uint32_t k = uint32_t(entries_before - cpu->cache().entries());
        std::vector<uint32_t> gone;
        for (int l = 0; l < c.n_layers; ++l) {
          for (int g = 0; g < c.n_kv_heads; ++g) {
            std::vector<uint32_t> kept, held;
            for (int s = 0; s < cpu->cache().entries(); ++s) kept.push_back(cpu->cache().position(l, g, s));
            for (int s = 0; s < gpu->cache().entries(); ++s) held.push_back(gpu->cache().position(l, g, s));
            for (uint32_t p : held) {
              if (std::find(kept.begin(), kept.end(), p) == kept.end()) gone.push_back(p);
            }
          }
        }
        ASSERT_EQ(gone.size(), size_t(k) * c.n_layers * c.n_kv_heads);
        ASSERT_TRUE(gpu->EvictPositions(k, gone).ok());
      }
      const auto logits = cpu->logits();
      token = int(std::max_element(logits.begin(), logits.end()) - logits.begin());
    }
    EXPECT_LT(worst_logit, 1e-3f) << "lag " << lag;
    EXPECT_LT(worst_score, 1e-4f) << "lag " << lag;
    EXPECT_GT(cpu_applier.evictions(), 0u);
  }
}

TEST(CudaEngine, BadInputsAreRejectedWithoutHarm) {
  A2SF_REQUIRE_GPU();
  auto weights = MakeSyntheticModel(*NamedShape("stories260K"), 3);
  ASSERT_TRUE(weights.ok());
  auto engine = MakeEngine(weights->get(), EngineDevice::kCuda, 2);
  EXPECT_EQ(engine->Forward(-1, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(engine->Forward(1, 100000).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(engine->Forward(1, 0).ok());
  ASSERT_TRUE(engine->Forward(2, 1).ok());
  EXPECT_EQ(engine->Forward(3, 2).code(), absl::StatusCode::kFailedPrecondition);  // full: evict first
  EXPECT_EQ(engine->EvictPositions(1, std::vector<uint32_t>(size_t(weights->get()->config().n_layers) *
                                                                weights->get()->config().n_kv_heads,
                                                            99))
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(engine->cache().entries(), 2);
}

}  // namespace
}  // namespace a2sf::worker

namespace a2sf::worker {
namespace {

TEST(CudaEngineDeviceScores, ACpuEngineRefusesADeviceScoreTarget) {
  auto weights = MakeSyntheticModel(*NamedShape("stories260K"), 1);
  ASSERT_TRUE(weights.ok()) << weights.status();
  auto engine = MakeEngine(weights->get(), EngineDevice::kCpu, 16);
  ASSERT_NE(engine, nullptr);
  float unused = 0.0f;
  absl::Status status = engine->WriteDeviceScoresTo({&unused, sizeof(unused), nullptr, nullptr});
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_FALSE(engine->writes_device_scores());
}

// The redirected device scores equal the host copy, step after step with evictions in between, and a
// target smaller than the cache's [layers][kv_heads][capacity] is refused.
TEST(CudaEngineDeviceScores, ScoresWrittenToAnExportedBufferEqualTheHostScores) {
  A2SF_REQUIRE_GPU();
  auto weights = MakeSyntheticModel(*NamedShape("stories260K"), 1);
  ASSERT_TRUE(weights.ok()) << weights.status();
  const int capacity = 8;
  auto engine = MakeEngine(weights->get(), EngineDevice::kCuda, capacity);
  ASSERT_NE(engine, nullptr);
  const ModelConfig& c = engine->config();
  const size_t bytes = size_t(c.n_layers) * c.n_kv_heads * capacity * 4;
  absl::StatusOr<std::unique_ptr<cuda_ipc::ExportedDeviceBuffer>> buffer = cuda_ipc::ExportedDeviceBuffer::Create(bytes);
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  std::shared_ptr<cuda_ipc::ExportedDeviceBuffer> shared = std::move(*buffer);
  EXPECT_EQ(engine->WriteDeviceScoresTo({shared->device_pointer(), bytes - 4, shared->event(), shared}).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(engine->WriteDeviceScoresTo({shared->device_pointer(), bytes, shared->event(), shared}).ok());
  for (int pos = 0; pos < 12; ++pos) {
    if (engine->cache().entries() + 1 > capacity - 1) {
      const size_t heads = size_t(c.n_layers) * c.n_kv_heads;
      ASSERT_TRUE(engine->Evict(1, std::vector<uint32_t>(heads, 0)).ok());
    }
    ASSERT_TRUE(engine->Forward(1 + pos * 7 % 500, pos).ok());
    const absl::Span<const float> host = engine->step_scores();
    std::vector<float> device(host.size());
    ASSERT_TRUE(cuda_ipc::CopyToHost(device.data(), shared->device_pointer(), host.size() * 4).ok());
    ASSERT_EQ(std::vector<float>(host.begin(), host.end()), device) << "position " << pos;
  }
}

}  // namespace
}  // namespace a2sf::worker
