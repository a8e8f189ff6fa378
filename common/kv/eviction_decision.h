// EvictionDecision: what one step of a session evicted, the one decision type of the worker <-> cache
// manager contract. The score store produces it, the session layer and the services pass it on, the
// worker's policy clients return it and the engine applies it. Each transport converts it in exactly
// one place: a2sf.v1.EvictionDecision in common/kv/proto_convert.h, a ring slot in
// common/shm/score_ring.h (WriteDecision / ReadDecision).
//
// Layout: [layer][kv_head][evictions_per_head], layer-major. Each head's slots are strictly
// descending, the order in which SwapRemove (common/kv/swap_remove.h) applies them. A pipelined
// session's decision names positions only (evicted_slots empty): the worker applies it later, when
// slots have moved, by finding each position (FindVictimSlots). A plain value type.
#ifndef A2SF_COMMON_KV_EVICTION_DECISION_H_
#define A2SF_COMMON_KV_EVICTION_DECISION_H_

#include <cstdint>
#include <vector>

namespace a2sf::kv {

struct EvictionDecision {
  uint32_t evictions_per_head = 0;
  std::vector<uint32_t> evicted_slots;      // [heads][evictions_per_head], or empty (by position)
  std::vector<uint32_t> evicted_positions;  // [heads][evictions_per_head]
  uint32_t entries_after = 0;               // entries per head after the evictions
};

}  // namespace a2sf::kv

#endif  // A2SF_COMMON_KV_EVICTION_DECISION_H_
