#include "worker/service/call_watchdog.h"

namespace a2sf::worker {

CallWatchdog::~CallWatchdog() {
  {
    absl::MutexLock lock(&mutex_);
    stop_ = true;
    wake_.Signal();
  }
  if (thread_.joinable()) thread_.join();
}

void CallWatchdog::Arm(absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return;
  absl::MutexLock lock(&mutex_);
  deadline_ = absl::Now() + timeout;
  if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
  if (deadline_ < sleeping_until_) wake_.Signal();
}

void CallWatchdog::Disarm() {
  absl::MutexLock lock(&mutex_);
  deadline_ = absl::InfiniteFuture();  // the thread finds nothing to do when it next wakes
}

bool CallWatchdog::fired() const {
  absl::MutexLock lock(&mutex_);
  return fired_;
}

void CallWatchdog::Run() {
  absl::MutexLock lock(&mutex_);
  while (!stop_) {
    if (absl::Now() >= deadline_) {
      fired_ = true;
      deadline_ = absl::InfiniteFuture();
      context_->TryCancel();
      continue;
    }
    sleeping_until_ = deadline_;
    if (deadline_ == absl::InfiniteFuture()) {
      wake_.Wait(&mutex_);
    } else {
      wake_.WaitWithDeadline(&mutex_, deadline_);
    }
    sleeping_until_ = absl::InfiniteFuture();
  }
}

}  // namespace a2sf::worker
