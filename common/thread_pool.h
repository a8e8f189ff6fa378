// ThreadPool: a fixed set of worker threads for fork-join loops (ParallelFor). The calling thread
// takes part in the work, so a pool of N threads uses N-1 extra threads and ParallelFor on a pool of
// one thread is a plain loop.
//
// Built for many short loops in a row (a decoder step is ~100 of them, some of a few microseconds):
// idle workers spin for a short while (`spin`, kSpin by default) before they sleep, so a loop that
// follows another starts on every thread at once instead of after a futex wake-up. A pool whose loops
// come milliseconds apart (the cache manager's store) passes zero and its workers sleep at once. The
// caller never waits for a worker that has not started (it takes the items itself), only for items
// already running.
//
// Each call's items are claimed from one atomic word holding (call, count, next item), so a worker
// that looks late at a call that has ended can never run an item of it, or of the next call, twice.
//
// Thread-safety: ParallelFor may be called from several threads; calls are serialised. fn must not
// call ParallelFor on the same pool.
#ifndef A2SF_COMMON_THREAD_POOL_H_
#define A2SF_COMMON_THREAD_POOL_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace a2sf {

class ThreadPool {
 public:
  // How long an idle worker looks for the next call before it sleeps, by default.
  static constexpr std::chrono::microseconds kSpin{100};
  // The most items one call has (the claim word's 24 bits).
  static constexpr size_t kMaxItems = (size_t(1) << 24) - 1;

  // num_threads >= 1 (values below are raised to 1).
  explicit ThreadPool(int num_threads, std::chrono::microseconds spin = kSpin);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(i) for every i in [0, n), each exactly once, spread over the threads; returns when all
  // calls are done (more than kMaxItems items go as several calls).
  void ParallelFor(size_t n, const std::function<void(size_t)>& fn);

 private:
  void WorkerLoop();
  // Waits until the call word shows a call other than `seen` (or the pool stops); false on stop.
  bool AwaitCall(uint64_t seen);
  // Runs items of the call whose word was `word` until none are left.
  void RunItems(uint64_t word);

  const std::chrono::microseconds spin_;
  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one ParallelFor at a time
  // (call number: 16 bits, item count: 24 bits, next item: 24 bits).
  std::atomic<uint64_t> word_{0};
  std::atomic<const std::function<void(size_t)>*> fn_{nullptr};
  std::atomic<size_t> pending_{0};  // items of the current call not yet finished
  std::atomic<bool> stop_{false};
  std::atomic<int> sleeping_{0};
  std::mutex sleep_mutex_;
  std::condition_variable wake_;
};

}  // namespace a2sf

#endif  // A2SF_COMMON_THREAD_POOL_H_
