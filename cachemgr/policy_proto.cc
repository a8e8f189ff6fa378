#include "cachemgr/policy_proto.h"

namespace a2sf::cachemgr {

PolicySpec FromProto(const v1::PolicySpec& proto) {
  PolicySpec spec;
  spec.name = proto.name();
  if (proto.has_alpha()) spec.alpha = proto.alpha();
  spec.layer_alphas.assign(proto.layer_alphas().begin(), proto.layer_alphas().end());
  if (proto.has_sinks()) spec.sinks = proto.sinks();
  if (proto.has_recent_window()) spec.recent_window = proto.recent_window();
  return spec;
}

v1::PolicySpec ToProto(const PolicySpec& spec) {
  v1::PolicySpec proto;
  proto.set_name(spec.name);
  if (spec.alpha) proto.set_alpha(*spec.alpha);
  for (double a : spec.layer_alphas) proto.add_layer_alphas(a);
  if (spec.sinks) proto.set_sinks(*spec.sinks);
  if (spec.recent_window) proto.set_recent_window(*spec.recent_window);
  return proto;
}

absl::StatusOr<BudgetSpec> FromProto(const v1::Budget& proto) {
  BudgetSpec budget;
  switch (proto.kind_case()) {
    case v1::Budget::kTokens:
      budget.tokens = proto.tokens();
      break;
    case v1::Budget::kRatio:
      budget.ratio = proto.ratio();
      budget.reference_length = proto.reference_length();
      break;
    default:
      return absl::InvalidArgumentError("budget: set budget.tokens or budget.ratio");
  }
  return budget;
}

}  // namespace a2sf::cachemgr
