// The flags that describe a generation request, shared by `a2sf generate` (sent to a worker) and
// a2sf-generate (run in-process), with one set of checks: an option that conflicts with another or
// would be ignored is INVALID_ARGUMENT saying why (--alpha without --policy, --budget_tokens with
// --budget_ratio, --top_p with greedy decoding, ...). Read the flags after ParseCommandLine.
#ifndef A2SF_CLIENT_REQUEST_FLAGS_H_
#define A2SF_CLIENT_REQUEST_FLAGS_H_

#include <string>
#include <vector>

#include "a2sf/v1/generation.pb.h"
#include "absl/status/statusor.h"

namespace a2sf::client {

// The request the flags describe (no job id). The policy is left unset without --policy.
absl::StatusOr<v1::GenerateRequest> RequestFromFlags();
// --policy and its parameters (for `a2sf policy set`); INVALID_ARGUMENT without --policy.
absl::StatusOr<v1::PolicySpec> PolicyFromFlags();

// Flag names, for --help listings.
std::vector<std::string> RequestFlagNames();  // prompt, sampling, stop, logprobs, policy, budget
std::vector<std::string> PolicyFlagNames();   // --policy and its parameters

}  // namespace a2sf::client

#endif  // A2SF_CLIENT_REQUEST_FLAGS_H_
