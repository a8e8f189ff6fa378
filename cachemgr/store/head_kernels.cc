#include "cachemgr/store/head_kernels.h"

#include "common/float16.h"

#include <cmath>
#include <cstring>
#include <limits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace a2sf::cachemgr {
namespace {

// Valid scores are in [0, kMaxScoreValue] (softmax sums); NaN fails both comparisons.
inline bool ValidScore(float v) { return v >= 0.0f && v <= kMaxScoreValue; }

inline bool Better(float score, uint32_t position, const HeadScan& best) {
  return best.best_slot == kNoSlot || score < best.best_score ||
         (score == best.best_score && position < best.best_position);
}

HeadScan AccumulateScalar(const float* a_old, const void* s, kv::ScoreDType dtype, float* a_new,
                          const uint32_t* positions, uint32_t begin, uint32_t n, float alpha,
                          uint32_t lo, uint32_t hi, HeadScan scan) {
  for (uint32_t i = begin; i < n; ++i) {
    const float v = LoadScore(s, dtype, i);
    scan.invalid |= !ValidScore(v);
    const float a = alpha * a_old[i] + v;
    a_new[i] = a;
    const uint32_t p = positions[i];
    scan.count_at_or_above_hi += p >= hi;
    if (p >= lo && p < hi && Better(a, p, scan)) {
      scan.best_score = a;
      scan.best_position = p;
      scan.best_slot = i;
    }
  }
  return scan;
}

#if defined(__x86_64__)

__attribute__((target("avx2,fma,f16c"))) inline __m256 Load8(const void* s, kv::ScoreDType dtype, uint32_t i) {
  switch (dtype) {
    case kv::ScoreDType::kFp32:
      return _mm256_loadu_ps(static_cast<const float*>(s) + i);
    case kv::ScoreDType::kFp16:
      return _mm256_cvtph_ps(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(s) + i)));
    case kv::ScoreDType::kBf16:
    default: {
      const __m128i raw =
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(s) + i));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
    }
  }
}

// Eight lanes each keep their own best (score, position, slot); the lanes are merged at the end with
// the same ordering, so the result equals the scalar scan's.
template <kv::ScoreDType kDType>
__attribute__((target("avx2,fma,f16c"))) HeadScan AccumulateAvx2(const float* a_old, const void* s,
                                                                  float* a_new, const uint32_t* positions,
                                                                  uint32_t n, float alpha, uint32_t lo,
                                                                  uint32_t hi) {
  const __m256 valpha = _mm256_set1_ps(alpha);
  const __m256 zero = _mm256_setzero_ps();
  const __m256 fmax = _mm256_set1_ps(kMaxScoreValue);
  // Positions are <= kv::kMaxPosition + 1 < 2^31, so signed compares are exact.
  const __m256i vlo_minus1 = _mm256_set1_epi32(static_cast<int32_t>(lo) - 1);
  const __m256i vhi = _mm256_set1_epi32(static_cast<int32_t>(hi));
  __m256 best_score = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256i best_pos = _mm256_set1_epi32(std::numeric_limits<int32_t>::max());
  __m256i best_slot = _mm256_set1_epi32(-1);
  __m256i slot = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i eight = _mm256_set1_epi32(8);
  __m256 valid = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  __m256i above = _mm256_setzero_si256();
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = Load8(s, kDType, i);
    valid = _mm256_and_ps(valid, _mm256_and_ps(_mm256_cmp_ps(v, zero, _CMP_GE_OQ),
                                               _mm256_cmp_ps(v, fmax, _CMP_LE_OQ)));
    // alpha * a_old + v, rounded twice like the scalar loop (no FMA contraction).
    const __m256 a = _mm256_add_ps(_mm256_mul_ps(valpha, _mm256_loadu_ps(a_old + i)), v);
    _mm256_storeu_ps(a_new + i, a);
    const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(positions + i));
    const __m256i ge_hi = _mm256_cmpgt_epi32(p, _mm256_sub_epi32(vhi, _mm256_set1_epi32(1)));
    above = _mm256_sub_epi32(above, ge_hi);
    const __m256i candidate = _mm256_andnot_si256(ge_hi, _mm256_cmpgt_epi32(p, vlo_minus1));
    const __m256i less = _mm256_castps_si256(_mm256_cmp_ps(a, best_score, _CMP_LT_OQ));
    const __m256i tie = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(a, best_score, _CMP_EQ_OQ)),
                                         _mm256_cmpgt_epi32(best_pos, p));
    const __m256i take = _mm256_and_si256(candidate, _mm256_or_si256(less, tie));
    best_score = _mm256_blendv_ps(best_score, a, _mm256_castsi256_ps(take));
    best_pos = _mm256_blendv_epi8(best_pos, p, take);
    best_slot = _mm256_blendv_epi8(best_slot, slot, take);
    slot = _mm256_add_epi32(slot, eight);
  }
  alignas(32) float lane_score[8];
  alignas(32) int32_t lane_pos[8], lane_slot[8], lane_above[8];
  _mm256_store_ps(lane_score, best_score);
  _mm256_store_si256(reinterpret_cast<__m256i*>(lane_pos), best_pos);
  _mm256_store_si256(reinterpret_cast<__m256i*>(lane_slot), best_slot);
  _mm256_store_si256(reinterpret_cast<__m256i*>(lane_above), above);
  HeadScan scan;
  scan.invalid = _mm256_movemask_ps(valid) != 0xff;
  for (int lane = 0; lane < 8; ++lane) {
    scan.count_at_or_above_hi += static_cast<uint32_t>(lane_above[lane]);
    if (lane_slot[lane] < 0) continue;
    const uint32_t p = static_cast<uint32_t>(lane_pos[lane]);
    if (Better(lane_score[lane], p, scan)) {
      scan.best_score = lane_score[lane];
      scan.best_position = p;
      scan.best_slot = static_cast<uint32_t>(lane_slot[lane]);
    }
  }
  return AccumulateScalar(a_old, s, kDType, a_new, positions, i, n, alpha, lo, hi, scan);
}

bool CpuHasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && a2sf::CpuHasAvxF16c();
  return has;
}

#else
bool CpuHasAvx2() { return false; }
#endif

}  // namespace

float LoadScore(const void* data, kv::ScoreDType dtype, size_t index) {
  switch (dtype) {
    case kv::ScoreDType::kFp32:
      return static_cast<const float*>(data)[index];
    case kv::ScoreDType::kFp16:
      return a2sf::HalfToFloat(static_cast<const uint16_t*>(data)[index]);
    case kv::ScoreDType::kBf16:
      return a2sf::Bfloat16ToFloat(static_cast<const uint16_t*>(data)[index]);
  }
  return 0.0f;
}

bool HeadKernelsUseAvx2() { return CpuHasAvx2(); }

HeadScan AccumulateAndFindMin(const float* a_old, const void* s, kv::ScoreDType dtype, float* a_new,
                              const uint32_t* positions, uint32_t n, float alpha, uint32_t candidate_lo,
                              uint32_t candidate_hi) {
#if defined(__x86_64__)
  if (CpuHasAvx2()) {
    switch (dtype) {
      case kv::ScoreDType::kFp32:
        return AccumulateAvx2<kv::ScoreDType::kFp32>(a_old, s, a_new, positions, n, alpha, candidate_lo,
                                                 candidate_hi);
      case kv::ScoreDType::kFp16:
        return AccumulateAvx2<kv::ScoreDType::kFp16>(a_old, s, a_new, positions, n, alpha, candidate_lo,
                                                 candidate_hi);
      case kv::ScoreDType::kBf16:
        return AccumulateAvx2<kv::ScoreDType::kBf16>(a_old, s, a_new, positions, n, alpha, candidate_lo,
                                                 candidate_hi);
    }
  }
#endif
  return AccumulateScalar(a_old, s, dtype, a_new, positions, 0, n, alpha, candidate_lo, candidate_hi,
                          HeadScan());
}

HeadScan FindMinPosition(const uint32_t* positions, uint32_t n, uint32_t candidate_lo,
                         uint32_t candidate_hi) {
  HeadScan scan;
  uint32_t best = kv::kMaxPosition + 1;
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t p = positions[i];
    scan.count_at_or_above_hi += p >= candidate_hi;
    if (p >= candidate_lo && p < candidate_hi && p < best) {
      best = p;
      scan.best_slot = i;
    }
  }
  scan.best_position = best;
  return scan;
}

}  // namespace a2sf::cachemgr
