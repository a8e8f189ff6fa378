#include "worker/service/batch_scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace a2sf::worker {

namespace {
// How often a queued job looks at its `cancelled` (a gRPC client's disconnection has no callback here).
constexpr absl::Duration kCancelPoll = absl::Milliseconds(20);
}  // namespace

BatchScheduler::Place::~Place() { scheduler_->Release(this); }

BatchScheduler::BatchScheduler(const ModelWeights* weights, SchedulerOptions options)
    : options_(options), pass_(weights, std::clamp(options.threads, 1, 256)) {
  loop_ = std::thread([this] { Loop(); });
}

BatchScheduler::~BatchScheduler() {
  {
    absl::MutexLock lock(&mutex_);
    stop_ = true;
  }
  loop_.join();
}

absl::StatusOr<std::unique_ptr<BatchScheduler::Place>> BatchScheduler::Enqueue(size_t kv_bytes) {
  if (options_.max_kv_bytes != 0 && kv_bytes > options_.max_kv_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "budget: this job's KV cache needs ", kv_bytes, " bytes, more than this worker ever holds for running jobs (",
        options_.max_kv_bytes, " bytes, --max_kv_bytes); lower the budget or max_tokens"));
  }
  std::unique_ptr<Place> place(new Place(this, kv_bytes));
  absl::MutexLock lock(&mutex_);
  if (int(waiting_.size()) >= options_.max_waiting) {
    place->state_ = Place::State::kReleased;  // never held anything
    return absl::ResourceExhaustedError(absl::StrCat("this worker runs ", admitted_, " jobs and has ", waiting_.size(),
                                                     " waiting (--max_waiting); retry later or on another worker"));
  }
  place->queue_position_ = int(waiting_.size());
  place->enqueued_ = absl::Now();
  waiting_.push_back(place.get());
  AdmitLocked();
  return place;
}

// FIFO: the head waits until it fits, and nobody overtakes it (a large reservation is not starved).
void BatchScheduler::AdmitLocked() {
  while (!waiting_.empty() && admitted_ < options_.max_batch) {
    Place* head = waiting_.front();
    if (options_.max_kv_bytes != 0 && kv_reserved_ + head->kv_bytes_ > options_.max_kv_bytes) break;
    waiting_.pop_front();
    head->state_ = Place::State::kAdmitted;
    head->waited_ = absl::Now() - head->enqueued_;
    ++admitted_;
    kv_reserved_ += head->kv_bytes_;
  }
}

void BatchScheduler::Release(Place* place) {
  absl::MutexLock lock(&mutex_);
  if (place->state_ == Place::State::kWaiting) {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), place));
  } else if (place->state_ == Place::State::kAdmitted) {
    --admitted_;
    kv_reserved_ -= place->kv_bytes_;
  }
  place->state_ = Place::State::kReleased;
  AdmitLocked();
}

absl::Status BatchScheduler::AwaitAdmission(Place* place, const std::function<bool()>& cancelled) {
  while (true) {
    {
      absl::MutexLock lock(&mutex_);
      const uint64_t wake = wake_;
      auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        return place->state_ != Place::State::kWaiting || wake_ != wake;
      };
      mutex_.AwaitWithTimeout(absl::Condition(&ready), kCancelPoll);
      if (place->state_ == Place::State::kAdmitted) return absl::OkStatus();
      if (place->state_ == Place::State::kReleased) return absl::CancelledError("job: left the queue");
    }
    if (cancelled()) {
      Release(place);
      return absl::CancelledError("job: cancelled while queued");
    }
  }
}

void BatchScheduler::Wake() {
  absl::MutexLock lock(&mutex_);
  ++wake_;
}

void BatchScheduler::Join(Place* place, SequenceGeneration* sequence, std::function<bool()> cancelled,
                          std::function<void()> on_done) {
  absl::MutexLock lock(&mutex_);
  joining_.push_back({place, sequence, std::move(cancelled), std::move(on_done)});
}

int BatchScheduler::running() const {
  absl::MutexLock lock(&mutex_);
  return admitted_;
}

int BatchScheduler::waiting() const {
  absl::MutexLock lock(&mutex_);
  return int(waiting_.size());
}

void BatchScheduler::Retire(std::vector<Running>* running) {
  for (auto it = running->begin(); it != running->end();) {
    if (!it->sequence->done()) {
      ++it;
      continue;
    }
    Release(it->place);
    it->on_done();
    it = running->erase(it);
  }
}

void BatchScheduler::Loop() {
  GenerationBatch batch(&pass_);
  std::vector<Running> running;
  std::vector<SequenceGeneration*> sequences;
  while (true) {
    {
      absl::MutexLock lock(&mutex_);
      auto work = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) {
        return stop_ || !joining_.empty() || !running.empty();
      };
      mutex_.Await(absl::Condition(&work));
      for (Running& r : joining_) running.push_back(std::move(r));
      joining_.clear();
      if (stop_) {
        for (Running& r : running) r.sequence->Cancel();
      }
    }
    for (Running& r : running) {
      if (r.cancelled()) r.sequence->Cancel();
    }
    Retire(&running);
    if (running.empty()) {
      absl::MutexLock lock(&mutex_);
      if (stop_) return;
      continue;
    }
    sequences.clear();
    for (const Running& r : running) sequences.push_back(r.sequence);
    batch.Step(sequences);
    Retire(&running);
  }
}

}  // namespace a2sf::worker
