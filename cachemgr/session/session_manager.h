// SessionManager: the cache manager's library API. It owns the sessions of one cache manager --
// their policies, budgets and step counters -- on top of a ScoreStore, and turns each worker step into
// an eviction decision. The gRPC service is a thin translation of this class; the evaluation harness,
// the replay tool and the in-process worker hook call it directly.
//
// Thread-safety: every method may be called concurrently. Steps of one session are serialised (a
// per-session lock), steps of different sessions run in parallel. A step that fails (bad shape, bad
// scores, wrong step number) changes nothing in its session's scores, step count or decisions; only
// its score-store charge may already have grown to the size that step needed (charged_bytes is an
// upper bound, and the session's next step needs that size anyway).
#ifndef A2SF_CACHEMGR_SESSION_SESSION_MANAGER_H_
#define A2SF_CACHEMGR_SESSION_SESSION_MANAGER_H_

#include <atomic>
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
  // Who opened the session (the service's peer identity); sessions are counted per owner against
  // SessionManagerOptions::max_sessions_per_peer.
  std::string owner;
  // Pipelined decisions: the worker applies the decision of step t just before it forwards the token
  // of step t + decision_lag + 1, by position, and keeps sending scores for the entries it still
  // holds (docs/POLICIES.md, "Pipelined decisions"). 0: synchronous. At most kMaxDecisionLag.
  uint32_t decision_lag = 0;
};

struct SessionInfo {
  std::string id;
  // The session's credential (32 hex digits, 128 bits from the OS CSPRNG). Filled in only by Open and
  // OpenSeeded; Get and List leave it empty.
  std::string secret;
  bool evicts = true;  // whether the session's policy evicts (Policy::evicts)
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
  kv::EvictionDecision decision;
  std::string policy_name;
};

struct PolicySwap {
  PolicySpec previous;
  PolicySpec current;
  uint64_t effective_from_step = 0;
};

struct SessionManagerOptions {
  size_t max_sessions = 1024;
  // Sessions one owner (SessionConfig::owner) may hold at once (0: max_sessions).
  size_t max_sessions_per_peer = 0;
  // Bytes of score-store memory all sessions together, and one session, may hold (0: no limit),
  // charged by the store's growth rule (score_store.h) before the store allocates.
  uint64_t max_store_bytes = 0;
  uint64_t max_session_bytes = 0;
  // Bytes the sessions of one owner (a peer) may hold together (0: no limit beyond max_store_bytes),
  // so that one peer cannot fill the store for the others.
  uint64_t max_peer_store_bytes = 0;
  // Sessions with no call for this long are freed by ExpireIdleSessions (0: never).
  absl::Duration idle_timeout = absl::Minutes(10);
  PolicySpec default_policy = {"a2sf", kDefaultA2sfAlpha, {}, std::nullopt, std::nullopt};
};

class SessionManager {
  struct Session;

 public:
  SessionManager(std::unique_ptr<ScoreStore> store, const PolicyRegistry* registry,
                 SessionManagerOptions options);
  ~SessionManager();
  SessionManager(const SessionManager&) = delete;
  SessionManager& operator=(const SessionManager&) = delete;

  // INVALID_ARGUMENT for a bad shape, policy or budget; FAILED_PRECONDITION when the session names no
  // policy and the default does not fit it (layer_alphas of another depth, a recent window >= budget);
  // RESOURCE_EXHAUSTED, naming the limit, at max_sessions, max_sessions_per_peer, max_store_bytes,
  // max_peer_store_bytes or max_session_bytes.
  absl::StatusOr<SessionInfo> Open(const SessionConfig& config);
  // Opens a session that takes over a sequence already in progress: every head holds `entries`
  // entries at `positions` ([heads][entries], slot order) with scores 0, and the next expected step
  // is `next_step`. Used by a worker whose cache manager went away mid-job.
  absl::StatusOr<SessionInfo> OpenSeeded(const SessionConfig& config, absl::Span<const uint32_t> positions,
                                         uint32_t entries, uint64_t next_step);

  // OK when `secret` is the session's (compared in constant time); NOT_FOUND for an unknown id,
  // PERMISSION_DENIED for a missing or wrong secret.
  absl::Status Authorize(const std::string& id, const std::string& secret) const;
  // A session a caller presented its secret for: what Authorize checked, kept so that the step it
  // authorises (StepBatch) does not look the session up again. Holds the session's memory, not the
  // session open: a session closed since is NOT_FOUND when the step runs.
  class AuthorizedSession {
   public:
    AuthorizedSession() = default;
    const std::string& id() const;

   private:
    friend class SessionManager;
    std::shared_ptr<Session> session_;
  };
  // Authorize's checks and codes; on success, the session.
  absl::StatusOr<AuthorizedSession> AuthorizeSession(const std::string& id, const std::string& secret) const;

  // NOT_FOUND for an unknown id. Returns the session's final counters.
  absl::StatusOr<SessionInfo> Close(const std::string& id);

  // One token step. `step_number` must equal the session's step count (FAILED_PRECONDITION
  // otherwise: the two sides have desynchronised). In a pipelined session `scores` follow the
  // worker's layout (pending victims included) and the decision names positions only (no slots).
  // Positions are the contract's (common/kv/positions.h): INVALID_ARGUMENT beyond kv::kMaxPosition.
  absl::StatusOr<StepResult> Step(const std::string& id, uint64_t step_number, uint32_t position,
                                  const ScoreView& scores);
  // Token steps of several sessions at once (one worker step), run as one batch of the score store
  // (the CPU store's threads over sessions, one CUDA launch). results[i] is steps[i]'s outcome, with
  // Step's codes; a failed step (closed session, out of step, bad scores, a session named twice)
  // fails alone and changes no scores, counts or decisions (as Step: at most its charge grew). Each step names its session as AuthorizeSession returned it.
  struct BatchedStep {
    AuthorizedSession session;
    uint64_t step_number = 0;
    uint32_t position = 0;
    ScoreView scores;
  };
  std::vector<absl::StatusOr<StepResult>> StepBatch(absl::Span<const BatchedStep> steps);
  // A whole prompt at once; only as step 0.
  absl::StatusOr<StepResult> BulkPrefill(const std::string& id, uint64_t step_number, uint32_t first_position,
                                         uint32_t prompt_length, const ScoreView& scores);

  // Swaps a running session's policy: from its next step, decisions follow `policy`, which takes over
  // the session's accumulated scores. FAILED_PRECONDITION when `policy` does not evict like the
  // session's policy (Policy::evicts): the worker's cache and score traffic were set up for that.
  absl::StatusOr<PolicySwap> SetPolicy(const std::string& id, const PolicySpec& policy);

  PolicySpec default_policy() const;
  // Validates `policy` (a budget-dependent check happens when a session opens) and makes it the
  // default for sessions that name none.
  absl::StatusOr<PolicySpec> SetDefaultPolicy(const PolicySpec& policy);

  absl::StatusOr<SessionInfo> Get(const std::string& id) const;
  std::vector<SessionInfo> List() const;
  // The open sessions' ids. Unlike List, it does not wait for steps in flight (List takes each
  // session's lock).
  std::vector<std::string> Ids() const;
  // Whether session `id` is open (a lookup; the session is not locked).
  bool IsOpen(const std::string& id) const { return Find(id) != nullptr; }
  size_t session_count() const;
  const ScoreStore& store() const { return *store_; }
  // Score-store bytes charged to all sessions (an upper bound of what the store holds for them).
  uint64_t charged_bytes() const { return charged_bytes_.load(); }
  // The same for the sessions of `owner` (0 when it holds none).
  uint64_t charged_bytes_of(const std::string& owner) const;
  const PolicyRegistry& registry() const { return *registry_; }

  // Frees sessions idle for longer than the idle timeout; returns how many.
  size_t ExpireIdleSessions();

 private:
  std::shared_ptr<Session> Find(const std::string& id) const;
  // A session's lock, held from LockOpen until destroyed.
  class OpenLock;
  // Locks `session` (`id`'s, null when there is none) and resets its idle clock; NOT_FOUND, nothing
  // held, if there is no such session or it was closed meanwhile. The one way a call takes a session.
  static absl::StatusOr<OpenLock> LockOpen(std::shared_ptr<Session> session, const std::string& id);
  // Calls fn(session) with the open session `id` locked (LockOpen).
  template <typename Fn>
  auto WithOpenSession(const std::string& id, Fn fn) const;
  SessionInfo InfoLocked(const Session& session) const;
  // Open's last part, with the new session (its policy set) locked: charges its first entries, makes
  // its store session and registers it, all or nothing (a failure undoes each step, the owner's
  // counter included).
  absl::Status AllocateAndRegister(const std::shared_ptr<Session>& session);
  // The checks and layout work of a token step before the store runs it (session locked), and the
  // bookkeeping after it succeeded: Step and StepBatch share them.
  absl::Status PrepareTokenStep(Session& session, uint64_t step_number, uint32_t position, const ScoreView& scores,
                                TokenStep* token);
  StepResult CommitTokenStep(Session& session, uint64_t step_number, const TokenStep& token, kv::EvictionDecision decision);
  // Charges the byte budgets for the session to hold `needed` entries per head, before the store
  // grows to it; RESOURCE_EXHAUSTED naming the limit (nothing charged) when it would pass one.
  absl::Status Charge(Session& session, uint32_t needed);
  void Release(Session& session);  // returns the session's charge
  // The byte counter the sessions of `owner` share, made at its first session; one more holder.
  // The counter stays where it is until its last holder lets go (ForgetOwnerBytesLocked).
  std::atomic<uint64_t>* OwnerBytesLocked(const std::string& owner) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // `session` (opened, or failed to open) no longer holds its owner's counter; the map drops the
  // counter with its last holder. Called once per OwnerBytesLocked.
  void ForgetOwnerBytesLocked(const Session& session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // RESOURCE_EXHAUSTED naming --max_sessions or --max_sessions_per_peer when `owner` may not open one.
  absl::Status CheckCapacityLocked(const std::string& owner) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Entries per head a new session starts with (or budget + 1 if smaller).
  static constexpr uint32_t kInitialEntries = 64;

  std::unique_ptr<ScoreStore> store_;
  const PolicyRegistry* registry_;
  const SessionManagerOptions options_;
  mutable absl::Mutex mutex_;
  std::map<std::string, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mutex_);
  std::map<std::string, size_t> sessions_per_owner_ ABSL_GUARDED_BY(mutex_);
  struct OwnerBytes {
    std::atomic<uint64_t> bytes{0};  // what the owner's sessions are charged
    size_t sessions = 0;             // sessions holding it, opened or opening
  };
  // A map's entries stay in place: sessions point at their owner's `bytes`.
  std::map<std::string, OwnerBytes> bytes_per_owner_ ABSL_GUARDED_BY(mutex_);
  std::atomic<uint64_t> charged_bytes_{0};
  PolicySpec default_policy_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_SESSION_SESSION_MANAGER_H_
