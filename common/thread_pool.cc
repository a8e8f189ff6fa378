#include "common/thread_pool.h"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace a2sf {
namespace {

constexpr int kIndexBits = 24, kCountBits = 24;
constexpr uint64_t kIndexMask = (uint64_t(1) << kIndexBits) - 1;
constexpr uint64_t kCallMask = (uint64_t(1) << (64 - kIndexBits - kCountBits)) - 1;  // the call number wraps

uint64_t Call(uint64_t word) { return word >> (kIndexBits + kCountBits); }
uint64_t Count(uint64_t word) { return (word >> kIndexBits) & ((uint64_t(1) << kCountBits) - 1); }
uint64_t Index(uint64_t word) { return word & kIndexMask; }

void Pause() {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int num_threads, std::chrono::microseconds spin) : spin_(spin) {
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::RunItems(uint64_t word) {
  while (Index(word) < Count(word)) {
    // Claim item Index(word) of this call only: a word of another call fails the exchange.
    if (!word_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel)) {
      continue;  // `word` now holds the current word (maybe of a later call: its items are as good)
    }
    // The call is running (this item is claimed and unfinished), so fn_ is its function.
    (*fn_.load(std::memory_order_acquire))(size_t(Index(word)));
    pending_.fetch_sub(1, std::memory_order_acq_rel);
    word = word_.load(std::memory_order_acquire);
  }
}

bool ThreadPool::AwaitCall(uint64_t seen) {
  const auto spin_until = std::chrono::steady_clock::now() + spin_;
  for (int i = 0;; ++i) {
    if (stop_.load(std::memory_order_acquire)) return false;
    if (Call(word_.load(std::memory_order_acquire)) != seen) return true;
    if (spin_.count() == 0 || (i % 64 == 63 && std::chrono::steady_clock::now() > spin_until)) break;
    Pause();
  }
  std::unique_lock<std::mutex> lock(sleep_mutex_);
  sleeping_.fetch_add(1, std::memory_order_seq_cst);
  wake_.wait(lock, [&] { return stop_.load() || Call(word_.load(std::memory_order_seq_cst)) != seen; });
  sleeping_.fetch_sub(1, std::memory_order_seq_cst);
  return !stop_.load();
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  while (AwaitCall(seen)) {
    const uint64_t word = word_.load(std::memory_order_acquire);
    seen = Call(word);
    RunItems(word);
  }
}

void ThreadPool::ParallelFor(size_t n, const std::function<void(size_t)>& fn) {
  if (n == 0) return;
  if (workers_.empty() || n == 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  if (n > kMaxItems) {  // in calls of at most kMaxItems items
    for (size_t base = 0; base < n; base += kMaxItems) {
      const std::function<void(size_t)> slice = [&fn, base](size_t i) { fn(base + i); };
      ParallelFor(std::min(kMaxItems, n - base), slice);
    }
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mutex_);
  // Every item of the last call is finished, so no worker reads fn_ now.
  fn_.store(&fn, std::memory_order_release);
  pending_.store(n, std::memory_order_relaxed);
  const uint64_t call = (Call(word_.load(std::memory_order_relaxed)) + 1) & kCallMask;
  const uint64_t word = (call << (kIndexBits + kCountBits)) | (uint64_t(n) << kIndexBits);
  word_.store(word, std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(sleep_mutex_);
    wake_.notify_all();
  }
  RunItems(word);
  // Items other threads claimed are running: most are short, so wait spinning, then yielding, and
  // only for a long one (an eval sweep's) by sleeping in short naps.
  for (int i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
    if (i < 4096) Pause();
    else if (i < 8192) std::this_thread::yield();
    else std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

}  // namespace a2sf
