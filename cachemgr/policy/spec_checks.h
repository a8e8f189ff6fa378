// Parameter checks shared by the policy factories; every error names the offending field.
#ifndef A2SF_CACHEMGR_POLICY_SPEC_CHECKS_H_
#define A2SF_CACHEMGR_POLICY_SPEC_CHECKS_H_

#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "cachemgr/policy/policy.h"

namespace a2sf::cachemgr {

// INVALID_ARGUMENT if `spec` sets a parameter not in `accepted` ("alpha", "layer_alphas", "sinks",
// "recent_window").
absl::Status RejectUnacceptedParameters(const PolicySpec& spec, std::initializer_list<const char*> accepted);

// For a policy whose parameters are fixed (h2o, tova): INVALID_ARGUMENT if `spec` sets a parameter to
// anything but its value in `fixed`, the policy's resolved spec. Setting it to that value is allowed,
// so the spec a policy reports (Policy::spec(), what the cache manager echoes) makes the same policy
// again -- a worker taking a session over in-process relies on it.
absl::Status RejectParametersOtherThan(const PolicySpec& spec, const PolicySpec& fixed);

// INVALID_ARGUMENT unless 0 <= value <= 1 (NaN included).
absl::Status CheckUnitInterval(double value, const std::string& field);

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_POLICY_SPEC_CHECKS_H_
