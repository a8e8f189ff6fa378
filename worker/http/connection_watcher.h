// ConnectionWatcher: notices HTTP clients that close their connection while their request is still
// being served (a non-streaming completion writes nothing until the job ends, so a write cannot tell),
// so that the server can cancel the job at once instead of finishing it for nobody. One thread polls
// the watched sockets for the peer's hang-up (POLLRDHUP, POLLHUP, POLLERR; bytes a client sends
// ahead, such as a pipelined request, are not a hang-up). ConnectionSocket finds the socket of an
// httplib request (httplib 0.11 does not hand it to handlers).
//
// Thread-safety: Watch and ~Handle may be called from any thread; callbacks run on the watcher's
// thread, under its lock, so after a Handle is destroyed its callback never runs (callbacks must be
// quick and must not touch the watcher). Ownership: the watcher must outlive its handles.
#ifndef A2SF_WORKER_HTTP_CONNECTION_WATCHER_H_
#define A2SF_WORKER_HTTP_CONNECTION_WATCHER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace httplib {
struct Request;
}  // namespace httplib

namespace a2sf::worker::http {

class ConnectionWatcher {
 public:
  // Sockets are polled in rounds of `period` (how late a hang-up may be noticed at most).
  explicit ConnectionWatcher(absl::Duration period = absl::Milliseconds(50));
  ConnectionWatcher(const ConnectionWatcher&) = delete;
  ConnectionWatcher& operator=(const ConnectionWatcher&) = delete;
  ~ConnectionWatcher();

  // Watching one socket; destroying it stops the watch.
  class Handle {
   public:
    Handle(ConnectionWatcher* watcher, uint64_t id) : watcher_(watcher), id_(id) {}
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    ~Handle();

   private:
    ConnectionWatcher* const watcher_;
    const uint64_t id_;
  };

  // Calls `on_closed` once when the peer of socket `fd` hangs up, until the handle is destroyed.
  // A negative fd is watched for nothing.
  std::unique_ptr<Handle> Watch(int fd, std::function<void()> on_closed);

  // Sockets watched now (tests).
  size_t watched() const;

 private:
  struct Entry {
    int fd;
    std::function<void()> on_closed;
  };
  void Loop();
  void Remove(uint64_t id);
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return stopping_ || !entries_.empty(); }

  const absl::Duration period_;
  mutable absl::Mutex mutex_;
  std::map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mutex_);
  uint64_t next_id_ ABSL_GUARDED_BY(mutex_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mutex_) = false;
  std::thread thread_;
};

// The socket httplib serves `request` on (TLS: the SSL object's; plaintext: the process's socket
// whose local and peer addresses are the request's), or -1 if none is found.
int ConnectionSocket(const httplib::Request& request);

}  // namespace a2sf::worker::http

#endif  // A2SF_WORKER_HTTP_CONNECTION_WATCHER_H_
