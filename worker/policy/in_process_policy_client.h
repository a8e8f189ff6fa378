// InProcessPolicyClient: an EvictionPolicyClient that runs the policy library in this process -- a private
// one-session SessionManager on the CPU score store, reached only through the cache manager's public
// library target (//cachemgr:policy_library). The same rules as the cache manager, without a
// transport: the reference the remote path must equal, and the fall-back when the cache manager goes
// away (FallbackPolicyClient). Not thread-safe: one sequence uses it.
#ifndef A2SF_WORKER_POLICY_IN_PROCESS_POLICY_CLIENT_H_
#define A2SF_WORKER_POLICY_IN_PROCESS_POLICY_CLIENT_H_

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cachemgr/policy_library.h"
#include "worker/engine/engine.h"
#include "worker/policy/eviction_policy_client.h"

namespace a2sf::worker {

class InProcessPolicyClient final : public EvictionPolicyClient {
 public:
  // INVALID_ARGUMENT for a bad policy, budget or lag.
  static absl::StatusOr<std::unique_ptr<InProcessPolicyClient>> Create(const ModelConfig& model,
                                                                 const cachemgr::PolicySpec& policy,
                                                                 const cachemgr::BudgetSpec& budget,
                                                                 uint32_t decision_lag = 0);
  // Takes over a sequence in progress (synchronously decided from then on): `engine`'s cached
  // entries at positions before `next_position` become the session's entries, with scores 0; the
  // next step is `next_step`, at `next_position`. Entries at `next_position` and after -- a prefill
  // chunk's rows, forwarded together but not yet submitted -- are left for the steps that submit them
  // (a pass appends its rows' entries in position order, so they are each head's last slots).
  static absl::StatusOr<std::unique_ptr<InProcessPolicyClient>> TakeOver(const Engine& engine,
                                                                   const cachemgr::PolicySpec& policy,
                                                                   uint32_t budget_tokens, uint64_t next_step,
                                                                   uint32_t next_position);
  absl::StatusOr<EvictionDecision> Step(uint64_t step, uint32_t position, absl::Span<const float> scores) override;
  absl::StatusOr<EvictionDecision> BulkPrefill(uint32_t first_position, uint32_t prompt_length,
                                               absl::Span<const float> scores) override;
  uint32_t budget_tokens() const override { return info_.budget_tokens; }
  bool evicts() const override { return info_.evicts; }
  uint32_t decision_lag() const override { return info_.config.decision_lag; }
  const cachemgr::SessionInfo& session() const { return info_; }
  cachemgr::SessionManager* manager() { return manager_.get(); }

 private:
  InProcessPolicyClient();  // a private one-session manager on the CPU store
  std::unique_ptr<cachemgr::SessionManager> manager_;
  cachemgr::SessionInfo info_;
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_POLICY_IN_PROCESS_POLICY_CLIENT_H_
