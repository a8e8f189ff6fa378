// SessionManager: the cache manager's library API. It owns the sessions of one cache manager --
// their policies, budgets and step counters -- on top of a ScoreStore, and turns each worker step into
// an eviction decision. The gRPC service is a thin translation of this class; the evaluation harness,
// the replay tool and the in-process worker hook call it directly.
//
// Thread-safety: every method may be called concurrently. Steps of one session are serialised (a
// per-session lock), steps of different sessions run in parallel. A step that fails (bad shape, bad
// scores, wrong step number) changes nothing in its session.
#ifndef A2SF_CACHEMGR_SESSION_SESSION_MANAGER_H_
#define A2SF_CACHEMGR_SESSION_SESSION_MANAGER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cachemgr/policy/builtin_policies.h"
#include "cachemgr/policy/registry.h"
#include "cachemgr/session/lagged_layout.h"
#include "cachemgr/store/score_store.h"

namespace a2sf::cachemgr {

// A budget as tokens, or as a ratio of a reference length (the paper's "cache ratio").
struct BudgetSpec {
  std::optional<uint32_t> tokens;
  std::optional<double> ratio;
  uint32_t reference_length = 0;
};

// Tokens per (layer, KV head): floor(ratio * reference_length), at least 1. INVALID_ARGUMENT naming
// budget.tokens / budget.ratio / budget.reference_length otherwise.
absl::StatusOr<uint32_t> ResolveBudget(const BudgetSpec& budget);

struct SessionConfig {
  SessionGeometry geometry;
  uint32_t query_heads_per_kv_head = 1;
  uint32_t max_context = 0;                // 0: unknown
  std::optional<PolicySpec> policy;        // unset: the manager's default policy
  BudgetSpec budget;
  std::string label;
  // Pipelined decisions: the worker applies the decision of step t just before it forwards the token
  // of step t + decision_lag + 1, by position, and keeps sending scores for the entries it still
  // holds (docs/POLICIES.md, "Pipelined decisions"). 0: synchronous. At most kMaxDecisionLag.
  uint32_t decision_lag = 0;
};

struct SessionInfo {
  std::string id;
  SessionConfig config;
  PolicySpec policy;
  uint32_t budget_tokens = 0;
  uint64_t steps = 0;  // the next expected step number
  uint32_t entries_per_head = 0;
  uint64_t evictions = 0;
  absl::Duration idle;
};

struct StepResult {
  uint64_t step = 0;
  StoreDecision decision;
  std::string policy_name;
};

struct PolicySwap {
  PolicySpec previous;
  PolicySpec current;
  uint64_t effective_from_step = 0;
};

struct SessionManagerOptions {
  size_t max_sessions = 1024;
  // Sessions with no call for this long are freed by ExpireIdleSessions (0: never).
  absl::Duration idle_timeout = absl::Minutes(10);
  PolicySpec default_policy = {"a2sf", kDefaultA2sfAlpha, {}, std::nullopt, std::nullopt};
};

class SessionManager {
 public:
  SessionManager(std::unique_ptr<ScoreStore> store, const PolicyRegistry* registry,
                 SessionManagerOptions options);
  ~SessionManager();
  SessionManager(const SessionManager&) = delete;
  SessionManager& operator=(const SessionManager&) = delete;

  // INVALID_ARGUMENT for a bad shape, policy or budget; RESOURCE_EXHAUSTED at capacity.
  absl::StatusOr<SessionInfo> Open(const SessionConfig& config);
  // Opens a session that takes over a sequence already in progress: every head holds `entries`
  // entries at `positions` ([heads][entries], slot order) with scores 0, and the next expected step
  // is `next_step`. Used by a worker whose cache manager went away mid-job.
  absl::StatusOr<SessionInfo> OpenSeeded(const SessionConfig& config, absl::Span<const uint32_t> positions,
                                         uint32_t entries, uint64_t next_step);

  // NOT_FOUND for an unknown id. Returns the session's final counters.
  absl::StatusOr<SessionInfo> Close(const std::string& id);

  // One token step. `step_number` must equal the session's step count (FAILED_PRECONDITION
  // otherwise: the two sides have desynchronised). In a pipelined session `scores` follow the
  // worker's layout (pending victims included) and the decision names positions only (no slots).
  absl::StatusOr<StepResult> Step(const std::string& id, uint64_t step_number, uint64_t position,
                                  const ScoreView& scores);
  // A whole prompt at once; only as step 0.
  absl::StatusOr<StepResult> BulkPrefill(const std::string& id, uint64_t step_number, uint64_t first_position,
                                         uint32_t prompt_length, const ScoreView& scores);

  // Swaps a running session's policy: from its next step, decisions follow `policy`, which takes over
  // the session's accumulated scores.
  absl::StatusOr<PolicySwap> SetPolicy(const std::string& id, const PolicySpec& policy);

  PolicySpec default_policy() const;
  // Validates `policy` (a budget-dependent check happens when a session opens) and makes it the
  // default for sessions that name none.
  absl::StatusOr<PolicySpec> SetDefaultPolicy(const PolicySpec& policy);

  absl::StatusOr<SessionInfo> Get(const std::string& id) const;
  std::vector<SessionInfo> List() const;
  size_t session_count() const;
  const ScoreStore& store() const { return *store_; }
  const PolicyRegistry& registry() const { return *registry_; }

  // Frees sessions idle for longer than the idle timeout; returns how many.
  size_t ExpireIdleSessions();

 private:
  struct Session;
  std::shared_ptr<Session> Find(const std::string& id) const;
  // Calls fn(session) with the open session `id` locked and its idle clock reset; NOT_FOUND if there
  // is no such session (or it was closed meanwhile).
  template <typename Fn>
  auto WithOpenSession(const std::string& id, Fn fn) const;
  SessionInfo InfoLocked(const Session& session) const;

  std::unique_ptr<ScoreStore> store_;
  const PolicyRegistry* registry_;
  const SessionManagerOptions options_;
  mutable absl::Mutex mutex_;
  std::map<std::string, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mutex_);
  PolicySpec default_policy_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_SESSION_SESSION_MANAGER_H_
