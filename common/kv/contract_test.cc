// The contract library: the swap-remove rule against an independent model of a head as a vector,
// the position range check at the wire edge, dtype and decision conversions.
#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <utility>
#include <vector>

#include "common/float16.h"
#include "common/kv/eviction_decision.h"
#include "common/kv/positions.h"
#include "common/kv/proto_convert.h"
#include "common/kv/score_dtype.h"
#include "common/kv/swap_remove.h"
#include "gtest/gtest.h"

namespace a2sf::kv {
namespace {

struct Entry {
  uint32_t position;
  float score;
  bool operator==(const Entry& o) const { return position == o.position && score == o.score; }
};

// The reference model: a head is a vector; a victim's element is overwritten by the back one, which
// is then popped (the docs' wording, written with std::vector instead of indices).
std::vector<Entry> ReferenceRemove(std::vector<Entry> head, const std::vector<uint32_t>& descending_slots,
                                   std::vector<uint32_t>* evicted) {
  for (uint32_t slot : descending_slots) {
    evicted->push_back(head[slot].position);
    head[slot] = head.back();
    head.pop_back();
  }
  return head;
}

TEST(SwapRemove, WorkedExampleFromTheDocs) {
  // Head [10 11 12 13 14]; evict slots 3 then 1: 13 <- 14 gives [10 11 12 14], 11 <- 14 gives [10 14 12].
  std::vector<uint32_t> positions = {10, 11, 12, 13, 14};
  const uint32_t slots[] = {3, 1};
  uint32_t evicted[2];
  EXPECT_EQ(SwapRemoveEntries(slots, 2, 5, positions.data(), nullptr, evicted), 3u);
  positions.resize(3);
  EXPECT_EQ(positions, (std::vector<uint32_t>{10, 14, 12}));
  EXPECT_EQ(evicted[0], 13u);
  EXPECT_EQ(evicted[1], 11u);
}

TEST(SwapRemove, MatchesTheVectorModelOnRandomDecisions) {
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 2000; ++trial) {
    const uint32_t n = 1 + rng() % 40;
    const uint32_t k = rng() % (n + 1);
    std::vector<Entry> head(n);
    for (uint32_t i = 0; i < n; ++i) head[i] = {100 + 3 * i + uint32_t(rng() % 3), float(rng() % 1000) / 7.0f};
    std::vector<uint32_t> all(n);
    for (uint32_t i = 0; i < n; ++i) all[i] = i;
    std::shuffle(all.begin(), all.end(), rng);
    std::vector<uint32_t> slots(all.begin(), all.begin() + k);
    std::sort(slots.rbegin(), slots.rend());

    std::vector<uint32_t> expected_evicted;
    const std::vector<Entry> expected = ReferenceRemove(head, slots, &expected_evicted);

    std::vector<uint32_t> positions(n);
    std::vector<float> scores(n);
    for (uint32_t i = 0; i < n; ++i) positions[i] = head[i].position, scores[i] = head[i].score;
    std::vector<uint32_t> evicted(k);
    ASSERT_TRUE(SlotsAreDescendingBelow(slots.data(), k, n));
    ASSERT_EQ(SwapRemoveEntries(slots.data(), k, n, positions.data(), scores.data(), evicted.data()), n - k);
    std::vector<Entry> got(n - k);
    for (uint32_t i = 0; i < n - k; ++i) got[i] = {positions[i], scores[i]};
    ASSERT_EQ(got, expected) << "trial " << trial;
    ASSERT_EQ(evicted, expected_evicted) << "trial " << trial;
  }
}

TEST(SwapRemove, CallsEvictThenMoveInOrderAndNoMoveForTheLastSlot) {
  const uint32_t slots[] = {4, 2, 0};  // slot 4 is the last of 5: evicted without a move
  std::vector<std::pair<char, std::pair<uint32_t, uint32_t>>> calls;
  const uint32_t left = SwapRemove(
      slots, 3, 5, [&](uint32_t j, uint32_t slot) { calls.push_back({'e', {j, slot}}); },
      [&](uint32_t dst, uint32_t src) { calls.push_back({'m', {dst, src}}); });
  EXPECT_EQ(left, 2u);
  const std::vector<std::pair<char, std::pair<uint32_t, uint32_t>>> expected = {
      {'e', {0, 4}}, {'e', {1, 2}}, {'m', {2, 3}}, {'e', {2, 0}}, {'m', {0, 2}}};
  EXPECT_EQ(calls, expected);
}

TEST(SwapRemove, SlotListsMustBeStrictlyDescendingAndInRange) {
  const uint32_t good[] = {5, 3, 0}, repeated[] = {3, 3}, ascending[] = {1, 2}, too_big[] = {6, 1};
  EXPECT_TRUE(SlotsAreDescendingBelow(good, 3, 6));
  EXPECT_FALSE(SlotsAreDescendingBelow(good, 3, 5));
  EXPECT_FALSE(SlotsAreDescendingBelow(repeated, 2, 6));
  EXPECT_FALSE(SlotsAreDescendingBelow(ascending, 2, 6));
  EXPECT_FALSE(SlotsAreDescendingBelow(too_big, 2, 6));
  EXPECT_TRUE(SlotsAreDescendingBelow(nullptr, 0, 0));
}

TEST(FindVictimSlots, FindsEveryPositionAndSortsDescending) {
  std::mt19937 rng(99);
  for (int trial = 0; trial < 500; ++trial) {
    const uint32_t n = 1 + rng() % 30, k = rng() % (n + 1);
    std::vector<uint32_t> held(n);
    std::map<uint32_t, uint32_t> slot_of;
    for (uint32_t i = 0; i < n; ++i) held[i] = 7 * i + 1;
    std::shuffle(held.begin(), held.end(), rng);
    for (uint32_t i = 0; i < n; ++i) slot_of[held[i]] = i;
    std::vector<uint32_t> victims(held.begin(), held.end());
    std::shuffle(victims.begin(), victims.end(), rng);
    victims.resize(k);
    std::vector<uint32_t> expected;
    for (uint32_t p : victims) expected.push_back(slot_of[p]);
    std::sort(expected.rbegin(), expected.rend());
    std::vector<uint32_t> slots(k);
    ASSERT_TRUE(FindVictimSlots(held.data(), n, victims.data(), k, slots.data()));
    ASSERT_EQ(slots, expected);
  }
}

TEST(FindVictimSlots, RefusesAMissingOrRepeatedPosition) {
  const uint32_t held[] = {4, 9, 2, 7};
  uint32_t slots[2];
  const uint32_t missing[] = {9, 5}, repeated[] = {7, 7};
  EXPECT_FALSE(FindVictimSlots(held, 4, missing, 2, slots));
  EXPECT_FALSE(FindVictimSlots(held, 4, repeated, 2, slots));
}

TEST(Positions, WireValuesBeyondThe31BitRangeAreRefusedNotTruncated) {
  EXPECT_EQ(*PositionFromWire(0, "position"), 0u);
  EXPECT_EQ(*PositionFromWire(kMaxPosition, "position"), kMaxPosition);
  for (uint64_t bad : {uint64_t{kMaxPosition} + 1, uint64_t{0xffffffff}, (uint64_t{1} << 32) + 5}) {
    absl::StatusOr<uint32_t> p = PositionFromWire(bad, "scores.position");
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find("scores.position"), absl::string_view::npos);
  }
}

TEST(ScoreDType, ProtoValuesRoundTripAndUnknownOnesAreRefused) {
  for (ScoreDType d : {ScoreDType::kFp32, ScoreDType::kFp16, ScoreDType::kBf16}) {
    EXPECT_EQ(*ScoreDTypeFromProto(ScoreDTypeToProto(d)), d);
  }
  EXPECT_EQ(ScoreDTypeToProto(ScoreDType::kFp16), v1::SCORE_DTYPE_FP16);
  EXPECT_EQ(*ScoreDTypeFromProto(v1::SCORE_DTYPE_BF16), ScoreDType::kBf16);
  for (int bad : {int(v1::SCORE_DTYPE_UNSPECIFIED), 4, -1, 1 << 20}) {
    absl::StatusOr<ScoreDType> d = ScoreDTypeFromProto(bad);
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(d.status().message().find("scores.dtype"), absl::string_view::npos);
  }
  EXPECT_EQ(ScoreDTypeBytes(ScoreDType::kFp32), 4u);
  EXPECT_EQ(ScoreDTypeBytes(ScoreDType::kFp16), 2u);
  EXPECT_EQ(ScoreDTypeBytes(ScoreDType::kBf16), 2u);
  EXPECT_STREQ(ScoreDTypeName(ScoreDType::kBf16), "bf16");
}

TEST(ScoreDType, EncodeScoresPacksEachDType) {
  const std::vector<float> in = {1.0f, 0.5f, -2.0f, 65504.0f, 0.1f};
  std::vector<float> f32(in.size());
  EncodeScores(in.data(), in.size(), ScoreDType::kFp32, f32.data());
  EXPECT_EQ(f32, in);
  std::vector<uint16_t> half(in.size()), bf16(in.size());
  EncodeScores(in.data(), in.size(), ScoreDType::kFp16, half.data());
  EncodeScores(in.data(), in.size(), ScoreDType::kBf16, bf16.data());
  // Bit patterns from the IEEE formats: 1.0 = 0x3c00 (fp16) and 0x3f80 (bf16); 0.5, -2.0, 65504.
  EXPECT_EQ(half[0], 0x3c00);
  EXPECT_EQ(half[1], 0x3800);
  EXPECT_EQ(half[2], 0xc000);
  EXPECT_EQ(half[3], 0x7bff);
  EXPECT_EQ(half[4], 0x2e66);  // 0.1 rounded to nearest even
  EXPECT_EQ(bf16[0], 0x3f80);
  EXPECT_EQ(bf16[1], 0x3f00);
  EXPECT_EQ(bf16[2], 0xc000);
  EXPECT_EQ(bf16[4], 0x3dcd);  // 0.1 = 0x3dcccccd rounds up
}

TEST(DecisionProto, RoundTripsSlotsPositionsAndCounts) {
  EvictionDecision d;
  d.evictions_per_head = 2;
  d.evicted_slots = {5, 1, 4, 0};
  d.evicted_positions = {kMaxPosition, 3, 17, 2};
  d.entries_after = 6;
  v1::EvictionDecision proto;
  DecisionToProto(42, d, "a2sf", &proto);
  EXPECT_EQ(proto.step(), 42u);
  EXPECT_EQ(proto.policy_name(), "a2sf");
  EXPECT_EQ(proto.evicted_positions(0), uint64_t{kMaxPosition});
  absl::StatusOr<EvictionDecision> back = DecisionFromProto(proto);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->evictions_per_head, 2u);
  EXPECT_EQ(back->evicted_slots, d.evicted_slots);
  EXPECT_EQ(back->evicted_positions, d.evicted_positions);
  EXPECT_EQ(back->entries_after, 6u);
}

TEST(DecisionProto, APipelinedDecisionHasNoSlots) {
  v1::EvictionDecision proto;
  proto.set_evictions_per_head(1);
  proto.add_evicted_positions(8);
  proto.add_evicted_positions(9);
  absl::StatusOr<EvictionDecision> d = DecisionFromProto(proto);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->evicted_slots.empty());
  EXPECT_EQ(d->evicted_positions, (std::vector<uint32_t>{8, 9}));
}

TEST(DecisionProto, AHostilePeersDecisionIsDataLossNotTruncated) {
  v1::EvictionDecision wide;
  wide.set_evictions_per_head(1);
  wide.add_evicted_positions((uint64_t{1} << 32) + 3);  // would truncate to 3
  EXPECT_EQ(DecisionFromProto(wide).status().code(), absl::StatusCode::kDataLoss);

  v1::EvictionDecision ragged;
  ragged.set_evictions_per_head(2);
  for (uint64_t p : {1, 2, 3}) ragged.add_evicted_positions(p);
  EXPECT_EQ(DecisionFromProto(ragged).status().code(), absl::StatusCode::kDataLoss);

  v1::EvictionDecision uncounted;  // positions without evictions_per_head
  uncounted.add_evicted_positions(1);
  EXPECT_EQ(DecisionFromProto(uncounted).status().code(), absl::StatusCode::kDataLoss);

  v1::EvictionDecision slots_mismatch;
  slots_mismatch.set_evictions_per_head(1);
  slots_mismatch.add_evicted_positions(1);
  slots_mismatch.add_evicted_positions(2);
  slots_mismatch.add_evicted_slots(0);
  EXPECT_EQ(DecisionFromProto(slots_mismatch).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace a2sf::kv
