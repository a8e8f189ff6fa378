// Cost of one ForwardPass step against the number of rows (sequences decoded together), on the
// stories110M shape (random weights): the batch's ms per step and tokens/s, as ratios to one row,
// from the mean step and from the fastest one (steadier on a shared machine: other processes only
// ever add time). The kernels are the CPU's best (worker/engine/matmul.h); A2SF_MAX_KERNEL_ISA=avx2
// compares the AVX2 ones in the same conditions.
//
//   bazel run -c opt //bench:forward_pass_bench -- --threads=2
#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "worker/engine/engine.h"
#include "worker/engine/matmul.h"
#include "worker/model/model.h"

ABSL_FLAG(int, threads, 2, "threads of the pass");
ABSL_FLAG(int, steps, 8, "steps per row count");

int main(int argc, char** argv) {
  using namespace a2sf::worker;
  absl::ParseCommandLine(argc, argv);
  auto weights = std::move(*MakeSyntheticModel(*NamedShape("stories110M"), 7));
  ForwardPass pass(weights.get(), absl::GetFlag(FLAGS_threads));
  const int steps = absl::GetFlag(FLAGS_steps);
  double one = 0, one_fastest = 0;
  std::printf("%s kernels, %d threads\n", KernelIsaName(DetectedIsa()), absl::GetFlag(FLAGS_threads));
  std::printf("%5s %12s %10s %8s %14s %8s\n", "rows", "ms/step", "tok/s", "vs 1", "fastest ms", "vs 1");
  for (int rows : {1, 2, 4, 8, 16}) {
    std::vector<std::unique_ptr<Engine>> engines;
    EngineOptions options;
    options.cache_capacity = steps + 2;
    for (int r = 0; r < rows; ++r) engines.push_back(std::move(*Engine::Create(weights.get(), options)));
    std::vector<ForwardRow> batch;
    absl::Duration total, fastest = absl::InfiniteDuration();
    for (int s = 0; s <= steps; ++s) {
      batch.clear();
      for (int r = 0; r < rows; ++r) batch.push_back({engines[r].get(), 1 + r, s});
      const absl::Time start = absl::Now();
      if (!pass.Run(batch).ok()) return 1;
      if (s == 0) continue;  // step 0 warms up
      total += absl::Now() - start;
      fastest = std::min(fastest, absl::Now() - start);
    }
    const double ms = absl::ToDoubleMilliseconds(total) / steps;
    const double tps = rows * 1000.0 / ms, fastest_ms = absl::ToDoubleMilliseconds(fastest);
    const double fastest_tps = rows * 1000.0 / fastest_ms;
    if (rows == 1) one = tps, one_fastest = fastest_tps;
    std::printf("%5d %12.2f %10.1f %7.2fx %14.2f %7.2fx\n", rows, ms, tps, tps / one, fastest_ms,
                fastest_tps / one_fastest);
  }
  return 0;
}
