// ScoreRing: the co-located data plane between a worker and the cache manager. A shared-memory
// segment holds a ring of slots; the worker writes a step's packed scores straight into a slot and
// publishes it by bumping a counter, the cache manager reads the scores in place, writes the decision
// into the same slot and bumps its own counter. Both sides sleep on the counters with futexes (after a
// short spin), so a step costs no copy, no serialisation and no socket round trip. gRPC remains the
// control plane: the session is opened, attached and closed there, and a worker whose segment cannot
// be offered simply sends scores inline.
//
// One producer (the worker's job) and one consumer (the cache manager's stream handler) per ring.
// The segment is an anonymous memfd the worker creates and seals against shrinking and growing
// (F_SEAL_SHRINK | F_SEAL_GROW): the cache manager receives the descriptor itself (SCM_RIGHTS over
// its ring socket, common/shm/ring_handoff.h), checks the seals and the size with F_GET_SEALS and
// fstat, allocates every page, and only then maps it. So nothing the worker does to the segment
// afterwards -- truncating it, punching holes, rewriting headers, stopping -- can fault the cache
// manager's mapping (no SIGBUS), and there is no name a peer could point at a segment it cannot open
// itself. The geometry is read from the header once; every later field a slot says is bounds-checked.
// Nothing is left behind when either process dies (the memfd has no name).
#ifndef A2SF_COMMON_SHM_SCORE_RING_H_
#define A2SF_COMMON_SHM_SCORE_RING_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/kv/eviction_decision.h"

namespace a2sf {

// RingStep::kind of a token step whose scores are not in the slot but in the session's device buffer
// (OpenSessionRequest.device_scores, CUDA IPC): the slot carries only the header -- shape, dtype and
// payload_bytes describe the scores at the start of that buffer -- and the decision comes back in
// the slot as usual. Outside a2sf.v1.StepKind's values, so no proto step can be mistaken for it.
inline constexpr uint32_t kRingStepKindDeviceToken = 0x100;

// What the worker writes into a slot before publishing it.
struct RingStep {
  uint64_t step = 0;
  uint32_t kind = 0;      // a2sf.v1.StepKind value, or kRingStepKindDeviceToken
  uint32_t dtype = 0;     // a2sf.v1.ScoreDType value
  uint32_t position = 0;
  uint32_t num_dims = 0;
  uint32_t shape[4] = {0, 0, 0, 0};
  uint64_t payload_bytes = 0;
};

// What the cache manager writes back: the slot layout of a kv::EvictionDecision (with its arrays after
// it), converted only by CompleteDecision and ReadDecision. `code` is an absl::StatusCode value (0: OK).
struct RingDecision {
  uint64_t step = 0;
  int32_t code = 0;
  uint32_t evictions_per_head = 0;
  uint32_t entries_after = 0;
  uint32_t num_values = 0;  // evicted_positions (and evicted_slots, if has_slots) hold this many
  uint32_t has_slots = 0;   // 0 for a pipelined session's decision, which names positions only
  char message[240] = {};   // the error, when code != 0
};

// A decision slot as the worker reads it (ScoreRing::ReadDecision): the cache manager's refusal, or
// the decision and the step the cache manager says it answers (the reader, which knows which step it
// published there, checks it).
struct RingAnswer {
  absl::Status refusal;  // not OK: the cache manager refused the step (its code and message)
  uint64_t step = 0;
  kv::EvictionDecision decision;
};

class ScoreRing {
 public:
  static constexpr uint32_t kMaxSlots = 64;
  static constexpr uint64_t kMaxSlotBytes = uint64_t{1} << 30;
  // Evictions per decision a slot has room for, per head (token steps evict at most one).
  static constexpr uint32_t kMaxDecisionEvictionsPerHead = 4;

  // Bytes a slot needs for `payload_bytes` of scores and decisions over `heads` heads.
  static uint64_t SlotBytesFor(uint64_t payload_bytes, uint32_t heads);

  // The worker's side: creates a sealed memfd segment, every page reserved.
  static absl::StatusOr<std::unique_ptr<ScoreRing>> Create(uint32_t num_slots, uint64_t slot_bytes, uint32_t heads);
  // The cache manager's side: maps the segment behind `fd` (not taken over; the caller closes it) and
  // checks it against the offer. FAILED_PRECONDITION for a descriptor that is not a read-write memfd
  // sealed against shrinking and growing; INVALID_ARGUMENT for a bad size or header.
  static absl::StatusOr<std::unique_ptr<ScoreRing>> Attach(int fd, uint32_t num_slots, uint64_t slot_bytes);
  ~ScoreRing();

  uint32_t num_slots() const { return num_slots_; }
  uint64_t slot_bytes() const { return slot_bytes_; }
  uint32_t heads() const { return heads_; }
  uint64_t payload_capacity() const;
  // The creator's descriptor of the segment (for handing it over); -1 on the attaching side.
  int fd() const { return fd_; }

  // Worker: where the scores of sequence number `seq` go (slot seq % num_slots). REQUIRES: fewer than
  // num_slots steps outstanding.
  void* payload(uint64_t seq);
  void Publish(uint64_t seq, const RingStep& step);
  // Publishes a header-only step (kRingStepKindDeviceToken: the scores are on the GPU).
  void PublishDeviceStep(uint64_t seq, RingStep step) {
    step.kind = kRingStepKindDeviceToken;
    Publish(seq, step);
  }
  // Waits until the decision of `seq` is in (or the peer closed the ring, or `timeout` passed: false).
  bool WaitDecision(uint64_t seq, absl::Duration timeout);
  // The decision of `seq` and its slots/positions arrays.
  const RingDecision& decision(uint64_t seq) const;
  const uint32_t* decision_slots(uint64_t seq) const;
  const uint32_t* decision_positions(uint64_t seq) const;

  // Cache manager: waits until step `seq` is published (false on timeout or closure).
  bool WaitStep(uint64_t seq, absl::Duration timeout);
  const RingStep& step(uint64_t seq) const;
  const void* step_payload(uint64_t seq) const;
  RingDecision* mutable_decision(uint64_t seq);
  uint32_t* mutable_decision_slots(uint64_t seq);
  uint32_t* mutable_decision_positions(uint64_t seq);
  void Complete(uint64_t seq);

  // The ring's one conversion of the contract's decision. Cache manager: writes the outcome of `seq`
  // (step `step`) -- the decision, or the error that ends the ring -- and completes the slot. A
  // decision the slot has no room for (more than kMaxDecisionEvictionsPerHead per head, or not
  // [heads()][evictions_per_head] values) is written as an error instead. Returns what was written.
  absl::Status CompleteDecision(uint64_t seq, uint64_t step, const absl::StatusOr<kv::EvictionDecision>& outcome);
  // Worker: what the cache manager wrote into slot `seq`. DATA_LOSS for a malformed slot (everything
  // the peer wrote is checked); its refusal, whatever its code, is a RingAnswer.
  absl::StatusOr<RingAnswer> ReadDecision(uint64_t seq) const;

  // Either side: no more steps (the worker is done, or the cache manager stopped serving).
  void Close();
  bool closed() const;

 private:
  struct Header;
  ScoreRing(void* base, size_t bytes, int fd, uint32_t num_slots, uint64_t slot_bytes, uint32_t heads);
  char* slot(uint64_t seq) const;

  void* base_;
  size_t bytes_;
  int fd_;  // owned; -1 when attached
  // Read once: the peer can write the header, so the geometry in use never comes from it again.
  uint32_t num_slots_;
  uint64_t slot_bytes_;
  uint32_t heads_;
};

}  // namespace a2sf

#endif  // A2SF_COMMON_SHM_SCORE_RING_H_
