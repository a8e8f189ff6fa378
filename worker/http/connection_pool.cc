#include "worker/http/connection_pool.h"

#include <algorithm>
#include <system_error>
#include <utility>

namespace a2sf::worker::http {

ConnectionPool::ConnectionPool(size_t warm, size_t max, size_t max_queued, const std::atomic<bool>* stopping,
                               std::chrono::milliseconds idle_retire)
    : warm_(std::max<size_t>(warm, 1)),
      max_(std::max(max, std::max<size_t>(warm, 1))),
      max_queued_(max_queued),
      stopping_(stopping),
      idle_retire_(idle_retire) {}

ConnectionPool::~ConnectionPool() { shutdown(); }

void ConnectionPool::enqueue(std::function<void()> fn) {
  std::unique_lock<std::mutex> lock(mutex_);
  JoinRetired(&lock);
  // Full: wait for a thread to take a queued task (in slices, to notice `stopping`), while there is
  // one that will.
  while (max_queued_ > 0 && tasks_.size() >= max_queued_ && live_ > 0 && !stop_ &&
         !(stopping_ != nullptr && stopping_->load())) {
    room_.wait_for(lock, std::chrono::milliseconds(50));
  }
  tasks_.push_back(std::move(fn));
  // A thread that is idle takes it; else one more thread, while there is room.
  if (idle_ >= tasks_.size() || live_ >= max_) {
    wake_.notify_one();
    return;
  }
  const int id = next_id_;
  std::thread thread;
  try {
    thread = std::thread(&ConnectionPool::Run, this, id);
  } catch (const std::system_error&) {  // no thread to be had (a process or memory limit): the task
    return;                             // waits for a thread that is running
  }
  ++next_id_;
  ++live_;  // the new thread waits for the mutex this call holds before it counts itself idle
  threads_.emplace(id, std::move(thread));
}

void ConnectionPool::Run(int id) {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    ++idle_;
    const bool woken = wake_.wait_for(lock, idle_retire_, [this] { return stop_ || !tasks_.empty(); });
    --idle_;
    if (tasks_.empty() && (stop_ || (!woken && live_ > warm_))) break;
    if (tasks_.empty()) continue;
    std::function<void()> task = std::move(tasks_.front());
    tasks_.pop_front();
    room_.notify_one();
    lock.unlock();
    task();
    lock.lock();
  }
  --live_;
  retired_.push_back(id);
  wake_.notify_all();  // shutdown waits for every thread to leave
}

void ConnectionPool::JoinRetired(std::unique_lock<std::mutex>* lock) {
  std::vector<std::thread> done;
  for (int id : retired_) {
    done.push_back(std::move(threads_[id]));
    threads_.erase(id);
  }
  retired_.clear();
  if (done.empty()) return;
  lock->unlock();  // a retired thread may still need the mutex to leave Run
  for (std::thread& t : done) t.join();
  lock->lock();
}

void ConnectionPool::shutdown() {
  std::unique_lock<std::mutex> lock(mutex_);
  stop_ = true;
  wake_.notify_all();
  wake_.wait(lock, [this] { return live_ == 0; });
  JoinRetired(&lock);
}

size_t ConnectionPool::threads() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return live_;
}

}  // namespace a2sf::worker::http
