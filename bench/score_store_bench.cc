// Score-store step cost at LLaMA-2-7B shape (32 layers x 32 KV heads, budget 819 = 20% of 4096), in
// steady state (every head full: each step appends one entry and evicts one), for 1, 8 and 64
// sessions, next to a STREAM-style triad over the same number of bytes measured in the same run.
//
//   bazel run -c opt //bench:score_store_bench
//
// Bytes a step moves per entry: the score (4 bytes fp32 / 2 fp16), the old accumulator (4), the new
// accumulator (4) and the position (4). At the end a table gives each case's bandwidth as a fraction
// of the triad's.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cachemgr/policy/registry.h"
#include "cachemgr/store/cpu_score_store.h"
#include "cachemgr/store/head_kernels.h"

namespace a2sf::cachemgr {
namespace {

constexpr uint32_t kLayers = 32, kKvHeads = 32, kBudget = 819;

struct Fixture {
  std::unique_ptr<CpuScoreStore> store;
  std::vector<SessionHandle> sessions;
  std::vector<std::vector<uint16_t>> half_scores;
  std::vector<std::vector<float>> scores;
  EvictionRule rule;
  uint32_t position = 0;
};

std::unique_ptr<Fixture> MakeFixture(int sessions, int threads) {
  auto f = std::make_unique<Fixture>();
  f->store = std::make_unique<CpuScoreStore>(threads);
  PolicySpec spec;
  spec.name = "a2sf";
  spec.alpha = 0.3;
  f->rule = *(*PolicyRegistry::Builtin().Create(spec))->RuleFor(kLayers, kBudget);
  const size_t values = size_t{kLayers} * kKvHeads * (kBudget + 1);
  std::mt19937 rng(1);
  for (int i = 0; i < sessions; ++i) {
    f->sessions.push_back(*f->store->CreateSession({kLayers, kKvHeads}, kBudget + 1));
    std::vector<float> s(values);
    std::vector<uint16_t> h(values);
    for (size_t j = 0; j < values; ++j) {
      const uint32_t q = 1 + rng() % 1000;
      s[j] = float(q) * (1.0f / 4096.0f);
      h[j] = static_cast<uint16_t>(0x1000 + q);  // small positive fp16 values
    }
    f->scores.push_back(std::move(s));
    f->half_scores.push_back(std::move(h));
  }
  // Fill every head to the budget.
  for (uint32_t t = 0; t < kBudget; ++t) {
    for (size_t i = 0; i < f->sessions.size(); ++i) {
      TokenStep step{f->sessions[i], &f->rule, t,
                     {kv::ScoreDType::kFp32, f->scores[i].data(), size_t{kLayers} * kKvHeads * (t + 1)}};
      absl::Status status;
      kv::EvictionDecision decision;
      f->store->ProcessTokenSteps({&step, 1}, {&status, 1}, {&decision, 1});
    }
  }
  f->position = kBudget;
  return f;
}

void BM_StepFused(benchmark::State& state) {
  const int sessions = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const bool half = state.range(2) != 0;
  auto f = MakeFixture(sessions, threads);
  std::vector<TokenStep> steps(sessions);
  std::vector<absl::Status> statuses(sessions);
  std::vector<kv::EvictionDecision> decisions(sessions);
  for (auto _ : state) {
    for (int i = 0; i < sessions; ++i) {
      steps[i] = {f->sessions[i], &f->rule, f->position,
                  half ? ScoreView{kv::ScoreDType::kFp16, f->half_scores[i].data(), f->half_scores[i].size()}
                       : ScoreView{kv::ScoreDType::kFp32, f->scores[i].data(), f->scores[i].size()}};
    }
    f->store->ProcessTokenSteps(absl::MakeConstSpan(steps), absl::MakeSpan(statuses), absl::MakeSpan(decisions));
    ++f->position;
    benchmark::DoNotOptimize(decisions.data());
  }
  for (const absl::Status& s : statuses) {
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
  }
  const int64_t entries = int64_t{kLayers} * kKvHeads * (kBudget + 1) * sessions;
  state.SetBytesProcessed(state.iterations() * entries * (half ? 14 : 16));
  state.counters["steps/s"] = benchmark::Counter(double(sessions), benchmark::Counter::kIsIterationInvariantRate);
}

// a[i] = b[i] + q * c[i] over float arrays sized so that the bytes touched match one fused step of
// the same session count (3 arrays x 4 bytes per element).
void BM_Triad(benchmark::State& state) {
  const int sessions = static_cast<int>(state.range(0));
  const size_t n = size_t{kLayers} * kKvHeads * (kBudget + 1) * sessions * 16 / 12;
  std::vector<float> a(n, 1.0f), b(n, 2.0f), c(n, 0.5f);
  const float q = 3.0f;
  for (auto _ : state) {
    float* __restrict pa = a.data();
    const float* __restrict pb = b.data();
    const float* __restrict pc = c.data();
    for (size_t i = 0; i < n; ++i) pa[i] = pb[i] + q * pc[i];
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * int64_t(n) * 12);
}

BENCHMARK(BM_Triad)->Arg(1)->Arg(8)->Arg(64)->Unit(benchmark::kMicrosecond)->UseRealTime();
// Args: sessions, threads, fp16 input.
BENCHMARK(BM_StepFused)
    ->Args({1, 1, 0})
    ->Args({1, 1, 1})
    ->Args({8, 1, 0})
    ->Args({8, 2, 0})
    ->Args({64, 1, 0})
    ->Args({64, 2, 0})
    ->Args({64, 2, 1})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Prints the usual console output, then each step case's bandwidth relative to the triad over the
// same bytes.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      auto it = run.counters.find("bytes_per_second");
      if (it != run.counters.end()) rates_.push_back({run.benchmark_name(), double(it->second)});
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    std::map<std::string, double> triad;
    for (const auto& [name, rate] : rates_) {
      if (name.rfind("BM_Triad/", 0) == 0) triad[name.substr(9, name.find('/', 9) - 9)] = rate;
    }
    std::printf("\nkernels: %s\n", HeadKernelsUseAvx2() ? "AVX2+F16C" : "portable");
    std::printf("%-34s %10s %10s %8s\n", "case", "GB/s", "triad GB/s", "ratio");
    for (const auto& [name, rate] : rates_) {
      if (name.rfind("BM_StepFused/", 0) != 0) continue;
      const std::string sessions = name.substr(13, name.find('/', 13) - 13);
      const double base = triad.count(sessions) ? triad[sessions] : 0.0;
      std::printf("%-34s %10.2f %10.2f %8.2f\n", name.c_str(), rate / 1e9, base / 1e9, base > 0 ? rate / base : 0.0);
    }
  }

 private:
  std::vector<std::pair<std::string, double>> rates_;
};

}  // namespace
}  // namespace a2sf::cachemgr

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  a2sf::cachemgr::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
