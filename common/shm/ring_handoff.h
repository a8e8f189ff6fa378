// Ring hand-off: how a worker's sealed score-ring segment (score_ring.h) reaches the cache manager.
// gRPC cannot carry file descriptors, so the cache manager listens on a second Unix socket beside its
// gRPC one ("<unix_socket>.ring", SOCK_SEQPACKET, the same file mode). A worker connects, sends the
// segment's descriptor (SCM_RIGHTS) and gets back a one-time handle: 128 random bits as hex. It names
// the handle in OpenSession (SharedMemoryRing.handle), which takes the descriptor out of the pending
// table. Passing the descriptor proves the peer holds the segment with its own rights, so the cache
// manager never opens anything on a peer's say-so; the server also checks, before answering, that the
// descriptor is a sealed memfd owned by the connecting peer's uid (SO_PEERCRED).
//
// Bounds: at most kMaxPending descriptors wait for their OpenSession, each at most kPendingTtl; a
// peer gets kIoTimeout to send its message, and at most kMaxConnections wait to (the oldest goes);
// connections are served as their messages arrive, so an idle one delays no other.
//
// Thread-safety: RingHandoffServer's methods may be called concurrently; it serves on its own thread.
#ifndef A2SF_COMMON_SHM_RING_HANDOFF_H_
#define A2SF_COMMON_SHM_RING_HANDOFF_H_

#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

namespace a2sf {

// The ring socket that goes with a cache manager's gRPC Unix socket path.
std::string RingSocketPath(const std::string& unix_socket_path);

// Worker side: hands `fd` to the ring socket at `socket_path`; returns the handle.
// UNAVAILABLE when nobody listens there; the server's refusal keeps its code.
absl::StatusOr<std::string> OfferRingDescriptor(const std::string& socket_path, int fd);

class RingHandoffServer {
 public:
  static constexpr size_t kMaxPending = 64;
  static constexpr absl::Duration kPendingTtl = absl::Seconds(30);
  static constexpr absl::Duration kIoTimeout = absl::Milliseconds(500);
  static constexpr size_t kMaxConnections = 64;

  // Binds `socket_path` (an existing socket there is replaced only if nothing answers on it) with
  // file mode `mode`, and starts serving.
  static absl::StatusOr<std::unique_ptr<RingHandoffServer>> Start(const std::string& socket_path, int mode);
  ~RingHandoffServer();  // stops serving, closes pending descriptors and removes the socket

  // The descriptor registered under `handle` (the caller owns it from now on); NOT_FOUND for an
  // unknown, already taken or expired handle.
  absl::StatusOr<int> Take(const std::string& handle);
  size_t pending() const;

 private:
  struct Pending {
    int fd;
    absl::Time expires;
  };
  RingHandoffServer(std::string path, int listen_fd);
  void Serve();
  void ServeConnection(int connection);
  // Registers `fd` and returns its handle; RESOURCE_EXHAUSTED when kMaxPending wait already.
  absl::StatusOr<std::string> Register(int fd);

  const std::string path_;
  const int listen_fd_;
  absl::Notification stop_;
  mutable absl::Mutex mutex_;
  std::map<std::string, Pending> pending_ ABSL_GUARDED_BY(mutex_);
  std::thread thread_;
};

}  // namespace a2sf

#endif  // A2SF_COMMON_SHM_RING_HANDOFF_H_
