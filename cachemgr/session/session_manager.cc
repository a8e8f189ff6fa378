#include "cachemgr/session/session_manager.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/default_policy_misfit.h"
#include "common/peer_strings.h"

namespace a2sf::cachemgr {

absl::StatusOr<uint32_t> ResolveBudget(const BudgetSpec& budget) {
  if (budget.tokens.has_value() == budget.ratio.has_value()) {
    return absl::InvalidArgumentError("budget: give exactly one of budget.tokens and budget.ratio");
  }
  if (budget.tokens) {
    if (*budget.tokens == 0) return absl::InvalidArgumentError("budget.tokens: must be >= 1, got 0");
    return *budget.tokens;
  }
  const double ratio = *budget.ratio;
  if (!(ratio > 0.0 && ratio <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("budget.ratio: must be in (0, 1], got ", ratio));
  }
  if (budget.reference_length == 0) {
    return absl::InvalidArgumentError("budget.reference_length: required (>= 1) with budget.ratio");
  }
  const double tokens = std::floor(ratio * budget.reference_length);
  return static_cast<uint32_t>(std::max(1.0, tokens));
}

struct SessionManager::Session {
  std::string id;
  std::string secret;
  bool evicts = true;
  SessionConfig config;
  SessionHandle handle = 0;
  uint32_t budget_tokens = 0;

  absl::Mutex mutex;  // serialises steps and swaps of this session
  std::shared_ptr<const Policy> policy ABSL_GUARDED_BY(mutex);
  EvictionRule rule ABSL_GUARDED_BY(mutex);
  uint64_t steps ABSL_GUARDED_BY(mutex) = 0;
  uint64_t evictions ABSL_GUARDED_BY(mutex) = 0;
  uint32_t entries ABSL_GUARDED_BY(mutex) = 0;
  // Entries per head the byte budgets were charged for (the store's capacity by its growth rule).
  uint32_t charged_capacity ABSL_GUARDED_BY(mutex) = 0;
  // The bytes charged to all sessions of config.owner (SessionManager::bytes_per_owner_); set at open,
  // valid until the session lets go of it (Close, or a failed Open).
  std::atomic<uint64_t>* owner_bytes = nullptr;
  bool closed ABSL_GUARDED_BY(mutex) = false;
  // Set for pipelined sessions; `remapped` holds a step's scores translated to the store's layout.
  std::unique_ptr<LaggedLayout> lagged ABSL_GUARDED_BY(mutex);
  std::vector<char> remapped ABSL_GUARDED_BY(mutex);
  std::atomic<int64_t> last_active_ns{0};

  void Touch() { last_active_ns.store(absl::GetCurrentTimeNanos()); }

  // Counts a successful step and wraps its decision.
  StepResult Record(kv::EvictionDecision decision) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex) {
    StepResult result;
    result.step = steps++;
    entries = decision.entries_after;
    evictions += uint64_t{decision.evictions_per_head} * config.geometry.heads();
    result.decision = std::move(decision);
    result.policy_name = policy->spec().name;
    return result;
  }
};

SessionManager::SessionManager(std::unique_ptr<ScoreStore> store, const PolicyRegistry* registry,
                               SessionManagerOptions options)
    : store_(std::move(store)), registry_(registry), options_(std::move(options)) {
  default_policy_ = options_.default_policy;
}

SessionManager::~SessionManager() = default;

namespace {

std::string NewSessionId() {
  static absl::BitGen* const gen = new absl::BitGen();
  static absl::Mutex gen_mutex;
  absl::MutexLock lock(&gen_mutex);
  return absl::StrFormat("s-%016x%016x", absl::Uniform<uint64_t>(*gen), absl::Uniform<uint64_t>(*gen));
}

absl::Status NotFound(const std::string& id) {
  return absl::NotFoundError(absl::StrCat("session_id: no session '", id, "' (closed, expired or never opened)"));
}

// The operator's default policy, applied to a session that names none, does not fit that session (e.g.
// layer_alphas for another model's depth): FAILED_PRECONDITION in the contract's words
// (common/default_policy_misfit.h), saying why and the ways out before the (maybe long) policy, so
// that a message cut at the edge keeps them.
absl::Status DefaultPolicyMisfit(const PolicySpec& spec, const absl::Status& why) {
  return absl::FailedPreconditionError(
      absl::StrCat(kDefaultPolicyMisfit, ": ", why.message(),
                   ". Name a policy in the request (or a budget the default fits), or have an operator set a "
                   "default that fits (PolicyAdmin.SetDefaultPolicy). The default: ",
                   PolicySpecToString(spec)));
}

// The session's shape and decision lag: INVALID_ARGUMENT, naming the field, outside their ranges.
absl::Status CheckShape(const SessionConfig& config) {
  const SessionGeometry& g = config.geometry;
  if (g.num_layers == 0 || g.num_layers > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("shape.num_layers: must be in [1, 1024], got ", g.num_layers));
  }
  if (g.num_kv_heads == 0 || g.num_kv_heads > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape.num_kv_heads: must be in [1, 1024], got ", g.num_kv_heads));
  }
  if (config.query_heads_per_kv_head == 0) {
    return absl::InvalidArgumentError("shape.query_heads_per_kv_head: must be >= 1");
  }
  if (config.decision_lag > kMaxDecisionLag) {
    return absl::InvalidArgumentError(
        absl::StrCat("decision_lag: must be in [0, ", kMaxDecisionLag, "], got ", config.decision_lag));
  }
  return absl::OkStatus();
}

// The session's budget in tokens (ResolveBudget), no more than the model's context where it is given.
absl::StatusOr<uint32_t> SessionBudget(const SessionConfig& config) {
  absl::StatusOr<uint32_t> budget = ResolveBudget(config.budget);
  if (!budget.ok()) return budget.status();
  if (config.max_context != 0 && *budget > config.max_context) {
    return absl::InvalidArgumentError(absl::StrCat("budget: ", *budget, " tokens exceed the model's context of ",
                                                   config.max_context));
  }
  return budget;
}

}  // namespace

absl::StatusOr<SessionInfo> SessionManager::Open(const SessionConfig& config) {
  if (absl::Status s = CheckShape(config); !s.ok()) return s;
  absl::StatusOr<uint32_t> budget = SessionBudget(config);
  if (!budget.ok()) return budget.status();
  const PolicySpec spec = config.policy.value_or(default_policy());
  absl::StatusOr<std::shared_ptr<const Policy>> policy = registry_->Create(spec);
  if (!policy.ok()) return policy.status();
  absl::StatusOr<EvictionRule> rule = (*policy)->RuleFor(config.geometry.num_layers, *budget);
  if (!rule.ok()) {
    // A policy's RuleFor answers INVALID_ARGUMENT when it does not fit the session; anything else is
    // its own failure and passes as it is.
    const bool misfit = !config.policy.has_value() && absl::IsInvalidArgument(rule.status());
    return misfit ? DefaultPolicyMisfit(spec, rule.status()) : rule.status();
  }

  std::atomic<uint64_t>* owner_bytes = nullptr;
  {
    absl::MutexLock lock(&mutex_);
    if (absl::Status s = CheckCapacityLocked(config.owner); !s.ok()) return s;
    owner_bytes = OwnerBytesLocked(config.owner);
  }
  auto session = std::make_shared<Session>();
  session->owner_bytes = owner_bytes;
  session->id = NewSessionId();
  session->secret = RandomHexSecret();
  session->evicts = (*policy)->evicts();
  session->config = config;
  session->config.policy = (*policy)->spec();
  session->budget_tokens = *budget;
  absl::MutexLock session_lock(&session->mutex);
  session->policy = *policy;
  session->rule = *rule;
  if (config.decision_lag > 0) {
    session->lagged = std::make_unique<LaggedLayout>(config.geometry.heads(), config.decision_lag);
  }
  if (absl::Status s = AllocateAndRegister(session); !s.ok()) return s;
  SessionInfo info = InfoLocked(*session);
  info.secret = session->secret;
  return info;
}

absl::Status SessionManager::AllocateAndRegister(const std::shared_ptr<Session>& session) {
  // A session that is not opened after all lets go of its owner's counter (ForgetOwnerBytesLocked).
  auto forget = [this, &session] {
    absl::MutexLock lock(&mutex_);
    ForgetOwnerBytesLocked(*session);
  };
  // Memory grows with use: a session starts small and the store doubles it as entries arrive (an
  // evicting policy stops at budget + 1), each growth charged to the byte budgets first.
  const uint32_t expected = std::min<uint32_t>(session->budget_tokens + 1, kInitialEntries);
  if (absl::Status s = Charge(*session, InitialCapacity(expected)); !s.ok()) {
    forget();
    return s;
  }
  absl::StatusOr<SessionHandle> handle = store_->CreateSession(session->config.geometry, expected);
  if (!handle.ok()) {
    Release(*session);
    forget();
    return handle.status();
  }
  session->handle = *handle;
  session->Touch();
  {
    absl::MutexLock lock(&mutex_);
    if (absl::Status s = CheckCapacityLocked(session->config.owner); !s.ok()) {
      store_->DestroySession(*handle).IgnoreError();
      Release(*session);
      ForgetOwnerBytesLocked(*session);
      return s;
    }
    sessions_[session->id] = session;
    ++sessions_per_owner_[session->config.owner];
  }
  return absl::OkStatus();
}

absl::Status SessionManager::CheckCapacityLocked(const std::string& owner) const {
  if (sessions_.size() >= options_.max_sessions) {
    return absl::ResourceExhaustedError(absl::StrCat("session capacity of ", options_.max_sessions,
                                                     " reached (--max_sessions); close sessions or raise it"));
  }
  const auto it = sessions_per_owner_.find(owner);
  if (options_.max_sessions_per_peer > 0 && it != sessions_per_owner_.end() &&
      it->second >= options_.max_sessions_per_peer) {
    return absl::ResourceExhaustedError(absl::StrCat("this peer holds ", it->second, " sessions, the most one peer may (",
                                                     "--max_sessions_per_peer=", options_.max_sessions_per_peer, ")"));
  }
  return absl::OkStatus();
}

absl::Status SessionManager::Charge(Session& session, uint32_t needed) {
  if (needed <= session.charged_capacity) return absl::OkStatus();
  const uint32_t capacity = session.charged_capacity == 0 ? needed : GrownCapacity(session.charged_capacity, needed);
  // heads <= 2^20 and capacity < 2^32: the products stay far below 2^64.
  const uint64_t heads = session.config.geometry.heads();
  const uint64_t current = heads * session.charged_capacity * kStoreBytesPerEntry;
  const uint64_t wanted = heads * capacity * kStoreBytesPerEntry;
  if (options_.max_session_bytes > 0 && wanted > options_.max_session_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("the session would hold ", wanted, " bytes of scores (",
                                                     capacity, " entries x ", heads, " heads), more than ",
                                                     "--max_session_bytes=", options_.max_session_bytes));
  }
  // The owner's share first, then the store's; a refusal of the second gives the first back.
  std::atomic<uint64_t>& of_owner = *session.owner_bytes;
  uint64_t owner_total = of_owner.load();
  do {
    if (options_.max_peer_store_bytes > 0 && owner_total - current + wanted > options_.max_peer_store_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat("this peer's sessions would hold ", owner_total - current + wanted,
                                                       " bytes of scores, more than --max_peer_store_bytes=",
                                                       options_.max_peer_store_bytes, "; close some of them"));
    }
  } while (!of_owner.compare_exchange_weak(owner_total, owner_total - current + wanted));
  uint64_t total = charged_bytes_.load();
  do {
    if (options_.max_store_bytes > 0 && total - current + wanted > options_.max_store_bytes) {
      of_owner.fetch_sub(wanted - current);
      return absl::ResourceExhaustedError(absl::StrCat("the score store would hold ", total - current + wanted,
                                                       " bytes, more than --max_store_bytes=", options_.max_store_bytes,
                                                       "; close sessions or raise it"));
    }
  } while (!charged_bytes_.compare_exchange_weak(total, total - current + wanted));
  session.charged_capacity = capacity;
  return absl::OkStatus();
}

void SessionManager::Release(Session& session) {
  const uint64_t bytes = uint64_t{session.config.geometry.heads()} * session.charged_capacity * kStoreBytesPerEntry;
  charged_bytes_.fetch_sub(bytes);
  session.owner_bytes->fetch_sub(bytes);
  session.charged_capacity = 0;
}

std::atomic<uint64_t>* SessionManager::OwnerBytesLocked(const std::string& owner) {
  OwnerBytes& entry = bytes_per_owner_[owner];
  ++entry.sessions;
  return &entry.bytes;
}

void SessionManager::ForgetOwnerBytesLocked(const Session& session) {
  auto it = bytes_per_owner_.find(session.config.owner);
  if (it != bytes_per_owner_.end() && --it->second.sessions == 0) bytes_per_owner_.erase(it);
}

uint64_t SessionManager::charged_bytes_of(const std::string& owner) const {
  absl::MutexLock lock(&mutex_);
  auto it = bytes_per_owner_.find(owner);
  return it == bytes_per_owner_.end() ? 0 : it->second.bytes.load();
}

absl::StatusOr<SessionInfo> SessionManager::OpenSeeded(const SessionConfig& config, absl::Span<const uint32_t> positions,
                                                       uint32_t entries, uint64_t next_step) {
  absl::StatusOr<SessionInfo> info = Open(config);
  if (!info.ok()) return info;
  std::shared_ptr<Session> session = Find(info->id);
  if (session == nullptr) return NotFound(info->id);  // expired (or closed) since it opened
  absl::Status seeded;
  {
    absl::MutexLock lock(&session->mutex);
    // Closed meanwhile: its charge was returned, so none may be taken now.
    if (session->closed) return NotFound(info->id);
    seeded = Charge(*session, entries + 1);
    if (seeded.ok()) seeded = store_->SeedEntries(session->handle, positions, entries);
    if (seeded.ok()) {
      if (session->lagged != nullptr) session->lagged->Seed(positions, entries);
      session->entries = entries;
      session->steps = next_step;
      SessionInfo seeded_info = InfoLocked(*session);
      seeded_info.secret = session->secret;
      return seeded_info;
    }
  }
  Close(info->id).IgnoreError();
  return seeded;
}

std::shared_ptr<SessionManager::Session> SessionManager::Find(const std::string& id) const {
  absl::MutexLock lock(&mutex_);
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second;
}

SessionInfo SessionManager::InfoLocked(const Session& session) const
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  SessionInfo info;
  info.id = session.id;
  info.evicts = session.evicts;
  info.config = session.config;
  info.policy = session.policy->spec();
  info.budget_tokens = session.budget_tokens;
  info.steps = session.steps;
  info.entries_per_head = session.entries;
  info.evictions = session.evictions;
  info.idle = absl::Nanoseconds(absl::GetCurrentTimeNanos() - session.last_active_ns.load());
  return info;
}

absl::StatusOr<SessionInfo> SessionManager::Close(const std::string& id) {
  std::shared_ptr<Session> session;
  {
    absl::MutexLock lock(&mutex_);
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return NotFound(id);
    session = it->second;
    sessions_.erase(it);
    auto owner = sessions_per_owner_.find(session->config.owner);
    if (owner != sessions_per_owner_.end() && --owner->second == 0) sessions_per_owner_.erase(owner);
  }
  SessionInfo info;
  {
    absl::MutexLock lock(&session->mutex);  // waits for a step in flight
    session->closed = true;
    store_->DestroySession(session->handle).IgnoreError();
    Release(*session);
    info = InfoLocked(*session);
  }
  // Taken after the session's lock is given up. (Open takes it inside its new session's lock, which
  // no one else can hold yet; nothing takes a session's lock inside mutex_.)
  absl::MutexLock lock(&mutex_);
  ForgetOwnerBytesLocked(*session);
  return info;
}

const std::string& SessionManager::AuthorizedSession::id() const {
  static const std::string* const kNone = new std::string();
  return session_ != nullptr ? session_->id : *kNone;
}

absl::StatusOr<SessionManager::AuthorizedSession> SessionManager::AuthorizeSession(const std::string& id,
                                                                                   const std::string& secret) const {
  AuthorizedSession authorized;
  authorized.session_ = Find(id);
  if (authorized.session_ == nullptr) return NotFound(id);
  if (secret.empty()) {
    return absl::PermissionDeniedError("session_secret: required (OpenSessionResponse.session_secret)");
  }
  if (!ConstantTimeEquals(secret, authorized.session_->secret)) {
    return absl::PermissionDeniedError("session_secret: not this session's secret");
  }
  return authorized;
}

absl::Status SessionManager::Authorize(const std::string& id, const std::string& secret) const {
  return AuthorizeSession(id, secret).status();
}

class SessionManager::OpenLock {
 public:
  explicit OpenLock(std::shared_ptr<Session> session) ABSL_NO_THREAD_SAFETY_ANALYSIS : session_(std::move(session)) {
    session_->mutex.Lock();
  }
  OpenLock(OpenLock&& other) = default;  // the moved-from lock holds nothing
  OpenLock& operator=(OpenLock&&) = delete;
  ~OpenLock() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (session_ != nullptr) session_->mutex.Unlock();
  }
  Session& operator*() const { return *session_; }
  Session* operator->() const { return session_.get(); }

 private:
  std::shared_ptr<Session> session_;
};

absl::StatusOr<SessionManager::OpenLock> SessionManager::LockOpen(std::shared_ptr<Session> session,
                                                                  const std::string& id)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (session == nullptr) return NotFound(id);
  OpenLock lock(std::move(session));
  if (lock->closed) return NotFound(id);
  lock->Touch();
  return lock;
}

template <typename Fn>
auto SessionManager::WithOpenSession(const std::string& id, Fn fn) const {
  using Result = decltype(fn(std::declval<Session&>()));
  absl::StatusOr<OpenLock> lock = LockOpen(Find(id), id);
  if (!lock.ok()) return Result(lock.status());
  return fn(**lock);
}

absl::Status SessionManager::PrepareTokenStep(Session& session, uint64_t step_number, uint32_t position,
                                              const ScoreView& scores, TokenStep* token)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (step_number != session.steps) {
    return absl::FailedPreconditionError(absl::StrCat("step: expected step ", session.steps, ", got ", step_number,
                                                      " (worker and cache manager are out of sync)"));
  }
  if (absl::Status s = Charge(session, session.entries + 1); !s.ok()) return s;
  *token = TokenStep{session.handle, &session.rule, position, scores};
  LaggedLayout* lagged = session.lagged.get();
  if (lagged != nullptr && scores.on_device) {
    // The lagged layout remaps the scores on the host (pipelined sessions are refused CUDA IPC).
    return absl::FailedPreconditionError("scores: a pipelined session's scores must be in host memory");
  }
  if (lagged != nullptr) {
    lagged->CatchUp(step_number);
    const size_t heads = session.config.geometry.heads();
    const size_t expected = heads * (size_t(lagged->worker_entries()) + 1);
    if (scores.num_values != expected) {
      return absl::FailedPreconditionError(absl::StrCat(
          "scores: expected ", expected, " values ([", heads, " heads][", lagged->worker_entries() + 1,
          " entries], the worker's cache with decisions up to step ", int64_t(step_number) - lagged->lag() - 1,
          " applied), got ", scores.num_values, " (worker and cache manager are out of sync)"));
    }
    const size_t value_bytes = kv::ScoreDTypeBytes(scores.dtype);
    session.remapped.resize(heads * (size_t(lagged->manager_entries()) + 1) * value_bytes);
    lagged->ToManagerLayout(scores.data, value_bytes, session.remapped.data());
    token->scores.data = session.remapped.data();
    token->scores.num_values = heads * (size_t(lagged->manager_entries()) + 1);
  }
  return absl::OkStatus();
}

StepResult SessionManager::CommitTokenStep(Session& session, uint64_t step_number, const TokenStep& token,
                                           kv::EvictionDecision decision) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  if (session.lagged != nullptr) {
    session.lagged->CommitTokenStep(step_number, token.position, decision);
    decision.evicted_slots.clear();  // the store's slots mean nothing in the worker's layout
  }
  return session.Record(std::move(decision));
}

absl::StatusOr<StepResult> SessionManager::Step(const std::string& id, uint64_t step_number, uint32_t position,
                                                const ScoreView& scores) {
  return WithOpenSession(id, [&](Session& session) ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::StatusOr<StepResult> {
    TokenStep token;
    if (absl::Status s = PrepareTokenStep(session, step_number, position, scores, &token); !s.ok()) return s;
    absl::Status status;
    kv::EvictionDecision decision;
    store_->ProcessTokenSteps({&token, 1}, {&status, 1}, {&decision, 1});
    if (!status.ok()) return status;
    return CommitTokenStep(session, step_number, token, std::move(decision));
  });
}

std::vector<absl::StatusOr<StepResult>> SessionManager::StepBatch(absl::Span<const BatchedStep> steps)
    ABSL_NO_THREAD_SAFETY_ANALYSIS {
  std::vector<absl::StatusOr<StepResult>> results(steps.size(), absl::UnknownError("not run"));
  // Lock every session of the batch in id order (no deadlock with another batch); a session named
  // twice keeps its first step, the repeat fails alone.
  std::vector<size_t> order(steps.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto id_of = [&](size_t i) -> const std::string& { return steps[i].session.id(); };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return id_of(a) < id_of(b); });
  std::vector<OpenLock> locked;
  locked.reserve(steps.size());
  std::vector<size_t> members;             // indices into `steps` that reach the store
  std::vector<Session*> member_sessions;  // their sessions, locked
  std::vector<TokenStep> tokens;
  for (size_t k = 0; k < order.size(); ++k) {
    const BatchedStep& step = steps[order[k]];
    if (k > 0 && id_of(order[k]) == id_of(order[k - 1])) {
      results[order[k]] = absl::InvalidArgumentError(
          absl::StrCat("session_id: '", Utf8Prefix(id_of(order[k]), 80), "' appears twice in one batch"));
      continue;
    }
    absl::StatusOr<OpenLock> lock = LockOpen(step.session.session_, id_of(order[k]));
    if (!lock.ok()) {
      results[order[k]] = lock.status();
      continue;
    }
    locked.push_back(*std::move(lock));
    Session& session = *locked.back();
    TokenStep token;
    absl::Status prepared = PrepareTokenStep(session, step.step_number, step.position, step.scores, &token);
    if (!prepared.ok()) {
      results[order[k]] = prepared;
      continue;
    }
    members.push_back(order[k]);
    member_sessions.push_back(&session);
    tokens.push_back(token);
  }
  // One batch of the store for every session that got this far.
  std::vector<absl::Status> statuses(tokens.size());
  std::vector<kv::EvictionDecision> decisions(tokens.size());
  store_->ProcessTokenSteps(tokens, absl::MakeSpan(statuses), absl::MakeSpan(decisions));
  for (size_t m = 0; m < members.size(); ++m) {
    if (!statuses[m].ok()) {
      results[members[m]] = statuses[m];
      continue;
    }
    results[members[m]] =
        CommitTokenStep(*member_sessions[m], steps[members[m]].step_number, tokens[m], std::move(decisions[m]));
  }
  return results;  // `locked` unlocks every session
}

absl::StatusOr<StepResult> SessionManager::BulkPrefill(const std::string& id, uint64_t step_number,
                                                       uint32_t first_position, uint32_t prompt_length,
                                                       const ScoreView& scores) {
  return WithOpenSession(id, [&](Session& session) ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::StatusOr<StepResult> {
    if (step_number != 0 || session.steps != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("step: a bulk prefill must be the session's first step (step 0); the session expects step ",
                       session.steps));
    }
    if (uint64_t{first_position} + prompt_length > uint64_t{kv::kMaxPosition} + 1) {
      return absl::InvalidArgumentError("position: prompt positions exceed the largest supported position");
    }
    if (absl::Status s = Charge(session, std::max<uint32_t>(prompt_length, 1)); !s.ok()) return s;
    cachemgr::BulkPrefill bulk{session.handle, &session.rule, first_position, prompt_length,
                               scores};
    absl::StatusOr<kv::EvictionDecision> decision = store_->ProcessBulkPrefill(bulk);
    if (!decision.ok()) return decision.status();
    if (session.lagged != nullptr) {
      session.lagged->CommitBulkPrefill(bulk.first_position, prompt_length, *decision);
      decision->evicted_slots.clear();
    }
    return session.Record(std::move(*decision));
  });
}

absl::StatusOr<PolicySwap> SessionManager::SetPolicy(const std::string& id, const PolicySpec& spec) {
  absl::StatusOr<std::shared_ptr<const Policy>> policy = registry_->Create(spec);
  if (!policy.ok()) return policy.status();
  return WithOpenSession(id, [&](Session& session) ABSL_NO_THREAD_SAFETY_ANALYSIS -> absl::StatusOr<PolicySwap> {
    if ((*policy)->evicts() != session.evicts) {
      return absl::FailedPreconditionError(absl::StrCat(
          "policy: the session's policy ", session.policy->spec().name,
          session.evicts ? " evicts, so its worker sized its KV cache for the budget of " : " never evicts, so its worker sends no scores and keeps every entry; ",
          session.evicts ? absl::StrCat(session.budget_tokens, " tokens; ") : "",
          (*policy)->spec().name, session.evicts ? " never evicts and" : " evicts and",
          " cannot take over; open a new session for it"));
    }
    absl::StatusOr<EvictionRule> rule = (*policy)->RuleFor(session.config.geometry.num_layers, session.budget_tokens);
    if (!rule.ok()) return rule.status();
    PolicySwap swap;
    swap.previous = session.policy->spec();
    swap.current = (*policy)->spec();
    swap.effective_from_step = session.steps;
    session.policy = *policy;
    session.rule = *rule;
    session.config.policy = swap.current;
    return swap;
  });
}

PolicySpec SessionManager::default_policy() const {
  absl::MutexLock lock(&mutex_);
  return default_policy_;
}

absl::StatusOr<PolicySpec> SessionManager::SetDefaultPolicy(const PolicySpec& spec) {
  absl::StatusOr<std::shared_ptr<const Policy>> policy = registry_->Create(spec);
  if (!policy.ok()) return policy.status();
  absl::MutexLock lock(&mutex_);
  // Keep what the caller asked for (not the resolved form) so later defaults of the policy apply.
  default_policy_ = spec;
  return (*policy)->spec();
}

absl::StatusOr<SessionInfo> SessionManager::Get(const std::string& id) const {
  std::shared_ptr<Session> session = Find(id);
  if (session == nullptr) return NotFound(id);
  absl::MutexLock lock(&session->mutex);
  return InfoLocked(*session);
}

std::vector<SessionInfo> SessionManager::List() const {
  std::vector<std::shared_ptr<Session>> all;
  {
    absl::MutexLock lock(&mutex_);
    for (const auto& [id, session] : sessions_) all.push_back(session);
  }
  std::vector<SessionInfo> out;
  for (const auto& session : all) {
    absl::MutexLock lock(&session->mutex);
    out.push_back(InfoLocked(*session));
  }
  return out;
}

std::vector<std::string> SessionManager::Ids() const {
  absl::MutexLock lock(&mutex_);
  std::vector<std::string> ids;
  for (const auto& [id, session] : sessions_) ids.push_back(id);
  return ids;
}

size_t SessionManager::session_count() const {
  absl::MutexLock lock(&mutex_);
  return sessions_.size();
}

size_t SessionManager::ExpireIdleSessions() {
  if (options_.idle_timeout <= absl::ZeroDuration()) return 0;
  const int64_t cutoff = absl::GetCurrentTimeNanos() - absl::ToInt64Nanoseconds(options_.idle_timeout);
  std::vector<std::string> idle;
  {
    absl::MutexLock lock(&mutex_);
    for (const auto& [id, session] : sessions_) {
      if (session->last_active_ns.load() < cutoff) idle.push_back(id);
    }
  }
  size_t expired = 0;
  for (const std::string& id : idle) expired += Close(id).ok();
  return expired;
}

}  // namespace a2sf::cachemgr
