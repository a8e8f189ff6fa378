#include "common/kv/swap_remove.h"

#include <algorithm>
#include <functional>

namespace a2sf::kv {

bool FindVictimSlots(const uint32_t* held_positions, uint32_t n, const uint32_t* victim_positions, uint32_t k,
                     uint32_t* slots) {
  for (uint32_t j = 0; j < k; ++j) {
    const uint32_t* found = std::find(held_positions, held_positions + n, victim_positions[j]);
    if (found == held_positions + n) return false;
    slots[j] = static_cast<uint32_t>(found - held_positions);
  }
  std::sort(slots, slots + k, std::greater<uint32_t>());
  // Held positions are distinct, so a position named twice gives the same slot twice.
  return std::adjacent_find(slots, slots + k) == slots + k;
}

}  // namespace a2sf::kv
