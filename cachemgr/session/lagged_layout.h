// LaggedLayout: the slot bookkeeping of a pipelined session (decision lag K >= 1).
//
// In a pipelined session the worker does not wait for decision t before it runs token t+1: it applies
// decision t just before it forwards the token of step t+K+1, by the evicted positions. Until then
// the evicted entries stay in its KV cache, in slots the cache manager no longer has. This class
// mirrors the worker's layout (appends at the end; a decision's entries removed by swap-remove in
// descending slot order at the step it becomes due) next to the cache manager's own layout (the
// store's, which drops victims at once), and translates each step's scores from the first to the
// second. The store never sees a pending victim, so selection, accumulators and policy swaps work
// exactly as in a synchronous session. docs/POLICIES.md, "Pipelined decisions", has the rules.
//
// Not thread-safe: owned by one session, used under its lock.
#ifndef A2SF_CACHEMGR_SESSION_LAGGED_LAYOUT_H_
#define A2SF_CACHEMGR_SESSION_LAGGED_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "absl/types/span.h"
#include "cachemgr/store/score_store.h"

namespace a2sf::cachemgr {

inline constexpr uint32_t kMaxDecisionLag = 64;

class LaggedLayout {
 public:
  LaggedLayout(uint32_t heads, uint32_t lag);

  uint32_t lag() const { return lag_; }
  // Entries per head in the worker's cache (pending victims included) and in the store.
  uint32_t worker_entries() const { return worker_entries_; }
  uint32_t manager_entries() const { return manager_entries_; }
  size_t pending_decisions() const { return pending_.size(); }

  // Applies to the worker mirror every pending decision the worker has applied before it forwards
  // the token of `step` (those of steps <= step - lag - 1). Idempotent, so a rejected step can be
  // retried.
  void CatchUp(uint64_t step);

  // Gathers a worker-layout payload [heads][worker_entries() + 1] of `value_bytes`-sized values into
  // the store's layout [heads][manager_entries() + 1], dropping the entries already evicted there.
  // `out` must hold heads * (manager_entries() + 1) values.
  void ToManagerLayout(const void* in, size_t value_bytes, void* out) const;

  // Records a processed token step: one entry appended on both sides at `position`, then the store's
  // decision (slots in the store's layout, descending per head) queued for the worker.
  void CommitTokenStep(uint64_t step, uint32_t position, const kv::EvictionDecision& decision);
  // Records a bulk prefill (step 0): `prompt_length` entries at first_position... on both sides.
  void CommitBulkPrefill(uint32_t first_position, uint32_t prompt_length, const kv::EvictionDecision& decision);
  // Both sides hold the same `entries` per head at `positions` ([heads][entries]) and nothing is pending.
  void Seed(absl::Span<const uint32_t> positions, uint32_t entries);

  size_t BytesHeld() const;

 private:
  struct Pending {
    uint64_t step = 0;
    uint32_t per_head = 0;
    std::vector<uint32_t> positions;  // [heads][per_head]
  };
  void Reserve(uint32_t entries);
  void ApplyToWorker(const Pending& decision);
  void ApplyToManager(const kv::EvictionDecision& decision, uint64_t step);

  const uint32_t heads_;
  const uint32_t lag_;
  uint32_t stride_ = 0;  // allocated slots per head
  uint32_t worker_entries_ = 0;
  uint32_t manager_entries_ = 0;
  // Per head, `stride_` values each. worker_positions_/worker_to_manager_ by worker slot (-1: the
  // store has evicted the entry; the worker has not yet), manager_to_worker_ by store slot.
  std::vector<uint32_t> worker_positions_;
  std::vector<int32_t> worker_to_manager_;
  std::vector<uint32_t> manager_to_worker_;
  std::deque<Pending> pending_;
  std::vector<uint32_t> scratch_slots_;
};

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_SESSION_LAGGED_LAYOUT_H_
