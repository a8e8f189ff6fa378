// Attention's kernels and SwiGLU's gate (math.h) against double-precision sums, over head widths and
// row counts that reach every path: blocks of 8 rows and the rows after them, odd row counts (the
// even/odd sums), head widths that are multiples of 8 (the AVX2 kernels) and not (the portable ones,
// on every CPU), rows held as f32, f16 and q8_0 (KvRows; the reference takes the f16 values exactly,
// and the q8_0 ones as the weights' decoder gives them -- head widths not a multiple of 32 end in a
// short block). Rows past n are NaN: a kernel that read one would return NaN.
#include "worker/engine/math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include "common/float16.h"
#include "gtest/gtest.h"

namespace a2sf::worker {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Rows {
  std::vector<float> q, rows, weights;
  std::vector<uint16_t> halves;      // rows as f16
  std::vector<uint8_t> quantized;    // rows as q8_0 (Q8_0Bytes(head_dim) each)
  std::vector<float> dequantized;    // those rows' values, by the weights' q8_0 decoder

  KvRows As(WeightType type) const {
    if (type == WeightType::kF16) return KvRows{halves.data(), type};
    if (type == WeightType::kQ8_0) return KvRows{quantized.data(), type};
    return KvRows{rows.data(), type};
  }
  // Row t, column c as the kernel of `type` sees it.
  double At(WeightType type, int t, int c, int head_dim) const {
    const size_t i = size_t(t) * head_dim + c;
    if (type == WeightType::kF16) return HalfToFloat(halves[i]);
    if (type == WeightType::kQ8_0) return dequantized[i];
    return rows[i];
  }
};

// The rows as q8_0, each by the weights' encoder and decoder (worker/model/weights.h); the rows past n
// get NaN scales (a kernel that read one would return NaN).
void Quantize(Rows* r, int n, int head_dim) {
  const WeightTypeTraits& q8 = Traits(WeightType::kQ8_0);
  const size_t row_bytes = Q8_0Bytes(head_dim), rows = r->rows.size() / head_dim;
  r->quantized.assign(rows * row_bytes, 1);
  r->dequantized.assign(rows * head_dim, kNaN);
  for (size_t t = 0; t < rows; ++t) {
    uint8_t* row = r->quantized.data() + t * row_bytes;
    if (t < size_t(n)) {
      q8.from_float(r->rows.data() + t * head_dim, row, head_dim);
      q8.to_float(row, r->dequantized.data() + t * head_dim, head_dim);
      continue;
    }
    for (int b = 0; b * kQuantBlock < head_dim; ++b) {
      const uint16_t nan = 0x7e00;
      std::memcpy(row + b * sizeof(BlockQ8_0), &nan, 2);
    }
  }
}

// n rows of width head_dim in [-1, 1), then 40 NaN rows; a query and softmax-like weights.
Rows MakeRows(int n, int head_dim, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  Rows r;
  r.rows.assign(size_t(n + 40) * head_dim, kNaN);
  for (size_t i = 0; i < size_t(n) * head_dim; ++i) r.rows[i] = u(rng);
  for (int i = 0; i < head_dim; ++i) r.q.push_back(u(rng));
  for (int t = 0; t < n; ++t) r.weights.push_back(0.5f * (u(rng) + 1.0f));
  r.weights.push_back(kNaN);
  for (float v : r.rows) r.halves.push_back(FloatToHalf(v));
  Quantize(&r, n, head_dim);
  return r;
}

class AttentionKernels : public ::testing::TestWithParam<std::tuple<int, WeightType>> {};  // head_dim, rows' type

TEST_P(AttentionKernels, ScoresAreScaledDotProducts) {
  const auto [head_dim, type] = GetParam();
  for (int n : {1, 2, 7, 8, 9, 15, 16, 17, 31, 64, 100, 333}) {
    const Rows r = MakeRows(n, head_dim, unsigned(n * 131 + head_dim));
    std::vector<float> scores(n + 1, -7.0f);
    AttentionScores(scores.data(), r.q.data(), r.As(type), n, head_dim, 0.125f);
    for (int t = 0; t < n; ++t) {
      double dot = 0.0, magnitude = 0.0;
      for (int c = 0; c < head_dim; ++c) {
        dot += double(r.q[c]) * r.At(type, t, c, head_dim);
        magnitude += std::fabs(double(r.q[c]) * r.At(type, t, c, head_dim));
      }
      ASSERT_NEAR(scores[t], 0.125 * dot, 0.125 * magnitude * 1e-6 + 1e-12)
          << "head_dim " << head_dim << " n " << n << " row " << t;
    }
    EXPECT_EQ(scores[n], -7.0f) << "wrote past n";
  }
}

TEST_P(AttentionKernels, WeightedSumsOfValueRows) {
  const auto [head_dim, type] = GetParam();
  for (int n : {1, 2, 3, 16, 17, 18, 33, 100, 333}) {
    const Rows r = MakeRows(n, head_dim, unsigned(n * 977 + head_dim));
    std::vector<float> out(head_dim + 1, -7.0f);
    WeightedSum(out.data(), r.weights.data(), r.As(type), n, head_dim);
    for (int c = 0; c < head_dim; ++c) {
      double sum = 0.0, magnitude = 0.0;
      for (int t = 0; t < n; ++t) {
        sum += double(r.weights[t]) * r.At(type, t, c, head_dim);
        magnitude += std::fabs(double(r.weights[t]) * r.At(type, t, c, head_dim));
      }
      ASSERT_NEAR(out[c], sum, magnitude * 1e-6 + 1e-12) << "head_dim " << head_dim << " n " << n << " column " << c;
    }
    EXPECT_EQ(out[head_dim], -7.0f) << "wrote past head_dim";
  }
}

// The f16 kernels read the f16 rows, not some other rounding of them: against the f32 rows, the scores
// of rows of several hundred differ by more than the f32 kernels' error.
TEST(AttentionKernels, F16RowsAreReadAsF16) {
  Rows r = MakeRows(64, 64, 7);
  for (float& v : r.rows) v = std::isnan(v) ? v : v * 300.0f;
  r.halves.clear();
  for (float v : r.rows) r.halves.push_back(FloatToHalf(v));
  std::vector<float> f32(64), f16(64);
  AttentionScores(f32.data(), r.q.data(), r.As(WeightType::kF32), 64, 64, 1.0f);
  AttentionScores(f16.data(), r.q.data(), r.As(WeightType::kF16), 64, 64, 1.0f);
  double largest = 0.0;
  for (int t = 0; t < 64; ++t) largest = std::max(largest, std::fabs(double(f32[t]) - f16[t]));
  EXPECT_GT(largest, 1e-3);
}

// q8_0 blocks with any fp16 scale the kernels may meet in a row written elsewhere: negative, zero,
// subnormal, the largest finite; the same double-precision references over the decoder's values.
TEST(AttentionKernels, Q8_0RowsWithAnyScale) {
  const uint16_t scales[] = {0xbe00 /* -1.5 */, 0x0000, 0x8000 /* -0 */, 0x0001 /* smallest subnormal */,
                             0x03ff /* largest subnormal */, 0x7bff /* 65504 */, 0xfbff /* -65504 */, 0x3c00 /* 1 */};
  for (int head_dim : {8, 24, 40, 64, 72}) {
    const int n = 19;
    Rows r = MakeRows(n, head_dim, unsigned(head_dim * 7));
    const size_t row_bytes = Q8_0Bytes(head_dim);
    int next = 0;
    for (int t = 0; t < n; ++t) {
      uint8_t* row = r.quantized.data() + size_t(t) * row_bytes;
      for (int b = 0; b * kQuantBlock < head_dim; ++b) {
        std::memcpy(row + b * sizeof(BlockQ8_0), &scales[next++ % 8], 2);
      }
      Traits(WeightType::kQ8_0).to_float(row, r.dequantized.data() + size_t(t) * head_dim, head_dim);
    }
    std::vector<float> scores(n), out(head_dim);
    AttentionScores(scores.data(), r.q.data(), r.As(WeightType::kQ8_0), n, head_dim, 1.0f);
    WeightedSum(out.data(), r.weights.data(), r.As(WeightType::kQ8_0), n, head_dim);
    for (int t = 0; t < n; ++t) {
      double dot = 0.0, magnitude = 0.0;
      for (int c = 0; c < head_dim; ++c) {
        dot += double(r.q[c]) * r.At(WeightType::kQ8_0, t, c, head_dim);
        magnitude += std::fabs(double(r.q[c]) * r.At(WeightType::kQ8_0, t, c, head_dim));
      }
      ASSERT_NEAR(scores[t], dot, magnitude * 1e-6 + 1e-30) << "head_dim " << head_dim << " row " << t;
    }
    for (int c = 0; c < head_dim; ++c) {
      double sum = 0.0, magnitude = 0.0;
      for (int t = 0; t < n; ++t) {
        sum += double(r.weights[t]) * r.At(WeightType::kQ8_0, t, c, head_dim);
        magnitude += std::fabs(double(r.weights[t]) * r.At(WeightType::kQ8_0, t, c, head_dim));
      }
      ASSERT_NEAR(out[c], sum, magnitude * 1e-6 + 1e-30) << "head_dim " << head_dim << " column " << c;
    }
  }
}

// Head widths of LLaMA-family models (64, 128) and others, including ones that are no multiple of 8.
INSTANTIATE_TEST_SUITE_P(HeadWidths, AttentionKernels,
                         ::testing::Combine(::testing::Values(4, 6, 8, 24, 32, 40, 64, 72, 128),
                                            ::testing::Values(WeightType::kF32, WeightType::kF16,
                                                              WeightType::kQ8_0)));

// Inputs far below the maximum, where e^x leaves float's normal range: within 1e-39 of their true
// (subnormal) weight, in the 8-wide part and in the tail (a clamp at e^-87 would give ~1e-38), and the
// others still share the rest.
TEST(Softmax, InputsFarBelowTheMaximumGetAtMostTheirTrueWeight) {
  for (int n : {3, 8, 11, 19}) {
    std::vector<float> x(n);
    for (int i = 0; i < n; ++i) x[i] = i % 3 == 0 ? 0.0f : -90.0f - float(i) * 10.0f;
    const std::vector<float> before = x;
    Softmax(x.data(), n);
    const int kept = (n + 2) / 3;
    for (int i = 0; i < n; ++i) {
      if (i % 3 == 0) {
        EXPECT_NEAR(x[i], 1.0 / kept, 1e-6) << "n " << n << " i " << i;
      } else {
        EXPECT_NEAR(x[i], std::exp(double(before[i])) / kept, 1e-39) << "n " << n << " i " << i;
      }
    }
  }
}

TEST(Softmax, SumsToOneAndKeepsOrder) {
  for (int n : {1, 5, 8, 13, 64, 257}) {
    std::vector<float> x(n);
    for (int i = 0; i < n; ++i) x[i] = std::sin(0.37f * i) * 20.0f;
    const std::vector<float> before = x;
    Softmax(x.data(), n);
    double total = 0.0, max = before[0];
    for (float v : before) max = std::max<double>(max, v);
    double denominator = 0.0;
    for (float v : before) denominator += std::exp(double(v) - max);
    for (int i = 0; i < n; ++i) {
      EXPECT_NEAR(x[i], std::exp(double(before[i]) - max) / denominator, 1e-6) << "n " << n << " i " << i;
      total += x[i];
    }
    EXPECT_NEAR(total, 1.0, 1e-5) << "n " << n;
  }
}

// silu(x) * up against double precision, over inputs from far below zero (where e^-x overflows a
// float) to far above, and lengths that leave every tail of the 8-wide path; the element past n keeps
// its value.
TEST(SwiGlu, IsSiluOfTheGateTimesUp) {
  for (int n : {1, 7, 8, 9, 16, 23, 2048}) {
    std::vector<float> gate(n + 1), up(n + 1);
    for (int i = 0; i <= n; ++i) {
      gate[i] = std::sin(0.71f * i) * (i % 3 == 0 ? 120.0f : 6.0f);
      up[i] = std::cos(0.29f * i) * 3.0f;
    }
    gate[0] = 0.0f;
    if (n > 1) gate[1] = -0.0f;
    const std::vector<float> before = gate;
    SwiGlu(gate.data(), up.data(), size_t(n));
    for (int i = 0; i < n; ++i) {
      const double x = before[i];
      const double expected = x / (1.0 + std::exp(-x)) * up[i];
      EXPECT_NEAR(gate[i], expected, 1e-6 * std::max(1.0, std::abs(expected))) << "n " << n << " x " << x;
    }
    EXPECT_EQ(gate[n], before[n]) << "n " << n;
  }
}

// Beyond ExpAvx2's range and at the edges of float: a gate far below zero gives 0 (not x * e^-87), far
// above it x * up, and infinities and NaN what the formula gives in double precision (NaN for -inf:
// -inf / (1 + inf)) -- on every path, the 8-wide one and its tail.
TEST(SwiGlu, HugeAndNonFiniteGates) {
  const float inf = std::numeric_limits<float>::infinity(), largest = std::numeric_limits<float>::max();
  const std::vector<float> edges = {-1e30f, -largest, largest, inf, -inf, kNaN, 1e30f, -88.0f, -87.0f, 88.0f, -200.0f};
  for (size_t n : {edges.size(), size_t(8), size_t(3)}) {
    std::vector<float> gate(edges.begin(), edges.begin() + std::min(n, edges.size())), up(gate.size(), 0.5f);
    const std::vector<float> before = gate;
    SwiGlu(gate.data(), up.data(), gate.size());
    for (size_t i = 0; i < gate.size(); ++i) {
      const double x = before[i];
      const double expected = x / (1.0 + std::exp(-x)) * 0.5;
      if (std::isnan(expected)) {
        EXPECT_TRUE(std::isnan(gate[i])) << "x " << x;
      } else if (std::isinf(expected)) {
        EXPECT_EQ(double(gate[i]), expected) << "x " << x;
      } else {
        EXPECT_NEAR(gate[i], expected, 1e-6 * std::max(1e-30, std::abs(expected))) << "x " << x;
      }
    }
  }
}

}  // namespace
}  // namespace a2sf::worker
