// The one check of an "authorization: Bearer <token>" credential on a gRPC call, shared by the cache
// manager's PolicyAdmin and the worker's job calls. The comparison takes constant time
// (common/peer_strings.h). Thread-safety: a pure function.
#ifndef A2SF_COMMON_GRPC_BEARER_TOKEN_H_
#define A2SF_COMMON_GRPC_BEARER_TOKEN_H_

#include <string>

#include "grpcpp/server_context.h"

namespace a2sf {

enum class BearerToken { kMissing, kWrong, kMatches };

// What `context`'s authorization metadata says about `token` (REQUIRES: token not empty).
BearerToken CheckBearerToken(const grpc::ServerContext& context, const std::string& token);

}  // namespace a2sf

#endif  // A2SF_COMMON_GRPC_BEARER_TOKEN_H_
