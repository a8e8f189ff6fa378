// Local (sliding window) and StreamingLLM (Xiao et al., 2023): position-ordered eviction.
// Local evicts the smallest position; StreamingLLM evicts the smallest position >= sinks, so the
// first `sinks` tokens (the "attention sinks") stay for the whole generation.
#include "absl/strings/str_cat.h"
#include "cachemgr/policy/builtin_policies.h"
#include "cachemgr/policy/spec_checks.h"

namespace a2sf::cachemgr {
namespace {

class WindowPolicy final : public Policy {
 public:
  explicit WindowPolicy(PolicySpec spec) : spec_(std::move(spec)) {}
  const PolicySpec& spec() const override { return spec_; }
  absl::StatusOr<EvictionRule> RuleFor(uint32_t, uint32_t budget_tokens) const override {
    EvictionRule rule;
    rule.key = EvictionRule::Key::kPosition;
    rule.budget = budget_tokens;
    rule.protected_sinks = spec_.sinks.value_or(0);
    if (rule.protected_sinks >= budget_tokens) {
      return absl::InvalidArgumentError(absl::StrCat("policy.sinks: ", rule.protected_sinks,
                                                     " sinks leave no room in a budget of ",
                                                     budget_tokens, " tokens (need sinks < budget)"));
    }
    return rule;
  }

 private:
  PolicySpec spec_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<const Policy>> MakeLocalPolicy(const PolicySpec& spec) {
  if (absl::Status s = RejectUnacceptedParameters(spec, {}); !s.ok()) return s;
  PolicySpec resolved;
  resolved.name = "local";
  return std::unique_ptr<const Policy>(new WindowPolicy(resolved));
}

absl::StatusOr<std::unique_ptr<const Policy>> MakeStreamingLlmPolicy(const PolicySpec& spec) {
  if (absl::Status s = RejectUnacceptedParameters(spec, {"sinks"}); !s.ok()) return s;
  PolicySpec resolved;
  resolved.name = "streaming_llm";
  resolved.sinks = spec.sinks.value_or(kDefaultStreamingLlmSinks);
  return std::unique_ptr<const Policy>(new WindowPolicy(resolved));
}

}  // namespace a2sf::cachemgr
