#include "cachemgr/service/proto_convert.h"

#include "absl/strings/str_cat.h"
#include "common/kv/proto_convert.h"

namespace a2sf::cachemgr {

v1::PolicyInfo ToProto(const PolicyInfo& info) {
  v1::PolicyInfo proto;
  proto.set_name(info.name);
  proto.set_description(info.description);
  proto.set_uses_scores(info.uses_scores);
  for (const PolicyParameterInfo& p : info.parameters) {
    v1::PolicyParameterInfo* out = proto.add_parameters();
    out->set_name(p.name);
    out->set_type(p.type);
    out->set_default_value(p.default_value);
    out->set_valid_range(p.valid_range);
    out->set_description(p.description);
  }
  return proto;
}

v1::SessionInfo ToProto(const SessionInfo& info) {
  v1::SessionInfo proto;
  proto.set_session_id(info.id);
  proto.mutable_shape()->set_num_layers(info.config.geometry.num_layers);
  proto.mutable_shape()->set_num_kv_heads(info.config.geometry.num_kv_heads);
  proto.mutable_shape()->set_query_heads_per_kv_head(info.config.query_heads_per_kv_head);
  proto.mutable_shape()->set_max_context(info.config.max_context);
  *proto.mutable_policy() = ToProto(info.policy);
  proto.set_budget_tokens(info.budget_tokens);
  proto.set_steps(info.steps);
  proto.set_entries_per_head(info.entries_per_head);
  proto.set_evictions(info.evictions);
  proto.set_client_label(info.config.label);
  proto.set_idle_seconds(absl::ToDoubleSeconds(info.idle));
  proto.set_decision_lag(info.config.decision_lag);
  return proto;
}

absl::StatusOr<uint64_t> ScoreValueCount(absl::Span<const uint32_t> shape, int expected_rank) {
  if (int(shape.size()) != expected_rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("scores.shape: expected ", expected_rank, " dimensions, got ", shape.size()));
  }
  // Checked before each multiplication: a product of peer-supplied dimensions must never wrap.
  constexpr uint64_t kMaxValues = uint64_t{1} << 34;
  uint64_t count = 1;
  for (uint32_t d : shape) {
    if (d != 0 && count > kMaxValues / d) {
      return absl::InvalidArgumentError(absl::StrCat("scores.shape: more than ", kMaxValues, " values"));
    }
    count *= d;
  }
  return count;
}

absl::StatusOr<ScoreView> ScoreViewOf(const v1::ScoreTensor& tensor, int expected_rank) {
  ScoreView view;
  absl::StatusOr<kv::ScoreDType> dtype = kv::ScoreDTypeFromProto(tensor.dtype());
  if (!dtype.ok()) return dtype.status();
  view.dtype = *dtype;
  if (tensor.payload_case() != v1::ScoreTensor::kData) {
    return absl::InvalidArgumentError(
        "scores.shared_memory: references are not used; a session with a shared-memory ring attaches it "
        "(see StreamScores) and otherwise sends scores.data");
  }
  absl::StatusOr<uint64_t> values = ScoreValueCount(tensor.shape(), expected_rank);
  if (!values.ok()) return values.status();
  const uint64_t count = *values;
  const uint64_t bytes = count * kv::ScoreDTypeBytes(view.dtype);
  if (tensor.data().size() != bytes) {
    return absl::InvalidArgumentError(absl::StrCat("scores.data: ", tensor.data().size(), " bytes, but shape and dtype ",
                                                   "need ", bytes));
  }
  // Packed little-endian values; fp32 needs 4-byte alignment for the vector loads' scalar tails.
  view.data = tensor.data().data();
  view.num_values = count;
  view.layers = tensor.shape(0);  // expected_rank >= 3 was checked
  view.kv_heads = tensor.shape(1);
  return view;
}

}  // namespace a2sf::cachemgr
