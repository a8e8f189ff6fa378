#include "worker/service/fallback_policy_client.h"

#include "absl/strings/str_cat.h"
#include "cachemgr/policy_library.h"
#include "common/log.h"

namespace a2sf::worker {

bool IsTransportFailure(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kAborted:
      return true;
    default:
      return false;
  }
}

FallbackPolicyClient::FallbackPolicyClient(std::unique_ptr<RemotePolicyClient> remote, const Engine* engine)
    : remote_(std::move(remote)),
      engine_(engine),
      spec_(cachemgr::FromProto(remote_->policy())),
      budget_tokens_(remote_->budget_tokens()),
      evicts_(remote_->evicts()) {}

absl::Status FallbackPolicyClient::SwitchToLocal(const absl::Status& cause, uint64_t next_step,
                                                 std::optional<uint32_t> next_position) {
  A2SF_LOG(WARNING) << "cache manager lost (" << cause << "); continuing session " << remote_->session_id()
                    << " in-process with " << cachemgr::PolicySpecToString(spec_) << " (scores restart from 0)";
  absl::StatusOr<std::unique_ptr<InProcessPolicyClient>> local;
  if (next_position.has_value()) {
    local = InProcessPolicyClient::TakeOver(*engine_, spec_, budget_tokens_, next_step, *next_position);
  } else {
    cachemgr::BudgetSpec budget;
    budget.tokens = budget_tokens_;
    local = InProcessPolicyClient::Create(engine_->config(), spec_, budget);
  }
  if (!local.ok()) {
    return absl::UnavailableError(absl::StrCat("cache manager lost (", cause.message(),
                                               ") and the in-process fallback failed: ", local.status().message()));
  }
  local_ = std::move(*local);
  return absl::OkStatus();
}

absl::StatusOr<EvictionDecision> FallbackPolicyClient::Step(uint64_t step, uint32_t position, absl::Span<const float> scores) {
  if (local_ == nullptr) {
    absl::StatusOr<EvictionDecision> decision = remote_->Step(step, position, scores);
    if (decision.ok() || !IsTransportFailure(decision.status())) return decision;
    if (absl::Status s = SwitchToLocal(decision.status(), step, position); !s.ok()) return s;
  }
  return local_->Step(step, position, scores);
}

absl::Status FallbackPolicyClient::SubmitStep(uint64_t step, uint32_t position, absl::Span<const float> scores) {
  next_step_ = step + 1;
  last_position_ = position;
  last_scores_ = scores;
  if (local_ == nullptr) {
    absl::Status sent = remote_->SubmitStep(step, position, scores);
    if (sent.ok() || !IsTransportFailure(sent)) return sent;
    // Decide this step in-process, from the entries the engine held before it; the steps still
    // travelling are lost.
    if (absl::Status s = SwitchToLocal(sent, step, position); !s.ok()) return s;
    lost_ = remote_->steps_in_flight();
  }
  return local_->SubmitStep(step, position, scores);
}

absl::StatusOr<EvictionDecision> FallbackPolicyClient::AwaitDecision() {
  if (lost_ > 0) {
    --lost_;
    return EvictionDecision{};
  }
  if (local_ != nullptr) return local_->AwaitDecision();
  absl::StatusOr<EvictionDecision> decision = remote_->AwaitDecision();
  if (decision.ok() || !IsTransportFailure(decision.status())) return decision;
  const size_t lost = remote_->steps_in_flight();  // this one included
  if (lost == 1) {
    // The lost decision is the newest step's, whose scores the engine still holds (its row of the
    // last pass, which need not be the pass's last row inside a prefill chunk): decide it here.
    if (absl::Status s = SwitchToLocal(decision.status(), next_step_ - 1, last_position_); !s.ok()) return s;
    return local_->Step(next_step_ - 1, last_position_, last_scores_);
  }
  // Every step submitted so far is already in the engine: take its entries up to the last submitted
  // over, decide from the next step on, and answer this decision and the others in flight with nothing.
  if (absl::Status s = SwitchToLocal(decision.status(), next_step_, last_position_ + 1); !s.ok()) return s;
  lost_ = lost - 1;
  return EvictionDecision{};
}

absl::StatusOr<EvictionDecision> FallbackPolicyClient::BulkPrefill(uint32_t first_position, uint32_t prompt_length,
                                                             absl::Span<const float> scores) {
  if (local_ == nullptr) {
    absl::StatusOr<EvictionDecision> decision = remote_->BulkPrefill(first_position, prompt_length, scores);
    if (decision.ok() || !IsTransportFailure(decision.status())) return decision;
    if (absl::Status s = SwitchToLocal(decision.status(), 0, std::nullopt); !s.ok()) return s;
  }
  return local_->BulkPrefill(first_position, prompt_length, scores);
}

}  // namespace a2sf::worker
