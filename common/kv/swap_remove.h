// The swap-remove rule, written once for every copy of a session's slots: the worker's KV cache
// (host positions and, on the GPU, keys and values), the cache manager's CPU and CUDA score stores,
// and the pipelined session's mirror of the worker's layout (cachemgr/session/lagged_layout.h).
//
// A head holds entries in slots 0..n-1. A decision removes k of them, given as strictly descending
// slots s_0 > s_1 > ... > s_{k-1}. They are removed one at a time, in that order: victim j leaves
// slot s_j, and the entry in the current last slot, n-1-j, moves into s_j (nothing moves when s_j is
// that last slot). Because the order is descending, the entry that moves is never a later victim, so
// both sides of the seam reach the same layout from the same slot list (docs/POLICIES.md, "Slots").
//
// Header-only and dependency-free; the functions marked A2SF_HOST_DEVICE compile as __host__
// __device__ under nvcc, so the CUDA kernels apply the very same rule. Stateless; thread-safe.
#ifndef A2SF_COMMON_KV_SWAP_REMOVE_H_
#define A2SF_COMMON_KV_SWAP_REMOVE_H_

#include <cstdint>

#if defined(__CUDACC__)
#define A2SF_HOST_DEVICE __host__ __device__
#else
#define A2SF_HOST_DEVICE
#endif

namespace a2sf::kv {

// Applies the rule to a head of `n` entries: for each victim j, in order, calls `evict(j, slot)`
// (the victim is still in `slot`), then, unless the victim was in the last slot, `move(slot, last)`
// (the entry in `last` moves into `slot`). Returns n - k.
// REQUIRES: descending_slots[0..k) strictly descending and < n (see SlotsAreDescendingBelow).
template <typename Evict, typename Move>
A2SF_HOST_DEVICE inline uint32_t SwapRemove(const uint32_t* descending_slots, uint32_t k, uint32_t n,
                                            Evict&& evict, Move&& move) {
  for (uint32_t j = 0; j < k; ++j) {
    const uint32_t slot = descending_slots[j];
    const uint32_t last = n - 1 - j;
    evict(j, slot);
    if (slot != last) move(slot, last);
  }
  return n - k;
}

// The rule on parallel per-slot arrays: positions[] and, if not null, scores[]; each victim's
// position goes to evicted_positions[j] (if not null). Returns n - k. Same REQUIRES as SwapRemove.
A2SF_HOST_DEVICE inline uint32_t SwapRemoveEntries(const uint32_t* descending_slots, uint32_t k, uint32_t n,
                                                   uint32_t* positions, float* scores,
                                                   uint32_t* evicted_positions) {
  return SwapRemove(
      descending_slots, k, n,
      [&](uint32_t j, uint32_t slot) {
        if (evicted_positions != nullptr) evicted_positions[j] = positions[slot];
      },
      [&](uint32_t dst, uint32_t src) {
        positions[dst] = positions[src];
        if (scores != nullptr) scores[dst] = scores[src];
      });
}

// True when slots[0..k) is strictly descending and every slot is < n: a slot list SwapRemove accepts.
A2SF_HOST_DEVICE inline bool SlotsAreDescendingBelow(const uint32_t* slots, uint32_t k, uint32_t n) {
  for (uint32_t j = 0; j < k; ++j) {
    if (slots[j] >= n || (j > 0 && slots[j] >= slots[j - 1])) return false;
  }
  return true;
}

// A decision given by positions (a pipelined session's) in the slots of a head that holds
// `held_positions[0..n)`: writes the slots of victim_positions[0..k) to slots[0..k), strictly
// descending, ready for SwapRemove. False (slots unspecified) when a position is not held or is named
// twice. Host only.
bool FindVictimSlots(const uint32_t* held_positions, uint32_t n, const uint32_t* victim_positions, uint32_t k,
                     uint32_t* slots);

}  // namespace a2sf::kv

#endif  // A2SF_COMMON_KV_SWAP_REMOVE_H_
