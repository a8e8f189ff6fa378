// Cost of one ForwardPass step against the number of rows (sequences decoded together), on the
// stories110M shape (random weights): the batch's ms per step and tokens/s, as ratios to one row.
//
//   bazel run -c opt //bench:forward_pass_bench -- --threads=2
#include <cstdio>
#include <memory>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "worker/engine/engine.h"
#include "worker/model/model.h"

ABSL_FLAG(int, threads, 2, "threads of the pass");
ABSL_FLAG(int, steps, 8, "steps per row count");

int main(int argc, char** argv) {
  using namespace a2sf::worker;
  absl::ParseCommandLine(argc, argv);
  auto weights = std::move(*MakeSyntheticModel(*NamedShape("stories110M"), 7));
  ForwardPass pass(weights.get(), absl::GetFlag(FLAGS_threads));
  const int steps = absl::GetFlag(FLAGS_steps);
  double one = 0;
  std::printf("%5s %12s %10s %8s\n", "rows", "ms/step", "tok/s", "vs 1");
  for (int rows : {1, 2, 4, 8, 16}) {
    std::vector<std::unique_ptr<Engine>> engines;
    EngineOptions options;
    options.cache_capacity = steps + 2;
    for (int r = 0; r < rows; ++r) engines.push_back(std::move(*Engine::Create(weights.get(), options)));
    std::vector<ForwardRow> batch;
    absl::Duration total;
    for (int s = 0; s <= steps; ++s) {
      batch.clear();
      for (int r = 0; r < rows; ++r) batch.push_back({engines[r].get(), 1 + r, s});
      const absl::Time start = absl::Now();
      if (!pass.Run(batch).ok()) return 1;
      if (s > 0) total += absl::Now() - start;  // step 0 warms up
    }
    const double ms = absl::ToDoubleMilliseconds(total) / steps;
    const double tps = rows * 1000.0 / ms;
    if (rows == 1) one = tps;
    std::printf("%5d %12.2f %10.1f %7.2fx\n", rows, ms, tps, tps / one);
  }
  return 0;
}
