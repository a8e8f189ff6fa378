// PolicyRegistry: creates policies by name from a PolicySpec, validating every parameter.
//
// Thread-safety: Register() is meant for start-up; Create(), Describe() and Names() may be called
// concurrently with each other once registration is over.
#ifndef A2SF_CACHEMGR_POLICY_REGISTRY_H_
#define A2SF_CACHEMGR_POLICY_REGISTRY_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cachemgr/policy/policy.h"

namespace a2sf::cachemgr {

struct PolicyParameterInfo {
  std::string name;  // field of PolicySpec
  std::string type;
  std::string default_value;
  std::string valid_range;
  std::string description;
};

struct PolicyInfo {
  std::string name;
  std::string description;
  std::vector<PolicyParameterInfo> parameters;
  bool uses_scores = false;
};

// Builds a policy from a spec whose name matches; INVALID_ARGUMENT naming the field when a parameter
// is out of range or not accepted by the policy.
using PolicyFactory = std::function<absl::StatusOr<std::unique_ptr<const Policy>>(const PolicySpec&)>;

class PolicyRegistry {
 public:
  // The registry holding the built-in policies (full, local, streaming_llm, h2o, tova, a2sf).
  static const PolicyRegistry& Builtin();

  // ALREADY_EXISTS if the name is taken.
  absl::Status Register(PolicyInfo info, PolicyFactory factory);

  // INVALID_ARGUMENT for an unknown name (the message lists the known ones) or bad parameters.
  absl::StatusOr<std::shared_ptr<const Policy>> Create(const PolicySpec& spec) const;

  std::vector<PolicyInfo> Describe() const;
  std::vector<std::string> Names() const;

 private:
  struct Entry {
    PolicyInfo info;
    PolicyFactory factory;
  };
  std::map<std::string, Entry> entries_;
};

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_POLICY_REGISTRY_H_
