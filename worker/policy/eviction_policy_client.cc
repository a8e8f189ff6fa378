#include "worker/policy/eviction_policy_client.h"

#include <utility>

namespace a2sf::worker {

absl::Status EvictionPolicyClient::SubmitStep(uint64_t step, uint32_t position, absl::Span<const float> scores) {
  absl::StatusOr<EvictionDecision> decision = Step(step, position, scores);
  if (!decision.ok()) return decision.status();
  answered_.push_back(std::move(*decision));
  return absl::OkStatus();
}

absl::StatusOr<EvictionDecision> EvictionPolicyClient::AwaitDecision() {
  if (answered_.empty()) return absl::FailedPreconditionError("AwaitDecision: no step was submitted");
  EvictionDecision decision = std::move(answered_.front());
  answered_.pop_front();
  return decision;
}

}  // namespace a2sf::worker
