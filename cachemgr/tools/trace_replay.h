// Replays a score trace through the policy library and reports every eviction decision.
//
// Trace format: JSON lines (docs/POLICIES.md, "Score traces"). The first line is a header:
//   {"a2sf_trace": 1, "num_layers": L, "num_kv_heads": H, "policy": {"name": "a2sf", "alpha": 0.3},
//    "budget_tokens": B}
// Each further line is one of
//   {"position": p, "scores": [[[s, ...] x H] x L]}          a token step (entries + 1 values per head)
//   {"bulk": true, "position": p0, "scores": [[[[...] x P] x H] x L]}   a bulk prefill (first step only)
//   {"set_policy": {"name": "h2o"}}                           a run-time swap from the next step
// Blank lines and lines starting with '#' are skipped.
#ifndef A2SF_CACHEMGR_TOOLS_TRACE_REPLAY_H_
#define A2SF_CACHEMGR_TOOLS_TRACE_REPLAY_H_

#include <istream>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cachemgr/policy/policy.h"

namespace a2sf::cachemgr {

struct ReplayOptions {
  bool json = false;  // one JSON object per step instead of text
  // Overrides the header's policy when set.
  std::optional<PolicySpec> policy_override;
};

struct ReplaySummary {
  uint64_t steps = 0;
  uint64_t evictions = 0;
};

// Reads the trace from `in`, writes one line per step to `out`. Errors name the trace line.
absl::StatusOr<ReplaySummary> ReplayTrace(std::istream& in, std::ostream& out, const ReplayOptions& options);

// Parses a policy object {"name": ..., "alpha": ..., ...} (also used by the command line).
absl::StatusOr<PolicySpec> ParsePolicyJson(const std::string& text);

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_TOOLS_TRACE_REPLAY_H_
