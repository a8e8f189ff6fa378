// ThreadPool: a fixed set of worker threads for fork-join loops (ParallelFor). The calling thread
// takes part in the work, so a pool of N threads uses N-1 extra threads and ParallelFor on a pool of
// one thread is a plain loop.
//
// Thread-safety: ParallelFor may be called from several threads; calls are serialised.
#ifndef A2SF_COMMON_THREAD_POOL_H_
#define A2SF_COMMON_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace a2sf {

class ThreadPool {
 public:
  // num_threads >= 1 (values below are raised to 1).
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(i) for every i in [0, n), spread over the threads; returns when all calls are done.
  void ParallelFor(size_t n, const std::function<void(size_t)>& fn);

 private:
  void WorkerLoop();
  void RunShare();

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one ParallelFor at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(size_t)>* fn_ = nullptr;
  size_t n_ = 0;
  std::atomic<size_t> next_{0};
  size_t generation_ = 0;
  int busy_ = 0;
  bool stop_ = false;
};

}  // namespace a2sf

#endif  // A2SF_COMMON_THREAD_POOL_H_
