// Kernel throughput of MatMul (one vector, as in decoding) for every weight type on a matrix far
// larger than the caches: weight GB/s by wall clock and per CPU second, each over the same-run
// triad measured the same way (per CPU second is steadier on a shared machine: it does not count
// time the process waits for a core). A diagnostic for the kernels; the end-to-end figures are
// engine_bench's.
//
//   bazel run -c opt //bench:matmul_bench [-- ROWS COLS]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "bench/triad.h"
#include "common/thread_pool.h"
#include "worker/engine/matmul.h"

namespace a2sf::worker {
namespace {

using bench::CpuSeconds;
using bench::WallSeconds;

void Run(int64_t rows, int64_t cols) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> source(static_cast<size_t>(cols) * 64), x(static_cast<size_t>(cols)), out(static_cast<size_t>(rows));
  for (float& v : source) v = normal(rng);
  for (float& v : x) v = normal(rng);
  std::printf("%lld x %lld, %s kernels\n", static_cast<long long>(rows), static_cast<long long>(cols),
              KernelIsaName(DetectedIsa()));
  const bench::TriadGbps triad[2] = {bench::Triad(1), bench::Triad(2)};
  std::printf("triad: %.1f / %.1f GB/s wall, %.1f / %.1f GB/s per CPU-second (1 / 2 threads)\n", triad[0].wall,
              triad[1].wall, triad[0].per_cpu_s, triad[1].per_cpu_s);
  std::printf("%-6s %7s %10s %12s %8s %15s %8s\n", "type", "threads", "MB", "GB/s wall", "/ triad", "GB/s per CPU-s",
              "/ triad");
  for (int t = 0; t < kWeightTypeCount; ++t) {
    const WeightType type = static_cast<WeightType>(t);
    const size_t row_bytes = RowBytes(type, cols);
    std::vector<uint8_t> bytes(row_bytes * size_t(rows));
    for (int64_t r = 0; r < rows; ++r) {  // 64 distinct rows repeated: quick to build, same traffic
      if (r < 64) Traits(type).from_float(source.data() + r * cols, bytes.data() + r * row_bytes, cols);
      else std::copy_n(bytes.data() + (r % 64) * row_bytes, row_bytes, bytes.data() + r * row_bytes);
    }
    const WeightMatrix w{type, bytes.data(), rows, cols};
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      MatMul(out.data(), w, x.data(), 1, &pool);  // warm
      const int reps = std::max<int>(10, int(4e9 / double(bytes.size())));
      const double wall = WallSeconds(), cpu = CpuSeconds();
      for (int i = 0; i < reps; ++i) MatMul(out.data(), w, x.data(), 1, &pool);
      const double gb = double(bytes.size()) * reps / 1e9;
      const double wall_gbps = gb / (WallSeconds() - wall), cpu_gbps = gb / (CpuSeconds() - cpu);
      std::printf("%-6s %7d %10.1f %12.2f %8.2f %15.2f %8.2f\n", WeightTypeName(type), threads, bytes.size() / 1e6,
                  wall_gbps, wall_gbps / triad[threads - 1].wall, cpu_gbps, cpu_gbps / triad[threads - 1].per_cpu_s);
    }
  }
}

}  // namespace
}  // namespace a2sf::worker

int main(int argc, char** argv) {
  const int64_t rows = argc > 2 ? std::atoll(argv[1]) : 16384, cols = argc > 2 ? std::atoll(argv[2]) : 4096;
  a2sf::worker::Run(rows, cols);
  return 0;
}
