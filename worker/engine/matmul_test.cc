#include "worker/engine/matmul.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "common/float16.h"
#include "gtest/gtest.h"

namespace a2sf::worker {
namespace {

constexpr WeightType kAllTypes[] = {WeightType::kF32, WeightType::kF16, WeightType::kBF16, WeightType::kQ8_0,
                                    WeightType::kQ4_0};

// A random matrix held in `type` (bytes owned by the fixture) and random vectors.
struct Problem {
  Problem(WeightType type, int64_t rows, int64_t cols, int n_vectors, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> values(size_t(rows) * cols);
    for (float& v : values) v = normal(rng);
    bytes.resize(size_t(rows) * RowBytes(type, cols));
    for (int64_t r = 0; r < rows; ++r) {
      Traits(type).from_float(values.data() + r * cols, bytes.data() + r * RowBytes(type, cols), cols);
    }
    w = {type, bytes.data(), rows, cols};
    x.resize(size_t(n_vectors) * cols);
    for (float& v : x) v = normal(rng);
    n = n_vectors;
  }
  std::vector<uint8_t> bytes;
  WeightMatrix w;
  std::vector<float> x;
  int n;
};

std::vector<KernelIsa> Isas() {
  std::vector<KernelIsa> isas = {KernelIsa::kScalar};
  if (DetectedIsa() == KernelIsa::kAvx2) isas.push_back(KernelIsa::kAvx2);
  return isas;
}

// Every type and kernel against a double-precision product of the dequantized weights (the type's
// to_float, tested on its own in weights_test) with the vectors.
TEST(MatMul, EveryTypeAndKernelMatchesTheDequantizedProduct) {
  for (WeightType type : kAllTypes) {
    for (int64_t cols : {64, 96, 172, 768}) {
      if (cols % Traits(type).block_size != 0) continue;
      Problem p(type, 37, cols, 3, 11);
      std::vector<float> row(static_cast<size_t>(cols));
      for (KernelIsa isa : Isas()) {
        std::vector<float> out(size_t(p.n) * p.w.rows, -1.0f);
        MatMulRows(isa, out.data(), p.w, p.x.data(), p.n, 0, p.w.rows);
        for (int64_t r = 0; r < p.w.rows; ++r) {
          p.w.RowToFloat(r, row.data());
          for (int v = 0; v < p.n; ++v) {
            double want = 0.0, scale = 0.0;
            for (int64_t c = 0; c < cols; ++c) {
              want += double(row[c]) * p.x[v * cols + c];
              scale += std::fabs(double(row[c]) * p.x[v * cols + c]);
            }
            EXPECT_NEAR(out[v * p.w.rows + r], want, 1e-5 * scale + 1e-6)
                << WeightTypeName(type) << " " << KernelIsaName(isa) << " cols " << cols << " row " << r;
          }
        }
      }
    }
  }
}

// Independent of the traits' to_float: a hand-made q4_0 block whose only non-zero weight is element
// 16 (the high nibble of byte 0) and a q8_0 block whose only one is element 5.
TEST(MatMul, QuantizedKernelsReadGgufBlockLayouts) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = float(j + 1);
  BlockQ4_0 q4;
  q4.d = FloatToHalf(0.5f);
  std::memset(q4.qs, 0x88, sizeof(q4.qs));  // every weight 8 - 8 = 0
  q4.qs[0] = 0xB8;                          // element 0: 8 -> 0, element 16: 11 -> 3
  BlockQ8_0 q8;
  q8.d = FloatToHalf(0.25f);
  std::memset(q8.qs, 0, sizeof(q8.qs));
  q8.qs[5] = -4;
  for (KernelIsa isa : Isas()) {
    float y = 0.0f;
    MatMulRows(isa, &y, {WeightType::kQ4_0, &q4, 1, 32}, x.data(), 1, 0, 1);
    EXPECT_EQ(y, 0.5f * 3 * 17) << KernelIsaName(isa);
    MatMulRows(isa, &y, {WeightType::kQ8_0, &q8, 1, 32}, x.data(), 1, 0, 1);
    EXPECT_EQ(y, 0.25f * -4 * 6) << KernelIsaName(isa);
  }
}

// A row's result is the same bit for bit whether it is computed for one vector or among N, and
// whatever the thread count.
TEST(MatMul, RowResultsAreBatchAndThreadInvariant) {
  ThreadPool pool(2);
  for (WeightType type : kAllTypes) {
    const int64_t cols = type == WeightType::kQ8_0 || type == WeightType::kQ4_0 ? 256 : 172;
    Problem p(type, 1031, cols, 5, 3);  // 1031 rows x 5 vectors: large enough to be split over the pool
    for (KernelIsa isa : Isas()) {
      std::vector<float> batched(size_t(p.n) * p.w.rows);
      MatMulRows(isa, batched.data(), p.w, p.x.data(), p.n, 0, p.w.rows);
      for (int v = 0; v < p.n; ++v) {
        std::vector<float> single(size_t(p.w.rows));
        MatMulRows(isa, single.data(), p.w, p.x.data() + v * cols, 1, 0, p.w.rows);
        EXPECT_EQ(0, std::memcmp(single.data(), batched.data() + v * p.w.rows, single.size() * 4))
            << WeightTypeName(type) << " " << KernelIsaName(isa) << " vector " << v;
      }
      // Odd sub-batches and row ranges give the same rows too.
      std::vector<float> part(size_t(3) * p.w.rows);
      MatMulRows(isa, part.data(), p.w, p.x.data() + 2 * cols, 3, 100, 517);
      for (int v = 0; v < 3; ++v) {
        EXPECT_EQ(0, std::memcmp(part.data() + v * p.w.rows + 100, batched.data() + (v + 2) * p.w.rows + 100, 417 * 4))
            << WeightTypeName(type) << " " << KernelIsaName(isa);
      }
    }
    std::vector<float> threaded(size_t(p.n) * p.w.rows), alone(size_t(p.n) * p.w.rows);
    MatMul(threaded.data(), p.w, p.x.data(), p.n, &pool);
    MatMul(alone.data(), p.w, p.x.data(), p.n, nullptr);
    EXPECT_EQ(0, std::memcmp(threaded.data(), alone.data(), alone.size() * 4)) << WeightTypeName(type);
  }
}

TEST(MatMul, SimdKernelsAgreeWithScalarOnes) {
  if (DetectedIsa() != KernelIsa::kAvx2) GTEST_SKIP() << "this CPU has no AVX2/FMA/F16C: only the scalar kernels run";
  for (WeightType type : kAllTypes) {
    Problem p(type, 64, 768, 2, 5);
    std::vector<float> scalar(size_t(p.n) * p.w.rows), simd(size_t(p.n) * p.w.rows);
    MatMulRows(KernelIsa::kScalar, scalar.data(), p.w, p.x.data(), p.n, 0, p.w.rows);
    MatMulRows(KernelIsa::kAvx2, simd.data(), p.w, p.x.data(), p.n, 0, p.w.rows);
    for (size_t i = 0; i < simd.size(); ++i) {
      EXPECT_NEAR(simd[i], scalar[i], 1e-4f * (1.0f + std::fabs(scalar[i]))) << WeightTypeName(type) << " " << i;
    }
  }
}

}  // namespace
}  // namespace a2sf::worker
