// How the cache manager says that the operator's default policy does not fit a session: OpenSession
// answers FAILED_PRECONDITION with a message that starts with kDefaultPolicyMisfit. A worker tells
// its client that the fault is the server's configuration, not the request (worker/service/
// cachemgr_status.h), and treats any other FAILED_PRECONDITION as the cache manager's own business.
// Part of the CacheManager contract (proto/a2sf/v1/cache_manager.proto, OpenSession).
#ifndef A2SF_COMMON_DEFAULT_POLICY_MISFIT_H_
#define A2SF_COMMON_DEFAULT_POLICY_MISFIT_H_

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace a2sf {

inline constexpr absl::string_view kDefaultPolicyMisfit =
    "the cache manager's default policy does not fit this session";

inline bool IsDefaultPolicyMisfit(const absl::Status& status) {
  return status.code() == absl::StatusCode::kFailedPrecondition &&
         absl::StartsWith(status.message(), kDefaultPolicyMisfit);
}

}  // namespace a2sf

#endif  // A2SF_COMMON_DEFAULT_POLICY_MISFIT_H_
