// Factories of the built-in policies (registered by PolicyRegistry::Builtin()).
#ifndef A2SF_CACHEMGR_POLICY_BUILTIN_POLICIES_H_
#define A2SF_CACHEMGR_POLICY_BUILTIN_POLICIES_H_

#include <memory>

#include "absl/status/statusor.h"
#include "cachemgr/policy/policy.h"

namespace a2sf::cachemgr {

inline constexpr double kDefaultA2sfAlpha = 0.3;
inline constexpr uint32_t kDefaultStreamingLlmSinks = 4;

absl::StatusOr<std::unique_ptr<const Policy>> MakeFullPolicy(const PolicySpec& spec);
absl::StatusOr<std::unique_ptr<const Policy>> MakeLocalPolicy(const PolicySpec& spec);
absl::StatusOr<std::unique_ptr<const Policy>> MakeStreamingLlmPolicy(const PolicySpec& spec);
absl::StatusOr<std::unique_ptr<const Policy>> MakeH2oPolicy(const PolicySpec& spec);
absl::StatusOr<std::unique_ptr<const Policy>> MakeTovaPolicy(const PolicySpec& spec);
absl::StatusOr<std::unique_ptr<const Policy>> MakeA2sfPolicy(const PolicySpec& spec);

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_POLICY_BUILTIN_POLICIES_H_
