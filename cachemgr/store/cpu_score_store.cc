#include "cachemgr/store/cpu_score_store.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "cachemgr/store/head_kernels.h"
#include "cachemgr/store/victim_selection.h"
#include "common/kv/swap_remove.h"

namespace a2sf::cachemgr {

struct CpuScoreStore::Session {
  SessionGeometry geometry;
  uint32_t entries = 0;   // per head
  uint32_t capacity = 0;  // per-head stride of the arrays below
  uint32_t newest_position = 0;
  std::vector<float> scores;       // current accumulators [heads][capacity]
  std::vector<float> next_scores;  // a step's result, swapped in on success
  std::vector<uint32_t> positions;  // [heads][capacity]

  float* head_scores(uint32_t h) { return scores.data() + size_t{h} * capacity; }
  float* head_next(uint32_t h) { return next_scores.data() + size_t{h} * capacity; }
  uint32_t* head_positions(uint32_t h) { return positions.data() + size_t{h} * capacity; }

  // Makes room for `needed` entries per head, keeping the current contents.
  void Reserve(uint32_t needed) {
    if (needed <= capacity) return;
    const uint32_t new_capacity = GrownCapacity(capacity, needed);
    const uint32_t heads = geometry.heads();
    std::vector<float> new_scores(size_t{heads} * new_capacity, 0.0f);
    std::vector<uint32_t> new_positions(size_t{heads} * new_capacity, 0);
    // An empty session may have no buffers yet: memcpy from null is undefined even for 0 bytes.
    for (uint32_t h = 0; h < heads && entries > 0; ++h) {
      std::memcpy(new_scores.data() + size_t{h} * new_capacity, head_scores(h), entries * sizeof(float));
      std::memcpy(new_positions.data() + size_t{h} * new_capacity, head_positions(h),
                  entries * sizeof(uint32_t));
    }
    scores.swap(new_scores);
    positions.swap(new_positions);
    next_scores.assign(size_t{heads} * new_capacity, 0.0f);
    capacity = new_capacity;
  }

  size_t bytes() const {
    return scores.capacity() * sizeof(float) + next_scores.capacity() * sizeof(float) +
           positions.capacity() * sizeof(uint32_t);
  }
};

// Steps come milliseconds apart: the workers sleep between them instead of spinning (a node's
// workers share its cores with the cache manager).
CpuScoreStore::CpuScoreStore(int num_threads) : pool_(num_threads, std::chrono::microseconds(0)) {}
CpuScoreStore::~CpuScoreStore() = default;

absl::StatusOr<SessionHandle> CpuScoreStore::CreateSession(SessionGeometry geometry,
                                                           uint32_t expected_entries) {
  if (absl::Status s = CheckGeometry(geometry); !s.ok()) return s;
  auto session = std::make_unique<Session>();
  session->geometry = geometry;
  session->Reserve(InitialCapacity(expected_entries));
  absl::MutexLock lock(&mutex_);
  const SessionHandle handle = next_handle_++;
  sessions_.emplace(handle, std::move(session));
  return handle;
}

absl::Status CpuScoreStore::DestroySession(SessionHandle session) {
  absl::MutexLock lock(&mutex_);
  if (sessions_.erase(session) == 0) {
    return absl::NotFoundError(absl::StrCat("no score-store session ", session));
  }
  return absl::OkStatus();
}

CpuScoreStore::Session* CpuScoreStore::Find(SessionHandle session) const {
  absl::MutexLock lock(&mutex_);
  auto it = sessions_.find(session);
  return it == sessions_.end() ? nullptr : it->second.get();
}

absl::StatusOr<uint32_t> CpuScoreStore::EntriesPerHead(SessionHandle session) const {
  Session* s = Find(session);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no score-store session ", session));
  return s->entries;
}

void CpuScoreStore::ProcessTokenSteps(absl::Span<const TokenStep> steps, absl::Span<absl::Status> statuses,
                                      absl::Span<kv::EvictionDecision> decisions) {
  pool_.ParallelFor(steps.size(),
                    [&](size_t i) { statuses[i] = ProcessTokenStep(steps[i], &decisions[i]); });
}

namespace {

// ProcessTokenStep's steps (it runs once per decode step): one caller each, inlined into it.

// Candidates of the fast path: positions in [sinks, hi). With a recent window R, the R most recent
// entries are positions > newest - R as long as they are all present, which the scan verifies.
inline uint32_t FastPathCandidateEnd(uint32_t recent, uint32_t position) {
  return recent == 0 ? kv::kMaxPosition + 1 : (position + 1 >= recent ? position + 1 - recent : 0);
}

// Writes head h's k victims to out_slots: the scan's minimum when it alone decides (one victim, the
// recent window all present), else SelectVictims over the head's n entries.
inline void ChooseHeadVictims(CpuScoreStore::Session* s, const EvictionRule& rule, const HeadScan& scan, uint32_t h,
                              uint32_t n, uint32_t k, uint32_t* out_slots) {
  const uint32_t recent = rule.protected_recent;
  const bool recent_contiguous = recent == 0 || scan.count_at_or_above_hi == std::min(recent, n);
  if (k == 1 && recent_contiguous && scan.best_slot != kNoSlot) {
    out_slots[0] = scan.best_slot;
  } else {
    const float* scores = rule.uses_scores() ? s->head_next(h) : nullptr;
    const std::vector<uint32_t> victims = SelectVictims(rule, scores, s->head_positions(h), n, k);
    std::copy(victims.begin(), victims.end(), out_slots);
  }
}

// Pass 1 (fused): append, accumulate into next_scores, validate, find the minimum; then each head's
// k victims into `decision`. False, at the first head holding an invalid score, when one does.
inline bool ScanHeads(CpuScoreStore::Session* s, const TokenStep& step, uint32_t n_old, uint32_t k, uint32_t hi,
                      kv::EvictionDecision* decision) {
  const EvictionRule& rule = *step.rule;
  const uint32_t heads = s->geometry.heads();
  const uint32_t n = n_old + 1;
  const size_t value_bytes = kv::ScoreDTypeBytes(step.scores.dtype);
  const char* input = static_cast<const char*>(step.scores.data);
  for (uint32_t h = 0; h < heads; ++h) {
    uint32_t* pos = s->head_positions(h);
    pos[n_old] = step.position;
    const void* head_input = input + size_t{h} * n * value_bytes;
    HeadScan scan;
    if (rule.uses_scores()) {
      float* a_old = s->head_scores(h);
      a_old[n_old] = 0.0f;  // the new entry starts at A = 0
      const float alpha = rule.layer_alpha[h / s->geometry.num_kv_heads];
      scan = AccumulateAndFindMin(a_old, head_input, step.scores.dtype, s->head_next(h), pos, n, alpha,
                                  rule.protected_sinks, hi);
      if (scan.invalid) return false;
    } else if (k > 0) {
      scan = FindMinPosition(pos, n, rule.protected_sinks, hi);
    }
    if (k == 0) continue;
    ChooseHeadVictims(s, rule, scan, h, n, k, decision->evicted_slots.data() + size_t{h} * k);
  }
  return true;
}

// Pass 2: commit. Only now does the session change.
inline void CommitTokenStep(CpuScoreStore::Session* s, const EvictionRule& rule, uint32_t position, uint32_t n_old,
                            uint32_t k, kv::EvictionDecision* decision) {
  const uint32_t heads = s->geometry.heads();
  const uint32_t n = n_old + 1;
  if (rule.uses_scores()) {
    s->scores.swap(s->next_scores);
  } else {
    for (uint32_t h = 0; h < heads; ++h) s->head_scores(h)[n_old] = 0.0f;
  }
  for (uint32_t h = 0; h < heads && k > 0; ++h) {
    kv::SwapRemoveEntries(decision->evicted_slots.data() + size_t{h} * k, k, n, s->head_positions(h),
                          s->head_scores(h), decision->evicted_positions.data() + size_t{h} * k);
  }
  s->entries = n - k;
  s->newest_position = position;
}

}  // namespace

absl::Status CpuScoreStore::ProcessTokenStep(const TokenStep& step, kv::EvictionDecision* decision) {
  Session* s = Find(step.session);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no score-store session ", step.session));
  const uint32_t n_old = s->entries;
  if (absl::Status st = CheckHostScores(step.scores); !st.ok()) return st;
  if (absl::Status st = CheckTokenStepShape(step, s->geometry, n_old, s->newest_position);
      !st.ok()) {
    return st;
  }
  const EvictionRule& rule = *step.rule;
  const uint32_t heads = s->geometry.heads();
  const uint32_t n = n_old + 1;
  s->Reserve(n);
  const uint32_t budget = rule.budget;
  const uint32_t k = (rule.evicts() && n > budget) ? n - budget : 0;
  const uint32_t hi = FastPathCandidateEnd(rule.protected_recent, step.position);

  decision->evictions_per_head = k;
  decision->entries_after = n - k;
  decision->evicted_slots.resize(size_t{heads} * k);
  decision->evicted_positions.resize(size_t{heads} * k);

  if (!ScanHeads(s, step, n_old, k, hi, decision)) {
    return absl::InvalidArgumentError(
        absl::StrCat("scores: a value is NaN, negative or above ", kMaxScoreValue,
                     " (scores are sums of softmax probabilities)"));
  }
  CommitTokenStep(s, rule, step.position, n_old, k, decision);
  return absl::OkStatus();
}

absl::StatusOr<kv::EvictionDecision> CpuScoreStore::ProcessBulkPrefill(const BulkPrefill& prefill) {
  Session* s = Find(prefill.session);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no score-store session ", prefill.session));
  if (absl::Status st = CheckHostScores(prefill.scores); !st.ok()) return st;
  if (absl::Status st = CheckBulkPrefillShape(prefill, s->geometry, s->entries); !st.ok()) return st;
  const uint32_t P = prefill.prompt_length;
  const uint32_t heads = s->geometry.heads();
  const EvictionRule& rule = *prefill.rule;
  s->Reserve(P);
  const uint32_t k = (rule.evicts() && P > rule.budget) ? P - rule.budget : 0;
  kv::EvictionDecision decision;
  decision.evictions_per_head = k;
  decision.entries_after = P - k;
  decision.evicted_slots.resize(size_t{heads} * k);
  decision.evicted_positions.resize(size_t{heads} * k);

  // A_k = sum_{q >= k} alpha^(P-1-q) s[q][k], by Horner's rule over the rows: exactly the values the
  // per-token recurrence would reach without evictions.
  for (uint32_t h = 0; h < heads; ++h) {
    float* a = s->head_next(h);
    uint32_t* pos = s->head_positions(h);
    for (uint32_t i = 0; i < P; ++i) pos[i] = prefill.first_position + i;
    std::fill(a, a + P, 0.0f);
    if (!rule.uses_scores()) continue;
    const float alpha = rule.layer_alpha[h / s->geometry.num_kv_heads];
    const size_t base = size_t{h} * P * P;
    for (uint32_t q = 0; q < P; ++q) {
      for (uint32_t c = 0; c <= q; ++c) {
        const float v = LoadScore(prefill.scores.data, prefill.scores.dtype, base + size_t{q} * P + c);
        if (!(v >= 0.0f && v <= kMaxScoreValue)) {
          return absl::InvalidArgumentError(absl::StrCat("scores: value at head ", h, ", row ", q, ", entry ", c,
                                                         " is NaN, negative or above ", kMaxScoreValue));
        }
        a[c] = alpha * a[c] + v;
      }
      // Entries after q are not yet in the cache at row q; they start at 0 and are not decayed.
    }
  }
  for (uint32_t h = 0; h < heads; ++h) {
    float* a = s->head_next(h);
    uint32_t* pos = s->head_positions(h);
    const std::vector<uint32_t> victims = SelectVictims(rule, rule.uses_scores() ? a : nullptr, pos, P, k);
    std::copy(victims.begin(), victims.end(), decision.evicted_slots.begin() + size_t{h} * k);
    kv::SwapRemoveEntries(victims.data(), k, P, pos, a, decision.evicted_positions.data() + size_t{h} * k);
  }
  s->scores.swap(s->next_scores);
  s->entries = P - k;
  s->newest_position = prefill.first_position + P - 1;
  return decision;
}

absl::StatusOr<HeadSnapshot> CpuScoreStore::ReadHead(SessionHandle session, uint32_t layer,
                                                     uint32_t kv_head) const {
  Session* s = Find(session);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no score-store session ", session));
  if (layer >= s->geometry.num_layers || kv_head >= s->geometry.num_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat("no head (", layer, ", ", kv_head, ") in this session"));
  }
  const uint32_t h = layer * s->geometry.num_kv_heads + kv_head;
  HeadSnapshot snapshot;
  snapshot.positions.assign(s->head_positions(h), s->head_positions(h) + s->entries);
  snapshot.scores.assign(s->head_scores(h), s->head_scores(h) + s->entries);
  return snapshot;
}

absl::Status CpuScoreStore::SeedEntries(SessionHandle session, absl::Span<const uint32_t> positions,
                                        uint32_t entries) {
  Session* s = Find(session);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no score-store session ", session));
  if (absl::Status st = CheckSeed(s->geometry, s->entries, positions, entries); !st.ok()) return st;
  s->Reserve(entries + 1);
  uint32_t newest = 0;
  for (uint32_t h = 0; h < s->geometry.heads(); ++h) {
    std::copy(positions.begin() + size_t{h} * entries, positions.begin() + size_t{h + 1} * entries, s->head_positions(h));
    std::fill(s->head_scores(h), s->head_scores(h) + entries, 0.0f);
  }
  for (uint32_t p : positions) newest = std::max(newest, p);
  s->entries = entries;
  s->newest_position = newest;
  return absl::OkStatus();
}

size_t CpuScoreStore::BytesHeld() const {
  absl::MutexLock lock(&mutex_);
  size_t total = 0;
  for (const auto& [handle, session] : sessions_) total += session->bytes();
  return total;
}

}  // namespace a2sf::cachemgr
