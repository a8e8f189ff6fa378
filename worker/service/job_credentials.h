// Who may read or cancel a worker's job. Rule (docs/SECURITY.md, "Worker"): Generate hands its caller
// an unguessable per-job secret (GenerateResponse.job_token, 128 random bits); GetJob and CancelJob
// must present it, or the worker's admin token as "authorization: Bearer <token>". ListJobs is an
// admin read when the worker has an admin token (without one it is open, like the cache manager's
// PolicyAdmin). A secret rather than the caller's connection: a client may cancel from another
// connection or process (the CLI), and a peer address is not an identity behind NAT or a proxy.
// Thread-safety: pure functions (NewJobToken reads the kernel's random source).
#ifndef A2SF_WORKER_SERVICE_JOB_CREDENTIALS_H_
#define A2SF_WORKER_SERVICE_JOB_CREDENTIALS_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"

namespace a2sf::worker {

// 32 hex digits from getrandom(2) (common/peer_strings.h).
std::string NewJobToken();

// True when `admin_token` is set and the call carries "authorization: Bearer <admin_token>".
bool CallerIsAdmin(const grpc::ServerContext* context, const std::string& admin_token);

// May this call read or cancel a job whose secret is `job_token`, given the secret the call presented?
bool MayAccessJob(const grpc::ServerContext* context, const std::string& admin_token, absl::string_view job_token,
                  absl::string_view presented);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_JOB_CREDENTIALS_H_
