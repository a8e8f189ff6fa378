#include "worker/engine/math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/float16.h"

namespace a2sf::worker {
namespace {

// A head's cached rows as KvCacheSlots holds them (kv_type), one reader per type: f32, f16, or q8_0
// blocks (Q8_0Bytes a row). At(t, c) is row t's column c as a float (the portable kernels); the AVX2
// ones read eight columns at once through Load8 below.
struct F32Rows {
  const float* data;
  int head_dim;
  const float* Row(int t) const { return data + size_t(t) * head_dim; }
  float At(int t, int c) const { return Row(t)[c]; }
};
struct F16Rows {
  const uint16_t* data;
  int head_dim;
  float At(int t, int c) const { return HalfToFloat(data[size_t(t) * head_dim + c]); }
};
struct Q8_0Rows {
  const uint8_t* data;
  size_t row_bytes;  // Q8_0Bytes(head_dim)
  // Block c / 32 of row t: its fp16 scale, then its int8 values.
  const uint8_t* Block(int t, int c) const {
    return data + size_t(t) * row_bytes + size_t(c / kQuantBlock) * sizeof(BlockQ8_0);
  }
  float At(int t, int c) const {
    uint16_t d;
    std::memcpy(&d, Block(t, c), 2);
    return HalfToFloat(d) * float(int8_t(Block(t, c)[2 + c % kQuantBlock]));
  }
};

float DotPortable(const float* a, const float* b, int n) {
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) float DotAvx2(const float* a, const float* b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  float sum = _mm_cvtss_f32(h);
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// Horizontal sums of eight vectors, as one vector: lane i = sum of v[i].
__attribute__((target("avx2,fma"))) inline __m256 TransposeSum8(const __m256 v[8]) {
  const __m256 a = _mm256_hadd_ps(v[0], v[1]), b = _mm256_hadd_ps(v[2], v[3]);
  const __m256 c = _mm256_hadd_ps(v[4], v[5]), d = _mm256_hadd_ps(v[6], v[7]);
  const __m256 ab = _mm256_hadd_ps(a, b), cd = _mm256_hadd_ps(c, d);
  // ab lanes: [v0 v1 v2 v3 | v0 v1 v2 v3] partial sums of low and high halves; likewise cd for v4..v7.
  const __m256 low = _mm256_permute2f128_ps(ab, cd, 0x20), high = _mm256_permute2f128_ps(ab, cd, 0x31);
  return _mm256_add_ps(low, high);
}

// Eight rows at once share the loads of x and keep eight weight streams in flight, which is what a
// memory-bound matrix-vector product needs; four- and one-row loops take the remainder.
__attribute__((target("avx2,fma"))) void MatVecRowsAvx2(float* out, const float* w, const float* x, int begin,
                                                       int end, int cols) {
  int r = begin;
  for (; r + 4 <= end; r += 4) {
    const float* w0 = w + size_t(r) * cols;
    const float* w1 = w0 + cols;
    const float* w2 = w1 + cols;
    const float* w3 = w2 + cols;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= cols; i += 8) {
      const __m256 xv = _mm256_loadu_ps(x + i);
      s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + i), xv, s0);
      s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + i), xv, s1);
      s2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + i), xv, s2);
      s3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + i), xv, s3);
    }
    // Horizontal sums of the four accumulators in one go.
    const __m256 t0 = _mm256_hadd_ps(s0, s1), t1 = _mm256_hadd_ps(s2, s3);
    const __m256 t2 = _mm256_hadd_ps(t0, t1);
    const __m128 sums = _mm_add_ps(_mm256_castps256_ps128(t2), _mm256_extractf128_ps(t2, 1));
    float result[4];
    _mm_storeu_ps(result, sums);
    for (; i < cols; ++i) {
      result[0] += w0[i] * x[i];
      result[1] += w1[i] * x[i];
      result[2] += w2[i] * x[i];
      result[3] += w3[i] * x[i];
    }
    out[r] = result[0];
    out[r + 1] = result[1];
    out[r + 2] = result[2];
    out[r + 3] = result[3];
  }
  for (; r < end; ++r) out[r] = DotAvx2(w + size_t(r) * cols, x, cols);
}

bool HasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

void MatVecRows(float* out, const float* w, const float* x, int begin, int end, int cols) {
#if defined(__x86_64__)
  if (HasAvx2()) return MatVecRowsAvx2(out, w, x, begin, end, cols);
#endif
  for (int r = begin; r < end; ++r) out[r] = DotPortable(w + size_t(r) * cols, x, cols);
}

}  // namespace


void RmsNorm(float* out, const float* x, const float* weight, int n, float eps) {
  float ss = 0.0f;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  ss = 1.0f / std::sqrt(ss / n + eps);
  for (int i = 0; i < n; ++i) out[i] = weight[i] * (ss * x[i]);
}

namespace {

#if defined(__x86_64__)
// exp for x <= 0 (softmax inputs after subtracting the maximum): 2^n * p(r), r in [-ln2/2, ln2/2],
// p a degree-6 polynomial (Cephes' expf coefficients); relative error about 2e-7. Below -87, where e^x
// leaves float's normal range, it is 0 (so is a NaN's).
__attribute__((target("avx2,fma"))) inline __m256 ExpAvx2(__m256 x) {
  const __m256 in_range = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(exponent)), in_range);
}

__attribute__((target("avx2,fma"))) void SoftmaxAvx2(float* x, int n) {
  __m256 vmax = _mm256_set1_ps(-3.402823466e38f);
  int i = 0;
  for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
  float max = -3.402823466e38f;
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  for (float v : lanes) max = std::max(max, v);
  for (int k = i; k < n; ++k) max = std::max(max, x[k]);
  const __m256 m = _mm256_set1_ps(max);
  __m256 vsum = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = ExpAvx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
    _mm256_storeu_ps(x + i, e);
    vsum = _mm256_add_ps(vsum, e);
  }
  if (i < n) {
    // The tail through the same exp, padded with values below its range (their exp is 0).
    alignas(32) float tail[8];
    for (int k = 0; k < 8; ++k) tail[k] = i + k < n ? x[i + k] - max : -100.0f;
    const __m256 e = ExpAvx2(_mm256_load_ps(tail));
    _mm256_store_ps(tail, e);
    for (int k = 0; i + k < n; ++k) x[i + k] = tail[k];
    vsum = _mm256_add_ps(vsum, e);
  }
  _mm256_store_ps(lanes, vsum);
  float sum = 0.0f;
  for (float v : lanes) sum += v;
  const __m256 inv = _mm256_set1_ps(1.0f / sum);
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
  for (; i < n; ++i) x[i] *= 1.0f / sum;
}

// silu(x) * up as x * sigmoid(x), the sigmoid from e = e^-|x| (ExpAvx2's domain): 1 / (1 + e) for
// x >= 0, e / (1 + e) below. Beyond |x| = 87 e is 0: the sigmoid is exactly 1 or 0 (-inf gives NaN,
// as the scalar path does).
__attribute__((target("avx2,fma"))) inline __m256 SwiGlu8(__m256 x, __m256 up) {
  const __m256 e = ExpAvx2(_mm256_or_ps(x, _mm256_set1_ps(-0.0f)));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 numerator = _mm256_blendv_ps(one, e, x);  // the sign bit of x picks e
  const __m256 sigmoid = _mm256_div_ps(numerator, _mm256_add_ps(one, e));
  return _mm256_mul_ps(_mm256_mul_ps(x, sigmoid), up);
}

__attribute__((target("avx2,fma"))) void SwiGluAvx2(float* gate, const float* up, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(gate + i, SwiGlu8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  }
  if (i < n) {  // the tail through the same arithmetic, padded with zeros
    alignas(32) float g[8] = {}, u[8] = {};
    std::memcpy(g, gate + i, (n - i) * sizeof(float));
    std::memcpy(u, up + i, (n - i) * sizeof(float));
    _mm256_store_ps(g, SwiGlu8(_mm256_load_ps(g), _mm256_load_ps(u)));
    std::memcpy(gate + i, g, (n - i) * sizeof(float));
  }
}

// Attention's AVX2 kernels read a row reader's row t, columns [c, c + 8) as floats (Load8: fp16
// converted exactly by F16C, q8_0 as scale x int8); the arithmetic after it is the same for every
// type. (q8_0 goes through Load8 only for the rows after the last block of eight; blocks of rows have
// kernels of their own, below.) Eight columns never straddle a q8_0 block: blocks are 32 wide (a
// short last one holds head_dim % 32, a multiple of 8 here) and these kernels take head widths that
// are multiples of 8.
#define A2SF_ATTENTION_AVX2 __attribute__((target("avx2,fma,f16c")))
A2SF_ATTENTION_AVX2 inline __m256 Load8(const F32Rows& rows, int t, int c) { return _mm256_loadu_ps(rows.Row(t) + c); }
A2SF_ATTENTION_AVX2 inline __m256 Load8(const F16Rows& rows, int t, int c) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows.data + size_t(t) * rows.head_dim + c)));
}
// Eight int8 values of a q8_0 block as floats; a block's fp16 scale.
A2SF_ATTENTION_AVX2 inline __m256 Int8x8(const uint8_t* p) {
  int64_t bytes;
  std::memcpy(&bytes, p, 8);
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(bytes)));
}
A2SF_ATTENTION_AVX2 inline float BlockScale(const uint8_t* block) {
  uint16_t d;
  std::memcpy(&d, block, 2);
  return _cvtsh_ss(d);
}
A2SF_ATTENTION_AVX2 inline __m256 Load8(const Q8_0Rows& rows, int t, int c) {
  const uint8_t* block = rows.Block(t, c);
  return _mm256_mul_ps(Int8x8(block + 2 + c % kQuantBlock), _mm256_set1_ps(BlockScale(block)));
}

// q8_0 rows have block kernels of their own (below); declared here so that the generic kernels' calls
// find them by ordinary lookup, whatever the order of instantiation.
A2SF_ATTENTION_AVX2 inline void ScoreBlockAvx2(float* scores, const float* q, const Q8_0Rows& keys, int t,
                                               int head_dim, __m256 vscale);
A2SF_ATTENTION_AVX2 void WeightedSumAvx2(float* out, const float* weights, const Q8_0Rows& values, int n,
                                         int head_dim);

// Scores of rows [t, t + 8): eight accumulators, one per row, kept in registers (the unroll
// pragmas: without them GCC kept them in memory, one row's fused multiply-adds a chain through it).
template <class Rows>
A2SF_ATTENTION_AVX2 inline void ScoreBlockAvx2(float* scores, const float* q, const Rows& keys, int t, int head_dim,
                                               __m256 vscale) {
  __m256 acc[8];
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) acc[r] = _mm256_setzero_ps();
  for (int c = 0; c < head_dim; c += 8) {
    const __m256 qv = _mm256_loadu_ps(q + c);
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) acc[r] = _mm256_fmadd_ps(Load8(keys, t + r, c), qv, acc[r]);
  }
  _mm256_storeu_ps(scores + t, _mm256_mul_ps(TransposeSum8(acc), vscale));
}

// dot(q, row t) for the rows after the last block of eight.
inline float TailDotAvx2(const float* q, const F32Rows& keys, int t, int head_dim) {
  return DotAvx2(q, keys.Row(t), head_dim);
}
template <class Rows>
A2SF_ATTENTION_AVX2 inline float TailDotAvx2(const float* q, const Rows& keys, int t, int head_dim) {
  __m256 acc = _mm256_setzero_ps();
  for (int c = 0; c < head_dim; c += 8) acc = _mm256_fmadd_ps(Load8(keys, t, c), _mm256_loadu_ps(q + c), acc);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  return sum;
}

template <class Rows>
A2SF_ATTENTION_AVX2 void AttentionScoresAvx2(float* scores, const float* q, const Rows& keys, int n, int head_dim,
                                             float scale) {
  const __m256 vscale = _mm256_set1_ps(scale);
  int t = 0;
  for (; t + 8 <= n; t += 8) ScoreBlockAvx2(scores, q, keys, t, head_dim, vscale);
  for (; t < n; ++t) scores[t] = TailDotAvx2(q, keys, t, head_dim) * scale;
}

template <class Rows>
A2SF_ATTENTION_AVX2 void WeightedSumAvx2(float* out, const float* weights, const Rows& values, int n, int head_dim) {
  for (int c = 0; c < head_dim; c += 8) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int t = 0;
    for (; t + 2 <= n; t += 2) {
      acc0 = _mm256_fmadd_ps(_mm256_set1_ps(weights[t]), Load8(values, t, c), acc0);
      acc1 = _mm256_fmadd_ps(_mm256_set1_ps(weights[t + 1]), Load8(values, t + 1, c), acc1);
    }
    if (t < n) acc0 = _mm256_fmadd_ps(_mm256_set1_ps(weights[t]), Load8(values, t, c), acc0);
    _mm256_storeu_ps(out + c, _mm256_add_ps(acc0, acc1));
  }
}

// q8_0 rows block by block: each block's int8 values are multiplied in as they are and its scale once
// (per row for the scores, folded into the row's weight for the sums), not once per eight values.

// Scores of rows [t, t + 8): per block, eight rows' partial dot products with the block's int8
// values, their lane sums times the rows' eight scales.
A2SF_ATTENTION_AVX2 inline void ScoreBlockAvx2(float* scores, const float* q, const Q8_0Rows& keys, int t,
                                               int head_dim, __m256 vscale) {
  __m256 sums = _mm256_setzero_ps();
  for (int c0 = 0; c0 < head_dim; c0 += kQuantBlock) {
    const int width = std::min(kQuantBlock, head_dim - c0);
    __m256 part[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) part[r] = _mm256_setzero_ps();
    for (int c = 0; c < width; c += 8) {
      const __m256 qv = _mm256_loadu_ps(q + c0 + c);
#pragma GCC unroll 8
      for (int r = 0; r < 8; ++r) part[r] = _mm256_fmadd_ps(Int8x8(keys.Block(t + r, c0) + 2 + c), qv, part[r]);
    }
    alignas(32) float scale[8];
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) scale[r] = BlockScale(keys.Block(t + r, c0));
    sums = _mm256_fmadd_ps(TransposeSum8(part), _mm256_load_ps(scale), sums);
  }
  _mm256_storeu_ps(scores + t, _mm256_mul_ps(sums, vscale));
}

// out = sum_t weights[t] x row t, a block's columns at a time: row t's block enters with weight
// weights[t] x its scale.
A2SF_ATTENTION_AVX2 void WeightedSumAvx2(float* out, const float* weights, const Q8_0Rows& values, int n,
                                         int head_dim) {
  for (int c0 = 0; c0 < head_dim; c0 += kQuantBlock) {
    const int chunks = std::min(kQuantBlock, head_dim - c0) / 8;
    __m256 even[4], odd[4];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) even[k] = odd[k] = _mm256_setzero_ps();
    int t = 0;
    for (; t + 2 <= n; t += 2) {
      const uint8_t* b0 = values.Block(t, c0);
      const uint8_t* b1 = values.Block(t + 1, c0);
      const __m256 w0 = _mm256_set1_ps(weights[t] * BlockScale(b0));
      const __m256 w1 = _mm256_set1_ps(weights[t + 1] * BlockScale(b1));
      for (int k = 0; k < chunks; ++k) {
        even[k] = _mm256_fmadd_ps(w0, Int8x8(b0 + 2 + 8 * k), even[k]);
        odd[k] = _mm256_fmadd_ps(w1, Int8x8(b1 + 2 + 8 * k), odd[k]);
      }
    }
    if (t < n) {
      const uint8_t* b0 = values.Block(t, c0);
      const __m256 w0 = _mm256_set1_ps(weights[t] * BlockScale(b0));
      for (int k = 0; k < chunks; ++k) even[k] = _mm256_fmadd_ps(w0, Int8x8(b0 + 2 + 8 * k), even[k]);
    }
    for (int k = 0; k < chunks; ++k) _mm256_storeu_ps(out + c0 + 8 * k, _mm256_add_ps(even[k], odd[k]));
  }
}

// The AVX2 attention kernels' CPU: AVX2, FMA and F16C.
bool HasAttentionAvx2() {
  static const bool has = HasAvx2() && CpuHasAvxF16c();
  return has;
}
#endif

}  // namespace

void Softmax(float* x, int n) {
#if defined(__x86_64__)
  if (HasAvx2()) return SoftmaxAvx2(x, n);
#endif
  float max = x[0];
  for (int i = 1; i < n; ++i) max = std::max(max, x[i]);
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int i = 0; i < n; ++i) x[i] *= inv;
}

void SwiGlu(float* gate, const float* up, size_t n) {
#if defined(__x86_64__)
  if (HasAvx2()) return SwiGluAvx2(gate, up, n);
#endif
  for (size_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void RopeTable(int head_dim, int position, float theta, float* cos_out, float* sin_out) {
  for (int i = 0; i < head_dim / 2; ++i) {
    const float freq = 1.0f / std::pow(theta, float(2 * i) / float(head_dim));
    const float angle = float(position) * freq;
    cos_out[i] = std::cos(angle);
    sin_out[i] = std::sin(angle);
  }
}

void ApplyRope(float* vec, int dim, int head_dim, const float* cos_table, const float* sin_table) {
  for (float* head = vec; head < vec + dim; head += head_dim) {
    for (int pair = 0; pair < head_dim / 2; ++pair) {
      const float c = cos_table[pair], s = sin_table[pair];
      const float a = head[2 * pair], b = head[2 * pair + 1];
      head[2 * pair] = a * c - b * s;
      head[2 * pair + 1] = a * s + b * c;
    }
  }
}

namespace {

// The portable kernels, element by element (f32 rows as a matrix-vector product).
void ScoresPortable(float* scores, const float* q, const F32Rows& keys, int n, int head_dim, float scale) {
  MatVecRows(scores, keys.data, q, 0, n, head_dim);
  for (int t = 0; t < n; ++t) scores[t] *= scale;
}
template <class Rows>
void ScoresPortable(float* scores, const float* q, const Rows& keys, int n, int head_dim, float scale) {
  for (int t = 0; t < n; ++t) {
    float sum = 0.0f;
    for (int c = 0; c < head_dim; ++c) sum += q[c] * keys.At(t, c);
    scores[t] = sum * scale;
  }
}

void WeightedSumPortable(float* out, const float* weights, const F32Rows& values, int n, int head_dim) {
  for (int i = 0; i < head_dim; ++i) out[i] = 0.0f;
  for (int t = 0; t < n; ++t) Axpy(out, weights[t], values.Row(t), head_dim);
}
template <class Rows>
void WeightedSumPortable(float* out, const float* weights, const Rows& values, int n, int head_dim) {
  for (int i = 0; i < head_dim; ++i) out[i] = 0.0f;
  for (int t = 0; t < n; ++t) {
    for (int i = 0; i < head_dim; ++i) out[i] += weights[t] * values.At(t, i);
  }
}

// Calls run(reader) with the reader of `rows`' type.
template <class Run>
void WithRows(KvRows rows, int head_dim, Run run) {
  switch (rows.type) {
    case WeightType::kF16:
      return run(F16Rows{static_cast<const uint16_t*>(rows.data), head_dim});
    case WeightType::kQ8_0:
      return run(Q8_0Rows{static_cast<const uint8_t*>(rows.data), Q8_0Bytes(head_dim)});
    default:
      return run(F32Rows{static_cast<const float*>(rows.data), head_dim});
  }
}

bool UseAttentionAvx2(int head_dim) {
#if defined(__x86_64__)
  return HasAttentionAvx2() && head_dim % 8 == 0;
#else
  return false;
#endif
}

}  // namespace

void AttentionScores(float* scores, const float* q, KvRows keys, int n, int head_dim, float scale) {
  WithRows(keys, head_dim, [&](const auto& rows) {
#if defined(__x86_64__)
    if (UseAttentionAvx2(head_dim)) return AttentionScoresAvx2(scores, q, rows, n, head_dim, scale);
#endif
    ScoresPortable(scores, q, rows, n, head_dim, scale);
  });
}

void WeightedSum(float* out, const float* weights, KvRows values, int n, int head_dim) {
  WithRows(values, head_dim, [&](const auto& rows) {
#if defined(__x86_64__)
    if (UseAttentionAvx2(head_dim)) return WeightedSumAvx2(out, weights, rows, n, head_dim);
#endif
    WeightedSumPortable(out, weights, rows, n, head_dim);
  });
}

void Axpy(float* out, float a, const float* x, int n) {
  for (int i = 0; i < n; ++i) out[i] += a * x[i];
}

}  // namespace a2sf::worker
