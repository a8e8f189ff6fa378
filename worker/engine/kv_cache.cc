#include "worker/engine/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/float16.h"
#include "common/kv/swap_remove.h"

namespace a2sf::worker {

KvCacheSlots::KvCacheSlots(int n_layers, int n_kv_heads, int head_dim, int capacity, WeightType kv_type,
                           bool host_storage)
    : n_kv_heads_(n_kv_heads),
      head_dim_(head_dim),
      capacity_(capacity),
      heads_(n_layers * n_kv_heads),
      kv_type_(IsKvType(kv_type) ? kv_type : WeightType::kF32),
      row_bytes_(KeyBytes(kv_type_, head_dim)),
      host_storage_(host_storage) {
  if (host_storage) {
    keys_.assign(size_t(heads_) * capacity * row_bytes_, 0);
    values_.assign(size_t(heads_) * capacity * row_bytes_, 0);
  }
  positions_.assign(size_t(heads_) * capacity, 0);
}

namespace {

// `n` floats as fp16, saturating: fp16 has no finite value above 65504, and an infinite key would turn
// the next scores into NaN, so a larger magnitude is held as +-65504; NaN stays NaN.
void StoreHalves(const float* in, uint8_t* out, int n) {
  uint16_t* halves = reinterpret_cast<uint16_t*>(out);
  FloatsToHalves(in, halves, size_t(n));
  for (int i = 0; i < n; ++i) {
    if ((halves[i] & 0x7fff) == 0x7c00) halves[i] = uint16_t(halves[i] - 1);  // +-infinity -> +-65504
  }
}

// `n` floats as q8_0 blocks (Q8_0Bytes(n) bytes), by the weights' rule (Traits). A block's scale is
// amax / 127 in fp16, so values are first held within +-65504 * 127 (beyond, the scale would be
// infinite and the block NaN) and a NaN as 0 (it has no integer value).
void StoreQ8_0(const float* in, uint8_t* out, int n) {
  constexpr float kLargest = 65504.0f * 127.0f;
  for (int b = 0; b * kQuantBlock < n; ++b) {
    const int values = std::min(kQuantBlock, n - b * kQuantBlock);
    float block[kQuantBlock];
    for (int j = 0; j < values; ++j) {
      const float x = in[b * kQuantBlock + j];
      block[j] = std::isnan(x) ? 0.0f : std::clamp(x, -kLargest, kLargest);
    }
    Traits(WeightType::kQ8_0).from_float(block, out + size_t(b) * sizeof(BlockQ8_0), values);
  }
}

}  // namespace

void KvCacheSlots::Store(int layer, int kv_head, int slot, const float* key, const float* value) {
  uint8_t* k = keys_.data() + Offset(layer, kv_head, slot);
  uint8_t* v = values_.data() + Offset(layer, kv_head, slot);
  if (kv_type_ == WeightType::kF16) {
    StoreHalves(key, k, head_dim_);
    StoreHalves(value, v, head_dim_);
  } else if (kv_type_ == WeightType::kQ8_0) {
    StoreQ8_0(key, k, head_dim_);
    StoreQ8_0(value, v, head_dim_);
  } else {
    std::memcpy(k, key, row_bytes_);
    std::memcpy(v, value, row_bytes_);
  }
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
    const uint32_t* head_slots = slots.data() + size_t(h) * k;
    if (!kv::SlotsAreDescendingBelow(head_slots, k, uint32_t(entries_))) {
      return absl::InvalidArgumentError(absl::StrCat("eviction: head ", h, " slot list is not strictly descending ",
                                                     "within [0, ", entries_, ")"));
    }
    for (uint32_t j = 0; j < k && !expected_positions.empty(); ++j) {
      const uint32_t held = positions_[size_t(h) * capacity_ + head_slots[j]];
      if (held != expected_positions[size_t(h) * k + j]) {
        return absl::FailedPreconditionError(absl::StrCat("eviction: head ", h, " slot ", head_slots[j],
                                                          " holds position ", held, ", the decision names position ",
                                                          expected_positions[size_t(h) * k + j], " (out of sync)"));
      }
    }
  }
  victim_slots_.assign(slots.begin(), slots.end());
  RemoveVictims(k);
  return absl::OkStatus();
}

absl::Status KvCacheSlots::EvictPositions(uint32_t k, absl::Span<const uint32_t> positions) {
  if (k == 0) return absl::OkStatus();
  if (absl::Status s = CheckDecisionSize(k, positions.size(), "positions"); !s.ok()) return s;
  // Find every victim's slot before touching anything.
  victim_slots_.resize(positions.size());
  for (int h = 0; h < heads_; ++h) {
    if (!kv::FindVictimSlots(positions_.data() + size_t(h) * capacity_, uint32_t(entries_),
                             positions.data() + size_t(h) * k, k, victim_slots_.data() + size_t(h) * k)) {
      return absl::FailedPreconditionError(absl::StrCat("eviction: head ", h, " does not hold every position of the ",
                                                        "decision (or it names one twice): out of sync"));
    }
  }
  RemoveVictims(k);
  return absl::OkStatus();
}

// The contract's swap-remove on every head's positions and, in host storage, keys and values.
void KvCacheSlots::RemoveVictims(uint32_t k) {
  entries_before_eviction_ = entries_;
  for (int h = 0; h < heads_; ++h) {
    uint32_t* positions = positions_.data() + size_t(h) * capacity_;
    kv::SwapRemove(
        victim_slots_.data() + size_t(h) * k, k, uint32_t(entries_), [](uint32_t, uint32_t) {},
        [&](uint32_t dst, uint32_t src) {
          positions[dst] = positions[src];
          if (!host_storage_) return;
          const size_t to = (size_t(h) * capacity_ + dst) * row_bytes_;
          const size_t from = (size_t(h) * capacity_ + src) * row_bytes_;
          std::memcpy(&keys_[to], &keys_[from], row_bytes_);
          std::memcpy(&values_[to], &values_[from], row_bytes_);
        });
  }
  entries_ -= int(k);
}

}  // namespace a2sf::worker
