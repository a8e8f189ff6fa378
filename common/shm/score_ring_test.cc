#include "common/shm/score_ring.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/shm/ring_handoff.h"
#include "common/testing/temp_socket.h"
#include "gtest/gtest.h"

namespace a2sf {
namespace {

std::string SocketPath(const char* what) { return a2sf::testing::TempSocketPath(std::string("ring-") + what); }

// The ring's one decision conversion: a kv::EvictionDecision written by CompleteDecision reads back
// equal with the step it answers; errors travel as refusals with their own code (DATA_LOSS too);
// what the slot cannot hold becomes an error; a slot a hostile peer rewrote is DATA_LOSS, never a
// decision nor a refusal.
TEST(ScoreRing, DecisionsRoundTripAndMalformedSlotsAreDataLoss) {
  constexpr uint32_t kHeads = 2;
  auto ring = ScoreRing::Create(2, ScoreRing::SlotBytesFor(64, kHeads), kHeads);
  ASSERT_TRUE(ring.ok()) << ring.status();
  kv::EvictionDecision d;
  d.evictions_per_head = 2;
  d.evicted_slots = {4, 1, 3, 0};
  d.evicted_positions = {40, 10, 30, 0};
  d.entries_after = 3;
  ASSERT_TRUE((*ring)->CompleteDecision(0, 7, d).ok());
  absl::StatusOr<RingAnswer> back = (*ring)->ReadDecision(0);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->refusal.ok()) << back->refusal;
  EXPECT_EQ(back->step, 7u);
  EXPECT_EQ(back->decision.evicted_slots, d.evicted_slots);
  EXPECT_EQ(back->decision.evicted_positions, d.evicted_positions);
  EXPECT_EQ(back->decision.evictions_per_head, 2u);
  EXPECT_EQ(back->decision.entries_after, 3u);

  kv::EvictionDecision pipelined = d;  // positions only
  pipelined.evicted_slots.clear();
  ASSERT_TRUE((*ring)->CompleteDecision(1, 8, pipelined).ok());
  back = (*ring)->ReadDecision(1);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_TRUE(back->decision.evicted_slots.empty());
  EXPECT_EQ(back->decision.evicted_positions, d.evicted_positions);
  EXPECT_EQ(back->step, 8u);

  ASSERT_EQ((*ring)->CompleteDecision(0, 9, absl::FailedPreconditionError("step: out of sync")).code(),
            absl::StatusCode::kFailedPrecondition);
  back = (*ring)->ReadDecision(0);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->refusal, absl::FailedPreconditionError("step: out of sync"));
  // The cache manager's own DATA_LOSS is a refusal like any other, not a malformed slot.
  ASSERT_EQ((*ring)->CompleteDecision(0, 9, absl::DataLossError("store lost")).code(), absl::StatusCode::kDataLoss);
  back = (*ring)->ReadDecision(0);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->refusal, absl::DataLossError("store lost"));

  kv::EvictionDecision too_many;
  too_many.evictions_per_head = ScoreRing::kMaxDecisionEvictionsPerHead + 1;
  too_many.evicted_positions.assign(size_t(kHeads) * too_many.evictions_per_head, 1);
  EXPECT_EQ((*ring)->CompleteDecision(1, 10, too_many).code(), absl::StatusCode::kResourceExhausted);
  back = (*ring)->ReadDecision(1);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->refusal.code(), absl::StatusCode::kResourceExhausted);
  kv::EvictionDecision short_one = d;
  short_one.evicted_positions.pop_back();
  EXPECT_EQ((*ring)->CompleteDecision(1, 11, short_one).code(), absl::StatusCode::kInternal);

  ASSERT_TRUE((*ring)->CompleteDecision(0, 12, d).ok());
  (*ring)->mutable_decision(0)->num_values = 1000;  // a hostile peer's count
  EXPECT_EQ((*ring)->ReadDecision(0).status().code(), absl::StatusCode::kDataLoss);
  (*ring)->mutable_decision(0)->num_values = kHeads * 2;
  (*ring)->mutable_decision(0)->evictions_per_head = 0xffffffff;
  EXPECT_EQ((*ring)->ReadDecision(0).status().code(), absl::StatusCode::kDataLoss);
}

// A second process serves 200 steps: each decision carries the sum of the step's payload values and
// the step's position, so both directions of every slot are checked across the process boundary.
TEST(ScoreRing, StepsAndDecisionsCrossProcesses) {
  constexpr uint32_t kHeads = 3, kSlots = 4, kValues = 500;
  auto ring = ScoreRing::Create(kSlots, ScoreRing::SlotBytesFor(kValues * 4, kHeads), kHeads);
  ASSERT_TRUE(ring.ok()) << ring.status();
  const pid_t child = fork();
  if (child == 0) {
    auto peer = ScoreRing::Attach((*ring)->fd(), kSlots, ScoreRing::SlotBytesFor(kValues * 4, kHeads));
    if (!peer.ok()) _exit(2);
    for (uint64_t seq = 0;; ++seq) {
      if (!(*peer)->WaitStep(seq, absl::Seconds(10))) _exit((*peer)->closed() ? 0 : 3);
      const RingStep& step = (*peer)->step(seq);
      const auto* values = static_cast<const uint32_t*>((*peer)->step_payload(seq));
      uint32_t sum = 0;
      for (uint64_t i = 0; i < step.payload_bytes / 4; ++i) sum += values[i];
      RingDecision* d = (*peer)->mutable_decision(seq);
      d->step = step.step;
      d->code = 0;
      d->evictions_per_head = 1;
      d->num_values = kHeads;
      d->entries_after = sum;
      for (uint32_t h = 0; h < kHeads; ++h) {
        (*peer)->mutable_decision_slots(seq)[h] = h;
        (*peer)->mutable_decision_positions(seq)[h] = step.position + h;
      }
      (*peer)->Complete(seq);
    }
  }
  // Keep up to three steps in flight, as a pipelined worker does.
  uint64_t next_wait = 0;
  for (uint64_t seq = 0; seq < 200; ++seq) {
    if (seq >= 3) {
      ASSERT_TRUE((*ring)->WaitDecision(next_wait, absl::Seconds(10)));
      const RingDecision& d = (*ring)->decision(next_wait);
      EXPECT_EQ(d.step, next_wait);
      EXPECT_EQ(d.entries_after, uint32_t(next_wait * kValues));
      EXPECT_EQ((*ring)->decision_positions(next_wait)[2], uint32_t(next_wait * 10 + 2));
      ++next_wait;
    }
    auto* values = static_cast<uint32_t*>((*ring)->payload(seq));
    for (uint32_t i = 0; i < kValues; ++i) values[i] = uint32_t(seq);
    RingStep step;
    step.step = seq;
    step.position = uint32_t(seq * 10);
    step.payload_bytes = kValues * 4;
    (*ring)->Publish(seq, step);
  }
  for (; next_wait < 200; ++next_wait) ASSERT_TRUE((*ring)->WaitDecision(next_wait, absl::Seconds(10)));
  (*ring)->Close();
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(ScoreRing, AttachChecksSealsSizeAndHeader) {
  const uint64_t slot = ScoreRing::SlotBytesFor(1024, 2);
  const size_t bytes = 256 + 2 * slot;
  // An unsealed memfd could be truncated under the cache manager's mapping: refused.
  const int unsealed = memfd_create("test", MFD_CLOEXEC);
  ASSERT_GE(unsealed, 0);
  ASSERT_EQ(ftruncate(unsealed, off_t(bytes)), 0);
  EXPECT_EQ(ScoreRing::Attach(unsealed, 2, slot).status().code(), absl::StatusCode::kFailedPrecondition);
  close(unsealed);
  auto ring = ScoreRing::Create(2, slot, 2);
  ASSERT_TRUE(ring.ok()) << ring.status();
  const int fd = (*ring)->fd();
  EXPECT_EQ(ScoreRing::Attach(fd, 0, slot).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ScoreRing::Attach(fd, 3, slot).status().code(), absl::StatusCode::kInvalidArgument);  // size
  EXPECT_EQ(ScoreRing::Attach(fd, 2, slot + 64).status().code(), absl::StatusCode::kInvalidArgument);
  // A read-only descriptor of the same segment is refused too.
  const int read_only = open(absl::StrCat("/proc/self/fd/", fd).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(read_only, 0);
  EXPECT_EQ(ScoreRing::Attach(read_only, 2, slot).status().code(), absl::StatusCode::kFailedPrecondition);
  close(read_only);
  auto peer = ScoreRing::Attach(fd, 2, slot);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ((*peer)->heads(), 2u);
  EXPECT_EQ((*peer)->payload_capacity(), 1024u);
  // The finding of issue 11: the worker truncates its segment. The seals make that fail, so the
  // attached side can never fault on its mapping.
  EXPECT_NE(ftruncate(fd, 0), 0);
  EXPECT_EQ(errno, EPERM);
  EXPECT_NE(ftruncate(fd, off_t(bytes) * 2), 0);
  static_cast<uint32_t*>((*ring)->payload(1))[0] = 77;
  EXPECT_EQ(static_cast<const uint32_t*>((*peer)->step_payload(1))[0], 77u);
  // Punching a hole is allowed by the seals; the page reads back as zero instead of faulting.
  ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, off_t(bytes)), 0);
  EXPECT_EQ(static_cast<const uint32_t*>((*peer)->step_payload(1))[0], 0u);
  // A rewritten header does not change the geometry the attached side uses.
  std::memset((*ring)->payload(0), 0xff, 64);
  EXPECT_EQ((*peer)->num_slots(), 2u);
}

TEST(RingHandoff, HandsOverASealedSegmentOnceAndRefusesOthers) {
  const std::string path = SocketPath("handoff");
  auto server = RingHandoffServer::Start(path, 0600);
  ASSERT_TRUE(server.ok()) << server.status();
  // A second server on the same path is refused: a live server answers there.
  EXPECT_EQ(RingHandoffServer::Start(path, 0600).status().code(), absl::StatusCode::kFailedPrecondition);
  auto ring = ScoreRing::Create(2, ScoreRing::SlotBytesFor(256, 1), 1);
  ASSERT_TRUE(ring.ok());
  absl::StatusOr<std::string> handle = OfferRingDescriptor(path, (*ring)->fd());
  ASSERT_TRUE(handle.ok()) << handle.status();
  EXPECT_EQ(handle->size(), 32u);
  EXPECT_EQ((*server)->Take("0123").status().code(), absl::StatusCode::kNotFound);
  absl::StatusOr<int> fd = (*server)->Take(*handle);
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_TRUE(ScoreRing::Attach(*fd, 2, ScoreRing::SlotBytesFor(256, 1)).ok());
  close(*fd);
  EXPECT_EQ((*server)->Take(*handle).status().code(), absl::StatusCode::kNotFound);  // single use
  const int unsealed = memfd_create("test", MFD_CLOEXEC);
  EXPECT_EQ(OfferRingDescriptor(path, unsealed).status().code(), absl::StatusCode::kFailedPrecondition);
  close(unsealed);
  EXPECT_EQ((*server)->pending(), 0u);
  server->reset();
  EXPECT_EQ(OfferRingDescriptor(path, (*ring)->fd()).status().code(), absl::StatusCode::kUnavailable);
}

// Peers that connect to the ring socket and send nothing -- more of them than may wait -- delay no
// one: an offer made meanwhile is answered at once (served as its message arrives), and the idle
// connections are closed after kIoTimeout. Served one connection at a time, the offer waited 500 ms
// per idle peer ahead of it.
TEST(RingHandoff, IdlePeersDelayNoOffer) {
  const std::string path = SocketPath("idle");
  auto server = RingHandoffServer::Start(path, 0600);
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<int> idle;
  for (size_t i = 0; i < RingHandoffServer::kMaxConnections + 16; ++i) {
    const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un address = {};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    idle.push_back(fd);
  }
  auto ring = ScoreRing::Create(2, ScoreRing::SlotBytesFor(256, 1), 1);
  ASSERT_TRUE(ring.ok());
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> handle = OfferRingDescriptor(path, (*ring)->fd());
  ASSERT_TRUE(handle.ok()) << handle.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << "the offer waited for the idle peers";
  EXPECT_TRUE((*server)->Take(*handle).ok());
  // The idle connections are closed: a read sees the end.
  char byte;
  for (int fd : idle) {
    timeval timeout = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    EXPECT_EQ(recv(fd, &byte, 1, 0), 0);
    close(fd);
  }
}

TEST(ScoreRing, WaitsEndOnTimeoutAndOnClose) {
  auto ring = ScoreRing::Create(2, ScoreRing::SlotBytesFor(64, 1), 1);
  ASSERT_TRUE(ring.ok());
  EXPECT_FALSE((*ring)->WaitDecision(0, absl::Milliseconds(30)));
  std::thread closer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    (*ring)->Close();
  });
  const absl::Time start = absl::Now();
  EXPECT_FALSE((*ring)->WaitStep(0, absl::Seconds(30)));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));  // woken by Close, not by the timeout
  closer.join();
  EXPECT_TRUE((*ring)->closed());
}

}  // namespace
}  // namespace a2sf
