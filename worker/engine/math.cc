#include "worker/engine/math.h"

#include <algorithm>
#include <cmath>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace a2sf::worker {
namespace {

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

// Four rows at once share the loads of x.
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

float Dot(const float* a, const float* b, int n) {
#if defined(__x86_64__)
  if (HasAvx2()) return DotAvx2(a, b, n);
#endif
  return DotPortable(a, b, n);
}

void MatVec(float* out, const float* w, const float* x, int rows, int cols, ThreadPool* pool) {
  // Below ~256K multiply-adds a fork-join costs more than it saves.
  const int threads = pool == nullptr ? 1 : pool->num_threads();
  if (threads <= 1 || size_t(rows) * cols < (size_t(1) << 18)) return MatVecRows(out, w, x, 0, rows, cols);
  // Chunks of rows, a multiple of 4, a few per thread for balance.
  const int chunks = threads * 4;
  const int chunk_rows = ((rows + chunks - 1) / chunks + 3) / 4 * 4;
  const int count = (rows + chunk_rows - 1) / chunk_rows;
  pool->ParallelFor(count, [&](size_t c) {
    const int begin = int(c) * chunk_rows;
    MatVecRows(out, w, x, begin, std::min(rows, begin + chunk_rows), cols);
  });
}

void RmsNorm(float* out, const float* x, const float* weight, int n, float eps) {
  float ss = 0.0f;
  for (int i = 0; i < n; ++i) ss += x[i] * x[i];
  ss = 1.0f / std::sqrt(ss / n + eps);
  for (int i = 0; i < n; ++i) out[i] = weight[i] * (ss * x[i]);
}

void Softmax(float* x, int n) {
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

void ApplyRope(float* vec, int dim, int head_dim, int position, float theta) {
  for (int i = 0; i < dim; i += 2) {
    const int pair = i % head_dim;
    const float freq = 1.0f / std::pow(theta, float(pair) / float(head_dim));
    const float angle = float(position) * freq;
    const float c = std::cos(angle), s = std::sin(angle);
    const float a = vec[i], b = vec[i + 1];
    vec[i] = a * c - b * s;
    vec[i + 1] = a * s + b * c;
  }
}

void Axpy(float* out, float a, const float* x, int n) {
  for (int i = 0; i < n; ++i) out[i] += a * x[i];
}

}  // namespace a2sf::worker
