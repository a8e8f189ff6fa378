#include "worker/engine/panel_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
// GCC 12's avx512fintrin.h makes the unused merge operand of its intrinsics a self-initialised
// value (`__m512 __Y = __Y`), which -Wmaybe-uninitialized reports at each inlined use (GCC bug
// 105593, fixed in GCC 13): hundreds of false warnings from this file alone.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

#include "common/float16.h"

namespace a2sf::worker {
namespace {

// --- Scalar: the reference the SIMD kernels are compared against (and the fallback). ---

// Calls run(first row) for each panel of rows [begin, end) that `share` gives, one panel at a time.
template <class Fn>
void ForSharedPanels(int64_t begin, PanelShare share, Fn run) {
  for (uint32_t first, n; share.claims->Take(share.from_back, 0, 1, &first, &n);) {
    for (uint32_t j = first; j < first + n; ++j) run(begin + int64_t(j) * kPanelRows);
  }
}

void PanelsScalar(const WeightMatrix& w, const Activations& a, int n_vectors, int64_t begin, int64_t end, float* out,
                  PanelShare share) {
  const WeightTypeTraits& traits = Traits(w.type);
  const float* x = a.f32;
  const size_t column_bytes = traits.block_bytes * kPanelRows;  // a float type's block is one weight
  float weights[kPanelRows];
  ForSharedPanels(begin, share, [&](int64_t first) {
    const uint8_t* panel = w.panel(first / kPanelRows);
    const int64_t lanes = std::min(kPanelRows, end - first);
    for (int v = 0; v < n_vectors; ++v) {
      const float* xv = x + size_t(v) * w.cols;
      float acc[kPanelRows] = {};
      for (int64_t c = 0; c < w.cols; ++c) {
        traits.to_float(panel + size_t(c) * column_bytes, weights, kPanelRows);
        for (int l = 0; l < kPanelRows; ++l) acc[l] = std::fma(weights[l], xv[c], acc[l]);
      }
      std::memcpy(out + size_t(v) * w.rows + first, acc, size_t(lanes) * sizeof(float));
    }
  });
}

// Weight j (column j of the block) of panel row l in a quantized panel block, as an integer: q8_0's
// int8; q4_0's nibble - 8 (low nibbles of unit u: columns 2u, 2u + 1; high: 16 + 2u, 17 + 2u).
template <WeightType kType>
int QuantWeight(const uint8_t* block, int64_t l, int j) {
  static_assert(IsQuantized(kType));
  if constexpr (kType == WeightType::kQ8_0) {
    return int8_t(block[kQuantPanelUnits + (j / 2) * 2 * kPanelRows + 2 * l + j % 2]);
  } else {
    const uint8_t byte = block[kQuantPanelUnits + ((j % 16) / 2) * 2 * kPanelRows + 2 * l + j % 2];
    return (j < 16 ? byte & 0x0f : byte >> 4) - 8;
  }
}

// q8_0 and q4_0 in panels: per (row, vector), block by block, the exact integer dot product of the
// block's 32 weights and the vector block's 32 16-bit values, then acc = fma(d_w * d_x, float(dot),
// acc). The dot product is below 2^31 in magnitude (32 x 128 x 32767), so every order of summing it is
// exact.
template <WeightType kType>
void PanelsScalarQuantized(const WeightMatrix& w, const Activations& a, int n_vectors, int64_t begin, int64_t end,
                           float* out, PanelShare share) {
  const int64_t blocks = w.cols / kQuantBlock;
  constexpr size_t kBlockBytes = QuantPanelBlockBytes(kType);
  ForSharedPanels(begin, share, [&](int64_t first) {
    const uint8_t* panel = w.panel(first / kPanelRows);
    const int64_t lanes = std::min(kPanelRows, end - first);
    for (int v = 0; v < n_vectors; ++v) {
      const BlockQ16* x = a.q16 + size_t(v) * a.q16_blocks;
      for (int64_t l = 0; l < lanes; ++l) {
        float acc = 0.0f;
        for (int64_t b = 0; b < blocks; ++b) {
          const uint8_t* block = panel + size_t(b) * kBlockBytes;
          int32_t dot = 0;
          for (int j = 0; j < kQuantBlock; ++j) dot += QuantWeight<kType>(block, l, j) * int32_t(x[b].qs[j]);
          uint16_t half;
          std::memcpy(&half, block + 2 * l, 2);
          acc = std::fma(HalfToFloat(half) * x[b].d, float(dot), acc);
        }
        out[size_t(v) * w.rows + first + l] = acc;
      }
    }
  });
}

#if defined(__x86_64__)
#define A2SF_PANEL_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline
#define A2SF_PANEL_AVX512_INLINE \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx2,fma,f16c"), always_inline)) inline
#define A2SF_PANEL_VNNI_INLINE \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512vnni,avx2,fma,f16c"), always_inline)) inline

// Where a tile of G panels x NV vectors reads and writes: panels `apart` bytes apart from `panel`,
// vectors x_stride bytes apart from `x` (floats for the float types, BlockQ16s for q8_0 and q4_0), results
// at out[v * out_stride + g * out_apart + lane].
struct PanelTile {
  const uint8_t* panel;
  size_t apart;
  const uint8_t* x;
  size_t x_stride;
  float* out;
  size_t out_stride;
  size_t out_apart;
};

// The tile moved to vector v.
inline PanelTile FromVector(PanelTile t, int v) {
  t.x += size_t(v) * t.x_stride;
  t.out += size_t(v) * t.out_stride;
  return t;
}

// Vector v of a tile, as floats / as its 16-bit blocks (q8_0, q4_0).
inline const float* FloatVector(const PanelTile& t, int v) {
  return reinterpret_cast<const float*>(t.x + size_t(v) * t.x_stride);
}
inline const BlockQ16* BlockVector(const PanelTile& t, int v) {
  return reinterpret_cast<const BlockQ16*>(t.x + size_t(v) * t.x_stride);
}

// The vectors' first byte and stride as the matrix's kernels take them.
struct VectorBytes {
  const uint8_t* x;
  size_t stride;
};
inline VectorBytes VectorsOf(const WeightMatrix& w, const Activations& a) {
  if (a.q16 != nullptr) return {reinterpret_cast<const uint8_t*>(a.q16), a.q16_blocks * sizeof(BlockQ16)};
  return {reinterpret_cast<const uint8_t*>(a.f32), size_t(w.cols) * sizeof(float)};
}

// One panel column (16 rows' weights at one column) as floats: all 16 (AVX-512) or lanes 8h..8h+7.
struct F32Column {
  static constexpr size_t kBytes = 64;
  A2SF_PANEL_AVX512_INLINE static __m512 Load16(const uint8_t* p) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(p));
  }
  A2SF_PANEL_AVX2_INLINE static __m256 Load8(const uint8_t* p, int h) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p) + 8 * h);
  }
};
struct F16Column {
  static constexpr size_t kBytes = 32;
  A2SF_PANEL_AVX512_INLINE static __m512 Load16(const uint8_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  A2SF_PANEL_AVX2_INLINE static __m256 Load8(const uint8_t* p, int h) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
  }
};
struct Bf16Column {
  static constexpr size_t kBytes = 32;
  A2SF_PANEL_AVX512_INLINE static __m512 Load16(const uint8_t* p) {
    const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
  }
  A2SF_PANEL_AVX2_INLINE static __m256 Load8(const uint8_t* p, int h) {
    const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * h)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
  }
};

// A vector block's two 16-bit values at columns (2q, 2q + 1) as one 32-bit word (to broadcast).
inline int32_t PairWord(const BlockQ16& xb, int q) {
  int32_t word;
  std::memcpy(&word, xb.qs + 2 * q, 4);
  return word;
}

// A quantized panel's blocks (weights.h): block b of a panel, and its 2-byte unit u (16 rows x 2
// bytes). Pair16 / Pair8 give columns (2q, 2q + 1) of 16 rows / of rows 8h..8h+7 as 16-bit integers,
// row by row, ready for vpmaddwd against a PairWord.
template <WeightType kType>
struct QuantPanel {
  static constexpr WeightType type = kType;
  static const uint8_t* Block(const uint8_t* panel, int64_t b) {
    return panel + size_t(b) * QuantPanelBlockBytes(kType);
  }
  static const uint8_t* Unit(const uint8_t* block, int u) {
    return block + kQuantPanelUnits + size_t(u) * kPanelRows * 2;
  }
};
struct Q8_0Panel : QuantPanel<WeightType::kQ8_0> {
  A2SF_PANEL_VNNI_INLINE static __m512i Pair16(const uint8_t* block, int q) {
    return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(Unit(block, q))));
  }
  A2SF_PANEL_AVX2_INLINE static __m256i Pair8(const uint8_t* block, int q, int h) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(Unit(block, q) + 16 * h)));
  }
};
struct Q4_0Panel : QuantPanel<WeightType::kQ4_0> {  // pair q < 8: unit q's low nibbles, else unit q - 8's high
  A2SF_PANEL_VNNI_INLINE static __m512i Pair16(const uint8_t* block, int q) {
    const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Unit(block, q % 8)));
    const __m256i nibbles = _mm256_and_si256(q < 8 ? bytes : _mm256_srli_epi16(bytes, 4), _mm256_set1_epi8(0x0f));
    return _mm512_sub_epi16(_mm512_cvtepu8_epi16(nibbles), _mm512_set1_epi16(8));
  }
  A2SF_PANEL_AVX2_INLINE static __m256i Pair8(const uint8_t* block, int q, int h) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(Unit(block, q % 8) + 16 * h));
    const __m128i nibbles = _mm_and_si128(q < 8 ? bytes : _mm_srli_epi16(bytes, 4), _mm_set1_epi8(0x0f));
    return _mm256_sub_epi16(_mm256_cvtepu8_epi16(nibbles), _mm256_set1_epi16(8));
  }
};

// Each ISA's tiles, then panel_walk.inc (the walk over panels and vectors) compiled for that ISA,
// between A2SF_TARGET_PUSH and A2SF_TARGET_POP: GCC's `#pragma GCC target`, or clang's `#pragma clang
// attribute` (scripts/fuzz.sh builds with clang, which ignores GCC's).
#define A2SF_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define A2SF_TARGET_PUSH(isa) A2SF_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define A2SF_TARGET_POP() _Pragma("clang attribute pop")
#else
#define A2SF_TARGET_PUSH(isa) _Pragma("GCC push_options") A2SF_PRAGMA(GCC target(isa))
#define A2SF_TARGET_POP() _Pragma("GCC pop_options")
#endif
A2SF_TARGET_PUSH("avx512f,avx512vl,avx512bw,avx2,fma,f16c")
namespace avx512 {

// One register per (panel, vector). Eight vectors or more: tiles of two far-apart panels x eight
// vectors (16 accumulators), so eight jobs read each weight once and never revisit it; same-run
// forward_pass_bench, 110M f32, 8 rows: 10.2-12.8 ms against 11.4-13.6 for 4 panels x 4 vectors
// (3 x 8 measured level with 2 x 8). Fewer vectors: four panels, so a tile still has enough
// independent accumulators to hide the fused multiply-add's latency (one vector: eight panels were
// slower, 7.6-9.5 ms against 6.3-7.3 per step).
template <class Column>
struct Tiles {
  static constexpr int kPanels = 2, kVectors = 8, kFewVectorPanels = 4;
  template <int G, int NV>
  A2SF_PANEL_AVX512_INLINE static void Run(const PanelTile& t, int64_t cols) {
    __m512 acc[G][NV];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[g][v] = _mm512_setzero_ps();
    for (int64_t c = 0; c < cols; ++c) {
      __m512 wc[G];
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) wc[g] = Column::Load16(t.panel + g * t.apart + size_t(c) * Column::kBytes);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        const __m512 xb = _mm512_set1_ps(FloatVector(t, v)[c]);
#pragma GCC unroll 8
        for (int g = 0; g < G; ++g) acc[g][v] = _mm512_fmadd_ps(wc[g], xb, acc[g][v]);
      }
    }
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(t.out + v * t.out_stride + g * t.out_apart, acc[g][v]);
  }
};

#include "worker/engine/panel_walk.inc"

}  // namespace avx512
A2SF_TARGET_POP()

// q8_0 and q4_0 on AVX-512 need VNNI (vpdpwssd: Ice Lake, Zen 4 and later); AVX-512 CPUs without it
// run the AVX2 panel kernels, which give the same bits.
A2SF_TARGET_PUSH("avx512f,avx512vl,avx512bw,avx512vnni,avx2,fma,f16c")
namespace avx512vnni {

// q8_0 and q4_0 (Panel: Q8_0Panel, Q4_0Panel). One fp32 accumulator per (panel, vector), 16 rows'
// lanes. Per block: each column pair's 16 rows x 2 weights, widened to 16 bits (q8_0: one
// instruction; q4_0: mask or shift, widen, subtract 8), feeds every vector of the tile, whose pair of
// 16-bit values is one broadcast word; vpdpwssd adds the 16 rows' pair products to the block's exact
// integer sums, which then take one scale FMA each. Registers: G x NV accumulators and as many sums.
template <class Panel>
struct QuantTiles {
  static constexpr int kPanels = 2, kVectors = 4, kFewVectorPanels = 4;
  template <int G, int NV>
  A2SF_PANEL_VNNI_INLINE static void Run(const PanelTile& t, int64_t cols) {
    __m512 acc[G][NV];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[g][v] = _mm512_setzero_ps();
    for (int64_t b = 0; b < cols / kQuantBlock; ++b) {
      __m512i sum[G][NV];
#pragma GCC unroll 16
      for (int q = 0; q < kQuantBlock / 2; ++q) {
        __m512i pair[G];
#pragma GCC unroll 8
        for (int g = 0; g < G; ++g) pair[g] = Panel::Pair16(Panel::Block(t.panel + g * t.apart, b), q);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          const __m512i xq = _mm512_set1_epi32(PairWord(BlockVector(t, v)[b], q));
#pragma GCC unroll 8
          for (int g = 0; g < G; ++g) {
            sum[g][v] = q == 0 ? _mm512_madd_epi16(pair[g], xq) : _mm512_dpwssd_epi32(sum[g][v], pair[g], xq);
          }
        }
      }
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
        const __m512 dw = _mm512_cvtph_ps(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(Panel::Block(t.panel + g * t.apart, b))));
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(BlockVector(t, v)[b].d));
          acc[g][v] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(sum[g][v]), acc[g][v]);
        }
      }
    }
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(t.out + v * t.out_stride + g * t.out_apart, acc[g][v]);
  }
};

#include "worker/engine/panel_walk.inc"

}  // namespace avx512vnni
A2SF_TARGET_POP()

A2SF_TARGET_PUSH("avx2,fma,f16c")
namespace avx2 {

// Two 8-lane registers per (panel, vector), the same operations per lane as AVX-512's.
template <class Column>
struct Tiles {
  static constexpr int kPanels = 2, kVectors = 2, kFewVectorPanels = 4;  // 16 registers: 8 accumulators
  template <int G, int NV>
  A2SF_PANEL_AVX2_INLINE static void Run(const PanelTile& t, int64_t cols) {
    __m256 acc[G][NV][2];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[g][v][0] = acc[g][v][1] = _mm256_setzero_ps();
    for (int64_t c = 0; c < cols; ++c) {
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        __m256 wc[G];
#pragma GCC unroll 8
        for (int g = 0; g < G; ++g) wc[g] = Column::Load8(t.panel + g * t.apart + size_t(c) * Column::kBytes, h);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) {
          const __m256 xb = _mm256_set1_ps(FloatVector(t, v)[c]);
#pragma GCC unroll 8
          for (int g = 0; g < G; ++g) acc[g][v][h] = _mm256_fmadd_ps(wc[g], xb, acc[g][v][h]);
        }
      }
    }
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        _mm256_storeu_ps(t.out + v * t.out_stride + g * t.out_apart, acc[g][v][0]);
        _mm256_storeu_ps(t.out + v * t.out_stride + g * t.out_apart + 8, acc[g][v][1]);
      }
  }
};

// q8_0 and q4_0 as avx512vnni::QuantTiles computes them, in two 8-row halves (rows 8h..8h+7: bytes
// 16h..16h+15 of each unit's 32) and with madd + add for vpdpwssd. Registers: G x NV x 2
// accumulators and as many sums.
template <class Panel>
struct QuantTiles {
  static constexpr int kPanels = 1, kVectors = 2, kFewVectorPanels = 2;
  template <int G, int NV>
  A2SF_PANEL_AVX2_INLINE static void Run(const PanelTile& t, int64_t cols) {
    __m256 acc[G][NV][2];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[g][v][0] = acc[g][v][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < cols / kQuantBlock; ++b) {
      __m256i sum[G][NV][2];
#pragma GCC unroll 16
      for (int q = 0; q < kQuantBlock / 2; ++q) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          __m256i pair[G];
#pragma GCC unroll 8
          for (int g = 0; g < G; ++g) pair[g] = Panel::Pair8(Panel::Block(t.panel + g * t.apart, b), q, h);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) {
            const __m256i xq = _mm256_set1_epi32(PairWord(BlockVector(t, v)[b], q));
#pragma GCC unroll 8
            for (int g = 0; g < G; ++g) {
              const __m256i products = _mm256_madd_epi16(pair[g], xq);
              sum[g][v][h] = q == 0 ? products : _mm256_add_epi32(sum[g][v][h], products);
            }
          }
        }
      }
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
          const __m256 dw = _mm256_cvtph_ps(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(Panel::Block(t.panel + g * t.apart, b) + 16 * h)));
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) {
            const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(BlockVector(t, v)[b].d));
            acc[g][v][h] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sum[g][v][h]), acc[g][v][h]);
          }
        }
      }
    }
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        _mm256_storeu_ps(t.out + v * t.out_stride + g * t.out_apart, acc[g][v][0]);
        _mm256_storeu_ps(t.out + v * t.out_stride + g * t.out_apart + 8, acc[g][v][1]);
      }
  }
};

#include "worker/engine/panel_walk.inc"

}  // namespace avx2
A2SF_TARGET_POP()

#endif  // __x86_64__

// In WeightType order (weights.h).
constexpr PanelKernel kScalarPanels[kWeightTypeCount] = {PanelsScalar, PanelsScalar, PanelsScalar,
                                                        PanelsScalarQuantized<WeightType::kQ8_0>,
                                                        PanelsScalarQuantized<WeightType::kQ4_0>};
#if defined(__x86_64__)
// AVX-512 without VNNI runs the quantized types' AVX2 tiles (their pair sums need vpdpwssd's
// 16-row form or AVX2's madd + add).
constexpr PanelKernel kAvx512Panels[kWeightTypeCount] = {
    avx512::Panels<avx512::Tiles<F32Column>>, avx512::Panels<avx512::Tiles<F16Column>>,
    avx512::Panels<avx512::Tiles<Bf16Column>>, avx2::Panels<avx2::QuantTiles<Q8_0Panel>>,
    avx2::Panels<avx2::QuantTiles<Q4_0Panel>>};
constexpr PanelKernel kVnniPanels[kWeightTypeCount] = {
    avx512::Panels<avx512::Tiles<F32Column>>, avx512::Panels<avx512::Tiles<F16Column>>,
    avx512::Panels<avx512::Tiles<Bf16Column>>, avx512vnni::Panels<avx512vnni::QuantTiles<Q8_0Panel>>,
    avx512vnni::Panels<avx512vnni::QuantTiles<Q4_0Panel>>};
constexpr PanelKernel kAvx2Panels[kWeightTypeCount] = {
    avx2::Panels<avx2::Tiles<F32Column>>, avx2::Panels<avx2::Tiles<F16Column>>,
    avx2::Panels<avx2::Tiles<Bf16Column>>, avx2::Panels<avx2::QuantTiles<Q8_0Panel>>,
    avx2::Panels<avx2::QuantTiles<Q4_0Panel>>};
#endif

}  // namespace

PanelKernel PanelKernelFor(KernelIsa isa, WeightType type) {
  const int t = static_cast<int>(type);
#if defined(__x86_64__)
  if (isa == KernelIsa::kAvx512) {
    static const bool vnni = __builtin_cpu_supports("avx512vnni");
    return vnni ? kVnniPanels[t] : kAvx512Panels[t];
  }
  if (isa == KernelIsa::kAvx2) return kAvx2Panels[t];
#endif
  return kScalarPanels[t];
}

}  // namespace a2sf::worker
