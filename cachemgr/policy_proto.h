// PolicySpec and BudgetSpec from and to their a2sf.v1 messages: how a request's policy and budget
// reach the policy library, in the cache manager's service and in the worker's in-process path alike.
// Stateless; thread-safe.
#ifndef A2SF_CACHEMGR_POLICY_PROTO_H_
#define A2SF_CACHEMGR_POLICY_PROTO_H_

#include "a2sf/v1/cache_manager.pb.h"
#include "a2sf/v1/policy.pb.h"
#include "absl/status/statusor.h"
#include "cachemgr/policy/policy.h"
#include "cachemgr/session/session_manager.h"

namespace a2sf::cachemgr {

PolicySpec FromProto(const v1::PolicySpec& proto);
v1::PolicySpec ToProto(const PolicySpec& spec);
// INVALID_ARGUMENT when neither tokens nor ratio is set.
absl::StatusOr<BudgetSpec> FromProto(const v1::Budget& proto);

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_POLICY_PROTO_H_
