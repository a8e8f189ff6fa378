// absl::Status <-> grpc::Status, for the service edges (the cache manager's service answering, the
// worker's services and its remote policy client reading). The codes share their numbering, so the
// conversion keeps the code, and the message up to kMaxStatusMessageBytes. Stateless; thread-safe.
#ifndef A2SF_COMMON_GRPC_STATUS_H_
#define A2SF_COMMON_GRPC_STATUS_H_

#include <cstddef>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace a2sf {

// The most bytes of a message ToGrpc sends. An error that echoes a peer's oversized string (a 100 KB
// policy name or session id) would otherwise exceed gRPC's metadata limit (8 KiB by default): the call
// then fails on the client's side without its status, and some clients stall the connection.
inline constexpr size_t kMaxStatusMessageBytes = 1024;

// A longer message is cut on a UTF-8 character boundary and says how much was cut.
grpc::Status ToGrpc(const absl::Status& status);
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace a2sf

#endif  // A2SF_COMMON_GRPC_STATUS_H_
