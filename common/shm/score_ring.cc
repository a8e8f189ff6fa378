#include "common/shm/score_ring.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <new>

#include "absl/strings/str_cat.h"
#include "common/peer_strings.h"
#include "absl/time/clock.h"

namespace a2sf {

namespace {

constexpr uint64_t kMagic = 0x314752464653324full;  // "O2SFFRG1"
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 256;
constexpr size_t kStepBytes = 64;  // RingStep, padded
constexpr size_t kDecisionBytes = 320;  // RingDecision, padded
static_assert(sizeof(RingStep) <= kStepBytes);
static_assert(sizeof(RingDecision) <= kDecisionBytes);

size_t DecisionArrayBytes(uint32_t heads) {
  return size_t(heads) * ScoreRing::kMaxDecisionEvictionsPerHead * sizeof(uint32_t);
}

// Futexes on a shared mapping must not be FUTEX_PRIVATE: the two sides are different processes.
void FutexWait(std::atomic<uint32_t>* word, uint32_t expected, absl::Duration timeout) {
  timespec ts = absl::ToTimespec(timeout);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected, &ts, nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

// Waits until `counter` (the low 32 bits of a sequence count) passes `seq`, or `closed` is set.
bool WaitPast(std::atomic<uint32_t>* counter, const std::atomic<uint32_t>* closed, uint64_t seq,
              absl::Duration timeout) {
  const uint32_t target = uint32_t(seq + 1);
  auto done = [&] { return int32_t(counter->load(std::memory_order_acquire) - target) >= 0; };
  // A short spin first: a decision usually arrives within tens of microseconds.
  for (int i = 0; i < 4000; ++i) {
    if (done()) return true;
    if (closed->load(std::memory_order_acquire) != 0) return false;
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const uint32_t seen = counter->load(std::memory_order_acquire);
    if (int32_t(seen - target) >= 0) return true;
    if (closed->load(std::memory_order_acquire) != 0) return false;
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return false;
    FutexWait(counter, seen, std::min(left, absl::Milliseconds(20)));
  }
}

}  // namespace

struct ScoreRing::Header {
  uint64_t magic;
  uint32_t version;
  uint32_t num_slots;
  uint64_t slot_bytes;
  uint32_t heads;
  uint32_t reserved;
  alignas(64) std::atomic<uint32_t> published;  // steps published by the worker
  alignas(64) std::atomic<uint32_t> completed;  // decisions written by the cache manager
  alignas(64) std::atomic<uint32_t> closed;
};
static_assert(std::atomic<uint32_t>::is_always_lock_free);

uint64_t ScoreRing::SlotBytesFor(uint64_t payload_bytes, uint32_t heads) {
  const uint64_t bytes = kStepBytes + kDecisionBytes + 2 * DecisionArrayBytes(heads) + payload_bytes;
  return (bytes + 63) / 64 * 64;
}

ScoreRing::ScoreRing(void* base, size_t bytes, int fd, uint32_t num_slots, uint64_t slot_bytes, uint32_t heads)
    : base_(base), bytes_(bytes), fd_(fd), num_slots_(num_slots), slot_bytes_(slot_bytes), heads_(heads) {}

ScoreRing::~ScoreRing() {
  munmap(base_, bytes_);
  if (fd_ >= 0) close(fd_);
}

namespace {

constexpr int kRequiredSeals = F_SEAL_SHRINK | F_SEAL_GROW;

absl::Status CheckGeometry(uint32_t num_slots, uint64_t slot_bytes) {
  if (num_slots < 1 || num_slots > ScoreRing::kMaxSlots) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared_memory_ring.num_slots: must be in [1, ", ScoreRing::kMaxSlots, "], got ", num_slots));
  }
  if (slot_bytes < kStepBytes + kDecisionBytes + 64 || slot_bytes > ScoreRing::kMaxSlotBytes || slot_bytes % 64 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("shared_memory_ring.slot_bytes: must be a multiple of 64 in [",
                                                   kStepBytes + kDecisionBytes + 64, ", ", ScoreRing::kMaxSlotBytes,
                                                   "], got ", slot_bytes));
  }
  return absl::OkStatus();
}

// Checks that `fd` is a read-write memfd whose size can no longer change, and that it holds `bytes`.
absl::Status CheckSealedSegment(int fd, size_t bytes) {
  const int seals = fcntl(fd, F_GET_SEALS);
  if (seals < 0 || (seals & kRequiredSeals) != kRequiredSeals) {
    return absl::FailedPreconditionError(
        "shared_memory_ring: the descriptor is not a memfd sealed with F_SEAL_SHRINK | F_SEAL_GROW (a segment "
        "whose size can change could fault the cache manager)");
  }
  if ((fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDWR) {
    return absl::FailedPreconditionError("shared_memory_ring: the descriptor is not open for reading and writing");
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || uint64_t(st.st_size) != bytes) {
    return absl::InvalidArgumentError(absl::StrCat("shared_memory_ring: the segment holds ", st.st_size,
                                                   " bytes, the offer describes ", bytes));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ScoreRing>> ScoreRing::Create(uint32_t num_slots, uint64_t slot_bytes, uint32_t heads) {
  if (absl::Status s = CheckGeometry(num_slots, slot_bytes); !s.ok()) return s;
  if (SlotBytesFor(0, heads) > slot_bytes) return absl::InvalidArgumentError("slot_bytes: too small for the decisions");
  static_assert(sizeof(Header) <= kHeaderBytes);
  const size_t bytes = kHeaderBytes + size_t(num_slots) * slot_bytes;
  const int fd = memfd_create("a2sf-score-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return absl::InternalError(absl::StrCat("memfd_create: ", std::strerror(errno)));
  // Reserve the pages now: a sparse segment where memory is short would fail later, on a write.
  int err = ftruncate(fd, off_t(bytes)) != 0 ? errno : posix_fallocate(fd, 0, off_t(bytes));
  if (err == 0 && fcntl(fd, F_ADD_SEALS, kRequiredSeals | F_SEAL_SEAL) != 0) err = errno;
  if (err != 0) {
    close(fd);
    return absl::ResourceExhaustedError(
        absl::StrCat("reserving ", bytes, " bytes of shared memory for a score ring: ", std::strerror(err)));
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    close(fd);
    return absl::ResourceExhaustedError(absl::StrCat("mmap of a score ring: ", std::strerror(errno)));
  }
  auto* header = new (base) Header();
  header->magic = kMagic;
  header->version = kVersion;
  header->num_slots = num_slots;
  header->slot_bytes = slot_bytes;
  header->heads = heads;
  header->published.store(0);
  header->completed.store(0);
  header->closed.store(0);
  return std::unique_ptr<ScoreRing>(new ScoreRing(base, bytes, fd, num_slots, slot_bytes, heads));
}

absl::StatusOr<std::unique_ptr<ScoreRing>> ScoreRing::Attach(int fd, uint32_t num_slots, uint64_t slot_bytes) {
  if (absl::Status s = CheckGeometry(num_slots, slot_bytes); !s.ok()) return s;
  const size_t bytes = kHeaderBytes + size_t(num_slots) * slot_bytes;
  if (absl::Status s = CheckSealedSegment(fd, bytes); !s.ok()) return s;
  // Back every page on this side too (holes the peer may have punched read as zero; writes into
  // them would otherwise allocate during a step).
  if (const int err = posix_fallocate(fd, 0, off_t(bytes)); err != 0) {
    return absl::ResourceExhaustedError(absl::StrCat("shared_memory_ring: allocating ", bytes, " bytes: ",
                                                     std::strerror(err)));
  }
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return absl::ResourceExhaustedError(absl::StrCat("mmap of a score ring: ", std::strerror(errno)));
  const auto* header = static_cast<const Header*>(base);
  const uint32_t heads = header->heads;
  if (header->magic != kMagic || header->version != kVersion || header->num_slots != num_slots ||
      header->slot_bytes != slot_bytes || heads == 0 || SlotBytesFor(0, heads) > slot_bytes) {
    munmap(base, bytes);
    return absl::InvalidArgumentError("shared_memory_ring: the segment does not carry a matching a2sf ring header");
  }
  return std::unique_ptr<ScoreRing>(new ScoreRing(base, bytes, /*fd=*/-1, num_slots, slot_bytes, heads));
}

uint64_t ScoreRing::payload_capacity() const { return slot_bytes() - SlotBytesFor(0, heads()); }

// Slot layout: RingStep | RingDecision | decision slots | decision positions | payload.
char* ScoreRing::slot(uint64_t seq) const {
  return static_cast<char*>(base_) + kHeaderBytes + (seq % num_slots()) * slot_bytes();
}

void* ScoreRing::payload(uint64_t seq) {
  return slot(seq) + kStepBytes + kDecisionBytes + 2 * DecisionArrayBytes(heads());
}
const void* ScoreRing::step_payload(uint64_t seq) const {
  return slot(seq) + kStepBytes + kDecisionBytes + 2 * DecisionArrayBytes(heads());
}

void ScoreRing::Publish(uint64_t seq, const RingStep& step) {
  std::memcpy(slot(seq), &step, sizeof(step));
  auto* header = static_cast<Header*>(base_);
  header->published.store(uint32_t(seq + 1), std::memory_order_release);
  FutexWakeAll(&header->published);
}

bool ScoreRing::WaitDecision(uint64_t seq, absl::Duration timeout) {
  auto* header = static_cast<Header*>(base_);
  return WaitPast(&header->completed, &header->closed, seq, timeout);
}

bool ScoreRing::WaitStep(uint64_t seq, absl::Duration timeout) {
  auto* header = static_cast<Header*>(base_);
  return WaitPast(&header->published, &header->closed, seq, timeout);
}

const RingStep& ScoreRing::step(uint64_t seq) const { return *reinterpret_cast<const RingStep*>(slot(seq)); }

const RingDecision& ScoreRing::decision(uint64_t seq) const {
  return *reinterpret_cast<const RingDecision*>(slot(seq) + kStepBytes);
}
RingDecision* ScoreRing::mutable_decision(uint64_t seq) {
  return reinterpret_cast<RingDecision*>(slot(seq) + kStepBytes);
}
const uint32_t* ScoreRing::decision_slots(uint64_t seq) const {
  return reinterpret_cast<const uint32_t*>(slot(seq) + kStepBytes + kDecisionBytes);
}
uint32_t* ScoreRing::mutable_decision_slots(uint64_t seq) {
  return reinterpret_cast<uint32_t*>(slot(seq) + kStepBytes + kDecisionBytes);
}
const uint32_t* ScoreRing::decision_positions(uint64_t seq) const {
  return reinterpret_cast<const uint32_t*>(slot(seq) + kStepBytes + kDecisionBytes + DecisionArrayBytes(heads()));
}
uint32_t* ScoreRing::mutable_decision_positions(uint64_t seq) {
  return reinterpret_cast<uint32_t*>(slot(seq) + kStepBytes + kDecisionBytes + DecisionArrayBytes(heads()));
}

void ScoreRing::Complete(uint64_t seq) {
  auto* header = static_cast<Header*>(base_);
  header->completed.store(uint32_t(seq + 1), std::memory_order_release);
  FutexWakeAll(&header->completed);
}

absl::Status ScoreRing::CompleteDecision(uint64_t seq, uint64_t step,
                                         const absl::StatusOr<kv::EvictionDecision>& outcome) {
  absl::Status status = outcome.status();
  if (outcome.ok() && outcome->evictions_per_head > kMaxDecisionEvictionsPerHead) {
    status = absl::ResourceExhaustedError(
        absl::StrCat("decision of step ", step, " evicts ", outcome->evictions_per_head,
                     " entries per head, more than a ring slot holds; the session is out of step with the ring"));
  } else if (outcome.ok() && (outcome->evicted_positions.size() != size_t(heads()) * outcome->evictions_per_head ||
                              (!outcome->evicted_slots.empty() &&
                               outcome->evicted_slots.size() != outcome->evicted_positions.size()))) {
    status = absl::InternalError(absl::StrCat("decision of step ", step, " does not cover the ring's ", heads(),
                                              " heads"));
  }
  RingDecision decision;
  decision.step = step;
  if (status.ok()) {
    const kv::EvictionDecision& d = *outcome;
    decision.evictions_per_head = d.evictions_per_head;
    decision.entries_after = d.entries_after;
    decision.num_values = uint32_t(d.evicted_positions.size());
    std::copy(d.evicted_positions.begin(), d.evicted_positions.end(), mutable_decision_positions(seq));
    decision.has_slots = d.evicted_slots.empty() ? 0 : 1;
    std::copy(d.evicted_slots.begin(), d.evicted_slots.end(), mutable_decision_slots(seq));
  } else {
    decision.code = int32_t(status.code());
    const absl::string_view message = Utf8Prefix(status.message(), sizeof(decision.message) - 1);
    std::memcpy(decision.message, message.data(), message.size());
  }
  std::memcpy(mutable_decision(seq), &decision, sizeof(decision));
  Complete(seq);
  return status;
}

absl::StatusOr<RingAnswer> ScoreRing::ReadDecision(uint64_t seq) const {
  // Copied out of the shared slot first: the peer could rewrite it meanwhile.
  const RingDecision decision = this->decision(seq);
  RingAnswer answer;
  if (decision.code != 0) {
    answer.refusal =
        PeerError(decision.code, absl::string_view(decision.message, strnlen(decision.message, sizeof(decision.message))));
    return answer;
  }
  answer.step = decision.step;
  if (decision.evictions_per_head > kMaxDecisionEvictionsPerHead ||
      decision.num_values != uint64_t{heads()} * decision.evictions_per_head) {
    return absl::DataLossError("cache manager wrote a malformed decision into the ring");
  }
  kv::EvictionDecision& out = answer.decision;
  out.evictions_per_head = decision.evictions_per_head;
  out.entries_after = decision.entries_after;
  const uint32_t* positions = decision_positions(seq);
  out.evicted_positions.assign(positions, positions + decision.num_values);
  if (decision.has_slots) {
    const uint32_t* slots = decision_slots(seq);
    out.evicted_slots.assign(slots, slots + decision.num_values);
  }
  return answer;
}

void ScoreRing::Close() {
  auto* header = static_cast<Header*>(base_);
  header->closed.store(1, std::memory_order_release);
  FutexWakeAll(&header->published);
  FutexWakeAll(&header->completed);
}

bool ScoreRing::closed() const {
  return static_cast<const Header*>(base_)->closed.load(std::memory_order_acquire) != 0;
}

}  // namespace a2sf
