// Kernel throughput of MatMul (one vector, as in decoding) for every weight type on a matrix far
// larger than the caches: weight GB/s of the best pass by wall clock and per CPU second, each over
// the same-run triad measured the same way (its best of 5) (per CPU second is steadier on a shared machine: it does not count
// time the process waits for a core). Then several vectors (batching): multiply-adds per CPU-second
// of each SIMD kernel set this CPU runs, one thread, on the same streamed matrix and on one that sits
// in the caches, with f32, bf16, q8_0 and q4_0 matrices both row-major and in panels. A diagnostic for the
// kernels; the end-to-end figures are engine_bench's and forward_pass_bench's.
//
//   bazel run -c opt //bench:matmul_bench [-- ROWS COLS [vectors]]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench/triad.h"
#include "common/aligned_vector.h"
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
      // Best pass of many, as the triad is its best of 5: both are what the machine gives when
      // nothing else interferes.
      const int reps = std::max<int>(10, int(4e9 / double(bytes.size())));
      double wall_gbps = 0, cpu_gbps = 0;
      for (int i = 0; i < reps; ++i) {
        const double wall = WallSeconds(), cpu = CpuSeconds();
        MatMul(out.data(), w, x.data(), 1, &pool);
        const double gb = double(bytes.size()) / 1e9;
        wall_gbps = std::max(wall_gbps, gb / (WallSeconds() - wall));
        cpu_gbps = std::max(cpu_gbps, gb / (CpuSeconds() - cpu));
      }
      std::printf("%-6s %7d %10.1f %12.2f %8.2f %15.2f %8.2f\n", WeightTypeName(type), threads, bytes.size() / 1e6,
                  wall_gbps, wall_gbps / triad[threads - 1].wall, cpu_gbps, cpu_gbps / triad[threads - 1].per_cpu_s);
    }
  }
}

// A matrix of `type` with 64 distinct random rows repeated (quick to build, the same traffic).
AlignedVector<uint8_t> MatrixBytes(WeightType type, int64_t rows, int64_t cols) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> source(static_cast<size_t>(cols) * 64);
  for (float& v : source) v = normal(rng);
  const size_t row_bytes = RowBytes(type, cols);
  AlignedVector<uint8_t> bytes(row_bytes * size_t(rows));
  for (int64_t r = 0; r < rows; ++r) {
    if (r < 64) Traits(type).from_float(source.data() + r * cols, bytes.data() + r * row_bytes, cols);
    else std::copy_n(bytes.data() + (r % 64) * row_bytes, row_bytes, bytes.data() + r * row_bytes);
  }
  return bytes;
}

// GFMA per CPU-second of MatMulRows(isa) over all rows of w with n vectors.
double GfmaPerCpuSecond(KernelIsa isa, const WeightMatrix& w, int n) {
  AlignedVector<float> x(size_t(n) * w.cols, 0.5f), out(size_t(n) * w.rows);
  MatMulRows(isa, out.data(), w, x.data(), n, 0, w.rows);  // warm
  const double fma = double(w.rows) * w.cols * n;
  const int reps = std::max(3, int(2e9 / fma));
  const double cpu = CpuSeconds();
  for (int i = 0; i < reps; ++i) MatMulRows(isa, out.data(), w, x.data(), n, 0, w.rows);
  return fma * reps / 1e9 / (CpuSeconds() - cpu);
}

// The same matrix in panels (weights.h), owned by `storage`.
WeightMatrix InPanels(const WeightMatrix& w, WeightStorage* storage) {
  PlaceOptions options;
  options.panels = true;
  return *PlaceMatrix(w, options, "w", storage, nullptr);
}

void RunVectors(int64_t rows, int64_t cols) {
  std::printf("\nseveral vectors, 1 thread: GFMA per CPU-second, streamed %lld x %lld / cached 64 x %lld\n",
              static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(cols));
  std::printf("%-6s %-7s %-7s %8s %18s %18s\n", "type", "layout", "kernels", "vectors", "streamed", "cached");
  for (WeightType type : {WeightType::kF32, WeightType::kBF16, WeightType::kQ8_0, WeightType::kQ4_0}) {
    const AlignedVector<uint8_t> big = MatrixBytes(type, rows, cols), small = MatrixBytes(type, 64, cols);
    const WeightMatrix big_rows{type, big.data(), rows, cols}, small_rows{type, small.data(), 64, cols};
    WeightStorage storage;
    std::vector<std::pair<WeightMatrix, WeightMatrix>> layouts = {{big_rows, small_rows}};
    layouts.push_back({InPanels(big_rows, &storage), InPanels(small_rows, &storage)});
    for (const auto& [streamed, cached] : layouts) {
      for (KernelIsa isa : {KernelIsa::kAvx2, KernelIsa::kAvx512}) {
        if (!CpuSupports(isa)) continue;
        for (int n : {1, 2, 4, 8, 16}) {
          std::printf("%-6s %-7s %-7s %8d %18.2f %18.2f\n", WeightTypeName(type), streamed.panels() ? "panels" : "rows",
                      KernelIsaName(isa), n, GfmaPerCpuSecond(isa, streamed, n), GfmaPerCpuSecond(isa, cached, n));
        }
      }
    }
  }
}

}  // namespace
}  // namespace a2sf::worker

int main(int argc, char** argv) {
  const int64_t rows = argc > 2 ? std::atoll(argv[1]) : 16384, cols = argc > 2 ? std::atoll(argv[2]) : 4096;
  const bool vectors_only = argc > 3 && std::string(argv[3]) == "vectors";
  if (!vectors_only) a2sf::worker::Run(rows, cols);
  a2sf::worker::RunVectors(rows, cols);
  return 0;
}
