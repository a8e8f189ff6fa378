// What a Generate client is told when the worker's cache manager fails its job. The cache manager's
// own statuses speak of its internals (session ids, "raise --max_sessions", "KV cache full", ring
// slots) and of the worker as its client; a Generate caller can act on neither. These functions turn
// them into statuses about the caller's job -- its request, the worker's capacity, or a retryable
// failure -- and leave the detail to the worker's log (the callers log it with the job id).
//
// One place for the rule:
//   opening a session:  INVALID_ARGUMENT / OUT_OF_RANGE pass through (they name the request's
//                       policy or budget fields); the operator's default policy not fitting the job
//                       (IsDefaultPolicyMisfit) -> INTERNAL with the cache manager's message, which
//                       says why and the ways out; RESOURCE_EXHAUSTED -> RESOURCE_EXHAUSTED "no room";
//                       unreachable (incl. TLS) -> UNAVAILABLE; anything else -> UNAVAILABLE.
//   during a job:       a missed decision deadline -> DEADLINE_EXCEEDED; a lost connection ->
//                       UNAVAILABLE; anything the cache manager answered -> ABORTED (retryable).
// Thread-safety: pure functions.
#ifndef A2SF_WORKER_SERVICE_CACHEMGR_STATUS_H_
#define A2SF_WORKER_SERVICE_CACHEMGR_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"

namespace a2sf::worker {

// A failed call to the cache manager as UNAVAILABLE, saying "TLS handshake with the cache manager
// failed: ..." when gRPC's message shows the connection failed in the TLS handshake.
absl::Status UnreachableCacheManager(const grpc::Status& status);

// Why a session could not be opened, for the Generate caller. `channel` is probed (fail-fast, 1 s) when
// the cause was a timeout, since a wait-for-ready call only says "Deadline Exceeded".
absl::Status OpenFailureForClient(const absl::Status& status, const std::shared_ptr<grpc::Channel>& channel);

// Why a running job's remote policy failed, for the Generate caller.
absl::Status MidJobFailureForClient(const absl::Status& status);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_CACHEMGR_STATUS_H_
