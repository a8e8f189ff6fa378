// BatchScheduler: the worker's one decode loop and its admission queue (continuous batching).
//
// A job takes a Place: it waits in a FIFO queue until there is room -- fewer than max_batch jobs
// running and its KV reservation fitting max_kv_bytes beside the running jobs' -- and is then
// admitted; Join hands its SequenceGeneration to the loop, which steps every running sequence together
// through one ForwardPass (worker/engine/generator.h: rows of all jobs in one pass, then every
// job's SubmitStep, then the decisions due). Jobs join and leave at step boundaries; a job that
// finishes, is cancelled or whose client went away frees its place (and KV reservation) at once, and
// the head of the queue is admitted. Beyond max_waiting queued jobs Enqueue refuses
// (RESOURCE_EXHAUSTED); a reservation above max_kv_bytes can never fit and is refused at once.
//
// Thread-safety: every method may be called from any thread (gRPC handlers); the loop runs on its own
// thread, so a sequence's callbacks run there. Ownership: a Place must not outlive its scheduler.
#ifndef A2SF_WORKER_SERVICE_BATCH_SCHEDULER_H_
#define A2SF_WORKER_SERVICE_BATCH_SCHEDULER_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/engine/generator.h"

namespace a2sf::worker {

struct SchedulerOptions {
  int max_batch = 16;       // sequences per step (running jobs)
  int max_waiting = 64;     // queued jobs; RESOURCE_EXHAUSTED beyond
  size_t max_kv_bytes = 0;  // sum of the running jobs' KV reservations; 0: no limit
  int threads = 1;          // of the batch's forward pass
};

class BatchScheduler {
 public:
  // One job's place: queued, then admitted (holding a running slot and its KV reservation) until it
  // is released -- by the loop when its sequence ends, or by the destructor.
  class Place {
   public:
    ~Place();
    Place(const Place&) = delete;
    Place& operator=(const Place&) = delete;
    // Jobs ahead of it when it joined the queue (0: admitted at once).
    int queue_position() const { return queue_position_; }
    // How long it waited; valid once admitted.
    absl::Duration waited() const { return waited_; }
    size_t kv_bytes() const { return kv_bytes_; }

   private:
    friend class BatchScheduler;
    enum class State { kWaiting, kAdmitted, kReleased };
    Place(BatchScheduler* scheduler, size_t kv_bytes) : scheduler_(scheduler), kv_bytes_(kv_bytes) {}
    BatchScheduler* const scheduler_;
    const size_t kv_bytes_;
    State state_ = State::kWaiting;  // guarded by the scheduler's mutex
    int queue_position_ = 0;
    absl::Time enqueued_;
    absl::Duration waited_;
  };

  // Starts the loop's thread. REQUIRES: options within range (checked by the caller's flags).
  BatchScheduler(const ModelWeights* weights, SchedulerOptions options);
  // Cancels what still runs and stops the loop.
  ~BatchScheduler();

  // Joins the queue (or is admitted at once) with a KV reservation of `kv_bytes`. INVALID_ARGUMENT
  // when the reservation exceeds max_kv_bytes (it could never fit); RESOURCE_EXHAUSTED when
  // max_waiting jobs are queued already.
  absl::StatusOr<std::unique_ptr<Place>> Enqueue(size_t kv_bytes);
  // Waits until `place` is admitted (OK) or `cancelled()` turns true (CANCELLED: it leaves the queue
  // at once). `cancelled` is polled every few milliseconds; Wake() makes it look sooner.
  absl::Status AwaitAdmission(Place* place, const std::function<bool()>& cancelled);
  // Wakes the waiters to look at their `cancelled` (after a CancelJob).
  void Wake();

  // Hands an admitted place's sequence to the loop: from the next step it runs with the others.
  // Every step the loop first asks `cancelled()` (true: the sequence is cancelled before the step);
  // when the sequence is done the loop releases `place` and calls `on_done()`. The sequence, place
  // and callbacks must live until on_done has run.
  void Join(Place* place, SequenceGeneration* sequence, std::function<bool()> cancelled,
            std::function<void()> on_done);

  int running() const;
  int waiting() const;
  int max_batch() const { return options_.max_batch; }

 private:
  struct Running {
    Place* place;
    SequenceGeneration* sequence;
    std::function<bool()> cancelled;
    std::function<void()> on_done;
  };
  void Release(Place* place);
  void AdmitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  void Loop();
  // Ends and removes the sequences that are done.
  void Retire(std::vector<Running>* running);

  const SchedulerOptions options_;
  ForwardPass pass_;
  mutable absl::Mutex mutex_;
  std::deque<Place*> waiting_ ABSL_GUARDED_BY(mutex_);
  int admitted_ ABSL_GUARDED_BY(mutex_) = 0;
  size_t kv_reserved_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t wake_ ABSL_GUARDED_BY(mutex_) = 0;
  std::vector<Running> joining_ ABSL_GUARDED_BY(mutex_);
  bool stop_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread loop_;
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_BATCH_SCHEDULER_H_
