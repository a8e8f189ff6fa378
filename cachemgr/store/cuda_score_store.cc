#include "cachemgr/store/cuda_score_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cachemgr/store/cuda_kernels.h"
#include "cachemgr/store/victim_selection.h"

namespace a2sf::cachemgr {

namespace {

absl::Status CudaError(const char* what, const std::string& error) {
  return absl::InternalError(absl::StrCat("CUDA ", what, " failed: ", error));
}

}  // namespace

struct CudaScoreStore::Session {
  SessionGeometry geometry;
  uint32_t entries = 0;
  uint32_t capacity = 0;
  uint32_t newest_position = 0;
  int current = 0;                       // which of scores[] holds the committed accumulators
  float* scores[2] = {nullptr, nullptr};  // device [heads][capacity]
  uint32_t* positions = nullptr;          // device [heads][capacity]

  float* head(int which, uint32_t h) const { return scores[which] + size_t{h} * capacity; }
  uint32_t* head_positions(uint32_t h) const { return positions + size_t{h} * capacity; }

  void Release() {
    cuda::Free(scores[0]);
    cuda::Free(scores[1]);
    cuda::Free(positions);
    scores[0] = scores[1] = nullptr;
    positions = nullptr;
  }

  absl::Status Reserve(uint32_t needed) {
    if (needed <= capacity) return absl::OkStatus();
    const uint32_t new_capacity = GrownCapacity(capacity, needed);
    const size_t heads = geometry.heads();
    void* new_buffers[3] = {nullptr, nullptr, nullptr};
    std::string error;
    for (int i = 0; i < 3; ++i) {
      if (cuda::Malloc(&new_buffers[i], heads * new_capacity * 4, &error) != 0) {
        for (void* b : new_buffers) cuda::Free(b);
        return absl::ResourceExhaustedError(absl::StrCat("GPU memory for score-store session: ", error));
      }
    }
    if (capacity > 0 && entries > 0) {
      if (cuda::CopyRows(new_buffers[0], new_capacity * 4, scores[current], capacity * 4, entries * 4, heads,
                         &error) != 0 ||
          cuda::CopyRows(new_buffers[2], new_capacity * 4, positions, capacity * 4, entries * 4, heads, &error) != 0) {
        for (void* b : new_buffers) cuda::Free(b);
        return CudaError("copy on growth", error);
      }
    }
    Release();
    scores[0] = static_cast<float*>(new_buffers[0]);
    scores[1] = static_cast<float*>(new_buffers[1]);
    positions = static_cast<uint32_t*>(new_buffers[2]);
    current = 0;
    capacity = new_capacity;
    return absl::OkStatus();
  }
};

void CudaScoreStore::ContextDeleter::operator()(void* context) const {
  cuda::DestroyContext(static_cast<cuda::Context*>(context));
}

CudaScoreStore::CudaScoreStore() = default;

CudaScoreStore::~CudaScoreStore() {
  absl::MutexLock lock(&mutex_);
  for (auto& [handle, session] : sessions_) session->Release();
}

absl::StatusOr<std::unique_ptr<CudaScoreStore>> CudaScoreStore::Create() {
  std::string reason;
  if (!cuda::Available(&reason)) return absl::UnavailableError(absl::StrCat("no usable CUDA GPU: ", reason));
  std::unique_ptr<CudaScoreStore> store(new CudaScoreStore());
  store->context_.reset(cuda::CreateContext());
  return store;
}

CudaScoreStore::Session* CudaScoreStore::Find(SessionHandle session) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
  auto it = sessions_.find(session);
  return it == sessions_.end() ? nullptr : it->second.get();
}

absl::StatusOr<SessionHandle> CudaScoreStore::CreateSession(SessionGeometry geometry, uint32_t expected_entries) {
  if (absl::Status s = CheckGeometry(geometry); !s.ok()) return s;
  auto session = std::make_unique<Session>();
  session->geometry = geometry;
  if (absl::Status s = session->Reserve(InitialCapacity(expected_entries)); !s.ok()) return s;
  absl::MutexLock lock(&mutex_);
  const SessionHandle handle = next_handle_++;
  sessions_.emplace(handle, std::move(session));
  return handle;
}

absl::Status CudaScoreStore::DestroySession(SessionHandle session) {
  absl::MutexLock lock(&mutex_);
  auto it = sessions_.find(session);
  if (it == sessions_.end()) return absl::NotFoundError(absl::StrCat("no score-store session ", session));
  it->second->Release();
  sessions_.erase(it);
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> CudaScoreStore::EntriesPerHead(SessionHandle session) const {
  absl::MutexLock lock(&mutex_);
  Session* s = Find(session);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no score-store session ", session));
  return s->entries;
}

void CudaScoreStore::ProcessTokenSteps(absl::Span<const TokenStep> steps, absl::Span<absl::Status> statuses,
                                       absl::Span<kv::EvictionDecision> decisions) {
  absl::MutexLock lock(&mutex_);
  auto* context = static_cast<cuda::Context*>(context_.get());
  // Each dtype is one launch; in practice a batch has one dtype.
  for (kv::ScoreDType dtype : {kv::ScoreDType::kFp32, kv::ScoreDType::kFp16, kv::ScoreDType::kBf16}) {
    std::vector<size_t> members;
    std::vector<cuda::HeadTask> tasks;
    std::vector<char> input;
    std::vector<void*> wait_events;
    for (size_t i = 0; i < steps.size(); ++i) {
      const TokenStep& step = steps[i];
      if (step.scores.dtype != dtype) continue;
      Session* s = Find(step.session);
      if (s == nullptr) {
        statuses[i] = absl::NotFoundError(absl::StrCat("no score-store session ", step.session));
        continue;
      }
      statuses[i] = CheckTokenStepShape(step, s->geometry, s->entries, s->newest_position);
      if (statuses[i].ok()) statuses[i] = s->Reserve(s->entries + 1);
      if (!statuses[i].ok()) continue;
      const EvictionRule& rule = *step.rule;
      const uint32_t n = s->entries + 1;
      const uint32_t recent = rule.protected_recent;
      const uint32_t hi =
          recent == 0 ? kv::kMaxPosition + 1 : (step.position + 1 >= recent ? step.position + 1 - recent : 0);
      // Host scores are staged into one upload; device scores are read where they are, once their
      // writer's event has completed.
      const size_t value_bytes = kv::ScoreDTypeBytes(dtype);
      uint64_t base = 0;
      if (step.scores.on_device) {
        if (step.scores.ready_event != nullptr) wait_events.push_back(step.scores.ready_event);
      } else {
        base = input.size() / value_bytes;
        const char* data = static_cast<const char*>(step.scores.data);
        input.insert(input.end(), data, data + step.scores.num_values * value_bytes);
      }
      members.push_back(i);
      for (uint32_t h = 0; h < s->geometry.heads(); ++h) {
        cuda::HeadTask t;
        t.device_input = step.scores.on_device ? step.scores.data : nullptr;
        t.a_old = s->head(s->current, h);
        t.a_new = s->head(1 - s->current, h);
        t.positions = s->head_positions(h);
        t.input_offset = base + uint64_t{h} * n;
        t.n = n;
        t.position = step.position;
        t.alpha = rule.uses_scores() ? rule.layer_alpha[h / s->geometry.num_kv_heads] : 0.0f;
        t.candidate_lo = rule.protected_sinks;
        t.candidate_hi = hi;
        t.uses_scores = rule.uses_scores() ? 1 : 0;
        tasks.push_back(t);
      }
    }
    if (tasks.empty()) continue;
    std::vector<cuda::HeadResult> results(tasks.size());
    std::string error;
    if (cuda::RunTokenStep(context, tasks.data(), static_cast<uint32_t>(tasks.size()), input.data(), input.size(),
                           dtype, wait_events.data(), static_cast<uint32_t>(wait_events.size()),
                           results.data(), &error) != 0) {
      for (size_t i : members) statuses[i] = CudaError("token step", error);
      continue;
    }
    // Decide per step, then commit and evict on the device.
    std::vector<cuda::EvictTask> evict_tasks;
    std::vector<uint32_t> slots;
    std::vector<std::pair<size_t, size_t>> slot_ranges;  // (step index, first slot index)
    size_t task_index = 0;
    for (size_t i : members) {
      const TokenStep& step = steps[i];
      Session* s = Find(step.session);
      const EvictionRule& rule = *step.rule;
      const uint32_t heads = s->geometry.heads();
      const uint32_t n = s->entries + 1;
      const uint32_t k = (rule.evicts() && n > rule.budget) ? n - rule.budget : 0;
      const cuda::HeadResult* r = results.data() + task_index;
      task_index += heads;
      bool invalid = false;
      for (uint32_t h = 0; h < heads; ++h) invalid |= rule.uses_scores() && r[h].invalid != 0;
      if (invalid) {
        statuses[i] = absl::InvalidArgumentError(
            absl::StrCat("scores: a value is NaN, negative or above ", kMaxScoreValue,
                         " (scores are sums of softmax probabilities)"));
        continue;
      }
      const int committed = rule.uses_scores() ? 1 - s->current : s->current;
      const size_t first = slots.size();
      const size_t first_task = evict_tasks.size();
      for (uint32_t h = 0; h < heads && k > 0; ++h) {
        const uint32_t recent = rule.protected_recent;
        const bool contiguous = recent == 0 || r[h].count_at_or_above_hi == std::min(recent, n);
        if (k == 1 && contiguous && r[h].best_slot != 0xffffffffu) {
          slots.push_back(r[h].best_slot);
        } else {
          std::vector<float> host_scores(n);
          std::vector<uint32_t> host_positions(n);
          if (cuda::CopyToHost(host_scores.data(), s->head(committed, h), n * 4, &error) != 0 ||
              cuda::CopyToHost(host_positions.data(), s->head_positions(h), n * 4, &error) != 0) {
            statuses[i] = CudaError("read-back", error);
            break;
          }
          const std::vector<uint32_t> victims = SelectVictims(
              rule, rule.uses_scores() ? host_scores.data() : nullptr, host_positions.data(), n, k);
          slots.insert(slots.end(), victims.begin(), victims.end());
        }
        evict_tasks.push_back({s->head(committed, h), s->head_positions(h), n, k,
                               static_cast<uint32_t>(slots.size() - k)});
      }
      if (!statuses[i].ok()) {
        slots.resize(first);
        evict_tasks.resize(first_task);
        continue;
      }
      s->current = committed;
      s->entries = n - k;
      s->newest_position = step.position;
      decisions[i].evictions_per_head = k;
      decisions[i].entries_after = n - k;
      decisions[i].evicted_slots.assign(slots.begin() + first, slots.end());
      slot_ranges.push_back({i, first});
    }
    std::vector<uint32_t> evicted_positions(slots.size());
    if (!evict_tasks.empty() &&
        cuda::ApplyEvictions(context, evict_tasks.data(), static_cast<uint32_t>(evict_tasks.size()), slots.data(),
                             static_cast<uint32_t>(slots.size()), evicted_positions.data(), &error) != 0) {
      for (auto& [i, first] : slot_ranges) statuses[i] = CudaError("eviction", error);
      continue;
    }
    for (auto& [i, first] : slot_ranges) {
      decisions[i].evicted_positions.assign(evicted_positions.begin() + first,
                                            evicted_positions.begin() + first + decisions[i].evicted_slots.size());
    }
  }
}

absl::StatusOr<kv::EvictionDecision> CudaScoreStore::ProcessBulkPrefill(const BulkPrefill& prefill) {
  absl::MutexLock lock(&mutex_);
  Session* s = Find(prefill.session);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no score-store session ", prefill.session));
  if (absl::Status st = CheckHostScores(prefill.scores); !st.ok()) return st;
  if (absl::Status st = CheckBulkPrefillShape(prefill, s->geometry, s->entries); !st.ok()) return st;
  const uint32_t P = prefill.prompt_length;
  const uint32_t heads = s->geometry.heads();
  const uint64_t expected = uint64_t{heads} * P * P;
  if (absl::Status st = s->Reserve(P); !st.ok()) return st;
  const EvictionRule& rule = *prefill.rule;
  const uint32_t k = (rule.evicts() && P > rule.budget) ? P - rule.budget : 0;
  const int target = 1 - s->current;
  std::vector<cuda::BulkHeadTask> tasks(heads);
  for (uint32_t h = 0; h < heads; ++h) {
    tasks[h] = {s->head(target, h), s->head_positions(h), uint64_t{h} * P * P,
                rule.uses_scores() ? rule.layer_alpha[h / s->geometry.num_kv_heads] : 0.0f};
  }
  std::vector<uint32_t> victims(size_t{heads} * k);
  uint32_t invalid = 0;
  std::string error;
  if (cuda::RunBulkPrefill(static_cast<cuda::Context*>(context_.get()), tasks.data(), heads, prefill.scores.data,
                           expected * kv::ScoreDTypeBytes(prefill.scores.dtype), prefill.scores.dtype, P,
                           prefill.first_position, rule.uses_scores() ? 1 : 0, rule.protected_sinks,
                           rule.protected_recent, k, victims.data(), &invalid, &error) != 0) {
    return CudaError("bulk prefill", error);
  }
  if (invalid != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("scores: a value of the prompt's attention is NaN, negative or above ", kMaxScoreValue));
  }
  std::vector<cuda::EvictTask> evict_tasks;
  for (uint32_t h = 0; h < heads && k > 0; ++h) {
    std::sort(victims.begin() + size_t{h} * k, victims.begin() + size_t{h + 1} * k, std::greater<uint32_t>());
    evict_tasks.push_back({s->head(target, h), s->head_positions(h), P, k, h * k});
  }
  kv::EvictionDecision decision;
  decision.evictions_per_head = k;
  decision.entries_after = P - k;
  decision.evicted_positions.resize(victims.size());
  if (!evict_tasks.empty() &&
      cuda::ApplyEvictions(static_cast<cuda::Context*>(context_.get()), evict_tasks.data(), heads, victims.data(),
                           static_cast<uint32_t>(victims.size()), decision.evicted_positions.data(), &error) != 0) {
    return CudaError("eviction", error);
  }
  decision.evicted_slots = std::move(victims);
  s->current = target;
  s->entries = P - k;
  s->newest_position = prefill.first_position + P - 1;
  return decision;
}

absl::StatusOr<HeadSnapshot> CudaScoreStore::ReadHead(SessionHandle session, uint32_t layer, uint32_t kv_head) const {
  absl::MutexLock lock(&mutex_);
  Session* s = Find(session);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no score-store session ", session));
  if (layer >= s->geometry.num_layers || kv_head >= s->geometry.num_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat("no head (", layer, ", ", kv_head, ") in this session"));
  }
  const uint32_t h = layer * s->geometry.num_kv_heads + kv_head;
  HeadSnapshot snapshot;
  snapshot.positions.resize(s->entries);
  snapshot.scores.resize(s->entries);
  std::string error;
  if (s->entries > 0 &&
      (cuda::CopyToHost(snapshot.positions.data(), s->head_positions(h), s->entries * 4, &error) != 0 ||
       cuda::CopyToHost(snapshot.scores.data(), s->head(s->current, h), s->entries * 4, &error) != 0)) {
    return CudaError("read-back", error);
  }
  return snapshot;
}

absl::Status CudaScoreStore::SeedEntries(SessionHandle session, absl::Span<const uint32_t> positions,
                                         uint32_t entries) {
  absl::MutexLock lock(&mutex_);
  Session* s = Find(session);
  if (s == nullptr) return absl::NotFoundError(absl::StrCat("no score-store session ", session));
  if (absl::Status st = CheckSeed(s->geometry, s->entries, positions, entries); !st.ok()) return st;
  if (absl::Status st = s->Reserve(entries + 1); !st.ok()) return st;
  const std::vector<float> zeros(entries, 0.0f);
  std::string error;
  for (uint32_t h = 0; h < s->geometry.heads(); ++h) {
    if (cuda::CopyToDevice(s->head_positions(h), positions.data() + size_t{h} * entries, entries * 4, &error) != 0 ||
        cuda::CopyToDevice(s->head(s->current, h), zeros.data(), entries * 4, &error) != 0) {
      return CudaError("seed", error);
    }
  }
  uint32_t newest = 0;
  for (uint32_t p : positions) newest = std::max(newest, p);
  s->entries = entries;
  s->newest_position = newest;
  return absl::OkStatus();
}

size_t CudaScoreStore::BytesHeld() const {
  absl::MutexLock lock(&mutex_);
  size_t total = 0;
  for (const auto& [handle, s] : sessions_) total += size_t{s->geometry.heads()} * s->capacity * kStoreBytesPerEntry;
  return total;
}

}  // namespace a2sf::cachemgr
