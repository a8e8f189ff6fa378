// FallbackPolicyClient: a RemotePolicyClient that, when the cache manager becomes unreachable mid-job, continues
// the job with the same policy in-process (WorkerOptions.fallback_in_process, flag
// --on_cachemgr_failure=continue). The in-process session takes over the engine's cached entries as
// they are; their accumulated scores were in the cache manager and restart from 0 at the switch, so
// decisions after it can differ from an uninterrupted run. Errors the cache manager itself returns
// (bad input, out of sync) are passed through, not hidden.
//
// Pipelined sessions: decisions that were travelling when the cache manager went away are lost; they
// come back empty, and the in-process policy decides synchronously from the next step, taking over
// every entry the engine holds (pending victims included), so its first decision may evict several
// entries per head. RequiredCacheCapacity leaves room for that.
#ifndef A2SF_WORKER_SERVICE_FALLBACK_POLICY_CLIENT_H_
#define A2SF_WORKER_SERVICE_FALLBACK_POLICY_CLIENT_H_

#include <memory>
#include <optional>

#include "worker/engine/generator.h"
#include "worker/policy/in_process_policy_client.h"
#include "worker/service/remote_policy_client.h"

namespace a2sf::worker {

class FallbackPolicyClient final : public EvictionPolicyClient {
 public:
  // `engine` must outlive this object; it is read only when falling back.
  FallbackPolicyClient(std::unique_ptr<RemotePolicyClient> remote, const Engine* engine);

  absl::StatusOr<EvictionDecision> Step(uint64_t step, uint32_t position, absl::Span<const float> scores) override;
  absl::Status SubmitStep(uint64_t step, uint32_t position, absl::Span<const float> scores) override;
  absl::StatusOr<EvictionDecision> AwaitDecision() override;
  uint32_t decision_lag() const override { return local_ == nullptr ? remote_->decision_lag() : 0; }
  absl::StatusOr<EvictionDecision> BulkPrefill(uint32_t first_position, uint32_t prompt_length,
                                               absl::Span<const float> scores) override;
  uint32_t budget_tokens() const override { return budget_tokens_; }
  bool evicts() const override { return evicts_; }
  bool fell_back() const { return local_ != nullptr; }
  const RemotePolicyClient* remote() const { return remote_.get(); }

 private:
  // The in-process policy from `next_step` on: seeded with the engine's entries before
  // `next_position`, or empty (nullopt: nothing cached yet, a bulk prefill).
  absl::Status SwitchToLocal(const absl::Status& cause, uint64_t next_step, std::optional<uint32_t> next_position);

  std::unique_ptr<RemotePolicyClient> remote_;
  std::unique_ptr<InProcessPolicyClient> local_;
  const Engine* engine_;
  cachemgr::PolicySpec spec_;
  uint32_t budget_tokens_;
  bool evicts_;
  uint64_t lost_ = 0;               // steps lost with the cache manager, still to be answered empty
  uint64_t next_step_ = 0;          // the step after the last one submitted
  uint32_t last_position_ = 0;      // of the last step submitted
  absl::Span<const float> last_scores_;  // of the last step submitted: the engine's, valid until its next pass
};

// True for failures of the connection rather than answers of the cache manager.
bool IsTransportFailure(const absl::Status& status);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_FALLBACK_POLICY_CLIENT_H_
