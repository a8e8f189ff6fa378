#include "worker/service/fallback_policy.h"

#include "absl/strings/str_cat.h"
#include "cachemgr/service/proto_convert.h"
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

FallbackPolicy::FallbackPolicy(std::unique_ptr<RemotePolicy> remote, const Engine* engine)
    : remote_(std::move(remote)),
      engine_(engine),
      spec_(cachemgr::FromProto(remote_->policy())),
      budget_tokens_(remote_->budget_tokens()),
      evicts_(remote_->evicts()) {}

absl::Status FallbackPolicy::SwitchToLocal(const absl::Status& cause, uint64_t next_step, bool seed_from_engine) {
  A2SF_LOG(WARNING) << "cache manager lost (" << cause << "); continuing session " << remote_->session_id()
                    << " in-process with " << cachemgr::PolicySpecToString(spec_) << " (scores restart from 0)";
  absl::StatusOr<std::unique_ptr<InProcessPolicy>> local;
  if (seed_from_engine) {
    local = InProcessPolicy::TakeOver(*engine_, spec_, budget_tokens_, next_step);
  } else {
    cachemgr::BudgetSpec budget;
    budget.tokens = budget_tokens_;
    local = InProcessPolicy::Create(engine_->config(), spec_, budget);
  }
  if (!local.ok()) {
    return absl::UnavailableError(absl::StrCat("cache manager lost (", cause.message(),
                                               ") and the in-process fallback failed: ", local.status().message()));
  }
  local_ = std::move(*local);
  return absl::OkStatus();
}

absl::StatusOr<EvictionDecision> FallbackPolicy::Step(uint64_t step, uint32_t position, absl::Span<const float> scores) {
  if (local_ == nullptr) {
    absl::StatusOr<EvictionDecision> decision = remote_->Step(step, position, scores);
    if (decision.ok() || !IsTransportFailure(decision.status())) return decision;
    if (absl::Status s = SwitchToLocal(decision.status(), step, true); !s.ok()) return s;
  }
  return local_->Step(step, position, scores);
}

absl::StatusOr<EvictionDecision> FallbackPolicy::BulkPrefill(uint32_t first_position, uint32_t prompt_length,
                                                             absl::Span<const float> scores) {
  if (local_ == nullptr) {
    absl::StatusOr<EvictionDecision> decision = remote_->BulkPrefill(first_position, prompt_length, scores);
    if (decision.ok() || !IsTransportFailure(decision.status())) return decision;
    if (absl::Status s = SwitchToLocal(decision.status(), 0, false); !s.ok()) return s;
  }
  return local_->BulkPrefill(first_position, prompt_length, scores);
}

}  // namespace a2sf::worker
