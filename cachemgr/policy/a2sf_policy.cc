// A2SF (Jo & Shin, 2024): accumulative attention scoring with a forgetting factor. Each step
// A <- alpha * A + s (eq. 4 of the paper), and the smallest A among the candidates is evicted.
// H2O (Zhang et al., 2023) and TOVA (Oren et al., 2024) are the same rule with fixed parameters:
//   h2o  = a2sf(alpha = 1, recent_window = floor(budget / 2))
//   tova = a2sf(alpha = 0)   (per KV head; the original TOVA averages over a layer's heads)
// so they share this one implementation.
#include "absl/strings/str_cat.h"
#include "cachemgr/policy/builtin_policies.h"
#include "cachemgr/policy/spec_checks.h"

namespace a2sf::cachemgr {
namespace {

class ForgettingFactorPolicy final : public Policy {
 public:
  // recent_is_half_budget: H2O's recent window, which depends on the session's budget.
  ForgettingFactorPolicy(PolicySpec spec, bool recent_is_half_budget)
      : spec_(std::move(spec)), recent_is_half_budget_(recent_is_half_budget) {}

  const PolicySpec& spec() const override { return spec_; }

  absl::StatusOr<EvictionRule> RuleFor(uint32_t num_layers, uint32_t budget_tokens) const override {
    EvictionRule rule;
    rule.key = EvictionRule::Key::kScore;
    rule.budget = budget_tokens;
    if (!spec_.layer_alphas.empty()) {
      if (spec_.layer_alphas.size() != num_layers) {
        return absl::InvalidArgumentError(
            absl::StrCat("policy.layer_alphas: has ", spec_.layer_alphas.size(),
                         " values but the session's model has ", num_layers, " layers"));
      }
      rule.layer_alpha.assign(spec_.layer_alphas.begin(), spec_.layer_alphas.end());
    } else {
      rule.layer_alpha.assign(num_layers, static_cast<float>(*spec_.alpha));
    }
    rule.protected_recent = recent_is_half_budget_ ? budget_tokens / 2 : spec_.recent_window.value_or(0);
    if (rule.protected_recent >= budget_tokens) {
      return absl::InvalidArgumentError(
          absl::StrCat("policy.recent_window: a recent window of ", rule.protected_recent,
                       " leaves nothing to evict in a budget of ", budget_tokens,
                       " tokens (need recent_window < budget)"));
    }
    return rule;
  }

 private:
  PolicySpec spec_;
  bool recent_is_half_budget_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<const Policy>> MakeA2sfPolicy(const PolicySpec& spec) {
  if (absl::Status s = RejectUnacceptedParameters(spec, {"alpha", "layer_alphas", "recent_window"});
      !s.ok()) {
    return s;
  }
  PolicySpec resolved;
  resolved.name = "a2sf";
  resolved.alpha = spec.alpha.value_or(kDefaultA2sfAlpha);
  if (absl::Status s = CheckUnitInterval(*resolved.alpha, "alpha"); !s.ok()) return s;
  for (size_t i = 0; i < spec.layer_alphas.size(); ++i) {
    if (absl::Status s = CheckUnitInterval(spec.layer_alphas[i], absl::StrCat("layer_alphas[", i, "]"));
        !s.ok()) {
      return s;
    }
  }
  resolved.layer_alphas = spec.layer_alphas;
  resolved.recent_window = spec.recent_window.value_or(0);
  return std::unique_ptr<const Policy>(new ForgettingFactorPolicy(resolved, false));
}

absl::StatusOr<std::unique_ptr<const Policy>> MakeH2oPolicy(const PolicySpec& spec) {
  PolicySpec resolved;
  resolved.name = "h2o";
  resolved.alpha = 1.0;
  if (absl::Status s = RejectParametersOtherThan(spec, resolved); !s.ok()) return s;
  return std::unique_ptr<const Policy>(new ForgettingFactorPolicy(resolved, true));
}

absl::StatusOr<std::unique_ptr<const Policy>> MakeTovaPolicy(const PolicySpec& spec) {
  PolicySpec resolved;
  resolved.name = "tova";
  resolved.alpha = 0.0;
  resolved.recent_window = 0;
  if (absl::Status s = RejectParametersOtherThan(spec, resolved); !s.ok()) return s;
  return std::unique_ptr<const Policy>(new ForgettingFactorPolicy(resolved, false));
}

}  // namespace a2sf::cachemgr
