// EvictionPolicyClient: the worker's side of the eviction seam, one object per sequence. The engine's
// generation loop hands it each step's attention scores and applies the kv::EvictionDecision it
// returns; what decides -- the policy library in this process (InProcessPolicyClient), the cache manager
// over gRPC or a shared-memory ring (RemotePolicyClient), or either with a fall-back (FallbackPolicyClient) -- is
// an implementation of this interface. Only the contract types (common/kv) cross it, so the engine
// never sees cache-manager internals. Not thread-safe: one sequence's loop drives its client.
#ifndef A2SF_WORKER_POLICY_EVICTION_POLICY_CLIENT_H_
#define A2SF_WORKER_POLICY_EVICTION_POLICY_CLIENT_H_

#include <cstdint>
#include <deque>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/kv/eviction_decision.h"

namespace a2sf::worker {

// Decisions for one sequence: slots and positions laid out [layer][kv_head][evictions_per_head].
using kv::EvictionDecision;

class EvictionPolicyClient {
 public:
  virtual ~EvictionPolicyClient() = default;
  // One token step: `scores` is [n_layers][n_kv_heads][entries] including the new entry.
  virtual absl::StatusOr<EvictionDecision> Step(uint64_t step, uint32_t position, absl::Span<const float> scores) = 0;

  // Pipelined form: SubmitStep hands over a token step without its decision; AwaitDecision returns
  // the decisions of submitted steps, oldest first. A pipelined policy (decision_lag() = K > 0)
  // expects its decision of step t to be applied, by evicted_positions, just before the token of
  // step t + K + 1 (DecisionApplier does that). The defaults run Step at once and keep its answer.
  virtual uint32_t decision_lag() const { return 0; }
  virtual absl::Status SubmitStep(uint64_t step, uint32_t position, absl::Span<const float> scores);
  virtual absl::StatusOr<EvictionDecision> AwaitDecision();

  // The prompt's causal attention at once: [n_layers][n_kv_heads][P][P]; only as the first step.
  virtual absl::StatusOr<EvictionDecision> BulkPrefill(uint32_t first_position, uint32_t prompt_length,
                                                       absl::Span<const float> scores) = 0;
  // Budget in entries per head (the engine's cache needs budget + 1 slots); 0 when it never evicts.
  virtual uint32_t budget_tokens() const = 0;
  virtual bool evicts() const = 0;

 private:
  std::deque<EvictionDecision> answered_;  // the default SubmitStep's answers
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_POLICY_EVICTION_POLICY_CLIENT_H_
