#include "worker/engine/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include "absl/strings/str_cat.h"

namespace a2sf::worker {

KvCacheSlots::KvCacheSlots(int n_layers, int n_kv_heads, int head_dim, int capacity, bool host_storage)
    : n_kv_heads_(n_kv_heads),
      head_dim_(head_dim),
      capacity_(capacity),
      heads_(n_layers * n_kv_heads),
      host_storage_(host_storage) {
  if (host_storage) {
    keys_.assign(size_t(heads_) * capacity * head_dim, 0.0f);
    values_.assign(size_t(heads_) * capacity * head_dim, 0.0f);
  }
  positions_.assign(size_t(heads_) * capacity, 0);
}

absl::Status KvCacheSlots::CheckDecisionSize(uint32_t k, size_t values, const char* what) const {
  if (k > uint32_t(entries_)) {
    return absl::InvalidArgumentError(absl::StrCat("eviction: ", k, " evictions per head but only ", entries_,
                                                   " entries are cached"));
  }
  if (values != size_t(heads_) * k) {
    return absl::InvalidArgumentError(absl::StrCat("eviction: expected ", size_t(heads_) * k, " ", what, " (", heads_,
                                                   " heads x ", k, "), got ", values));
  }
  return absl::OkStatus();
}

absl::Status KvCacheSlots::Evict(uint32_t k, absl::Span<const uint32_t> slots,
                                 absl::Span<const uint32_t> expected_positions) {
  if (k == 0) return absl::OkStatus();
  if (absl::Status s = CheckDecisionSize(k, slots.size(), "slots"); !s.ok()) return s;
  if (!expected_positions.empty() && expected_positions.size() != slots.size()) {
    return absl::InvalidArgumentError("eviction: positions and slots differ in length");
  }
  // Check everything before touching anything.
  for (int h = 0; h < heads_; ++h) {
    for (uint32_t j = 0; j < k; ++j) {
      const uint32_t slot = slots[size_t(h) * k + j];
      if (slot >= uint32_t(entries_) || (j > 0 && slot >= slots[size_t(h) * k + j - 1])) {
        return absl::InvalidArgumentError(absl::StrCat("eviction: head ", h, " slot list is not strictly descending ",
                                                       "within [0, ", entries_, ")"));
      }
      if (!expected_positions.empty() && positions_[size_t(h) * capacity_ + slot] != expected_positions[size_t(h) * k + j]) {
        return absl::FailedPreconditionError(absl::StrCat(
            "eviction: head ", h, " slot ", slot, " holds position ", positions_[size_t(h) * capacity_ + slot],
            ", the decision names position ", expected_positions[size_t(h) * k + j], " (out of sync)"));
      }
    }
  }
  move_dst_.clear();
  move_src_.clear();
  for (int h = 0; h < heads_; ++h) {
    int last = entries_;
    for (uint32_t j = 0; j < k; ++j) SwapRemove(h, int(slots[size_t(h) * k + j]), --last);
  }
  entries_ -= int(k);
  return absl::OkStatus();
}

// Called head by head, each head's slots in order, so the recorded moves are [head][j].
void KvCacheSlots::SwapRemove(int head, int slot, int last) {
  move_dst_.push_back(uint32_t(slot));
  move_src_.push_back(uint32_t(last));
  if (slot == last) return;
  positions_[size_t(head) * capacity_ + slot] = positions_[size_t(head) * capacity_ + last];
  if (!host_storage_) return;
  const size_t row = size_t(head_dim_) * sizeof(float);
  const size_t dst = (size_t(head) * capacity_ + slot) * head_dim_, src = (size_t(head) * capacity_ + last) * head_dim_;
  std::memcpy(&keys_[dst], &keys_[src], row);
  std::memcpy(&values_[dst], &values_[src], row);
}

absl::Status KvCacheSlots::EvictPositions(uint32_t k, absl::Span<const uint32_t> positions) {
  if (k == 0) return absl::OkStatus();
  if (absl::Status s = CheckDecisionSize(k, positions.size(), "positions"); !s.ok()) return s;
  // Find every victim's slot before touching anything (positions are distinct within a head).
  victim_slots_.resize(positions.size());
  for (int h = 0; h < heads_; ++h) {
    const uint32_t* held = positions_.data() + size_t(h) * capacity_;
    uint32_t* slots = victim_slots_.data() + size_t(h) * k;
    for (uint32_t j = 0; j < k; ++j) {
      const uint32_t wanted = positions[size_t(h) * k + j];
      const uint32_t* found = std::find(held, held + entries_, wanted);
      if (found == held + entries_ || std::find(slots, slots + j, uint32_t(found - held)) != slots + j) {
        return absl::FailedPreconditionError(absl::StrCat("eviction: head ", h, " does not hold position ", wanted,
                                                          " (or names it twice): out of sync"));
      }
      slots[j] = uint32_t(found - held);
    }
    std::sort(slots, slots + k, std::greater<uint32_t>());
  }
  move_dst_.clear();
  move_src_.clear();
  for (int h = 0; h < heads_; ++h) {
    int last = entries_;
    for (uint32_t j = 0; j < k; ++j) SwapRemove(h, int(victim_slots_[size_t(h) * k + j]), --last);
  }
  entries_ -= int(k);
  return absl::OkStatus();
}

}  // namespace a2sf::worker
