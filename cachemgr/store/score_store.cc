#include "cachemgr/store/score_store.h"

#include "absl/strings/str_cat.h"

namespace a2sf::cachemgr {

absl::Status CheckGeometry(SessionGeometry geometry) {
  if (geometry.num_layers == 0 || geometry.num_kv_heads == 0) {
    return absl::InvalidArgumentError("shape: num_layers and num_kv_heads must be >= 1");
  }
  return absl::OkStatus();
}

namespace {

// The view's [layers, KV heads] against the session's, where the sender gave them.
absl::Status CheckLeadingDims(const ScoreView& scores, SessionGeometry geometry) {
  if (scores.layers == 0 && scores.kv_heads == 0) return absl::OkStatus();
  if (scores.layers == geometry.num_layers && scores.kv_heads == geometry.num_kv_heads) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("scores.shape: [", scores.layers, ", ", scores.kv_heads,
                                                 ", ...] (layers, KV heads), the session's are [", geometry.num_layers,
                                                 ", ", geometry.num_kv_heads, "]"));
}

}  // namespace

absl::Status CheckTokenStepShape(const TokenStep& step, SessionGeometry geometry, uint32_t entries,
                                 uint32_t newest_position) {
  if (step.rule == nullptr) return absl::InvalidArgumentError("token step without an eviction rule");
  if (absl::Status dims = CheckLeadingDims(step.scores, geometry); !dims.ok()) return dims;
  const uint64_t expected = uint64_t{geometry.heads()} * (uint64_t{entries} + 1);
  if (step.scores.num_values != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "scores: expected ", geometry.num_layers, " layers x ", geometry.num_kv_heads, " KV heads x ",
        entries + 1, " entries (", entries, " cached + the new one) = ", expected, " values, got ",
        step.scores.num_values));
  }
  if (step.scores.data == nullptr && expected > 0) {
    return absl::InvalidArgumentError("scores: no data");
  }
  if (step.position > kv::kMaxPosition) {
    return absl::InvalidArgumentError(
        absl::StrCat("position: ", step.position, " exceeds the largest supported position ", kv::kMaxPosition));
  }
  if (entries > 0 && step.position <= newest_position) {
    return absl::InvalidArgumentError(absl::StrCat("position: ", step.position,
                                                   " is not after the newest cached position ",
                                                   newest_position));
  }
  return absl::OkStatus();
}

absl::Status CheckHostScores(const ScoreView& scores) {
  if (!scores.on_device) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "scores: in GPU memory, which only the cuda score store reads, and only in token steps");
}

absl::Status CheckSeed(SessionGeometry geometry, uint32_t current_entries, absl::Span<const uint32_t> positions,
                       uint32_t entries) {
  if (current_entries != 0) return absl::FailedPreconditionError("seed: the session already holds entries");
  if (positions.size() != size_t{geometry.heads()} * entries) {
    return absl::InvalidArgumentError(absl::StrCat("seed: expected ", size_t{geometry.heads()} * entries,
                                                   " positions, got ", positions.size()));
  }
  for (uint32_t p : positions) {
    if (p > kv::kMaxPosition) return absl::InvalidArgumentError("seed: position out of range");
  }
  return absl::OkStatus();
}

absl::Status CheckBulkPrefillShape(const BulkPrefill& prefill, SessionGeometry geometry, uint32_t entries) {
  if (prefill.rule == nullptr) return absl::InvalidArgumentError("bulk prefill without an eviction rule");
  if (entries != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("bulk prefill needs an empty session; this one holds ", entries, " entries per head"));
  }
  const uint32_t P = prefill.prompt_length;
  if (P == 0) return absl::InvalidArgumentError("prompt_length: must be >= 1");
  if (absl::Status dims = CheckLeadingDims(prefill.scores, geometry); !dims.ok()) return dims;
  if (uint64_t{prefill.first_position} + P - 1 > kv::kMaxPosition) {
    return absl::InvalidArgumentError("position: prompt positions exceed the largest supported position");
  }
  // P * P * heads can pass 2^64 for a hostile P: an overflow is a mismatch, never a wrapped match.
  uint64_t expected = 0;
  const bool overflow = __builtin_mul_overflow(uint64_t{P}, uint64_t{P}, &expected) ||
                        __builtin_mul_overflow(expected, uint64_t{geometry.heads()}, &expected);
  if (overflow || prefill.scores.num_values != expected || prefill.scores.data == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("scores: expected ", geometry.num_layers, " x ",
                                                   geometry.num_kv_heads, " x ", P, " x ", P, " = ", overflow ? std::string("more than 2^64") : absl::StrCat(expected),
                                                   " values, got ", prefill.scores.num_values));
  }
  return absl::OkStatus();
}

}  // namespace a2sf::cachemgr
