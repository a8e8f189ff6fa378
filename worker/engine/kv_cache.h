// KvCacheSlots: the evictable KV cache of one sequence. Per layer and per KV head, `capacity` slots
// of (key, value, position). Keys are stored after RoPE, so evicting one entry never changes another.
// Every head holds the same number of entries; a token appends one to each, and an eviction decision
// (a kv::EvictionDecision's slots or positions) removes entries per head by the contract's swap-remove
// (common/kv/swap_remove.h; docs/POLICIES.md, "Slots").
// Memory is allocated for `capacity` entries -- the budget plus one -- not for the context.
// Keys and values are held as `kv_type`: WeightType::kF32 (exact), kF16 (IEEE binary16, rounded to
// nearest even: half the bytes, what llama.cpp holds by default; a magnitude above 65504 is held as
// +-65504, not as infinity), or kQ8_0 (each row as GGUF q8_0 blocks of 32, the last one shorter when
// head_dim is not a multiple of 32 -- Q8_0Bytes; 8.5 bits a value for heads a multiple of 32,
// llama.cpp's `--cache-type-k/v q8_0`; values beyond +-65504 x 127 are held there and NaN as 0, so
// every value held is finite).
// With host_storage = false (the CUDA backend) keys and values live on the device: this class keeps
// the positions and entry count and keeps each eviction's victim slots for the device to apply the same
// rule to (cuda::SwapRemoveEntries).
// Not thread-safe; owned by one Engine.
#ifndef A2SF_WORKER_ENGINE_KV_CACHE_H_
#define A2SF_WORKER_ENGINE_KV_CACHE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "worker/model/weights.h"

namespace a2sf::worker {

class KvCacheSlots {
 public:
  // kv_type: kF32, kF16 or kQ8_0 (IsKvType; Engine::Create refuses others, which this class holds as
  // kF32).
  KvCacheSlots(int n_layers, int n_kv_heads, int head_dim, int capacity, WeightType kv_type = WeightType::kF32,
               bool host_storage = true);

  int capacity() const { return capacity_; }
  int entries() const { return entries_; }
  int head_dim() const { return head_dim_; }
  WeightType kv_type() const { return kv_type_; }

  // A head's keys / values, slots [0, capacity) of KeyBytes(kv_type(), head_dim()) bytes each (head_dim
  // elements of kv_type()), in host storage.
  const void* keys(int layer, int kv_head) const { return keys_.data() + Offset(layer, kv_head, 0); }
  const void* values(int layer, int kv_head) const { return values_.data() + Offset(layer, kv_head, 0); }
  // Writes a slot's key and value (head_dim floats each), in kv_type(). Host storage only.
  void Store(int layer, int kv_head, int slot, const float* key, const float* value);
  uint32_t position(int layer, int kv_head, int slot) const { return positions_[Index(layer, kv_head) * capacity_ + slot]; }
  void set_position(int layer, int kv_head, int slot, uint32_t p) { positions_[Index(layer, kv_head) * capacity_ + slot] = p; }

  // The slot a new token writes to in every head (== entries()). REQUIRES: entries() < capacity().
  int append_slot() const { return entries_; }
  // Counts the appended token once all layers have written their slot.
  void CommitAppend() { ++entries_; }

  // Applies an eviction: [layer][kv_head][evictions_per_head] slots, each head's list strictly
  // descending. INVALID_ARGUMENT (and nothing changed) for a malformed decision; if
  // `expected_positions` is non-empty, they must match the evicted entries (FAILED_PRECONDITION).
  absl::Status Evict(uint32_t evictions_per_head, absl::Span<const uint32_t> slots,
                     absl::Span<const uint32_t> expected_positions);

  // Applies a decision given by positions ([layer][kv_head][evictions_per_head]), as a pipelined
  // session sends them: each head's named entries are removed by swap-remove in descending slot order.
  // FAILED_PRECONDITION (and nothing changed) if a head does not hold a named position.
  absl::Status EvictPositions(uint32_t evictions_per_head, absl::Span<const uint32_t> positions);

  void Clear() { entries_ = 0; }
  size_t bytes_held() const { return size_t(entries_) * heads_ * row_bytes_ * 2; }
  size_t bytes_allocated() const { return size_t(heads_) * capacity_ * row_bytes_ * 2; }
  // Bytes of keys and values a cache of this shape allocates.
  static size_t BytesFor(int n_layers, int n_kv_heads, int head_dim, int capacity,
                         WeightType kv_type = WeightType::kF32) {
    return size_t(n_layers) * n_kv_heads * capacity * KeyBytes(kv_type, head_dim) * 2;
  }
  // Bytes of one cached key (or value): head_dim elements of kv_type (2 bytes each for kF16, q8_0
  // blocks for kQ8_0, else 4 bytes each). The one place that sizes a KV row.
  static size_t KeyBytes(WeightType kv_type, int head_dim) {
    if (kv_type == WeightType::kQ8_0) return Q8_0Bytes(head_dim);
    return size_t(head_dim) * (kv_type == WeightType::kF16 ? 2 : 4);
  }

  // The last Evict/EvictPositions: its victim slots, [head][evictions_per_head], each head's strictly
  // descending, and the entries per head before it -- what a device copy of the keys and values needs
  // to apply the same swap-removes.
  const std::vector<uint32_t>& last_victim_slots() const { return victim_slots_; }
  int last_entries_before_eviction() const { return entries_before_eviction_; }

 private:
  size_t Index(int layer, int kv_head) const { return size_t(layer) * n_kv_heads_ + kv_head; }
  // Byte offset of a slot's row.
  size_t Offset(int layer, int kv_head, int slot) const {
    return (Index(layer, kv_head) * capacity_ + slot) * row_bytes_;
  }

  int n_kv_heads_, head_dim_, capacity_, heads_;
  WeightType kv_type_;
  size_t row_bytes_;  // head_dim elements of kv_type_
  // Removes victim_slots_ ([heads][k], descending) from every head.
  void RemoveVictims(uint32_t k);
  // INVALID_ARGUMENT unless k <= entries and there are [heads][k] `what` values.
  absl::Status CheckDecisionSize(uint32_t k, size_t values, const char* what) const;

  int entries_ = 0;
  std::vector<uint8_t> keys_, values_;
  std::vector<uint32_t> positions_;
  std::vector<uint32_t> victim_slots_;  // the last eviction's victims: [heads][k]
  int entries_before_eviction_ = 0;
  bool host_storage_;
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_KV_CACHE_H_
