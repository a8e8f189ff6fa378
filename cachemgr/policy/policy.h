// Policy: a named eviction rule with validated parameters.
//
// A Policy is immutable and stateless (as TensorFlow Serving's aspired-version policies are): it owns
// no per-session data, so one instance may be shared by any number of sessions and threads. To swap a
// session's policy, hand its next step the rule of another Policy; the session's scores stay in the
// store and the new rule takes them over (see docs/POLICIES.md, "Swapping a policy").
//
// Adding a policy: one file that implements Policy and a factory, plus one line in
// builtin_policies.cc that registers the factory under a name.
#ifndef A2SF_CACHEMGR_POLICY_POLICY_H_
#define A2SF_CACHEMGR_POLICY_POLICY_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cachemgr/policy/eviction_rule.h"

namespace a2sf::cachemgr {

// The library's form of a2sf.v1.PolicySpec: a name plus typed, optional parameters.
struct PolicySpec {
  std::string name;
  std::optional<double> alpha;
  std::vector<double> layer_alphas;
  std::optional<uint32_t> sinks;
  std::optional<uint32_t> recent_window;
};

// Human-readable one-line form, e.g. "a2sf(alpha=0.3, recent_window=0)".
std::string PolicySpecToString(const PolicySpec& spec);

class Policy {
 public:
  virtual ~Policy() = default;

  // The spec with every default filled in.
  virtual const PolicySpec& spec() const = 0;

  // The rule for a session with `num_layers` layers and `budget_tokens` per (layer, KV head).
  // INVALID_ARGUMENT, naming the field, when the parameters do not fit the session (e.g. sinks >=
  // budget, or layer_alphas of the wrong length).
  virtual absl::StatusOr<EvictionRule> RuleFor(uint32_t num_layers, uint32_t budget_tokens) const = 0;

  // Whether the policy ever evicts. A worker sizes its KV cache for the budget and sends scores only
  // for a policy that does, so a run-time swap must keep this property (SessionManager::SetPolicy).
  virtual bool evicts() const { return true; }
};

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_POLICY_POLICY_H_
