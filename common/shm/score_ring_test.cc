#include "common/shm/score_ring.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace a2sf {
namespace {

std::string UniqueName(const char* what) { return absl::StrCat("/a2sf-test-", what, "-", getpid()); }

// A second process serves 200 steps: each decision carries the sum of the step's payload values and
// the step's position, so both directions of every slot are checked across the process boundary.
TEST(ScoreRing, StepsAndDecisionsCrossProcesses) {
  const std::string name = UniqueName("cross");
  constexpr uint32_t kHeads = 3, kSlots = 4, kValues = 500;
  auto ring = ScoreRing::Create(name, kSlots, ScoreRing::SlotBytesFor(kValues * 4, kHeads), kHeads);
  ASSERT_TRUE(ring.ok()) << ring.status();
  const pid_t child = fork();
  if (child == 0) {
    auto peer = ScoreRing::Attach(name, kSlots, ScoreRing::SlotBytesFor(kValues * 4, kHeads));
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

TEST(ScoreRing, AttachChecksNameSizeAndHeader) {
  const std::string name = UniqueName("attach");
  const uint64_t slot = ScoreRing::SlotBytesFor(1024, 2);
  EXPECT_EQ(ScoreRing::Attach("/etc-passwd", 2, slot).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ScoreRing::Attach("/a2sf-x/../y", 2, slot).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ScoreRing::Attach(name, 2, slot).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(ScoreRing::Attach(name, 0, slot).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ScoreRing::Attach(name, 2, slot + 1).status().code(), absl::StatusCode::kInvalidArgument);
  auto ring = ScoreRing::Create(name, 2, slot, 2);
  ASSERT_TRUE(ring.ok()) << ring.status();
  EXPECT_EQ(ScoreRing::Create(name, 2, slot, 2).status().code(), absl::StatusCode::kInternal);  // exists
  EXPECT_EQ(ScoreRing::Attach(name, 3, slot).status().code(), absl::StatusCode::kInvalidArgument);  // size
  auto peer = ScoreRing::Attach(name, 2, slot);
  ASSERT_TRUE(peer.ok()) << peer.status();
  EXPECT_EQ((*peer)->heads(), 2u);
  EXPECT_EQ((*peer)->payload_capacity(), 1024u);
  // Once unlinked, nobody else can attach, but the mappings keep working.
  (*ring)->Unlink();
  EXPECT_EQ(ScoreRing::Attach(name, 2, slot).status().code(), absl::StatusCode::kNotFound);
  static_cast<uint32_t*>((*ring)->payload(1))[0] = 77;
  EXPECT_EQ(static_cast<const uint32_t*>((*peer)->step_payload(1))[0], 77u);
}

TEST(ScoreRing, WaitsEndOnTimeoutAndOnClose) {
  const std::string name = UniqueName("close");
  auto ring = ScoreRing::Create(name, 2, ScoreRing::SlotBytesFor(64, 1), 1);
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
