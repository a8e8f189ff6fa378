// ThreadPool: every item runs exactly once and its writes are visible when ParallelFor returns, for
// any pool size, item count and timing (workers spinning, asleep, or late for a call), with several
// callers at once.
#include "common/thread_pool.h"

#include <atomic>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace a2sf {
namespace {

// Runs ParallelFor(n) and checks each index ran once (counts) and that plain writes are visible.
void ExpectEachOnce(ThreadPool* pool, size_t n) {
  std::vector<std::atomic<int>> runs(n);
  std::vector<size_t> written(n, 0);
  pool->ParallelFor(n, [&](size_t i) {
    runs[i].fetch_add(1, std::memory_order_relaxed);
    written[i] = i + 1;
  });
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(runs[i].load(), 1) << "item " << i << " of " << n;
    ASSERT_EQ(written[i], i + 1) << "item " << i << " of " << n;
  }
}

TEST(ThreadPool, EveryItemRunsOnceInManyShortCallsForEveryPoolSize) {
  std::mt19937 rng(3);
  for (int threads : {1, 2, 3, 4, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (int call = 0; call < 3000; ++call) {
      ExpectEachOnce(&pool, std::uniform_int_distribution<size_t>(0, 97)(rng));
    }
  }
}

// Workers that went to sleep (idle longer than kSpin) wake for the next call; a call right after
// another finds them still spinning. Both run every item once.
TEST(ThreadPool, SleepingAndSpinningWorkersBothTakePart) {
  ThreadPool pool(3);
  for (int round = 0; round < 20; ++round) {
    ExpectEachOnce(&pool, 64);
    if (round % 2 == 1) std::this_thread::sleep_for(ThreadPool::kSpin * 5);
    // Items that block until another thread has taken one: only done if a worker joins the call.
    std::atomic<int> started{0};
    pool.ParallelFor(2, [&](size_t) {
      started.fetch_add(1);
      while (started.load() < 2) std::this_thread::yield();
    });
    EXPECT_EQ(started.load(), 2);
  }
}

// A pool that never spins (its workers sleep at once) still runs every item once, and its workers
// take part (the blocking pair below needs two threads).
TEST(ThreadPool, APoolThatDoesNotSpinStillUsesItsWorkers) {
  ThreadPool pool(2, std::chrono::microseconds(0));
  for (int call = 0; call < 200; ++call) ExpectEachOnce(&pool, size_t(call % 40));
  std::atomic<int> started{0};
  pool.ParallelFor(2, [&](size_t) {
    started.fetch_add(1);
    while (started.load() < 2) std::this_thread::yield();
  });
  EXPECT_EQ(started.load(), 2);
}

TEST(ThreadPool, SeveralCallersShareOnePool) {
  ThreadPool pool(2);
  std::vector<std::thread> callers;
  std::atomic<int> failures{0};
  for (int c = 0; c < 3; ++c) {
    callers.emplace_back([&, c] {
      for (int call = 0; call < 500; ++call) {
        const size_t n = size_t(1 + (call * 7 + c) % 50);
        std::vector<std::atomic<int>> runs(n);
        pool.ParallelFor(n, [&](size_t i) { runs[i].fetch_add(1); });
        for (size_t i = 0; i < n; ++i) failures += runs[i].load() != 1;
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(failures.load(), 0);
}

// Past the wrap of the claim word's call number (it has fewer bits than a run makes calls), on a pool
// that sleeps at once and on a spinning one, no call is mistaken for another: every item runs once,
// and every ~500 calls a barrier of one item per thread completes only if every worker woke for that
// call (a lost wakeup or a call skipped fails it within 5 s instead of hanging).
TEST(ThreadPool, CallsPastTheCallNumbersWrapWakeEveryWorker) {
  for (std::chrono::microseconds spin : {std::chrono::microseconds(0), ThreadPool::kSpin}) {
    ThreadPool pool(3, spin);
    int failed_barriers = 0;
    for (int call = 0; call < 70000; ++call) {
      if (call % 500 != 499) {
        std::atomic<int> runs{0};
        pool.ParallelFor(2, [&](size_t) { runs.fetch_add(1); });
        ASSERT_EQ(runs.load(), 2) << "call " << call;
        continue;
      }
      std::atomic<int> arrived{0};
      std::atomic<bool> timed_out{false};
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      pool.ParallelFor(size_t(pool.num_threads()), [&](size_t) {
        arrived.fetch_add(1);
        while (arrived.load() < pool.num_threads()) {
          if (std::chrono::steady_clock::now() > deadline) {
            timed_out.store(true);
            return;
          }
          std::this_thread::yield();
        }
      });
      failed_barriers += timed_out.load();
    }
    EXPECT_EQ(failed_barriers, 0) << "spin " << spin.count() << " us";
  }
}

// More items than one claim word holds: split into calls, still each once.
TEST(ThreadPool, MoreItemsThanOneCallHolds) {
  ThreadPool pool(2);
  const size_t n = ThreadPool::kMaxItems + 3;
  std::vector<uint8_t> runs(n, 0);
  pool.ParallelFor(n, [&](size_t i) { ++runs[i]; });
  size_t wrong = 0;
  for (uint8_t r : runs) wrong += r != 1;
  EXPECT_EQ(wrong, 0u);
}

TEST(ThreadPool, DestroyedIdleSpinningAsleepOrNeverUsed) {
  { ThreadPool never(4); }
  {
    auto pool = std::make_unique<ThreadPool>(4);
    ExpectEachOnce(pool.get(), 1000);
    pool.reset();  // workers still spinning
  }
  {
    ThreadPool pool(4);
    ExpectEachOnce(&pool, 10);
    std::this_thread::sleep_for(ThreadPool::kSpin * 5);  // workers asleep
  }
}

}  // namespace
}  // namespace a2sf
