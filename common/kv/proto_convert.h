// The contract's gRPC edge: a2sf.v1 messages <-> the C++ contract types (common/kv). Every decision
// and every score dtype that crosses gRPC is converted here and nowhere else, by the cache manager's
// service when it answers and by the worker's remote policy client when it reads. Positions are
// uint64 on the wire (kept for compatibility) and uint32 in C++: DecisionFromProto range-checks them
// (PositionFromWire). Stateless; thread-safe.
#ifndef A2SF_COMMON_KV_PROTO_CONVERT_H_
#define A2SF_COMMON_KV_PROTO_CONVERT_H_

#include <cstdint>
#include <string>

#include "a2sf/v1/cache_manager.pb.h"
#include "a2sf/v1/scores.pb.h"
#include "absl/status/statusor.h"
#include "common/kv/eviction_decision.h"
#include "common/kv/score_dtype.h"

namespace a2sf::kv {

// An a2sf.v1.ScoreDType value (as a proto field or a ring slot carries it); INVALID_ARGUMENT naming
// scores.dtype for UNSPECIFIED or an unknown value.
absl::StatusOr<ScoreDType> ScoreDTypeFromProto(int dtype);
v1::ScoreDType ScoreDTypeToProto(ScoreDType dtype);

// Fills `proto` (every field) with the decision of step `step`, made by `policy_name`.
void DecisionToProto(uint64_t step, const EvictionDecision& decision, const std::string& policy_name,
                     v1::EvictionDecision* proto);
// The decision a message carries. DATA_LOSS (the peer sent a malformed decision) for a position
// beyond kMaxPosition, or slot and position lists that do not match evictions_per_head (slots may be
// empty: a pipelined decision). The number of heads, which the message does not say, is checked where
// the decision is applied (KvCacheSlots).
absl::StatusOr<EvictionDecision> DecisionFromProto(const v1::EvictionDecision& proto);

}  // namespace a2sf::kv

#endif  // A2SF_COMMON_KV_PROTO_CONVERT_H_
