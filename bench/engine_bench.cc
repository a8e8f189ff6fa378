// Decode speed of the engine: stories260K (the fixtures' real model, or a random one of its shape) and
// a random-weight model of the stories110M shape, 1 and 2 threads, full cache and A2SF at a 20%
// budget, with the KV memory held. For the 110M shape, the weight bandwidth achieved (weight bytes
// read per token x tokens/s) is set against a STREAM-style triad measured in the same run.
// Then the 110M shape held in every weight type (f32, f16, bf16, q8_0, q4_0), full cache, 1 and 2
// threads, best of interleaved rounds: weight bytes per token, tok/s, weight GB/s / triad, and tok/s
// as a multiple of f32's in the same run.
//
//   A2SF_FIXTURES=../shared/fixtures bazel run -c opt //bench:engine_bench [-- gpu|types|small]
// `gpu`: only the GPU rows (no triad, no CPU rows): what scripts/gpu_check.sh runs. `types`: the
// triad and the weight-type rows only. `small`: the stories260K rows only (no triad).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/triad.h"
#include "worker/engine/generator.h"
#include "worker/policy/in_process_policy_client.h"

namespace a2sf::worker {
namespace {

struct Row {
  const char* model;
  int threads;  // 0: the CUDA backend
  std::string policy;
  double tokens_per_second;
  size_t kv_peak;
  double weight_gbps;
};

Row Measure(const char* label, const ModelWeights& weights, int threads, bool a2sf, int tokens, int runs,
            EngineDevice device = EngineDevice::kCpu) {
  const ModelConfig& c = weights.config();
  std::unique_ptr<InProcessPolicyClient> policy;
  if (a2sf) {
    cachemgr::PolicySpec spec;
    spec.name = "a2sf";
    spec.alpha = 0.3;
    cachemgr::BudgetSpec budget;
    budget.ratio = 0.2;
    budget.reference_length = uint32_t(tokens);
    policy = std::move(*InProcessPolicyClient::Create(c, spec, budget));
  }
  EngineOptions options;
  options.threads = std::max(threads, 1);
  options.device = device;
  options.cache_capacity = RequiredCacheCapacity(policy.get(), 1, tokens, false);
  auto engine = std::move(*Engine::Create(&weights, options));
  GenerateOptions generate;
  generate.max_new_tokens = tokens;
  generate.stop_on_eos = false;
  double best = 0;
  size_t kv_peak = 0;
  for (int r = 0; r < runs; ++r) {
    if (policy != nullptr) {  // a fresh session per run
      cachemgr::PolicySpec spec = policy->session().policy;
      cachemgr::BudgetSpec budget;
      budget.tokens = policy->budget_tokens();
      policy = std::move(*InProcessPolicyClient::Create(c, spec, budget));
    }
    auto result = Generate(engine.get(), policy.get(), {c.bos_id}, generate);
    if (!result.ok()) {
      std::fprintf(stderr, "%s\n", std::string(result.status().message()).c_str());
      std::exit(1);
    }
    best = std::max(best, result->tokens_per_second);
    kv_peak = result->kv_bytes_peak;
  }
  std::string name = a2sf ? "a2sf 0.3, 20% (" + std::to_string(policy->budget_tokens()) + ")" : "full";
  return {label, device == EngineDevice::kCuda ? 0 : threads, name, best, kv_peak,
          best * double(weights.bytes_per_token()) / 1e9};
}

// Every weight type on the 110M shape: rounds interleave types and thread counts so that a noisy
// moment (the machine is shared) hits them alike; each cell keeps its best round.
void TypeRows(double triad1, double triad2) {
  const WeightType types[] = {WeightType::kF32, WeightType::kF16, WeightType::kBF16, WeightType::kQ8_0,
                              WeightType::kQ4_0};
  std::vector<std::unique_ptr<ModelWeights>> typed;
  for (WeightType t : types) typed.push_back(std::move(*MakeSyntheticModel(*NamedShape("stories110M"), 1, t)));
  double best[5][2] = {};
  for (int round = 0; round < 3; ++round) {
    for (size_t i = 0; i < typed.size(); ++i) {
      for (int threads : {1, 2}) {
        const Row r = Measure("stories110M (random)", *typed[i], threads, false, 64, 1);
        best[i][threads - 1] = std::max(best[i][threads - 1], r.tokens_per_second);
      }
    }
  }
  std::printf("weight types, stories110M shape (random), full cache, 64 tokens, best of 3 rounds:\n");
  std::printf("%-6s %-10s %7s %12s %10s %12s %8s %8s\n", "type", "held as", "threads", "MB/token", "tok/s",
              "weights GB/s", "/ triad", "x f32");
  for (size_t i = 0; i < typed.size(); ++i) {
    for (int threads : {1, 2}) {
      const double bytes = double(typed[i]->bytes_per_token()), tps = best[i][threads - 1];
      const double triad = threads == 1 ? triad1 : triad2;
      std::printf("%-6s %-10s %7d %12.1f %10.1f %12.2f %8.2f %8.2f\n", WeightTypeName(types[i]),
                  typed[i]->weight_types().c_str(), threads, bytes / 1e6, tps, tps * bytes / 1e9,
                  tps * bytes / 1e9 / triad, tps / best[0][threads - 1]);
    }
  }
  std::printf("\n");

}

}  // namespace
}  // namespace a2sf::worker

int main(int argc, char** argv) {
  using namespace a2sf::worker;
  const std::string mode = argc > 1 ? argv[1] : "";
  const bool gpu_only = mode == "gpu", types_only = mode == "types", small_only = mode == "small";
  double triad1 = 0, triad2 = 0;
  if (!gpu_only && !small_only) {
    triad1 = a2sf::bench::Triad(1).wall, triad2 = a2sf::bench::Triad(2).wall;
    std::printf("triad: %.1f GB/s (1 thread), %.1f GB/s (2 threads)\n\n", triad1, triad2);
  }
  const absl::Status gpu = CheckEngineDevice(EngineDevice::kCuda);
  if (gpu_only && !gpu.ok()) {
    std::printf("GPU rows skipped: %s\n", std::string(gpu.message()).c_str());
    return 0;
  }

  std::unique_ptr<ModelWeights> small;
  const char* fixtures = std::getenv("A2SF_FIXTURES");
  const char* small_label = "stories260K";
  if (fixtures != nullptr && *fixtures != '\0') {
    auto loaded = LoadModel(std::string(fixtures) + "/stories260K-dq.bin");
    if (loaded.ok()) small = std::move(*loaded);
  }
  if (small == nullptr) {
    small = std::move(*MakeSyntheticModel(*NamedShape("stories260K"), 1));
    small_label = "stories260K (random)";
  }
  std::unique_ptr<ModelWeights> big;
  if (!small_only && !types_only) big = std::move(*MakeSyntheticModel(*NamedShape("stories110M"), 1));

  std::vector<Row> rows;
  for (int threads : {1, 2}) {
    if (gpu_only || types_only) break;
    for (bool a2sf : {false, true}) rows.push_back(Measure(small_label, *small, threads, a2sf, 256, 20));
    if (small_only) continue;
    for (bool a2sf : {false, true}) rows.push_back(Measure("stories110M (random)", *big, threads, a2sf, 64, 2));
  }
  // The CUDA backend, where there is a GPU (its bandwidth is the GPU's, so no triad ratio), on the
  // same weights held row-major (the GPU kernels' layout).
  if (gpu.ok() && !types_only && !small_only) {
    LoadOptions rows_layout;
    rows_layout.panels = false;
    std::unique_ptr<ModelWeights> small_rows =
        fixtures != nullptr && *fixtures != '\0' && small_label == std::string("stories260K")
            ? std::move(*LoadModel(std::string(fixtures) + "/stories260K-dq.bin", rows_layout))
            : std::move(*MakeSyntheticModel(*NamedShape("stories260K"), 1, WeightType::kF32, false));
    std::unique_ptr<ModelWeights> big_rows =
        std::move(*MakeSyntheticModel(*NamedShape("stories110M"), 1, WeightType::kF32, false));
    for (bool a2sf : {false, true}) {
      rows.push_back(Measure(small_label, *small_rows, 0, a2sf, 256, 5, EngineDevice::kCuda));
      rows.push_back(Measure("stories110M (random)", *big_rows, 0, a2sf, 64, 2, EngineDevice::kCuda));
    }
  } else if (!gpu.ok()) {
    std::printf("GPU rows skipped: %s\n\n", std::string(gpu.message()).c_str());
  }
  if (!small_only) TypeRows(triad1, triad2);

  std::printf("%-22s %7s %-20s %10s %12s %12s %8s\n", "model", "threads", "policy", "tok/s", "KV peak B",
              "weights GB/s", "/ triad");
  for (const Row& r : rows) {
    if (r.threads == 0) {
      std::printf("%-22s %7s %-20s %10.1f %12zu %12.2f %8s\n", r.model, "gpu", r.policy.c_str(), r.tokens_per_second,
                  r.kv_peak, r.weight_gbps, "-");
      continue;
    }
    const double triad = r.threads == 1 ? triad1 : triad2;
    std::printf("%-22s %7d %-20s %10.1f %12zu %12.2f %8.2f\n", r.model, r.threads, r.policy.c_str(),
                r.tokens_per_second, r.kv_peak, r.weight_gbps, r.weight_gbps / triad);
  }
  return 0;
}
