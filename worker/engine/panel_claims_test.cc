#include "worker/engine/panel_claims.h"

#include <atomic>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace a2sf::worker {
namespace {

using Piece = std::pair<uint32_t, uint32_t>;  // first, n

// Every piece one side takes until none is left.
std::vector<Piece> Drain(PanelClaims& claims, bool from_back, uint32_t grouped, uint32_t group) {
  std::vector<Piece> pieces;
  for (uint32_t first, n; claims.Take(from_back, grouped, group, &first, &n);) pieces.push_back({first, n});
  return pieces;
}

TEST(PanelClaims, TheFrontTakesOnePieceAtATimeInWalkOrder) {
  PanelClaims claims(11);  // two groups of 4, then 3 single panels
  EXPECT_EQ(Drain(claims, false, 8, 4), (std::vector<Piece>{{0, 4}, {4, 4}, {8, 1}, {9, 1}, {10, 1}}));
  uint32_t first = 0, n = 0;
  EXPECT_FALSE(claims.Take(true, 8, 4, &first, &n));
}

TEST(PanelClaims, TheBackTakesHalfOfWhatIsLeftInWholePieces) {
  PanelClaims claims(23);  // five groups of 4, then 3 single panels
  // Singles first: half of 3 rounded up, then the last one; then groups: 3 of 5, 1 of 2, the last.
  EXPECT_EQ(Drain(claims, true, 20, 4), (std::vector<Piece>{{21, 2}, {20, 1}, {8, 12}, {4, 4}, {0, 4}}));
}

TEST(PanelClaims, FrontAndBackMeetWithoutOverlap) {
  PanelClaims claims(23);
  uint32_t first = 0, n = 0;
  ASSERT_TRUE(claims.Take(false, 20, 4, &first, &n));
  EXPECT_EQ(Piece(first, n), Piece(0, 4));
  ASSERT_TRUE(claims.Take(true, 20, 4, &first, &n));
  EXPECT_EQ(Piece(first, n), Piece(21, 2));
  ASSERT_TRUE(claims.Take(true, 20, 4, &first, &n));
  EXPECT_EQ(Piece(first, n), Piece(20, 1));
  ASSERT_TRUE(claims.Take(true, 20, 4, &first, &n));  // groups 1..4 left: the last two
  EXPECT_EQ(Piece(first, n), Piece(12, 8));
  EXPECT_EQ(Drain(claims, false, 20, 4), (std::vector<Piece>{{4, 4}, {8, 4}}));
  EXPECT_TRUE(Drain(claims, true, 20, 4).empty());
  claims.Reset(3);  // used again for the next product
  EXPECT_EQ(Drain(claims, true, 0, 1), (std::vector<Piece>{{1, 2}, {0, 1}}));
}

// Every order in which the owner and a helper can take (each Take is one atomic step, so these are
// all the schedules two threads can make), for small chunks: each panel exactly once, groups whole.
TEST(PanelClaims, EveryOrderOfOwnerAndHelperTakesCoversEachPanelOnce) {
  int orders = 0;
  for (uint32_t group = 1; group <= 4; ++group) {
    for (uint32_t groups = 0; groups <= 4; ++groups) {
      for (uint32_t singles = 0; singles <= 5; ++singles) {
        const uint32_t grouped = group * groups, count = grouped + singles;
        // Bit k of `order`: who takes at step k (1: the helper), until nothing is left.
        for (uint32_t order = 0; order < (1u << 12); ++order) {
          PanelClaims claims(count);
          std::vector<int> taken(count, 0);
          uint32_t first = 0, n = 0;
          for (int k = 0; claims.Take((order >> k) & 1, grouped, group, &first, &n); ++k) {
            ASSERT_LE(first + n, count);
            if (first < grouped) {
              ASSERT_EQ(first % group, 0u);
              ASSERT_EQ(n % group, 0u);
              ASSERT_LE(first + n, grouped);
            }
            for (uint32_t j = first; j < first + n; ++j) ++taken[j];
            ASSERT_LT(k, 12) << "more steps than panels";
          }
          for (uint32_t j = 0; j < count; ++j) ASSERT_EQ(taken[j], 1) << "panel " << j << " of " << count;
          ++orders;
        }
      }
    }
  }
  EXPECT_EQ(orders, 4 * 5 * 6 * 4096);
}

TEST(PanelClaims, ConcurrentTakersGetEveryPanelExactlyOnceInWholeGroups) {
  constexpr uint32_t kGroup = 4, kGrouped = 4 * 50000, kCount = kGrouped + 3;
  for (int round = 0; round < 20; ++round) {
    PanelClaims claims(kCount);
    std::vector<std::atomic<int>> taken(kCount);
    std::atomic<bool> misaligned{false};
    auto take = [&](bool from_back) {
      for (uint32_t first, n; claims.Take(from_back, kGrouped, kGroup, &first, &n);) {
        if (first < kGrouped && (first % kGroup != 0 || n % kGroup != 0 || first + n > kGrouped)) misaligned = true;
        for (uint32_t j = first; j < first + n; ++j) taken[j].fetch_add(1);
      }
    };
    // One owner from the front, helpers from the back, as MatMuls runs them.
    std::thread owner(take, false), helper(take, true), late_helper(take, true);
    owner.join();
    helper.join();
    late_helper.join();
    EXPECT_FALSE(misaligned.load()) << "round " << round;
    uint32_t wrong = 0;
    for (uint32_t j = 0; j < kCount; ++j) wrong += taken[j].load() != 1;
    ASSERT_EQ(wrong, 0u) << "round " << round;
  }
}

}  // namespace
}  // namespace a2sf::worker
