#include "cachemgr/session/lagged_layout.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include "common/kv/swap_remove.h"

namespace a2sf::cachemgr {

LaggedLayout::LaggedLayout(uint32_t heads, uint32_t lag) : heads_(heads), lag_(lag) {}

void LaggedLayout::Reserve(uint32_t entries) {
  if (entries <= stride_) return;
  const uint32_t stride = std::max<uint32_t>(entries, stride_ * 2 + 8);
  auto grow = [&](auto& values) {
    std::remove_reference_t<decltype(values)> grown(size_t(heads_) * stride);
    for (uint32_t h = 0; h < heads_ && stride_ > 0; ++h) {
      std::copy_n(values.begin() + size_t(h) * stride_, stride_, grown.begin() + size_t(h) * stride);
    }
    values.swap(grown);
  };
  grow(worker_positions_);
  grow(worker_to_manager_);
  grow(manager_to_worker_);
  stride_ = stride;
}

void LaggedLayout::CatchUp(uint64_t step) {
  while (!pending_.empty() && pending_.front().step + lag_ + 1 <= step) {
    ApplyToWorker(pending_.front());
    pending_.pop_front();
  }
}

// The worker's side: find each victim's slot by position, then apply the contract's swap-remove,
// exactly as KvCacheSlots::EvictPositions does.
void LaggedLayout::ApplyToWorker(const Pending& decision) {
  const uint32_t k = decision.per_head;
  scratch_slots_.resize(k);
  for (uint32_t h = 0; h < heads_; ++h) {
    uint32_t* positions = worker_positions_.data() + size_t(h) * stride_;
    int32_t* to_manager = worker_to_manager_.data() + size_t(h) * stride_;
    uint32_t* to_worker = manager_to_worker_.data() + size_t(h) * stride_;
    // Every victim is found: the store chose them among the worker's entries, each once.
    kv::FindVictimSlots(positions, worker_entries_, decision.positions.data() + size_t(h) * k, k,
                        scratch_slots_.data());
    kv::SwapRemove(
        scratch_slots_.data(), k, worker_entries_, [](uint32_t, uint32_t) {},
        [&](uint32_t dst, uint32_t src) {
          positions[dst] = positions[src];
          to_manager[dst] = to_manager[src];
          if (to_manager[dst] >= 0) to_worker[to_manager[dst]] = dst;
        });
  }
  worker_entries_ -= k;
}

// The store's side: its decision's slots are in its own layout; mirror its swap-removes.
void LaggedLayout::ApplyToManager(const kv::EvictionDecision& decision, uint64_t step) {
  const uint32_t k = decision.evictions_per_head;
  if (k == 0) return;
  for (uint32_t h = 0; h < heads_; ++h) {
    int32_t* to_manager = worker_to_manager_.data() + size_t(h) * stride_;
    uint32_t* to_worker = manager_to_worker_.data() + size_t(h) * stride_;
    kv::SwapRemove(
        decision.evicted_slots.data() + size_t(h) * k, k, manager_entries_,
        [&](uint32_t, uint32_t slot) { to_manager[to_worker[slot]] = -1; },
        [&](uint32_t dst, uint32_t src) {
          to_worker[dst] = to_worker[src];
          to_manager[to_worker[dst]] = int32_t(dst);
        });
  }
  manager_entries_ -= k;
  Pending pending;
  pending.step = step;
  pending.per_head = k;
  pending.positions = decision.evicted_positions;
  pending_.push_back(std::move(pending));
}

void LaggedLayout::ToManagerLayout(const void* in, size_t value_bytes, void* out) const {
  const size_t n_in = size_t(worker_entries_) + 1, n_out = size_t(manager_entries_) + 1;
  auto gather = [&](auto value_type) {
    using T = decltype(value_type);
    const T* src = static_cast<const T*>(in);
    T* dst = static_cast<T*>(out);
    for (uint32_t h = 0; h < heads_; ++h) {
      const T* row = src + h * n_in;
      T* row_out = dst + h * n_out;
      const uint32_t* to_worker = manager_to_worker_.data() + size_t(h) * stride_;
      for (uint32_t m = 0; m < manager_entries_; ++m) row_out[m] = row[to_worker[m]];
      row_out[manager_entries_] = row[worker_entries_];  // the new entry, last on both sides
    }
  };
  if (value_bytes == 2) {
    gather(uint16_t{});
  } else {
    gather(uint32_t{});
  }
}

void LaggedLayout::CommitTokenStep(uint64_t step, uint32_t position, const kv::EvictionDecision& decision) {
  Reserve(worker_entries_ + 1);
  for (uint32_t h = 0; h < heads_; ++h) {
    const size_t base = size_t(h) * stride_;
    worker_positions_[base + worker_entries_] = position;
    worker_to_manager_[base + worker_entries_] = int32_t(manager_entries_);
    manager_to_worker_[base + manager_entries_] = worker_entries_;
  }
  ++worker_entries_;
  ++manager_entries_;
  ApplyToManager(decision, step);
}

void LaggedLayout::CommitBulkPrefill(uint32_t first_position, uint32_t prompt_length, const kv::EvictionDecision& decision) {
  Reserve(prompt_length);
  for (uint32_t h = 0; h < heads_; ++h) {
    const size_t base = size_t(h) * stride_;
    for (uint32_t i = 0; i < prompt_length; ++i) {
      worker_positions_[base + i] = first_position + i;
      worker_to_manager_[base + i] = int32_t(i);
      manager_to_worker_[base + i] = i;
    }
  }
  worker_entries_ = manager_entries_ = prompt_length;
  ApplyToManager(decision, 0);
}

void LaggedLayout::Seed(absl::Span<const uint32_t> positions, uint32_t entries) {
  Reserve(entries);
  for (uint32_t h = 0; h < heads_; ++h) {
    const size_t base = size_t(h) * stride_;
    for (uint32_t i = 0; i < entries; ++i) {
      worker_positions_[base + i] = positions[size_t(h) * entries + i];
      worker_to_manager_[base + i] = int32_t(i);
      manager_to_worker_[base + i] = i;
    }
  }
  worker_entries_ = manager_entries_ = entries;
  pending_.clear();
}

size_t LaggedLayout::BytesHeld() const {
  size_t bytes = (worker_positions_.size() + worker_to_manager_.size() + manager_to_worker_.size()) * 4;
  for (const Pending& p : pending_) bytes += p.positions.size() * 4;
  return bytes;
}

}  // namespace a2sf::cachemgr
