// absl::Status <-> grpc::Status, for the service edges (the cache manager's service answering, the
// worker's services and its remote policy client reading). The codes share their numbering, so the
// conversion keeps code and message. Stateless; thread-safe.
#ifndef A2SF_COMMON_GRPC_STATUS_H_
#define A2SF_COMMON_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace a2sf {

grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace a2sf

#endif  // A2SF_COMMON_GRPC_STATUS_H_
