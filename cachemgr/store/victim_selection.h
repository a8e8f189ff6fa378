// The general victim choice shared by every backend's slow path: the k smallest candidates of a head
// by the rule's key, with the rule's protections computed exactly (the `protected_recent` largest
// positions, whatever their spacing). Used when more than one entry must go in a step (bulk prefill,
// a swap from a larger budget) or when a recent window is not contiguous (after a policy swap).
#ifndef A2SF_CACHEMGR_STORE_VICTIM_SELECTION_H_
#define A2SF_CACHEMGR_STORE_VICTIM_SELECTION_H_

#include <cstdint>
#include <vector>

#include "cachemgr/policy/eviction_rule.h"

namespace a2sf::cachemgr {

// Returns the slots of the `k` entries to evict, in descending slot order (the order in which
// kv::SwapRemove applies them).
// `scores` may be null for position-keyed rules. REQUIRES: enough candidates exist (guaranteed when
// sinks < budget and protected_recent < budget, which the policies validate).
std::vector<uint32_t> SelectVictims(const EvictionRule& rule, const float* scores,
                                    const uint32_t* positions, uint32_t n, uint32_t k);

// The smallest position that is among the `recent` largest of `positions` (0 if recent == 0 means
// "no protection": returns kv::kMaxPosition + 1).
uint32_t RecentThreshold(const uint32_t* positions, uint32_t n, uint32_t recent);

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_STORE_VICTIM_SELECTION_H_
