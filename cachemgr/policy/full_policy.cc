// Full: never evicts; the reference every other policy is measured against.
#include "cachemgr/policy/builtin_policies.h"
#include "cachemgr/policy/spec_checks.h"

namespace a2sf::cachemgr {
namespace {

class FullPolicy final : public Policy {
 public:
  FullPolicy() { spec_.name = "full"; }
  const PolicySpec& spec() const override { return spec_; }
  bool evicts() const override { return false; }
  absl::StatusOr<EvictionRule> RuleFor(uint32_t, uint32_t budget_tokens) const override {
    EvictionRule rule;
    rule.key = EvictionRule::Key::kNeverEvict;
    rule.budget = budget_tokens;
    return rule;
  }

 private:
  PolicySpec spec_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<const Policy>> MakeFullPolicy(const PolicySpec& spec) {
  if (absl::Status s = RejectUnacceptedParameters(spec, {}); !s.ok()) return s;
  return std::unique_ptr<const Policy>(new FullPolicy());
}

}  // namespace a2sf::cachemgr
