#include "worker/engine/matmul.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/float16.h"
#include "gtest/gtest.h"

namespace a2sf::worker {
namespace {

constexpr WeightType kAllTypes[] = {WeightType::kF32, WeightType::kF16, WeightType::kBF16, WeightType::kQ8_0,
                                    WeightType::kQ4_0};

// A random matrix held in `type` (bytes owned by the fixture) and random vectors. `rows` is the
// row-major matrix; `w` is it, or with `panels` the same matrix placed in panels.
struct Problem {
  Problem(WeightType type, int64_t n_rows, int64_t cols, int n_vectors, uint32_t seed, bool panels = false) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> values(size_t(n_rows) * cols);
    for (float& v : values) v = normal(rng);
    bytes.resize(size_t(n_rows) * RowBytes(type, cols));
    for (int64_t r = 0; r < n_rows; ++r) {
      Traits(type).from_float(values.data() + r * cols, bytes.data() + r * RowBytes(type, cols), cols);
    }
    rows = {type, bytes.data(), n_rows, cols};
    w = rows;
    if (panels) {
      PlaceOptions options;
      options.panels = true;
      w = *PlaceMatrix(rows, options, "w", &storage, nullptr);
    }
    x.resize(size_t(n_vectors) * cols);
    for (float& v : x) v = normal(rng);
    n = n_vectors;
  }
  std::vector<uint8_t> bytes;
  WeightStorage storage;
  WeightMatrix rows;
  WeightMatrix w;
  std::vector<float> x;
  int n;
};

constexpr WeightType kFloatTypes[] = {WeightType::kF32, WeightType::kF16, WeightType::kBF16};

// The kernels this CPU runs, scalar first.
std::vector<KernelIsa> Isas() {
  std::vector<KernelIsa> isas;
  for (KernelIsa isa : {KernelIsa::kScalar, KernelIsa::kAvx2, KernelIsa::kAvx512}) {
    if (CpuSupports(isa)) isas.push_back(isa);
  }
  return isas;
}

// The vector the kernels of `type` multiply: x itself for the float types; for q8_0 and q4_0, x as
// its 16-bit blocks hold it (the quantizer is tested on its own below).
std::vector<float> EffectiveVector(WeightType type, const float* x, int64_t cols) {
  std::vector<float> out(x, x + cols);
  if (!IsQuantized(type)) return out;
  std::vector<BlockQ16> blocks(size_t(cols / 32));
  QuantizeQ16(KernelIsa::kScalar, x, cols, blocks.data());
  for (int64_t c = 0; c < cols; ++c) out[c] = blocks[c / 32].d * float(blocks[c / 32].qs[c % 32]);
  return out;
}

// Every type and kernel against a double-precision product of the dequantized weights (the type's
// to_float, tested on its own in weights_test) with the vectors as the type's kernels take them.
TEST(MatMul, EveryTypeAndKernelMatchesTheDequantizedProduct) {
  for (WeightType type : kAllTypes) {
    for (int64_t cols : {64, 96, 172, 768}) {
      if (cols % Traits(type).block_size != 0) continue;
      Problem p(type, 37, cols, 3, 11);
      std::vector<float> row(static_cast<size_t>(cols));
      for (KernelIsa isa : Isas()) {
        std::vector<float> out(size_t(p.n) * p.w.rows, -1.0f);
        MatMulRows(isa, out.data(), p.w, p.x.data(), p.n, 0, p.w.rows);
        for (int v = 0; v < p.n; ++v) {
          const std::vector<float> x = EffectiveVector(type, p.x.data() + v * cols, cols);
          for (int64_t r = 0; r < p.w.rows; ++r) {
            p.w.RowToFloat(r, row.data());
            double want = 0.0, scale = 0.0;
            for (int64_t c = 0; c < cols; ++c) {
              want += double(row[c]) * x[c];
              scale += std::fabs(double(row[c]) * x[c]);
            }
            EXPECT_NEAR(out[v * p.w.rows + r], want, 1e-5 * scale + 1e-6)
                << WeightTypeName(type) << " " << KernelIsaName(isa) << " cols " << cols << " row " << r;
          }
        }
      }
    }
  }
}

// The quantized kernels' vectors: d = max|x| / 32767 and x / d rounded half away from zero, checked
// by hand on a block whose scale is exactly 1 (ties included), and against the definition on random
// blocks; the AVX2 quantizer gives the scalar one's bytes.
TEST(MatMul, VectorQuantizerRoundsToSixteenBits) {
  std::vector<float> x(4 * 32);
  for (int j = 0; j < 32; ++j) x[j] = j == 0 ? -32767.0f : (j % 2 ? 1.0f : -1.0f) * (float(j) + 0.5f);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (size_t j = 32; j < x.size(); ++j) x[j] = j < 64 ? 0.0f : normal(rng);  // an all-zero block too
  std::vector<BlockQ16> scalar(4), simd(4);
  QuantizeQ16(KernelIsa::kScalar, x.data(), int64_t(x.size()), scalar.data());
  EXPECT_EQ(scalar[0].d, 1.0f);
  EXPECT_EQ(scalar[0].qs[0], -32767);
  EXPECT_EQ(scalar[0].qs[1], 2);    // 1.5 -> 2
  EXPECT_EQ(scalar[0].qs[2], -3);   // -2.5 -> -3
  EXPECT_EQ(scalar[0].qs[31], 32);  // 31.5 -> 32
  EXPECT_EQ(scalar[1].d, 0.0f);
  for (int b = 2; b < 4; ++b) {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b * 32 + j]));
    EXPECT_EQ(scalar[b].d, amax / 32767.0f);
    for (int j = 0; j < 32; ++j) {
      EXPECT_LE(std::fabs(scalar[b].d * scalar[b].qs[j] - x[b * 32 + j]), 0.5001f * scalar[b].d) << b << " " << j;
    }
  }
  for (KernelIsa isa : Isas()) {
    QuantizeQ16(isa, x.data(), int64_t(x.size()), simd.data());
    EXPECT_EQ(0, std::memcmp(simd.data(), scalar.data(), sizeof(BlockQ16) * scalar.size())) << KernelIsaName(isa);
  }
}

// Vectors of a broken model (NaN or infinite activations) quantize by the same rule on every path:
// a NaN is skipped by amax and held as 0; an infinite amax gives d = inf and zeros (its id is 0); the
// SIMD quantizer gives the scalar one's bytes, and no conversion is undefined (the sanitizer builds).
TEST(MatMul, VectorQuantizerHoldsNonFiniteValuesAsZero) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> x(3 * 32, 1.0f);
  for (int j = 0; j < 32; ++j) x[j] = float(j - 10);
  x[3] = nan, x[0] = nan;           // block 0: NaNs, amax 21 from the rest
  x[32 + 17] = inf;                 // block 1: an infinity
  x[64 + 8] = -inf, x[64 + 9] = nan;
  std::vector<BlockQ16> scalar(3), simd(3);
  QuantizeQ16(KernelIsa::kScalar, x.data(), int64_t(x.size()), scalar.data());
  EXPECT_EQ(scalar[0].d, 21.0f / 32767.0f);
  EXPECT_EQ(scalar[0].qs[0], 0);
  EXPECT_EQ(scalar[0].qs[3], 0);
  EXPECT_EQ(scalar[0].qs[31], 32767);
  for (int b = 1; b < 3; ++b) {
    EXPECT_EQ(scalar[b].d, inf) << b;
    for (int j = 0; j < 32; ++j) EXPECT_EQ(scalar[b].qs[j], 0) << b << " " << j;
  }
  for (KernelIsa isa : Isas()) {
    QuantizeQ16(isa, x.data(), int64_t(x.size()), simd.data());
    EXPECT_EQ(0, std::memcmp(simd.data(), scalar.data(), sizeof(BlockQ16) * scalar.size())) << KernelIsaName(isa);
  }
}

// Independent of the traits' to_float: a hand-made q4_0 block whose only non-zero weight is element
// 16 (the high nibble of byte 0) and a q8_0 block whose only one is element 5.
TEST(MatMul, QuantizedKernelsReadGgufBlockLayouts) {
  // Integers, the largest 32767: the vector's 16-bit block has scale 1 and holds them exactly.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = float(j + 1);
  x[31] = 32767.0f;
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

// Every row of p against the same row computed alone, with other vector counts, and in ranges that
// start on every phase of a tile of up to four rows.
void CheckInvariance(const Problem& p, KernelIsa isa, const std::string& label) {
  const int64_t rows = p.w.rows, cols = p.w.cols;
  const std::string what = label + " " + KernelIsaName(isa) + " rows " + std::to_string(rows);
  std::vector<float> batched(size_t(p.n) * rows);
  MatMulRows(isa, batched.data(), p.w, p.x.data(), p.n, 0, rows);
  for (int v = 0; v < p.n; ++v) {
    std::vector<float> single(static_cast<size_t>(rows));
    MatMulRows(isa, single.data(), p.w, p.x.data() + v * cols, 1, 0, rows);
    EXPECT_EQ(0, std::memcmp(single.data(), batched.data() + v * rows, single.size() * 4)) << what << " vector " << v;
  }
  for (int64_t first : {1, 2, 3}) {
    std::vector<float> shifted(size_t(p.n) * rows);
    MatMulRows(isa, shifted.data(), p.w, p.x.data(), p.n, first, rows - first);
    for (int v = 0; v < p.n; ++v) {
      const size_t at = size_t(v) * rows + first;
      EXPECT_EQ(0, std::memcmp(shifted.data() + at, batched.data() + at, size_t(rows - 2 * first) * 4))
          << what << " from row " << first;
    }
  }
  for (int64_t r : {int64_t{0}, int64_t{1}, rows / 2, rows - 1}) {
    std::vector<float> one(static_cast<size_t>(rows));
    MatMulRows(isa, one.data(), p.w, p.x.data(), 1, r, r + 1);
    EXPECT_EQ(0, std::memcmp(one.data() + r, batched.data() + r, 4)) << what << " row " << r;
  }
  // An odd sub-batch (vectors 2..4) over an odd range of rows.
  const int64_t begin = rows / 10, end = rows - rows / 7;
  std::vector<float> part(size_t(3) * rows);
  MatMulRows(isa, part.data(), p.w, p.x.data() + 2 * cols, 3, begin, end);
  for (int v = 0; v < 3; ++v) {
    EXPECT_EQ(0, std::memcmp(part.data() + v * rows + begin, batched.data() + (v + 2) * rows + begin,
                             size_t(end - begin) * 4))
        << what;
  }
}

// Panels: every kernel gives, bit for bit, the fused multiply-adds of the row's weights and the vector
// in column order -- computed here from the row-major matrix with std::fma -- for every float type,
// column count, row count (a padded last panel or none) and vector count (every tile shape and
// remainder: 1..17), writing nothing past its results.
TEST(MatMulPanels, EveryKernelGivesTheFusedSumInColumnOrder) {
  constexpr size_t kGuard = 64;
  for (WeightType type : kFloatTypes) {
    for (int64_t cols : {5, 64, 172, 768}) {
      for (int64_t n_rows : {23, 48, 61, 200}) {
        Problem p(type, n_rows, cols, 17, uint32_t(cols * 7 + n_rows), /*panels=*/true);
        ASSERT_TRUE(p.w.panels());
        std::vector<float> want(size_t(p.n) * n_rows), row(static_cast<size_t>(cols));
        for (int64_t r = 0; r < n_rows; ++r) {
          p.rows.RowToFloat(r, row.data());
          for (int v = 0; v < p.n; ++v) {
            float acc = 0.0f;
            for (int64_t c = 0; c < cols; ++c) acc = std::fma(row[size_t(c)], p.x[size_t(v * cols + c)], acc);
            want[size_t(v) * n_rows + r] = acc;
          }
        }
        for (KernelIsa isa : Isas()) {
          for (int n = 1; n <= p.n; ++n) {
            std::vector<float> out(size_t(n) * n_rows + kGuard, -1.0f);
            MatMulRows(isa, out.data(), p.w, p.x.data(), n, 0, n_rows);
            const std::string what = std::string(WeightTypeName(type)) + " " + KernelIsaName(isa) + " cols " +
                                     std::to_string(cols) + " rows " + std::to_string(n_rows) + " vectors " +
                                     std::to_string(n);
            for (int v = 0; v < n; ++v) {
              EXPECT_EQ(0, std::memcmp(out.data() + v * n_rows, want.data() + v * n_rows, size_t(n_rows) * 4))
                  << what << " vector " << v;
            }
            EXPECT_TRUE(std::all_of(out.end() - kGuard, out.end(), [](float f) { return f == -1.0f; })) << what;
          }
        }
      }
    }
  }
}

// Weight j of a row-major GGUF block of `type` as an integer (q8_0: int8; q4_0: nibble - 8, low
// nibbles first) and the block's fp16 scale.
int GgufWeight(WeightType type, const uint8_t* block, int j) {
  if (type == WeightType::kQ8_0) return reinterpret_cast<const BlockQ8_0*>(block)->qs[j];
  const uint8_t byte = reinterpret_cast<const BlockQ4_0*>(block)->qs[j % 16];
  return (j < 16 ? byte & 0x0f : byte >> 4) - 8;
}
uint16_t GgufScale(const uint8_t* block) {
  uint16_t d;
  std::memcpy(&d, block, 2);
  return d;
}

// q8_0 and q4_0 in panels: every kernel gives, bit for bit, one fused multiply-add chain per (row,
// vector) in block order -- acc = fma(d_w * d_x, float(exact integer dot product of the block), acc)
// -- computed here from the row-major GGUF blocks and the vector's 16-bit blocks, for every vector
// count (1..17), padded last panels and panel-aligned ranges, writing nothing else.
TEST(MatMulPanels, QuantizedPanelsGiveOneScaledBlockSumChainPerRow) {
  constexpr size_t kGuard = 64;
  for (WeightType type : {WeightType::kQ8_0, WeightType::kQ4_0}) {
    for (int64_t cols : {32, 64, 256, 768}) {
      for (int64_t n_rows : {23, 48, 61, 200}) {
        Problem p(type, n_rows, cols, 17, uint32_t(cols * 3 + n_rows), /*panels=*/true);
        ASSERT_TRUE(p.w.panels());
        std::vector<float> want(size_t(p.n) * n_rows);
        std::vector<BlockQ16> xq(size_t(cols / 32));
        const size_t block_bytes = Traits(type).block_bytes;
        for (int v = 0; v < p.n; ++v) {
          QuantizeQ16(KernelIsa::kScalar, p.x.data() + v * cols, cols, xq.data());
          for (int64_t r = 0; r < n_rows; ++r) {
            float acc = 0.0f;
            for (int64_t b = 0; b < cols / 32; ++b) {
              const uint8_t* block = p.rows.row(r) + size_t(b) * block_bytes;
              int32_t dot = 0;
              for (int j = 0; j < 32; ++j) dot += GgufWeight(type, block, j) * int32_t(xq[size_t(b)].qs[j]);
              acc = std::fma(HalfToFloat(GgufScale(block)) * xq[size_t(b)].d, float(dot), acc);
            }
            want[size_t(v) * n_rows + r] = acc;
          }
        }
        for (KernelIsa isa : Isas()) {
          for (int n = 1; n <= p.n; ++n) {
            for (int64_t begin : {int64_t{0}, int64_t{16}}) {
              if (begin >= n_rows) continue;
              std::vector<float> out(size_t(n) * n_rows + kGuard, -1.0f);
              MatMulRows(isa, out.data(), p.w, p.x.data(), n, begin, n_rows);
              const std::string what = std::string(WeightTypeName(type)) + " " + KernelIsaName(isa) + " cols " +
                                       std::to_string(cols) + " rows " + std::to_string(n_rows) + " vectors " +
                                       std::to_string(n) + " from " + std::to_string(begin);
              for (int v = 0; v < n; ++v) {
                // want's vector v is the same vector (the first n of p.x)
                EXPECT_EQ(0, std::memcmp(out.data() + v * n_rows + begin, want.data() + v * n_rows + begin,
                                         size_t(n_rows - begin) * 4))
                    << what << " vector " << v;
                EXPECT_TRUE(std::all_of(out.data() + v * n_rows, out.data() + v * n_rows + begin,
                                        [](float f) { return f == -1.0f; }))
                    << what;
              }
              EXPECT_TRUE(std::all_of(out.end() - kGuard, out.end(), [](float f) { return f == -1.0f; })) << what;
            }
          }
        }
      }
    }
  }
}

// q8_0 in panels at the integer extremes: weights of -128 (GGUF allows it) against a vector whose
// 16-bit values are all -32767 make each block's dot product 32 x 128 x 32767 = 134,213,632: every
// row of a two-block matrix is 2 x 4096 to within fp32 rounding on every ISA (a 16-bit sum would wrap,
// a weight widened without its sign would flip the result).
TEST(MatMulPanels, Q8_0ExtremeBlocksSumWithoutOverflow) {
  constexpr int64_t kRows = 20, kCols = 64;
  std::vector<BlockQ8_0> blocks(size_t(kRows * kCols / 32));
  for (BlockQ8_0& b : blocks) {
    b.d = 0x3c00;  // fp16 1.0
    std::fill(std::begin(b.qs), std::end(b.qs), int8_t(-128));
  }
  const WeightMatrix rows{WeightType::kQ8_0, blocks.data(), kRows, kCols};
  PlaceOptions options;
  options.panels = true;
  WeightStorage storage;
  const WeightMatrix w = *PlaceMatrix(rows, options, "w", &storage, nullptr);
  ASSERT_TRUE(w.panels());
  const std::vector<float> x(kCols, -1.0f);  // quantizes to d = 1/32767, every value -32767
  for (KernelIsa isa : Isas()) {
    std::vector<float> out(kRows, 0.0f);
    MatMulRows(isa, out.data(), w, x.data(), 1, 0, kRows);
    for (int64_t r = 0; r < kRows; ++r) {
      EXPECT_NEAR(out[r], 8192.0f, 8192.0f * 1e-6f) << KernelIsaName(isa) << " row " << r;
    }
  }
}

// Panels: a row's result does not depend on the rows computed with it (panel-aligned ranges, as
// MatMuls' chunks are; rows outside the range are left alone), on the vectors beside it, or on the
// threads; large enough to be streamed and split over the pool (one chunk per thread: with 3 and 7
// threads the chunks end inside the matrix off a power of two, the last one holding the padded panel).
TEST(MatMulPanels, RowResultsAreBatchRangeAndThreadInvariant) {
  ThreadPool pool2(2), pool3(3), pool7(7);
  for (WeightType type : kAllTypes) {
    const int64_t n_rows = 3001, cols = 768;  // 187 whole panels and 9 rows
    Problem p(type, n_rows, cols, 9, 17, /*panels=*/true);
    for (KernelIsa isa : Isas()) {
      const std::string what = std::string(WeightTypeName(type)) + " " + KernelIsaName(isa);
      std::vector<float> all(size_t(p.n) * n_rows);
      MatMulRows(isa, all.data(), p.w, p.x.data(), p.n, 0, n_rows);
      for (int v = 0; v < p.n; ++v) {
        std::vector<float> single(static_cast<size_t>(n_rows));
        MatMulRows(isa, single.data(), p.w, p.x.data() + v * cols, 1, 0, n_rows);
        EXPECT_EQ(0, std::memcmp(single.data(), all.data() + v * n_rows, single.size() * 4)) << what << " vector " << v;
      }
      for (auto [begin, end] : {std::pair<int64_t, int64_t>{16, n_rows}, {32, 48}, {1600, 2992}, {2992, n_rows}}) {
        std::vector<float> part(size_t(3) * n_rows, -7.0f);
        MatMulRows(isa, part.data(), p.w, p.x.data() + 2 * cols, 3, begin, end);
        for (int v = 0; v < 3; ++v) {
          const float* mine = part.data() + v * n_rows;
          EXPECT_EQ(0, std::memcmp(mine + begin, all.data() + (v + 2) * n_rows + begin, size_t(end - begin) * 4))
              << what << " rows " << begin << ".." << end;
          const bool untouched = std::all_of(mine, mine + begin, [](float f) { return f == -7.0f; }) &&
                                 std::all_of(mine + end, mine + n_rows, [](float f) { return f == -7.0f; });
          EXPECT_TRUE(untouched) << what << " rows " << begin << ".." << end << " vector " << v;
        }
      }
    }
    std::vector<float> alone(size_t(p.n) * n_rows);
    MatMul(alone.data(), p.w, p.x.data(), p.n, nullptr);
    for (ThreadPool* pool : {&pool2, &pool3, &pool7}) {
      std::vector<float> threaded(size_t(p.n) * n_rows, -7.0f);
      MatMul(threaded.data(), p.w, p.x.data(), p.n, pool);
      EXPECT_EQ(0, std::memcmp(threaded.data(), alone.data(), alone.size() * 4))
          << WeightTypeName(type) << " on " << pool->num_threads() << " threads";
    }
  }
}

// A range that does not start on a panel would compute rows outside it: refused loudly.
TEST(MatMulPanelsDeathTest, RangesOffPanelBoundariesAbort) {
  Problem p(WeightType::kF32, 40, 32, 1, 3, /*panels=*/true);
  std::vector<float> out(40);
  EXPECT_DEATH(MatMulRows(KernelIsa::kScalar, out.data(), p.w, p.x.data(), 1, 8, 40), "must start and end on panels");
  EXPECT_DEATH(MatMulRows(KernelIsa::kScalar, out.data(), p.w, p.x.data(), 1, 0, 24), "must start and end on panels");
}

// A row's result is the same bit for bit whether it is computed for one vector or among N, in any
// tile of rows and whatever the thread count. Two sizes: a matrix small enough for the kernels' tiles
// of several rows (cached) and one streamed a row at a time, large enough to be split over the pool.
TEST(MatMul, RowResultsAreBatchAndThreadInvariant) {
  ThreadPool pool(2);
  for (WeightType type : kAllTypes) {
    const int64_t cols = IsQuantized(type) ? 256 : 172;
    for (int64_t rows : {61, 1031}) {
      Problem p(type, rows, cols, 5, 3);
      for (KernelIsa isa : Isas()) CheckInvariance(p, isa, WeightTypeName(type));
      std::vector<float> threaded(size_t(p.n) * p.w.rows), alone(size_t(p.n) * p.w.rows);
      MatMul(threaded.data(), p.w, p.x.data(), p.n, &pool);
      MatMul(alone.data(), p.w, p.x.data(), p.n, nullptr);
      EXPECT_EQ(0, std::memcmp(threaded.data(), alone.data(), alone.size() * 4)) << WeightTypeName(type);
    }
  }
}

// Several products in one fork-join give each product's MatMul bits, whatever their types and sizes,
// with a pool of two threads and alone.
TEST(MatMul, SeveralProductsAtOnceGiveEachProductsResult) {
  ThreadPool pool(2);
  // b and d (both quantized) share the vectors quantized once.
  const Problem a(WeightType::kF32, 1031, 256, 3, 21), b(WeightType::kQ8_0, 64, 256, 3, 22),
      c(WeightType::kBF16, 517, 256, 3, 23), d(WeightType::kQ4_0, 300, 256, 3, 24);
  for (ThreadPool* threads : {&pool, static_cast<ThreadPool*>(nullptr)}) {
    std::vector<float> alone[4], together[4];
    const Problem* problems[] = {&a, &b, &c, &d};
    std::vector<Product> products;
    for (int i = 0; i < 4; ++i) {
      const Problem& p = *problems[i];
      alone[i].assign(size_t(p.n) * p.w.rows, -1.0f);
      together[i].assign(size_t(p.n) * p.w.rows, -2.0f);
      MatMul(alone[i].data(), p.w, a.x.data(), p.n, threads);
      products.push_back({together[i].data(), &p.w, a.x.data()});
    }
    MatMuls(products, a.n, threads);
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(0, std::memcmp(alone[i].data(), together[i].data(), alone[i].size() * 4)) << "product " << i;
    }
  }
}

// Float types: the same products summed in another order (close). Quantized types: exact integer
// block sums scaled and accumulated in the same order with the same roundings (bit for bit).
TEST(MatMul, SimdKernelsAgreeWithScalarOnes) {
  if (!CpuSupports(KernelIsa::kAvx2)) GTEST_SKIP() << "this CPU has no AVX2/FMA/F16C: only the scalar kernels run";
  for (WeightType type : kAllTypes) {
    for (int64_t cols : {64, 768, 2048}) {
      Problem p(type, 67, cols, 3, 5);
      std::vector<float> scalar(size_t(p.n) * p.w.rows), simd(size_t(p.n) * p.w.rows);
      MatMulRows(KernelIsa::kScalar, scalar.data(), p.w, p.x.data(), p.n, 0, p.w.rows);
      MatMulRows(KernelIsa::kAvx2, simd.data(), p.w, p.x.data(), p.n, 0, p.w.rows);
      if (IsQuantized(type)) {
        EXPECT_EQ(0, std::memcmp(simd.data(), scalar.data(), simd.size() * 4)) << WeightTypeName(type) << " " << cols;
        continue;
      }
      for (size_t i = 0; i < simd.size(); ++i) {
        EXPECT_NEAR(simd[i], scalar[i], 1e-4f * (1.0f + std::fabs(scalar[i]))) << WeightTypeName(type) << " " << i;
      }
    }
  }
}

// The AVX-512 kernels give the AVX2 kernels' bits for every type, vector count (every tile shape and
// remainder: 1..9 vectors), column count (whole 32-column chunks and float tails) and row range (odd
// starts and ends, so tiles of two rows meet a last row alone), cached or streamed.
TEST(MatMul, Avx512KernelsGiveTheAvx2KernelsBits) {
  if (!CpuSupports(KernelIsa::kAvx512)) GTEST_SKIP() << "this CPU has no AVX-512 F/VL/BW: its kernels cannot run here";
  for (WeightType type : kAllTypes) {
    for (int64_t cols : {32, 96, 172, 768}) {
      if (cols % Traits(type).block_size != 0) continue;
      for (int64_t rows : {7, 3001}) {
        if (rows > 1000 && cols != 768) continue;
        Problem p(type, rows, cols, 9, uint32_t(cols + rows));
        for (int n = 1; n <= p.n; ++n) {
          for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, rows}, {1, rows}, {1, rows - 2}}) {
            std::vector<float> avx2(size_t(n) * rows, -1.0f), avx512(size_t(n) * rows, -2.0f);
            MatMulRows(KernelIsa::kAvx2, avx2.data(), p.w, p.x.data(), n, begin, end);
            MatMulRows(KernelIsa::kAvx512, avx512.data(), p.w, p.x.data(), n, begin, end);
            for (int v = 0; v < n; ++v) {
              const size_t at = size_t(v) * rows + begin;
              EXPECT_EQ(0, std::memcmp(avx2.data() + at, avx512.data() + at, size_t(end - begin) * 4))
                  << WeightTypeName(type) << " cols " << cols << " rows " << rows << " vectors " << n << " vector " << v
                  << " from " << begin << " to " << end;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace a2sf::worker
