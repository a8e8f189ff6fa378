// ConnectionPool runs every task it is given, as many at once as there are tasks up to `max` (a
// thread each), queues beyond that, retires idle threads above `warm`, and runs what is queued
// before shutdown returns.
#include "worker/http/connection_pool.h"

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace a2sf::worker::http {
namespace {

// Waits (up to 10 s) until `done` says so.
bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// Eight tasks that block until released all run at once on a pool of 2 warm threads (as eight
// clients that hold their connections would); a ninth, beyond max, waits for one of them.
TEST(ConnectionPool, GrowsToMaxThenQueues) {
  ConnectionPool pool(2, 8, /*max_queued=*/0, nullptr, std::chrono::milliseconds(50));
  absl::Notification release;
  std::atomic<int> running{0}, finished{0};
  for (int i = 0; i < 9; ++i) {
    pool.enqueue([&] {
      ++running;
      release.WaitForNotification();
      ++finished;
    });
  }
  ASSERT_TRUE(Eventually([&] { return running.load() == 8; })) << running.load() << " of 8 running";
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(running.load(), 8) << "the ninth waits for a thread";
  EXPECT_EQ(pool.threads(), 8u);
  release.Notify();
  ASSERT_TRUE(Eventually([&] { return finished.load() == 9; }));
  // Idle for longer than idle_retire: back to the warm threads.
  EXPECT_TRUE(Eventually([&] { return pool.threads() == 2; })) << pool.threads();
  // And it grows again.
  absl::Notification again;
  std::atomic<int> second{0};
  for (int i = 0; i < 5; ++i) {
    pool.enqueue([&] {
      ++second;
      again.WaitForNotification();
    });
  }
  EXPECT_TRUE(Eventually([&] { return second.load() == 5; })) << second.load();
  again.Notify();
}

// Past max_queued waiting tasks enqueue waits until a thread takes one (the listen thread stops
// accepting), or until its owner says the server is stopping.
TEST(ConnectionPool, AFullQueueHoldsEnqueueUntilThereIsRoomOrTheServerStops) {
  std::atomic<bool> stopping{false};
  ConnectionPool pool(1, 2, /*max_queued=*/3, &stopping);
  absl::Notification release;
  std::atomic<int> ran{0};
  auto blocking = [&] {
    release.WaitForNotification();
    ++ran;
  };
  for (int i = 0; i < 5; ++i) pool.enqueue(blocking);  // 2 running, 3 queued
  std::atomic<bool> sixth_in{false};
  std::thread sixth([&] {
    pool.enqueue(blocking);
    sixth_in = true;
  });
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_FALSE(sixth_in.load()) << "the queue was full";
  release.Notify();  // the running tasks end, queued ones are taken: room
  sixth.join();
  EXPECT_TRUE(sixth_in.load());
  ASSERT_TRUE(Eventually([&] { return ran.load() == 6; }));

  absl::Notification hold;
  for (int i = 0; i < 5; ++i) pool.enqueue([&] { hold.WaitForNotification(); });
  std::thread stopped([&] { pool.enqueue([] {}); });
  absl::SleepFor(absl::Milliseconds(100));
  stopping = true;  // the waiting enqueue returns without room
  stopped.join();
  hold.Notify();
}

TEST(ConnectionPool, ShutdownRunsWhatIsQueuedAndJoins) {
  std::atomic<int> ran{0};
  {
    ConnectionPool pool(1, 1);
    for (int i = 0; i < 20; ++i) {
      pool.enqueue([&] {
        absl::SleepFor(absl::Milliseconds(1));
        ++ran;
      });
    }
    pool.shutdown();
    EXPECT_EQ(ran.load(), 20);
    EXPECT_EQ(pool.threads(), 0u);
  }
  EXPECT_EQ(ran.load(), 20);
}

}  // namespace
}  // namespace a2sf::worker::http
