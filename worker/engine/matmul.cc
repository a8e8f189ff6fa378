#include "worker/engine/matmul.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12's false -Wmaybe-uninitialized from avx512fintrin.h's self-initialised merge operands (GCC bug
// 105593, fixed in GCC 13), as in panel_kernels.cc: the row kernels' AVX-512 tiles report it at each
// inlined use in optimised builds.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

#include "common/float16.h"
#include "worker/engine/matmul_kernel.h"
#include "worker/engine/panel_kernels.h"

namespace a2sf::worker {
namespace {

// --- Scalar kernels: the references the SIMD ones are compared against. ---

// Float types: a row expanded by the type's to_float, then plain dot products in column order.
void RowsScalar(const WeightMatrix& w, const Activations& x, int n_vectors, int64_t begin, int64_t end, float* out) {
  thread_local std::vector<float> row;
  row.resize(size_t(w.cols));
  for (int64_t r = begin; r < end; ++r) {
    w.RowToFloat(r, row.data());
    for (int v = 0; v < n_vectors; ++v) {
      const float* xv = x.f32 + size_t(v) * w.cols;
      float sum = 0.0f;
      for (int64_t c = 0; c < w.cols; ++c) sum += row[c] * xv[c];
      out[size_t(v) * w.rows + r] = sum;
    }
  }
}

// The one rule for 16-bit vector blocks (BlockQ16 in matmul.h).
void QuantizeQ16Scalar(const float* x, BlockQ16* out, int64_t blocks) {
  for (int64_t b = 0; b < blocks; ++b) {
    const float* in = x + b * kQuantBlock;
    float amax = 0.0f;
    for (int j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(in[j]));
    const float d = amax / kQ16Max;
    const float id = InverseScale(d);
    out[b].d = d;
    for (int j = 0; j < kQuantBlock; ++j) out[b].qs[j] = int16_t(std::round(ScaledToBlock(in[j], id)));
  }
}

// The 32 weights of a quantized block as integers (q4_0: nibble - 8, elements 0..15 from the low
// nibbles, 16..31 from the high ones) and its scale.
float BlockInts(WeightType type, const uint8_t* block, int16_t q[kQuantBlock]) {
  uint16_t d;
  std::memcpy(&d, block, 2);
  for (int j = 0; j < kQuantBlock; ++j) {
    q[j] = type == WeightType::kQ8_0 ? int8_t(block[2 + j])
                                     : int16_t(j < 16 ? (block[2 + j] & 0x0f) - 8 : (block[2 + j - 16] >> 4) - 8);
  }
  return HalfToFloat(d);
}

// Sum of eight lanes in the SIMD kernels' order: (l0+l4 + l2+l6) + (l1+l5 + l3+l7).
float ReduceLanes(const float lane[8]) {
  const float h0 = lane[0] + lane[4], h1 = lane[1] + lane[5], h2 = lane[2] + lane[6], h3 = lane[3] + lane[7];
  return (h0 + h2) + (h1 + h3);
}

// Quantized types against 16-bit activations, per block: eight exact integer sums of four products
// (lane m: elements 2m, 2m+1, 16+2m, 17+2m -- how the AVX2 kernel pairs them), each scaled by
// d_w * d_x and added to lane m's fp32 accumulator with one fused multiply-add: exactly the AVX2
// kernel's arithmetic, so the two agree bit for bit.
void RowsScalarQuantized(const WeightMatrix& w, const Activations& x, int n_vectors, int64_t begin, int64_t end,
                         float* out) {
  const size_t block_bytes = Traits(w.type).block_bytes, row_bytes = w.row_bytes();
  const int64_t blocks = w.cols / kQuantBlock;
  for (int64_t r = begin; r < end; ++r) {
    const uint8_t* row = static_cast<const uint8_t*>(w.data) + size_t(r) * row_bytes;
    for (int v = 0; v < n_vectors; ++v) {
      const BlockQ16* xv = x.q16 + size_t(v) * x.q16_blocks;
      float lane[8] = {};
      for (int64_t b = 0; b < blocks; ++b) {
        int16_t wq[kQuantBlock];
        const float d = BlockInts(w.type, row + size_t(b) * block_bytes, wq) * xv[b].d;
        const int16_t* xq = xv[b].qs;
        for (int m = 0; m < 8; ++m) {
          const int32_t sum = int32_t(wq[2 * m]) * xq[2 * m] + int32_t(wq[2 * m + 1]) * xq[2 * m + 1] +
                              int32_t(wq[16 + 2 * m]) * xq[16 + 2 * m] + int32_t(wq[17 + 2 * m]) * xq[17 + 2 * m];
          lane[m] = std::fma(d, float(sum), lane[m]);
        }
      }
      out[size_t(v) * w.rows + r] = ReduceLanes(lane);
    }
  }
}

#if defined(__x86_64__)
#define A2SF_AVX2 __attribute__((target("avx2,fma,f16c")))
#define A2SF_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

// --- AVX2 kernels. Rows are computed in tiles of R rows x NV vectors sharing every load of a vector
// (and of a row); each (row, vector) pair keeps its own accumulators, filled in the same order
// whatever the tile, so a row's result does not depend on its tile, the vector count or the threads.
// All loops over tile members are unrolled, so the accumulators live in registers.

// Float types: 8 weights (chunk k of 32 columns, lanes 8i..8i+7) as floats, and single weights for
// the tail of rows that are not whole chunks.
struct F32Decoder {
  static constexpr size_t kChunkBytes = 128;  // 32 columns
  A2SF_AVX2_INLINE static __m256 Lanes(const uint8_t* row, int64_t k, int i) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + 32 * k + 8 * i);
  }
  static float One(const uint8_t* row, int64_t c) {
    float f;
    std::memcpy(&f, row + 4 * c, 4);
    return f;
  }
};

struct F16Decoder {
  static constexpr size_t kChunkBytes = 64;
  A2SF_AVX2_INLINE static __m256 Lanes(const uint8_t* row, int64_t k, int i) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 64 * k + 16 * i)));
  }
  static float One(const uint8_t* row, int64_t c) {
    uint16_t h;
    std::memcpy(&h, row + 2 * c, 2);
    return HalfToFloat(h);
  }
};

struct Bf16Decoder {
  static constexpr size_t kChunkBytes = 64;
  A2SF_AVX2_INLINE static __m256 Lanes(const uint8_t* row, int64_t k, int i) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 64 * k + 16 * i)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
  static float One(const uint8_t* row, int64_t c) {
    uint16_t h;
    std::memcpy(&h, row + 2 * c, 2);
    return Bfloat16ToFloat(h);
  }
};

// Sum of eight lanes: (l0+l4 + l2+l6) + (l1+l5 + l3+l7) (ReduceLanes' order).
A2SF_AVX2_INLINE float Reduce8(__m256 s) {
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  return _mm_cvtss_f32(h);
}

// Where a tile reads and writes: R rows from `row` (row_bytes apart), NV vectors from `x` (x_stride
// apart), results at out[v * out_stride + r * out_row_stride].
struct Tile {
  const uint8_t* row;
  size_t row_bytes;
  const uint8_t* x;
  size_t x_stride;
  float* out;
  size_t out_stride;
  size_t out_row_stride = 1;  // between the tile's rows' results
};

// Several vectors make a tile slow enough per byte that the hardware prefetchers fall behind a
// streamed matrix (bench/matmul_bench: 8 vectors read 0.5x the bytes per second of 4): the tile asks
// for its rows' bytes kPrefetchBytes ahead itself (past a row's end is the next row; past the
// matrix's end a prefetch is dropped, never a fault). Prefetches change no result.
constexpr size_t kPrefetchBytes = 8192;

template <int R>
A2SF_AVX2_INLINE void PrefetchAhead(const Tile& t, size_t offset, size_t bytes) {
#pragma GCC unroll 64
  for (int r = 0; r < R; ++r) {
    for (size_t line = 0; line < bytes; line += 64) {
      const uintptr_t at = reinterpret_cast<uintptr_t>(t.row) + r * t.row_bytes + offset + line + kPrefetchBytes;
      _mm_prefetch(reinterpret_cast<const char*>(at), _MM_HINT_T0);
    }
  }
}

// Columns [from, cols) of row r against vector v, one at a time: the tail of a row that is not whole
// 32-column chunks (both float kernels).
template <class Decoder>
float TailDot(const Tile& t, int r, int v, int64_t from, int64_t cols) {
  const float* xv = reinterpret_cast<const float*>(t.x + v * t.x_stride);
  float tail = 0.0f;
  for (int64_t c = from; c < cols; ++c) tail += Decoder::One(t.row + r * t.row_bytes, c) * xv[c];
  return tail;
}

// Float types: four accumulators per (row, vector); chunk lanes 8i..8i+7 go to accumulator i.
template <class Decoder>
struct FloatTiles {
  template <int R, int NV>
  A2SF_AVX2_INLINE static void Run(const Tile& t, int64_t cols) {
    const int64_t chunks = cols / 32;
    __m256 acc[R][NV][4];
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
      for (int v = 0; v < NV; ++v)
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) acc[r][v][i] = _mm256_setzero_ps();
    for (int64_t k = 0; k < chunks; ++k) {
      if constexpr (NV > 1) PrefetchAhead<R>(t, Decoder::kChunkBytes * k, Decoder::kChunkBytes);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        __m256 xv[NV];
#pragma GCC unroll 64
        for (int v = 0; v < NV; ++v) {
          xv[v] = _mm256_loadu_ps(reinterpret_cast<const float*>(t.x + v * t.x_stride) + 32 * k + 8 * i);
        }
#pragma GCC unroll 64
        for (int r = 0; r < R; ++r) {
          const __m256 wv = Decoder::Lanes(t.row + r * t.row_bytes, k, i);
#pragma GCC unroll 64
          for (int v = 0; v < NV; ++v) acc[r][v][i] = _mm256_fmadd_ps(wv, xv[v], acc[r][v][i]);
        }
      }
    }
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 64
      for (int v = 0; v < NV; ++v) {
        const float tail = TailDot<Decoder>(t, r, v, chunks * 32, cols);
        const __m256 s = _mm256_add_ps(_mm256_add_ps(acc[r][v][0], acc[r][v][1]),
                                       _mm256_add_ps(acc[r][v][2], acc[r][v][3]));
        t.out[v * t.out_stride + r * t.out_row_stride] = Reduce8(s) + tail;
      }
    }
  }
};

// Quantized blocks: the 32 weights as 16-bit integers, elements 0..15 and 16..31 (q4_0: nibble - 8).
struct Q8_0Blocks {
  static constexpr size_t kBytes = sizeof(BlockQ8_0);
  A2SF_AVX2_INLINE static void Ints(const uint8_t* block, __m256i* lo, __m256i* hi) {
    *lo = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2)));
    *hi = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 18)));
  }
};
struct Q4_0Blocks {
  static constexpr size_t kBytes = sizeof(BlockQ4_0);
  A2SF_AVX2_INLINE static void Ints(const uint8_t* block, __m256i* lo, __m256i* hi) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m256i eight = _mm256_set1_epi16(8);
    *lo = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(bytes, mask)), eight);
    *hi = _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask)), eight);
  }
};

A2SF_AVX2_INLINE float HalfScale(const uint8_t* block) {
  uint16_t d;
  std::memcpy(&d, block, 2);
  return _cvtsh_ss(d);
}

// Quantized types against 16-bit activations: one accumulator per (row, vector), lane m of it the
// sum over blocks of d_w * d_x * (exact integer sum of elements 2m, 2m+1, 16+2m, 17+2m: madd pairs
// the 16-bit products) -- RowsScalarQuantized's arithmetic.
template <class Blocks>
struct QuantizedTiles {
  template <int R, int NV>
  A2SF_AVX2_INLINE static void Run(const Tile& t, int64_t cols) {
    const int64_t blocks = cols / kQuantBlock;
    __m256 acc[R][NV];
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) {
      if constexpr (NV > 1) PrefetchAhead<R>(t, b * Blocks::kBytes, 1);
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) {
        const uint8_t* block = t.row + r * t.row_bytes + b * Blocks::kBytes;
        __m256i lo, hi;
        Blocks::Ints(block, &lo, &hi);
        const float dw = HalfScale(block);
#pragma GCC unroll 64
        for (int v = 0; v < NV; ++v) {
          const BlockQ16& xb = reinterpret_cast<const BlockQ16*>(t.x + v * t.x_stride)[b];
          const __m256i sums = _mm256_add_epi32(
              _mm256_madd_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.qs))),
              _mm256_madd_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.qs + 16))));
          acc[r][v] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb.d), _mm256_cvtepi32_ps(sums), acc[r][v]);
        }
      }
    }
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
      for (int v = 0; v < NV; ++v) t.out[v * t.out_stride + r * t.out_row_stride] = Reduce8(acc[r][v]);
  }
};

// Rows [begin, end) x all vectors in tiles. Several vectors: row by row, each row against the
// vectors in pairs (then one), so a row is read from memory once for all of them. One vector: kRows
// rows at a time where the matrix is small enough to sit in the caches (the tile shares the vector's
// loads and the reductions' latency), else one row at a time: a matrix streamed from memory is read
// fastest as one contiguous stream that the hardware prefetcher keeps ahead of (bench/matmul_bench:
// tiles of 3-4 rows read 0.5-0.7x the bytes per second of single rows there). A tile's shape changes
// only how loads are shared, never a result.
constexpr size_t kCachedMatrixBytes = size_t(256) << 10;

// Where the tile at (row r, vector v) of one product reads and writes.
class TileCursor {
 public:
  TileCursor(const WeightMatrix& w, const Activations& x, float* out)
      : rows_(static_cast<const uint8_t*>(w.data)), out_(out), matrix_rows_(w.rows) {
    const bool quantized = IsQuantized(w.type);
    tile_.row_bytes = w.row_bytes();  // once per product: row() looks it up and divides per row
    tile_.x = quantized ? reinterpret_cast<const uint8_t*>(x.q16) : reinterpret_cast<const uint8_t*>(x.f32);
    tile_.x_stride = quantized ? x.q16_blocks * sizeof(BlockQ16) : size_t(w.cols) * sizeof(float);
    tile_.out_stride = size_t(w.rows);
    x_ = tile_.x;
  }
  // Whether the whole matrix fits the caches (one vector then goes in tiles of several rows).
  bool cached() const { return tile_.row_bytes * size_t(matrix_rows_) <= kCachedMatrixBytes; }
  // Rows r, r + apart, ... (a tile of rows far apart; apart 1: At's rows).
  Tile AtFar(int64_t r, int v, int64_t apart) {
    Tile t = At(r, v);
    t.row_bytes *= size_t(apart);
    t.out_row_stride = size_t(apart);
    return t;
  }
  const Tile& At(int64_t r, int v) {
    tile_.row = rows_ + size_t(r) * tile_.row_bytes;
    tile_.x = x_ + size_t(v) * tile_.x_stride;
    tile_.out = out_ + size_t(v) * tile_.out_stride + r;
    return tile_;
  }

 private:
  const uint8_t* rows_;
  const uint8_t* x_;
  float* out_;
  int64_t matrix_rows_;
  Tile tile_;
};

template <class Tiles, int kRows>
A2SF_AVX2 void RowsAvx2(const WeightMatrix& w, const Activations& x, int n_vectors, int64_t begin, int64_t end,
                        float* out) {
  TileCursor cursor(w, x, out);
  if (n_vectors > 1) {
    for (int64_t r = begin; r < end; ++r) {
      int v = 0;
      for (; v + 2 <= n_vectors; v += 2) Tiles::template Run<1, 2>(cursor.At(r, v), w.cols);
      if (v < n_vectors) Tiles::template Run<1, 1>(cursor.At(r, v), w.cols);
    }
    return;
  }
  int64_t r = begin;
  if (cursor.cached()) {
    for (; r + kRows <= end; r += kRows) Tiles::template Run<kRows, 1>(cursor.At(r, 0), w.cols);
  }
  for (; r < end; ++r) Tiles::template Run<1, 1>(cursor.At(r, 0), w.cols);
}

// QuantizeQ16Scalar eight lanes at a time, bit for bit: the same amax (a NaN skipped, as std::max
// skips it: each max keeps the running amax when the new value is NaN), d = amax / 32767, id = 1 / d
// (InverseScale), and round-half-away-from-zero of x * id (truncation, plus one step where the exact
// remainder is at least a half), a scaled value that is not finite held as 0 (ScaledToBlock).
A2SF_AVX2 void QuantizeQ16Avx2(const float* in, BlockQ16* out, int64_t blocks) {
  const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
  for (int64_t b = 0; b < blocks; ++b) {
    const float* x = in + b * kQuantBlock;
    __m256 v[4];
    for (int i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(x + 8 * i);
    __m256 m = _mm256_setzero_ps();  // max_ps(a, b) is b when a is NaN: b, the running amax, never is
    for (int i = 0; i < 4; ++i) m = _mm256_max_ps(_mm256_andnot_ps(sign, v[i]), m);
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    const float d = _mm_cvtss_f32(m4) / kQ16Max;
    const __m256 id = _mm256_set1_ps(InverseScale(d));
    out[b].d = d;
    __m256i q[4];
    for (int i = 0; i < 4; ++i) {
      __m256 scaled = _mm256_mul_ps(v[i], id);
      const __m256 finite = _mm256_cmp_ps(_mm256_andnot_ps(sign, scaled), _mm256_set1_ps(FLT_MAX), _CMP_LE_OQ);
      scaled = _mm256_and_ps(scaled, finite);
      const __m256 whole = _mm256_round_ps(scaled, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
      const __m256 up = _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_sub_ps(scaled, whole)), half, _CMP_GE_OQ);
      const __m256 step = _mm256_and_ps(up, _mm256_or_ps(_mm256_and_ps(scaled, sign), one));
      q[i] = _mm256_cvtps_epi32(_mm256_add_ps(whole, step));
    }
    // packs works within 128-bit halves: restore element order with a 64-bit permute.
    for (int i = 0; i < 2; ++i) {
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2 * i], q[2 * i + 1]), 0xD8);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].qs + 16 * i), packed);
    }
  }
}

// --- AVX-512 kernels: the AVX2 kernels' arithmetic, bit for bit, on 512-bit registers (32 of
// them, for tiles of more rows x vectors). Lane-wise operations are the same on any register width,
// so a kernel that gives each lane the AVX2 kernel's sequence of operations gives its bits:
// - float types: accumulator A of a (row, vector) holds the AVX2 kernel's accumulators 0 and 1
//   (columns 32k..32k+15 of every chunk), B its 2 and 3; the end splits them and sums in the AVX2
//   order;
// - quantized types: one register holds two vectors' 8 lanes (weights broadcast to both halves), so
//   each block's integer sums, scale and FMA serve two vectors at once; a single vector runs the AVX2
//   tile (q8_0 over a streamed matrix: its own pair, OneVectorAsPairs).
#define A2SF_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx2,fma,f16c")))
#define A2SF_AVX512_INLINE __attribute__((target("avx512f,avx512vl,avx512bw,avx2,fma,f16c"), always_inline)) inline

// 16 weights: columns 32k + 16h .. 32k + 16h + 15 as floats.
// kOneVectorOnAvx2: one vector runs the AVX2 tile (f32 streamed one vector at a time was read
// slower with 512-bit loads, bench/matmul_bench; the two give the same bits).
struct F32Decoder512 : F32Decoder {
  using Avx2 = F32Decoder;
  static constexpr bool kOneVectorOnAvx2 = true;
  A2SF_AVX512_INLINE static __m512 Lanes16(const uint8_t* row, int64_t k, int h) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(row) + 32 * k + 16 * h);
  }
};
struct F16Decoder512 : F16Decoder {
  using Avx2 = F16Decoder;
  static constexpr bool kOneVectorOnAvx2 = false;
  A2SF_AVX512_INLINE static __m512 Lanes16(const uint8_t* row, int64_t k, int h) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 64 * k + 32 * h)));
  }
};
struct Bf16Decoder512 : Bf16Decoder {
  using Avx2 = Bf16Decoder;
  static constexpr bool kOneVectorOnAvx2 = false;
  A2SF_AVX512_INLINE static __m512 Lanes16(const uint8_t* row, int64_t k, int h) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 64 * k + 32 * h)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
};

A2SF_AVX512_INLINE __m256 Low8(__m512 a) { return _mm512_castps512_ps256(a); }
A2SF_AVX512_INLINE __m256 High8(__m512 a) { return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)); }

template <class Decoder>
struct FloatTiles512 {
  static constexpr bool kOneVectorAsPair = false;  // a pair costs twice one vector's FMAs
  template <int R, int NV>
  A2SF_AVX512_INLINE static void Run(const Tile& t, int64_t cols) {
    if constexpr (NV == 1 && Decoder::kOneVectorOnAvx2) {
      FloatTiles<typename Decoder::Avx2>::template Run<R, 1>(t, cols);
    } else {
      Wide<R, NV>(t, cols);
    }
  }

 private:
  template <int R, int NV>
  A2SF_AVX512_INLINE static void Wide(const Tile& t, int64_t cols) {
    const int64_t chunks = cols / 32;
    __m512 acc[R][NV][2];
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
      for (int v = 0; v < NV; ++v) acc[r][v][0] = acc[r][v][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < chunks; ++k) {
      if constexpr (NV > 1) PrefetchAhead<R>(t, Decoder::kChunkBytes * k, Decoder::kChunkBytes);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        __m512 xv[NV];
#pragma GCC unroll 64
        for (int v = 0; v < NV; ++v) {
          xv[v] = _mm512_loadu_ps(reinterpret_cast<const float*>(t.x + v * t.x_stride) + 32 * k + 16 * h);
        }
#pragma GCC unroll 64
        for (int r = 0; r < R; ++r) {
          const __m512 wv = Decoder::Lanes16(t.row + r * t.row_bytes, k, h);
#pragma GCC unroll 64
          for (int v = 0; v < NV; ++v) acc[r][v][h] = _mm512_fmadd_ps(wv, xv[v], acc[r][v][h]);
        }
      }
    }
#pragma GCC unroll 64
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 64
      for (int v = 0; v < NV; ++v) {
        const float tail = TailDot<Decoder>(t, r, v, chunks * 32, cols);
        const __m512 a = acc[r][v][0], b = acc[r][v][1];
        const __m256 s = _mm256_add_ps(_mm256_add_ps(Low8(a), High8(a)), _mm256_add_ps(Low8(b), High8(b)));
        t.out[v * t.out_stride + r * t.out_row_stride] = Reduce8(s) + tail;
      }
    }
  }
};

// A block's 32 weights as 16-bit integers, elements 0..15 in both halves of `lo`, 16..31 in both of `hi`.
struct Q8_0Blocks512 : Q8_0Blocks {
  static constexpr bool kOneVectorAsPair = true;
  A2SF_AVX512_INLINE static void Ints2(const uint8_t* block, __m512i* lo, __m512i* hi) {
    *lo = _mm512_cvtepi8_epi16(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2))));
    *hi = _mm512_cvtepi8_epi16(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 18))));
  }
};
struct Q4_0Blocks512 : Q4_0Blocks {
  static constexpr bool kOneVectorAsPair = false;  // self-paired measured ~10% slower (nibble unpacking)
  A2SF_AVX512_INLINE static void Ints2(const uint8_t* block, __m512i* lo, __m512i* hi) {
    const __m256i bytes = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2)));
    const __m256i mask = _mm256_set1_epi8(0x0f);
    const __m512i eight = _mm512_set1_epi16(8);
    *lo = _mm512_sub_epi16(_mm512_cvtepu8_epi16(_mm256_and_si256(bytes, mask)), eight);
    *hi = _mm512_sub_epi16(_mm512_cvtepu8_epi16(_mm256_and_si256(_mm256_srli_epi16(bytes, 4), mask)), eight);
  }
};

// 16 int16 from `a` in the low half, 16 from `b` in the high one.
A2SF_AVX512_INLINE __m512i Halves(const int16_t* a, const int16_t* b) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a))),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)), 1);
}

// Quantized types, vectors in pairs: lanes 0..7 of acc[r][p] are vector 2p's AVX2 accumulator, lanes
// 8..15 vector 2p+1's; each gets d_w * d_x (one fp32 product, as in the AVX2 kernel) times its exact
// integer sum, by one FMA. NV == 1 is the AVX2 tile.
template <class Blocks>
struct QuantizedTiles512 {
  static constexpr bool kOneVectorAsPair = Blocks::kOneVectorAsPair;  // see OneVectorAsPairs
  template <int R, int NV>
  A2SF_AVX512_INLINE static void Run(const Tile& t, int64_t cols) {
    if constexpr (NV == 1) {
      QuantizedTiles<Blocks>::template Run<R, 1>(t, cols);
    } else {
      static_assert(NV % 2 == 0, "vectors go in pairs");
      constexpr int NP = NV / 2;
      const int64_t blocks = cols / kQuantBlock;
      __m512 acc[R][NP];
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 64
        for (int p = 0; p < NP; ++p) acc[r][p] = _mm512_setzero_ps();
      for (int64_t b = 0; b < blocks; ++b) {
        PrefetchAhead<R>(t, b * Blocks::kBytes, 1);
        __m512i xlo[NP], xhi[NP];
        __m512 dx[NP];
#pragma GCC unroll 64
        for (int p = 0; p < NP; ++p) {
          const BlockQ16& x0 = reinterpret_cast<const BlockQ16*>(t.x + (2 * p) * t.x_stride)[b];
          const BlockQ16& x1 = reinterpret_cast<const BlockQ16*>(t.x + (2 * p + 1) * t.x_stride)[b];
          xlo[p] = Halves(x0.qs, x1.qs);
          xhi[p] = Halves(x0.qs + 16, x1.qs + 16);
          dx[p] = _mm512_castpd_ps(
              _mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(x0.d)), _mm256_castps_pd(_mm256_set1_ps(x1.d)), 1));
        }
#pragma GCC unroll 64
        for (int r = 0; r < R; ++r) {
          const uint8_t* block = t.row + r * t.row_bytes + b * Blocks::kBytes;
          __m512i lo, hi;
          Blocks::Ints2(block, &lo, &hi);
          const __m512 dw = _mm512_set1_ps(HalfScale(block));
#pragma GCC unroll 64
          for (int p = 0; p < NP; ++p) {
            const __m512i sums = _mm512_add_epi32(_mm512_madd_epi16(lo, xlo[p]), _mm512_madd_epi16(hi, xhi[p]));
            acc[r][p] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dx[p]), _mm512_cvtepi32_ps(sums), acc[r][p]);
          }
        }
      }
#pragma GCC unroll 64
      for (int r = 0; r < R; ++r) {
#pragma GCC unroll 64
        for (int p = 0; p < NP; ++p) {
          t.out[(2 * p) * t.out_stride + r * t.out_row_stride] = Reduce8(Low8(acc[r][p]));
          t.out[(2 * p + 1) * t.out_stride + r * t.out_row_stride] = Reduce8(High8(acc[r][p]));
        }
      }
    }
  }
};

// R rows `apart` rows apart from row r against all vectors: four at a time, then two, then one.
template <class Tiles, int R>
A2SF_AVX512_INLINE void VectorTiles512(TileCursor* cursor, int64_t r, int64_t apart, int n_vectors, int64_t cols) {
  int v = 0;
  for (; v + 4 <= n_vectors; v += 4) Tiles::template Run<R, 4>(cursor->AtFar(r, v, apart), cols);
  if (v + 2 <= n_vectors) Tiles::template Run<R, 2>(cursor->AtFar(r, v, apart), cols), v += 2;
  if (v < n_vectors) Tiles::template Run<R, 1>(cursor->AtFar(r, v, apart), cols);
}

// One vector over a streamed matrix, for tiles whose pair-of-vectors form costs what their one-vector
// form does (q8_0: one 512-bit register carries both vectors' lanes): the vector is its own pair
// (stride 0; both halves compute, and write, the same bits), so it runs the several-vector walk -- two
// rows half the range apart, prefetched. Same-run pairs (bench/forward_pass_bench, fastest step of 16,
// one row, three pairs): at the LLaMA-2-7B width (4096 columns) q8_0 takes ~12% less time at 1
// thread and ~6% at 2 (one pair of three slower); at the 110M width (768) it is level; q4_0 was ~10%
// slower self-paired and keeps the AVX2 tile.
template <class Tiles>
A2SF_AVX512_INLINE void OneVectorAsPairs(TileCursor* cursor, int64_t begin, int64_t end, int64_t cols) {
  auto self_paired = [&](int64_t r, int64_t apart) {
    Tile t = cursor->AtFar(r, 0, apart);
    t.x_stride = 0, t.out_stride = 0;
    return t;
  };
  const int64_t half = (end - begin) / 2;
  for (int64_t i = 0; i < half; ++i) Tiles::template Run<2, 2>(self_paired(begin + i, half), cols);
  if (begin + 2 * half < end) Tiles::template Run<1, 2>(self_paired(end - 1, 1), cols);
}

// Rows [begin, end) x all vectors. Several vectors: tiles of two rows half the range apart (adjacent
// rows interleaved read a streamed matrix slower, see RowsAvx2; two far-apart streams read it as fast
// and each vector load serves both rows: the 110M shape's 8-row step 17.4-18.0 -> 15.2-15.7 ms, 16 rows
// 42-43 -> 28 ms) x four vectors at a time, then two, one (eight at a time measured no faster and
// needs twice the registers). One vector as RowsAvx2 walks it (q8_0 over a streamed matrix: as its
// own pair, OneVectorAsPairs).
template <class Tiles, int kRows>
A2SF_AVX512 void RowsAvx512(const WeightMatrix& w, const Activations& x, int n_vectors, int64_t begin, int64_t end,
                            float* out) {
  TileCursor cursor(w, x, out);
  int64_t r = begin;
  if (n_vectors == 1) {
    if (cursor.cached()) {
      for (; r + kRows <= end; r += kRows) Tiles::template Run<kRows, 1>(cursor.At(r, 0), w.cols);
    }
    if constexpr (Tiles::kOneVectorAsPair) {
      if (!cursor.cached()) return OneVectorAsPairs<Tiles>(&cursor, begin, end, w.cols);
    }
    for (; r < end; ++r) Tiles::template Run<1, 1>(cursor.At(r, 0), w.cols);
    return;
  }
  // Rows in pairs half the range apart: two clean sequential streams, each weight load shared by
  // four vectors' FMAs and each vector load by two rows; an odd last row alone.
  const int64_t half = (end - begin) / 2;
  for (int64_t i = 0; i < half; ++i) VectorTiles512<Tiles, 2>(&cursor, begin + i, half, n_vectors, w.cols);
  if (begin + 2 * half < end) VectorTiles512<Tiles, 1>(&cursor, end - 1, 1, n_vectors, w.cols);
}

constexpr RowsKernel kAvx512Kernels[kWeightTypeCount] = {
    RowsAvx512<FloatTiles512<F32Decoder512>, 3>, RowsAvx512<FloatTiles512<F16Decoder512>, 3>,
    RowsAvx512<FloatTiles512<Bf16Decoder512>, 3>, RowsAvx512<QuantizedTiles512<Q8_0Blocks512>, 4>,
    RowsAvx512<QuantizedTiles512<Q4_0Blocks512>, 4>};

constexpr RowsKernel kAvx2Kernels[kWeightTypeCount] = {
    RowsAvx2<FloatTiles<F32Decoder>, 3>, RowsAvx2<FloatTiles<F16Decoder>, 3>, RowsAvx2<FloatTiles<Bf16Decoder>, 3>,
    RowsAvx2<QuantizedTiles<Q8_0Blocks>, 4>, RowsAvx2<QuantizedTiles<Q4_0Blocks>, 4>};
#endif

RowsKernel Kernel(KernelIsa isa, WeightType type) {
#if defined(__x86_64__)
  if (isa == KernelIsa::kAvx512) return kAvx512Kernels[static_cast<int>(type)];
  if (isa == KernelIsa::kAvx2) return kAvx2Kernels[static_cast<int>(type)];
#endif
  return IsQuantized(type) ? RowsScalarQuantized : RowsScalar;
}

// Rows [begin, end) of one product, as one thread's work: in panels, the chunk may be shared through
// `claims` (PanelClaims) with threads that run out of work; row-major, its thread runs it whole.
struct Chunk {
  const WeightMatrix* w;
  Activations a;
  float* out;
  int64_t begin, end;
  RowsKernel rows_kernel;    // row-major matrices
  PanelKernel panel_kernel;  // matrices in panels
  PanelClaims* claims;       // panels: counting PanelsIn(begin, end); shared with helpers in a pool

  // `helping`: a thread that has run out of its own work takes panels from the back, if any are left.
  void Run(int n_vectors, bool helping) const {
    if (panel_kernel != nullptr) return panel_kernel(*w, a, n_vectors, begin, end, out, {claims, helping});
    if (!helping) rows_kernel(*w, a, n_vectors, begin, end, out);
  }
};

Chunk MakeChunk(KernelIsa isa, const WeightMatrix& w, const Activations& a, float* out, int64_t begin, int64_t end) {
  if (w.panels()) return {&w, a, out, begin, end, nullptr, PanelKernelFor(isa, w.type), nullptr};
  return {&w, a, out, begin, end, Kernel(isa, w.type), nullptr, nullptr};
}

// The vectors in the form w's kernels take, quantized into `buffer` where the type needs it.
Activations Prepare(KernelIsa isa, const WeightMatrix& w, const float* x, int n_vectors,
                    std::vector<BlockQ16>* buffer) {
  Activations a;
  a.f32 = x;
  if (!IsQuantized(w.type)) return a;
  a.q16_blocks = size_t(w.cols / kQuantBlock);
  buffer->resize(a.q16_blocks * size_t(n_vectors));
  for (int v = 0; v < n_vectors; ++v) QuantizeQ16(isa, x + size_t(v) * w.cols, w.cols, buffer->data() + v * a.q16_blocks);
  a.q16 = buffer->data();
  return a;
}

}  // namespace

bool CpuSupports(KernelIsa isa) {
#if defined(__x86_64__)
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && CpuHasAvxF16c();
  switch (isa) {
    case KernelIsa::kScalar:
      return true;
    case KernelIsa::kAvx2:
      return avx2;
    case KernelIsa::kAvx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512bw");
  }
  return false;
#else
  return isa == KernelIsa::kScalar;
#endif
}

const char* KernelIsaName(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::kAvx512:
      return "avx512";
    case KernelIsa::kAvx2:
      return "avx2";
    case KernelIsa::kScalar:
      break;
  }
  return "scalar";
}

namespace {

KernelIsa CappedIsa() {
  constexpr KernelIsa kOrder[] = {KernelIsa::kAvx512, KernelIsa::kAvx2, KernelIsa::kScalar};
  int first = 0;
  if (const char* cap = std::getenv("A2SF_MAX_KERNEL_ISA"); cap != nullptr && *cap != '\0') {
    first = -1;
    for (int i = 0; i < 3; ++i) {
      if (std::strcmp(cap, KernelIsaName(kOrder[i])) == 0) first = i;
    }
    if (first < 0) {
      std::fprintf(stderr, "A2SF_MAX_KERNEL_ISA=%s is not scalar, avx2 or avx512: ignored\n", cap);
      first = 0;
    }
  }
  for (int i = first; i < 3; ++i) {
    if (CpuSupports(kOrder[i])) return kOrder[i];
  }
  return KernelIsa::kScalar;
}

}  // namespace

KernelIsa DetectedIsa() {
  static const KernelIsa isa = CappedIsa();
  return isa;
}

void QuantizeQ16(KernelIsa isa, const float* x, int64_t n, BlockQ16* out) {
#if defined(__x86_64__)
  if (isa != KernelIsa::kScalar) return QuantizeQ16Avx2(x, out, n / kQuantBlock);
#endif
  QuantizeQ16Scalar(x, out, n / kQuantBlock);
}

void MatMulRows(KernelIsa isa, float* out, const WeightMatrix& w, const float* x, int n_vectors, int64_t row_begin,
                int64_t row_end) {
  if (w.panels() && (row_begin % kPanelRows != 0 || (row_end % kPanelRows != 0 && row_end != w.rows))) {
    std::fprintf(stderr, "MatMulRows: rows [%lld, %lld) of a panels matrix must start and end on panels\n",
                 static_cast<long long>(row_begin), static_cast<long long>(row_end));
    std::abort();
  }
  thread_local std::vector<BlockQ16> buffer;
  PanelClaims all(PanelsIn(row_begin, row_end));
  Chunk chunk = MakeChunk(isa, w, Prepare(isa, w, x, n_vectors, &buffer), out, row_begin, row_end);
  chunk.claims = &all;
  chunk.Run(n_vectors, /*helping=*/false);
}

void MatMul(float* out, const WeightMatrix& w, const float* x, int n_vectors, ThreadPool* pool) {
  const Product product{out, &w, x};
  MatMuls({&product, 1}, n_vectors, pool);
}

void MatMuls(absl::Span<const Product> products, int n_vectors, ThreadPool* pool) {
  const KernelIsa isa = DetectedIsa();
  // The calling thread's buffers: the pool's threads read them while this call waits for them.
  thread_local std::vector<std::vector<BlockQ16>> buffers;
  if (buffers.size() < products.size()) buffers.resize(products.size());
  thread_local std::vector<Chunk> chunks;
  thread_local std::deque<PanelClaims> claims;  // chunks[c]'s; a deque, as PanelClaims does not move
  thread_local std::vector<Activations> prepared;  // per product
  chunks.clear();
  prepared.clear();
  const int threads = pool == nullptr ? 1 : pool->num_threads();
  size_t work = 0;
  for (const Product& product : products) work += size_t(product.w->rows) * product.w->cols * n_vectors;
  // Below ~256K multiply-adds a fork-join costs more than it saves.
  const bool parallel = threads > 1 && work >= (size_t(1) << 18);
  for (size_t p = 0; p < products.size(); ++p) {
    const WeightMatrix& w = *products[p].w;
    // Products of the same vectors (q/k/v, w1/w3) take them as the first of them prepared them: the
    // quantized types' vectors are quantized once per call, not once per product.
    auto same_input = [&](size_t q) {
      return products[q].x == products[p].x && products[q].w->cols == w.cols &&
             IsQuantized(products[q].w->type) == IsQuantized(w.type);
    };
    size_t first = 0;
    while (first < p && !same_input(first)) ++first;
    const Activations a = first < p ? prepared[first] : Prepare(isa, w, products[p].x, n_vectors, &buffers[p]);
    prepared.push_back(a);
    // One chunk of rows per thread (whole tiles of 4 rows or whole panels; a row's result does not
    // depend on its chunk or tile). Not more for balance: a chunk's walk reads its panels as a few
    // sequential streams (panel_walk.inc), and every cut shortens them -- the same product in eight
    // chunks ran q4_0 at 0.6x and q8_0 at 0.85x the speed of one, even on one thread
    // (docs/PERFORMANCE.md, weight types: "one chunk of rows per thread"). Balance comes from sharing
    // instead: a thread out of work takes a panel chunk's last panels (PanelClaims).
    const int64_t per_product = parallel ? threads : 1;
    const int64_t unit = w.panels() ? kPanelRows : 4;
    const int64_t chunk_rows = ((w.rows + per_product - 1) / per_product + unit - 1) / unit * unit;
    for (int64_t begin = 0; begin < w.rows; begin += chunk_rows) {
      chunks.push_back(MakeChunk(isa, w, a, products[p].out, begin, std::min(w.rows, begin + chunk_rows)));
    }
  }
  while (claims.size() < chunks.size()) claims.emplace_back();
  for (size_t c = 0; c < chunks.size(); ++c) {
    if (chunks[c].panel_kernel == nullptr) continue;
    claims[c].Reset(PanelsIn(chunks[c].begin, chunks[c].end));
    chunks[c].claims = &claims[c];
  }
  if (!parallel) {
    for (const Chunk& chunk : chunks) chunk.Run(n_vectors, /*helping=*/false);
    return;
  }
  // Items [0, n): each chunk by the thread that claims it; items [n, 2n) where the matrices are in
  // panels: a thread with none of those left helps chunk i - n from its back. A thread_local named in
  // the lambda would be each pool thread's own (empty) list: name this one.
  const std::vector<Chunk>& list = chunks;
  const size_t n = chunks.size();
  const bool shared = std::any_of(list.begin(), list.end(), [](const Chunk& c) { return c.claims != nullptr; });
  pool->ParallelFor(shared ? 2 * n : n,
                    [&list, n, n_vectors](size_t i) { list[i % n].Run(n_vectors, /*helping=*/i >= n); });
}

}  // namespace a2sf::worker
