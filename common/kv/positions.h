// Token positions in the worker <-> cache manager contract. In C++ a position is a uint32_t on both
// sides (KV cache, score stores, decisions, the ring); valid positions are 0..kMaxPosition, a 31-bit
// range, so that `kMaxPosition + 1` is still a valid bound and signed compares stay exact. The gRPC
// API carries positions as uint64 (a2sf.v1.ScoreStep.position, EvictionDecision.evicted_positions) for
// compatibility; PositionFromWire is the one range check where such a value enters C++.
#ifndef A2SF_COMMON_KV_POSITIONS_H_
#define A2SF_COMMON_KV_POSITIONS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace a2sf::kv {

// Largest token position either side accepts.
inline constexpr uint32_t kMaxPosition = 0x7ffffffe;

// `value` as a position; INVALID_ARGUMENT naming `field` when it is beyond kMaxPosition.
absl::StatusOr<uint32_t> PositionFromWire(uint64_t value, absl::string_view field);

}  // namespace a2sf::kv

#endif  // A2SF_COMMON_KV_POSITIONS_H_
