#include "cachemgr/policy/spec_checks.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace a2sf::cachemgr {

absl::Status RejectUnacceptedParameters(const PolicySpec& spec,
                                        std::initializer_list<const char*> accepted) {
  auto is_accepted = [&](const char* field) {
    for (const char* a : accepted) {
      if (std::strcmp(a, field) == 0) return true;
    }
    return false;
  };
  const struct {
    const char* field;
    bool set;
  } fields[] = {{"alpha", spec.alpha.has_value()},
                {"layer_alphas", !spec.layer_alphas.empty()},
                {"sinks", spec.sinks.has_value()},
                {"recent_window", spec.recent_window.has_value()}};
  for (const auto& f : fields) {
    if (f.set && !is_accepted(f.field)) {
      std::string takes = accepted.size() == 0
                              ? std::string("no parameters")
                              : absl::StrCat("only ", absl::StrJoin(accepted, ", "));
      return absl::InvalidArgumentError(
          absl::StrCat("policy.", f.field, ": policy '", spec.name, "' does not take '", f.field,
                       "' (it takes ", takes, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status RejectParametersOtherThan(const PolicySpec& spec, const PolicySpec& fixed) {
  PolicySpec others = spec;  // the parameters that are not simply the fixed values restated
  if (others.alpha.has_value() && others.alpha == fixed.alpha) others.alpha.reset();
  if (!others.layer_alphas.empty() && others.layer_alphas == fixed.layer_alphas) others.layer_alphas.clear();
  if (others.sinks.has_value() && others.sinks == fixed.sinks) others.sinks.reset();
  if (others.recent_window.has_value() && others.recent_window == fixed.recent_window) others.recent_window.reset();
  return RejectUnacceptedParameters(others, {});
}

absl::Status CheckUnitInterval(double value, const std::string& field) {
  if (!(value >= 0.0 && value <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("policy.", field, ": must be in [0, 1], got ", value));
  }
  return absl::OkStatus();
}

}  // namespace a2sf::cachemgr
