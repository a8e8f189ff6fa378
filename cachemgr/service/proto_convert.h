// Translation between the a2sf.v1 protos and the policy library's types, and from absl::Status to
// grpc::Status. The service layer is only this translation plus SessionManager calls.
#ifndef A2SF_CACHEMGR_SERVICE_PROTO_CONVERT_H_
#define A2SF_CACHEMGR_SERVICE_PROTO_CONVERT_H_

#include "a2sf/v1/cache_manager.pb.h"
#include "a2sf/v1/policy.pb.h"
#include "a2sf/v1/scores.pb.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cachemgr/policy/registry.h"
#include "cachemgr/session/session_manager.h"
#include "grpcpp/support/status.h"

namespace a2sf::cachemgr {

PolicySpec FromProto(const v1::PolicySpec& proto);
v1::PolicySpec ToProto(const PolicySpec& spec);
// INVALID_ARGUMENT when neither tokens nor ratio is set.
absl::StatusOr<BudgetSpec> FromProto(const v1::Budget& proto);
v1::PolicyInfo ToProto(const PolicyInfo& info);
v1::SessionInfo ToProto(const SessionInfo& info);

// A view of the tensor's payload (no copy): checks dtype, rank and that the byte length matches the
// shape. `expected_rank` is 3 for token steps and 4 for bulk prefill.
// A ScoreDType enum value of the API as the store's dtype; INVALID_ARGUMENT naming scores.dtype.
absl::StatusOr<ScoreDType> ScoreDTypeFromProto(int dtype);
// Values in a score tensor of `shape`; INVALID_ARGUMENT for another rank or more than 2^34 values.
absl::StatusOr<uint64_t> ScoreValueCount(absl::Span<const uint32_t> shape, int expected_rank);
absl::StatusOr<ScoreView> ScoreViewOf(const v1::ScoreTensor& tensor, int expected_rank);

void ToProto(const StepResult& result, v1::EvictionDecision* proto);

grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_SERVICE_PROTO_CONVERT_H_
