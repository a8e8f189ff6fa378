#include "common/kv/proto_convert.h"

#include "absl/strings/str_cat.h"
#include "common/kv/positions.h"

namespace a2sf::kv {

absl::StatusOr<ScoreDType> ScoreDTypeFromProto(int dtype) {
  switch (dtype) {
    case v1::SCORE_DTYPE_FP32:
      return ScoreDType::kFp32;
    case v1::SCORE_DTYPE_FP16:
      return ScoreDType::kFp16;
    case v1::SCORE_DTYPE_BF16:
      return ScoreDType::kBf16;
    default:
      return absl::InvalidArgumentError("scores.dtype: must be FP32, FP16 or BF16");
  }
}

v1::ScoreDType ScoreDTypeToProto(ScoreDType dtype) {
  switch (dtype) {
    case ScoreDType::kFp32:
      return v1::SCORE_DTYPE_FP32;
    case ScoreDType::kFp16:
      return v1::SCORE_DTYPE_FP16;
    case ScoreDType::kBf16:
      return v1::SCORE_DTYPE_BF16;
  }
  return v1::SCORE_DTYPE_UNSPECIFIED;
}

void DecisionToProto(uint64_t step, const EvictionDecision& decision, const std::string& policy_name,
                     v1::EvictionDecision* proto) {
  proto->set_step(step);
  proto->set_evictions_per_head(decision.evictions_per_head);
  proto->mutable_evicted_slots()->Assign(decision.evicted_slots.begin(), decision.evicted_slots.end());
  proto->mutable_evicted_positions()->Clear();
  proto->mutable_evicted_positions()->Reserve(int(decision.evicted_positions.size()));
  for (uint32_t p : decision.evicted_positions) proto->add_evicted_positions(p);
  proto->set_entries_after(decision.entries_after);
  proto->set_policy_name(policy_name);
}

absl::StatusOr<EvictionDecision> DecisionFromProto(const v1::EvictionDecision& proto) {
  const int values = proto.evicted_positions_size();
  const uint32_t k = proto.evictions_per_head();
  if ((k == 0) != (values == 0) || (k != 0 && values % k != 0)) {
    return absl::DataLossError(absl::StrCat("evicted_positions: ", values, " values for ", k,
                                                   " evictions per head"));
  }
  if (proto.evicted_slots_size() != 0 && proto.evicted_slots_size() != values) {
    return absl::DataLossError(absl::StrCat("evicted_slots: ", proto.evicted_slots_size(),
                                                   " values, but ", values, " evicted_positions"));
  }
  EvictionDecision decision;
  decision.evictions_per_head = k;
  decision.entries_after = proto.entries_after();
  decision.evicted_slots.assign(proto.evicted_slots().begin(), proto.evicted_slots().end());
  decision.evicted_positions.reserve(size_t(values));
  for (uint64_t p : proto.evicted_positions()) {
    absl::StatusOr<uint32_t> position = PositionFromWire(p, "evicted_positions");
    if (!position.ok()) return absl::DataLossError(position.status().message());
    decision.evicted_positions.push_back(*position);
  }
  return decision;
}

}  // namespace a2sf::kv
