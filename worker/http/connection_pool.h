// ConnectionPool: the HTTP server's task queue, one thread per connection being served. cpp-httplib
// holds a connection's thread from its first header byte to its close, so with a fixed pool of N
// threads, N clients that dribble their headers a byte every few seconds (a "slowloris": each read is
// within httplib's per-read timeout) starve every other client. Here `warm` threads are kept and more
// start on demand up to `max`; a thread above `warm` ends after `idle_retire` without a connection.
// Beyond `max` connections wait for a thread (so `max` is what a slowloris must hold; put a proxy with
// a whole-header deadline in front where more is at stake), each holding its socket meanwhile; past
// `max_queued` of them httplib's listen thread waits in enqueue for room, so further connections stay
// in the kernel's backlog (or are refused) rather than each holding a descriptor here. `stopping`,
// when its owner sets it (before stopping the server), ends that wait. Where no thread can be started
// (a process limit), the task waits for a running one likewise.
//
// Thread-safety: enqueue and shutdown may be called from any thread (httplib: its listen thread).
// Ownership: the pool owns its threads; shutdown (or the destructor) runs what is queued and joins them.
#ifndef A2SF_WORKER_HTTP_CONNECTION_POOL_H_
#define A2SF_WORKER_HTTP_CONNECTION_POOL_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "httplib.h"

namespace a2sf::worker::http {

class ConnectionPool final : public httplib::TaskQueue {
 public:
  static constexpr std::chrono::seconds kIdleRetire{30};

  // 1 <= warm <= max (values are raised to that); max_queued 0: no bound.
  // `stopping` (may be null) outlives the pool.
  ConnectionPool(size_t warm, size_t max, size_t max_queued = 0, const std::atomic<bool>* stopping = nullptr,
                 std::chrono::milliseconds idle_retire = kIdleRetire);
  ~ConnectionPool() override;
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  void enqueue(std::function<void()> fn) override;
  // Runs every task queued so far, then stops and joins every thread.
  void shutdown() override;

  size_t threads() const;  // started and not yet retired

 private:
  void Run(int id);
  // Joins the threads that retired (they have left Run). REQUIRES: mutex_ held through `lock`, which
  // is released while joining: what the caller read before may have changed after.
  void JoinRetired(std::unique_lock<std::mutex>* lock);

  const size_t warm_, max_, max_queued_;
  const std::atomic<bool>* const stopping_;
  const std::chrono::milliseconds idle_retire_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable room_;  // a queued task was taken
  std::deque<std::function<void()>> tasks_;
  std::map<int, std::thread> threads_;  // by id, until joined
  std::vector<int> retired_;            // left Run, not yet joined
  size_t live_ = 0;                     // in Run
  size_t idle_ = 0;                     // in Run, waiting for a task
  int next_id_ = 0;
  bool stop_ = false;
};

}  // namespace a2sf::worker::http

#endif  // A2SF_WORKER_HTTP_CONNECTION_POOL_H_
