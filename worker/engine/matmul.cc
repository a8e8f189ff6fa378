#include "worker/engine/matmul.h"

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/float16.h"

namespace a2sf::worker {
namespace {

using RowsKernel = void (*)(const WeightMatrix& w, const float* x, int n_vectors, int64_t begin, int64_t end,
                            float* out);

// The scalar kernel of every type: a row expanded by the type's to_float (one row of the traits
// table), then plain dot products in column order.
void RowsScalar(const WeightMatrix& w, const float* x, int n_vectors, int64_t begin, int64_t end, float* out) {
  thread_local std::vector<float> row;
  row.resize(size_t(w.cols));
  for (int64_t r = begin; r < end; ++r) {
    w.RowToFloat(r, row.data());
    for (int v = 0; v < n_vectors; ++v) {
      const float* xv = x + size_t(v) * w.cols;
      float sum = 0.0f;
      for (int64_t c = 0; c < w.cols; ++c) sum += row[c] * xv[c];
      out[size_t(v) * w.rows + r] = sum;
    }
  }
}

#if defined(__x86_64__)
#define A2SF_AVX2 __attribute__((target("avx2,fma,f16c")))

// Decoders: 32 weights of a row (chunk k: columns 32k..32k+31) as four vectors of eight floats, and
// single weights for the tail of rows that are not whole chunks (float types only).
struct F32Decoder {
  A2SF_AVX2 static void Chunk(const uint8_t* row, int64_t k, __m256 w[4]) {
    const float* p = reinterpret_cast<const float*>(row) + 32 * k;
    for (int i = 0; i < 4; ++i) w[i] = _mm256_loadu_ps(p + 8 * i);
  }
  static float One(const uint8_t* row, int64_t c) {
    float f;
    std::memcpy(&f, row + 4 * c, 4);
    return f;
  }
};

struct F16Decoder {
  A2SF_AVX2 static void Chunk(const uint8_t* row, int64_t k, __m256 w[4]) {
    const uint8_t* p = row + 64 * k;
    for (int i = 0; i < 4; ++i) w[i] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * i)));
  }
  static float One(const uint8_t* row, int64_t c) {
    uint16_t h;
    std::memcpy(&h, row + 2 * c, 2);
    return HalfToFloat(h);
  }
};

struct Bf16Decoder {
  A2SF_AVX2 static void Chunk(const uint8_t* row, int64_t k, __m256 w[4]) {
    const uint8_t* p = row + 64 * k;
    for (int i = 0; i < 4; ++i) {
      const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * i)));
      w[i] = _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
    }
  }
  static float One(const uint8_t* row, int64_t c) {
    uint16_t h;
    std::memcpy(&h, row + 2 * c, 2);
    return Bfloat16ToFloat(h);
  }
};

// d * q is exact in fp32 (8-bit times 11-bit significands), so the expanded weights are exactly the
// dequantized ones.
struct Q8_0Decoder {
  A2SF_AVX2 static void Chunk(const uint8_t* row, int64_t k, __m256 w[4]) {
    const uint8_t* block = row + sizeof(BlockQ8_0) * k;
    uint16_t d16;
    std::memcpy(&d16, block, 2);
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(d16));
    for (int i = 0; i < 4; ++i) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * i));
      w[i] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
    }
  }
  static float One(const uint8_t*, int64_t) { return 0.0f; }  // rows are whole blocks
};

struct Q4_0Decoder {
  A2SF_AVX2 static void Chunk(const uint8_t* row, int64_t k, __m256 w[4]) {
    const uint8_t* block = row + sizeof(BlockQ4_0) * k;
    uint16_t d16;
    std::memcpy(&d16, block, 2);
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(d16));
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
    const __m128i mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    const __m128i lo = _mm_sub_epi8(_mm_and_si128(bytes, mask), eight);                     // elements 0..15
    const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask), eight);  // elements 16..31
    w[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)));
    w[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))));
    w[2] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)));
    w[3] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))));
  }
  static float One(const uint8_t*, int64_t) { return 0.0f; }
};

// Sum of the four accumulators' 32 lanes, in one fixed order.
A2SF_AVX2 inline float Reduce(const __m256 acc[4]) {
  const __m256 s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  return _mm_cvtss_f32(h);
}

// One row against NV vectors at once: each 32-weight chunk is decoded once and used for every
// vector; each (row, vector) pair has its own four accumulators (chunk lanes i*8..i*8+7 go to
// accumulator i), so its arithmetic does not depend on NV.
template <class Decoder, int NV>
A2SF_AVX2 void RowAvx2(const uint8_t* row, int64_t cols, const float* x, float* out, int64_t out_stride) {
  const int64_t chunks = cols / 32;
  __m256 acc[NV][4];
  for (int v = 0; v < NV; ++v) {
    for (int i = 0; i < 4; ++i) acc[v][i] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < chunks; ++k) {
    __m256 w[4];
    Decoder::Chunk(row, k, w);
    for (int v = 0; v < NV; ++v) {
      const float* xv = x + size_t(v) * cols + 32 * k;
      for (int i = 0; i < 4; ++i) acc[v][i] = _mm256_fmadd_ps(w[i], _mm256_loadu_ps(xv + 8 * i), acc[v][i]);
    }
  }
  for (int v = 0; v < NV; ++v) {
    float tail = 0.0f;
    const float* xv = x + size_t(v) * cols;
    for (int64_t c = chunks * 32; c < cols; ++c) tail += Decoder::One(row, c) * xv[c];
    out[size_t(v) * out_stride] = Reduce(acc[v]) + tail;
  }
}

template <class Decoder>
A2SF_AVX2 void RowsAvx2(const WeightMatrix& w, const float* x, int n_vectors, int64_t begin, int64_t end, float* out) {
  const size_t stride = size_t(w.cols);
  // The row size once per call: WeightMatrix::row() looks it up (and divides) per row, which costs as
  // much as a short row's dot product (stories260K's rows are 64 wide).
  const size_t row_bytes = w.row_bytes();
  const uint8_t* const rows = static_cast<const uint8_t*>(w.data);
  for (int64_t r = begin; r < end; ++r) {
    const uint8_t* row = rows + size_t(r) * row_bytes;
    int v = 0;
    for (; v + 2 <= n_vectors; v += 2) RowAvx2<Decoder, 2>(row, w.cols, x + v * stride, out + size_t(v) * w.rows + r, w.rows);
    if (v < n_vectors) RowAvx2<Decoder, 1>(row, w.cols, x + v * stride, out + size_t(v) * w.rows + r, w.rows);
  }
}

constexpr RowsKernel kAvx2Kernels[kWeightTypeCount] = {RowsAvx2<F32Decoder>, RowsAvx2<F16Decoder>,
                                                       RowsAvx2<Bf16Decoder>, RowsAvx2<Q8_0Decoder>,
                                                       RowsAvx2<Q4_0Decoder>};
#endif

}  // namespace

KernelIsa DetectedIsa() {
#if defined(__x86_64__)
  static const KernelIsa isa = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                                       __builtin_cpu_supports("f16c")
                                   ? KernelIsa::kAvx2
                                   : KernelIsa::kScalar;
  return isa;
#else
  return KernelIsa::kScalar;
#endif
}

const char* KernelIsaName(KernelIsa isa) { return isa == KernelIsa::kAvx2 ? "avx2" : "scalar"; }

void MatMulRows(KernelIsa isa, float* out, const WeightMatrix& w, const float* x, int n_vectors, int64_t row_begin,
                int64_t row_end) {
#if defined(__x86_64__)
  if (isa == KernelIsa::kAvx2) return kAvx2Kernels[static_cast<int>(w.type)](w, x, n_vectors, row_begin, row_end, out);
#endif
  RowsScalar(w, x, n_vectors, row_begin, row_end, out);
}

void MatMul(float* out, const WeightMatrix& w, const float* x, int n_vectors, ThreadPool* pool) {
  const KernelIsa isa = DetectedIsa();
  const int threads = pool == nullptr ? 1 : pool->num_threads();
  // Below ~256K multiply-adds a fork-join costs more than it saves.
  if (threads <= 1 || size_t(w.rows) * w.cols * n_vectors < (size_t(1) << 18)) {
    return MatMulRows(isa, out, w, x, n_vectors, 0, w.rows);
  }
  // Chunks of rows, a few per thread for balance (a row's result does not depend on its chunk).
  const int64_t chunks = threads * 4;
  const int64_t chunk_rows = (w.rows + chunks - 1) / chunks;
  const int64_t count = (w.rows + chunk_rows - 1) / chunk_rows;
  pool->ParallelFor(size_t(count), [&](size_t c) {
    const int64_t begin = int64_t(c) * chunk_rows;
    MatMulRows(isa, out, w, x, n_vectors, begin, std::min(w.rows, begin + chunk_rows));
  });
}

}  // namespace a2sf::worker
