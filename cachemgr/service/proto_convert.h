// Translation between the a2sf.v1 protos and the session layer's types, for the cache manager's
// service only (the service layer is this translation plus SessionManager calls). Policy specs and
// budgets convert in cachemgr/policy_proto.h, decisions and dtypes in common/kv/proto_convert.h,
// statuses in common/grpc/status.h.
#ifndef A2SF_CACHEMGR_SERVICE_PROTO_CONVERT_H_
#define A2SF_CACHEMGR_SERVICE_PROTO_CONVERT_H_

#include "a2sf/v1/cache_manager.pb.h"
#include "a2sf/v1/policy.pb.h"
#include "a2sf/v1/scores.pb.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cachemgr/policy/registry.h"
#include "cachemgr/policy_proto.h"
#include "cachemgr/session/session_manager.h"
#include "common/grpc/status.h"

namespace a2sf::cachemgr {

v1::PolicyInfo ToProto(const PolicyInfo& info);
v1::SessionInfo ToProto(const SessionInfo& info);

// Values in a score tensor of `shape`; INVALID_ARGUMENT for another rank or more than 2^34 values.
absl::StatusOr<uint64_t> ScoreValueCount(absl::Span<const uint32_t> shape, int expected_rank);
// A view of the tensor's payload (no copy): checks dtype, rank and that the byte length matches the
// shape. `expected_rank` is 3 for token steps and 4 for bulk prefill. Decisions and dtypes cross the
// wire through the contract's conversions (common/kv/proto_convert.h).
absl::StatusOr<ScoreView> ScoreViewOf(const v1::ScoreTensor& tensor, int expected_rank);

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_SERVICE_PROTO_CONVERT_H_
