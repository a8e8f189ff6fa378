#include "worker/engine/panel_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace a2sf::worker {
namespace {

// --- Scalar: the reference the SIMD kernels are compared against (and the fallback). ---

void PanelsScalar(const WeightMatrix& w, const Activations& a, int n_vectors, int64_t begin, int64_t end, float* out) {
  const WeightTypeTraits& traits = Traits(w.type);
  const float* x = a.f32;
  const size_t column_bytes = traits.block_bytes * kPanelRows;  // a float type's block is one weight
  float weights[kPanelRows];
  for (int64_t first = begin; first < end; first += kPanelRows) {
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
  }
}

#if defined(__x86_64__)
#define A2SF_PANEL_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline
#define A2SF_PANEL_AVX512_INLINE \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx2,fma,f16c"), always_inline)) inline

// Where a tile of G panels x NV vectors reads and writes: panels `apart` bytes apart from `panel`,
// vectors x_stride floats apart from `x`, results at out[v * out_stride + g * out_apart + lane].
struct PanelTile {
  const uint8_t* panel;
  size_t apart;
  const float* x;
  size_t x_stride;
  float* out;
  size_t out_stride;
  size_t out_apart;
};

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

// The tile moved to vector v.
inline PanelTile FromVector(PanelTile t, int v) {
  t.x += size_t(v) * t.x_stride;
  t.out += size_t(v) * t.out_stride;
  return t;
}

// Each ISA's tiles, then panel_walk.inc (the walk over panels and vectors) compiled for that ISA.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx2,fma,f16c")
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
        const __m512 xb = _mm512_set1_ps(t.x[v * t.x_stride + size_t(c)]);
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

// q8_0 panels (weights.h): per block, lane m of each row's sum takes the integer pair products of
// columns (2m, 2m+1) and (16+2m, 17+2m) -- one vpmaddwd each for 16 rows -- and then
// fma(d_w * d_x, sum, lane m): RowsScalarQuantized's arithmetic, lanes reduced in ReduceLanes'
// order, so q8_0 gives the same bits in panels as in rows. NV vectors per tile (8 accumulators each).
template <int NV>
inline void Q8_0Tile(const uint8_t* panel, int64_t blocks, const BlockQ16* x, size_t x_stride, float* out,
                     size_t out_stride) {
  __m512 acc[NV][8];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v)
#pragma GCC unroll 8
    for (int m = 0; m < 8; ++m) acc[v][m] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = panel + size_t(b) * kQ8_0PanelBlockBytes;
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block)));
    __m512 scale[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) scale[v] = _mm512_mul_ps(dw, _mm512_set1_ps(x[v * x_stride + size_t(b)].d));
#pragma GCC unroll 8
    for (int m = 0; m < 8; ++m) {
      const uint8_t* pairs = block + kQ8_0PanelPairs;
      auto pair = [&](int q) {  // columns 2q, 2q + 1 of the 16 rows, as int16
        return _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(pairs + 32 * q)));
      };
      const __m512i lo = pair(m), hi = pair(m + 8);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        const int16_t* xq = x[v * x_stride + size_t(b)].qs;
        int32_t x_lo, x_hi;
        std::memcpy(&x_lo, xq + 2 * m, 4);
        std::memcpy(&x_hi, xq + 16 + 2 * m, 4);
        const __m512i sum = _mm512_add_epi32(_mm512_madd_epi16(lo, _mm512_set1_epi32(x_lo)),
                                             _mm512_madd_epi16(hi, _mm512_set1_epi32(x_hi)));
        acc[v][m] = _mm512_fmadd_ps(scale[v], _mm512_cvtepi32_ps(sum), acc[v][m]);
      }
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const __m512 even = _mm512_add_ps(_mm512_add_ps(acc[v][0], acc[v][4]), _mm512_add_ps(acc[v][2], acc[v][6]));
    const __m512 odd = _mm512_add_ps(_mm512_add_ps(acc[v][1], acc[v][5]), _mm512_add_ps(acc[v][3], acc[v][7]));
    _mm512_storeu_ps(out + v * out_stride, _mm512_add_ps(even, odd));
  }
}

// Rows [begin, end) of a q8_0 panels matrix: each panel against the vectors two at a time, then one;
// a last panel with fewer rows in range through a scratch block.
void PanelsQ8_0(const WeightMatrix& w, const Activations& a, int n_vectors, int64_t begin, int64_t end, float* out) {
  const int64_t blocks = w.cols / kQuantBlock;
  alignas(64) float scratch[2 * kPanelRows];
  for (int64_t first = begin; first < end; first += kPanelRows) {
    const uint8_t* panel = w.panel(first / kPanelRows);
    const int64_t lanes = std::min(kPanelRows, end - first);
    const bool whole = lanes == kPanelRows;
    const size_t stride = whole ? size_t(w.rows) : size_t(kPanelRows);
    for (int v = 0; v < n_vectors; v += 2) {
      const BlockQ16* x = a.q16 + size_t(v) * a.q16_blocks;
      float* to = whole ? out + size_t(v) * w.rows + first : scratch;
      if (v + 1 < n_vectors) {
        Q8_0Tile<2>(panel, blocks, x, a.q16_blocks, to, stride);
      } else {
        Q8_0Tile<1>(panel, blocks, x, a.q16_blocks, to, stride);
      }
      if (whole) continue;
      for (int u = v; u < std::min(v + 2, n_vectors); ++u) {
        std::memcpy(out + size_t(u) * w.rows + first, scratch + size_t(u - v) * kPanelRows, size_t(lanes) * 4);
      }
    }
  }
}

}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
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
          const __m256 xb = _mm256_set1_ps(t.x[v * t.x_stride + size_t(c)]);
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

#include "worker/engine/panel_walk.inc"

// q8_0 panels on AVX2 (see avx512::Q8_0Tile): rows 8h..8h+7 of a panel at a time (the second 16
// bytes of each column pair's 32), one vector at a time: 8 lane accumulators, the same operations
// per row as the row kernels.
inline void Q8_0HalfPanel(const uint8_t* panel, int64_t blocks, int h, const BlockQ16* x, float* out) {
  __m256 acc[8];
#pragma GCC unroll 8
  for (int m = 0; m < 8; ++m) acc[m] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = panel + size_t(b) * kQ8_0PanelBlockBytes;
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * h)));
    const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(x[b].d));
    const uint8_t* pairs = block + kQ8_0PanelPairs + 16 * h;
#pragma GCC unroll 8
    for (int m = 0; m < 8; ++m) {
      auto pair = [&](int q) {  // columns 2q, 2q + 1 of rows 8h..8h+7, as int16
        return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pairs + 32 * q)));
      };
      const __m256i lo = pair(m), hi = pair(m + 8);
      int32_t x_lo, x_hi;
      std::memcpy(&x_lo, x[b].qs + 2 * m, 4);
      std::memcpy(&x_hi, x[b].qs + 16 + 2 * m, 4);
      const __m256i sum = _mm256_add_epi32(_mm256_madd_epi16(lo, _mm256_set1_epi32(x_lo)),
                                           _mm256_madd_epi16(hi, _mm256_set1_epi32(x_hi)));
      acc[m] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sum), acc[m]);
    }
  }
  const __m256 even = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
  const __m256 odd = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
  _mm256_storeu_ps(out, _mm256_add_ps(even, odd));
}

void PanelsQ8_0(const WeightMatrix& w, const Activations& a, int n_vectors, int64_t begin, int64_t end, float* out) {
  const int64_t blocks = w.cols / kQuantBlock;
  alignas(32) float scratch[kPanelRows];
  for (int64_t first = begin; first < end; first += kPanelRows) {
    const uint8_t* panel = w.panel(first / kPanelRows);
    const int64_t lanes = std::min(kPanelRows, end - first);
    for (int v = 0; v < n_vectors; ++v) {
      const BlockQ16* x = a.q16 + size_t(v) * a.q16_blocks;
      for (int h = 0; h < 2; ++h) Q8_0HalfPanel(panel, blocks, h, x, scratch + 8 * h);
      std::memcpy(out + size_t(v) * w.rows + first, scratch, size_t(lanes) * 4);
    }
  }
}

}  // namespace avx2
#pragma GCC pop_options

#endif  // __x86_64__

}  // namespace

RowsKernel PanelKernelFor(KernelIsa isa, WeightType type) {
  if (!PanelsHold(type)) {
    std::fprintf(stderr, "PanelKernelFor: %s is not held in panels\n", WeightTypeName(type));
    std::abort();
  }
  if (type == WeightType::kQ8_0) {
#if defined(__x86_64__)
    if (isa == KernelIsa::kAvx512) return avx512::PanelsQ8_0;
    if (isa == KernelIsa::kAvx2) return avx2::PanelsQ8_0;
#endif
    return nullptr;  // the scalar row kernel over unpacked panels (matmul.cc)
  }
#if defined(__x86_64__)
  // In WeightType order: f32, f16, bf16.
  static constexpr RowsKernel kAvx512[] = {avx512::Panels<F32Column>, avx512::Panels<F16Column>,
                                           avx512::Panels<Bf16Column>};
  static constexpr RowsKernel kAvx2[] = {avx2::Panels<F32Column>, avx2::Panels<F16Column>, avx2::Panels<Bf16Column>};
  if (isa == KernelIsa::kAvx512) return kAvx512[static_cast<int>(type)];
  if (isa == KernelIsa::kAvx2) return kAvx2[static_cast<int>(type)];
#endif
  return PanelsScalar;
}

}  // namespace a2sf::worker
