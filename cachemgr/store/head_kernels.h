// The per-head inner loops of the CPU score store: one fused pass that accumulates a step's scores
// and finds the eviction candidate with the smallest (score, position), and the position-keyed scan.
// AVX2/F16C versions are chosen at run time where the processor has them; the portable versions give
// bit-identical results (the same float operations in the same order per element).
#ifndef A2SF_CACHEMGR_STORE_HEAD_KERNELS_H_
#define A2SF_CACHEMGR_STORE_HEAD_KERNELS_H_

#include <cstdint>

#include "cachemgr/store/score_store.h"

namespace a2sf::cachemgr {

inline constexpr uint32_t kNoSlot = 0xffffffffu;

struct HeadScan {
  float best_score = 0.0f;
  uint32_t best_position = 0;
  uint32_t best_slot = kNoSlot;  // kNoSlot: no candidate
  uint32_t count_at_or_above_hi = 0;  // entries with position >= candidate_hi
  bool invalid = false;               // a score was NaN, infinite or negative
};

// For i in [0, n): a_new[i] = alpha * a_old[i] + s[i] (a_old[n-1] must be 0 for the new entry), and
// the candidate (candidate_lo <= position < candidate_hi) with the smallest (a_new, position).
// `s` holds n values of `dtype`. Positions and bounds must be <= kv::kMaxPosition + 1.
HeadScan AccumulateAndFindMin(const float* a_old, const void* s, kv::ScoreDType dtype, float* a_new,
                              const uint32_t* positions, uint32_t n, float alpha, uint32_t candidate_lo,
                              uint32_t candidate_hi);

// The candidate with the smallest position, and the count of positions >= candidate_hi.
HeadScan FindMinPosition(const uint32_t* positions, uint32_t n, uint32_t candidate_lo,
                         uint32_t candidate_hi);

// One score value as float.
float LoadScore(const void* data, kv::ScoreDType dtype, size_t index);

// True when the processor runs the AVX2 kernels (for benchmarks' labels).
bool HeadKernelsUseAvx2();

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_STORE_HEAD_KERNELS_H_
