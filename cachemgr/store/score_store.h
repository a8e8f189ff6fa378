// ScoreStore: the accumulators (A) and entry positions of every session's KV cache, per layer and per
// KV head, and the batched "update scores, pick victims, evict" step that an EvictionRule defines.
//
// Layout and slots. Each (layer, KV head) of a session holds the same number of entries, in slots
// 0..n-1. A token step appends one entry (at slot n) to every head; when a head then holds more than
// the rule's budget, exactly enough entries are evicted to return to the budget. Victims are removed
// by the contract's swap-remove rule (common/kv/swap_remove.h); workers apply the same rule to their
// KV caches, so slots agree on both sides. A step's result is a kv::EvictionDecision, the type the
// worker receives; scores arrive as kv::ScoreDType values and positions are kv's uint32 positions.
//
// Atomicity. A step whose input is invalid (wrong entry count, NaN/Inf/negative scores) returns an
// error and leaves the session exactly as it was: scores are accumulated into a second buffer that only
// replaces the current one once every head of the step has been checked.
//
// Thread-safety. CreateSession/DestroySession are internally synchronised. Steps of distinct sessions
// may run concurrently (ProcessTokenSteps itself spreads a batch over threads); the caller must not
// process the same session from two threads at once, nor destroy a session while it is being stepped
// (SessionManager guarantees both).
#ifndef A2SF_CACHEMGR_STORE_SCORE_STORE_H_
#define A2SF_CACHEMGR_STORE_SCORE_STORE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cachemgr/policy/eviction_rule.h"
#include "common/kv/eviction_decision.h"
#include "common/kv/positions.h"
#include "common/kv/score_dtype.h"

namespace a2sf::cachemgr {

// Packed little-endian score values, not owned: in host memory, or (on_device) in GPU memory that a
// co-located worker shares (common/cuda/ipc.h), readable once `ready_event` (a cudaEvent_t, may be
// null) has completed. Only CudaScoreStore reads scores on the device, and only in token steps; the
// other stores and steps answer FAILED_PRECONDITION (CheckHostScores).
struct ScoreView {
  kv::ScoreDType dtype = kv::ScoreDType::kFp32;
  const void* data = nullptr;
  size_t num_values = 0;
  bool on_device = false;
  void* ready_event = nullptr;
  // The sender's shape's first two dimensions, [layers, KV heads, ...], checked against the session's
  // (a transposed shape has the right count); 0: not given.
  uint32_t layers = 0, kv_heads = 0;
};

// Largest score value a store accepts. A step's score is a sum of softmax probabilities over the query
// heads of one KV head, so a real one is at most the group size; bounding it keeps every accumulator
// finite (at most kMaxScoreValue * (kv::kMaxPosition + 1) < 2^48 with alpha <= 1), where a peer's finite
// but huge values (3e38) would otherwise overflow them to inf. Larger values are INVALID_ARGUMENT.
// (cuda_kernels.cu repeats the value: keep them equal.)
inline constexpr float kMaxScoreValue = 65536.0f;

struct SessionGeometry {
  uint32_t num_layers = 0;
  uint32_t num_kv_heads = 0;
  uint32_t heads() const { return num_layers * num_kv_heads; }
};

using SessionHandle = uint64_t;

struct TokenStep {
  SessionHandle session = 0;
  const EvictionRule* rule = nullptr;
  // Position of the appended entry; larger than every position the session holds.
  uint32_t position = 0;
  // [num_layers][num_kv_heads][entries + 1]: the step's s_g for the current entries and the new one.
  ScoreView scores;
};

struct BulkPrefill {
  SessionHandle session = 0;
  const EvictionRule* rule = nullptr;
  uint32_t first_position = 0;
  uint32_t prompt_length = 0;
  // [num_layers][num_kv_heads][prompt_length][prompt_length], row q = query q; the upper triangle
  // (k > q) is ignored.
  ScoreView scores;
};

struct HeadSnapshot {
  std::vector<uint32_t> positions;  // by slot
  std::vector<float> scores;        // by slot
};

// The growth rule every store follows, so that a caller can charge a byte budget before anything is
// allocated: a session starts with room for max(expected_entries, kMinReservedEntries) entries per
// head and, when a step needs `needed` > capacity, grows to max(needed, 2 * capacity). Each entry of
// each head costs kStoreBytesPerEntry (two accumulator buffers and a position).
inline constexpr uint32_t kMinReservedEntries = 8;
inline constexpr uint64_t kStoreBytesPerEntry = 12;
inline uint32_t InitialCapacity(uint32_t expected_entries) {
  return expected_entries > kMinReservedEntries ? expected_entries : kMinReservedEntries;
}
inline uint32_t GrownCapacity(uint32_t capacity, uint32_t needed) {
  if (needed <= capacity) return capacity;
  const uint64_t doubled = uint64_t{capacity} * 2;
  return doubled > needed ? uint32_t(doubled > 0xffffffffu ? 0xffffffffu : doubled) : needed;
}

class ScoreStore {
 public:
  virtual ~ScoreStore() = default;

  // "cpu" or "cuda".
  virtual std::string backend() const = 0;

  // Reserves room for `expected_entries` per head (typically budget + 1); more is allocated on demand.
  // INVALID_ARGUMENT for an empty geometry.
  virtual absl::StatusOr<SessionHandle> CreateSession(SessionGeometry geometry,
                                                      uint32_t expected_entries) = 0;
  // NOT_FOUND for an unknown handle.
  virtual absl::Status DestroySession(SessionHandle session) = 0;

  virtual absl::StatusOr<uint32_t> EntriesPerHead(SessionHandle session) const = 0;

  // Runs one token step for each element of `steps` (distinct sessions), possibly in parallel.
  // statuses[i] and decisions[i] receive step i's outcome; a failed step changed nothing.
  virtual void ProcessTokenSteps(absl::Span<const TokenStep> steps, absl::Span<absl::Status> statuses,
                                 absl::Span<kv::EvictionDecision> decisions) = 0;

  // Appends a whole prompt to an empty session and keeps the `budget` best entries by
  // A_k = sum_{q >= k} alpha^(P-1-q) s[q][k] (or by position for position-keyed rules).
  virtual absl::StatusOr<kv::EvictionDecision> ProcessBulkPrefill(const BulkPrefill& prefill) = 0;

  virtual absl::StatusOr<HeadSnapshot> ReadHead(SessionHandle session, uint32_t layer,
                                                uint32_t kv_head) const = 0;

  // Fills an empty session with `entries` entries per head at the given positions ([heads][entries],
  // slot order, each head's positions distinct) and scores 0: used to take over a sequence whose
  // policy state was lost (a worker falling back from a vanished cache manager).
  virtual absl::Status SeedEntries(SessionHandle session, absl::Span<const uint32_t> positions,
                                   uint32_t entries) = 0;

  // Bytes of accumulators and positions held for all sessions.
  virtual size_t BytesHeld() const = 0;
};

// INVALID_ARGUMENT unless both dimensions are >= 1.
absl::Status CheckGeometry(SessionGeometry geometry);

// Checks that a token step's payload is [layers][KV heads][entries + 1] (its count, and its first two
// dimensions where the view has them) and that its position comes after `newest_position` (when the
// session holds entries).
absl::Status CheckTokenStepShape(const TokenStep& step, SessionGeometry geometry, uint32_t entries,
                                 uint32_t newest_position);

// Checks a SeedEntries call: an empty session, [heads][entries] positions within range.
absl::Status CheckSeed(SessionGeometry geometry, uint32_t current_entries, absl::Span<const uint32_t> positions,
                       uint32_t entries);

// FAILED_PRECONDITION for scores in GPU memory (a store or step that reads them on the host).
absl::Status CheckHostScores(const ScoreView& scores);

// Checks that a bulk prefill targets an empty session and carries [layers][KV heads][P][P] values.
absl::Status CheckBulkPrefillShape(const BulkPrefill& prefill, SessionGeometry geometry, uint32_t entries);

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_STORE_SCORE_STORE_H_
