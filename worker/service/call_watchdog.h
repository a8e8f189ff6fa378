// CallWatchdog: bounds how long one blocking operation on a synchronous gRPC call may take. The owner
// arms it before a Read or Write on the call and disarms it after; if the deadline passes first, the
// watchdog cancels the call (ClientContext::TryCancel), which makes the blocked operation return, and
// remembers that it did. Used by RemotePolicyClient for the per-step decision deadline: a cache manager that
// is alive but does not answer (stopped, overloaded, deadlocked) would otherwise freeze the job.
//
// Cost: one mutex per Arm/Disarm; the watchdog's thread wakes at most once per deadline, not per step.
// Thread-safety: Arm/Disarm/fired from one thread (the job's); the watchdog's own thread only cancels.
// Ownership: `context` is not owned and must outlive the watchdog.
#ifndef A2SF_WORKER_SERVICE_CALL_WATCHDOG_H_
#define A2SF_WORKER_SERVICE_CALL_WATCHDOG_H_

#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"

namespace a2sf::worker {

class CallWatchdog {
 public:
  explicit CallWatchdog(grpc::ClientContext* context) : context_(context) {}
  CallWatchdog(const CallWatchdog&) = delete;
  CallWatchdog& operator=(const CallWatchdog&) = delete;
  ~CallWatchdog();

  // The call is cancelled if it is still armed `timeout` from now. An infinite timeout does nothing.
  void Arm(absl::Duration timeout);
  void Disarm();
  // True once the watchdog has cancelled the call.
  bool fired() const;

 private:
  void Run();

  grpc::ClientContext* const context_;
  mutable absl::Mutex mutex_;
  absl::CondVar wake_;
  absl::Time deadline_ ABSL_GUARDED_BY(mutex_) = absl::InfiniteFuture();
  // What the thread sleeps towards; a new deadline earlier than it must wake the thread.
  absl::Time sleeping_until_ ABSL_GUARDED_BY(mutex_) = absl::InfiniteFuture();
  bool fired_ ABSL_GUARDED_BY(mutex_) = false;
  bool stop_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread thread_;  // started by the first Arm
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_CALL_WATCHDOG_H_
