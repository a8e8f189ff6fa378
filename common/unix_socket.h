// Unix-socket paths a server listens on: claiming a path safely and creating the socket with an
// explicit file mode (the mode is the trust boundary for everything served on the socket).
// Thread-safety: ClaimUnixSocketPath is; ScopedUmask changes the process-wide umask and is meant for
// start-up, before other threads create files.
#ifndef A2SF_COMMON_UNIX_SOCKET_H_
#define A2SF_COMMON_UNIX_SOCKET_H_

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"

namespace a2sf {

// Makes `path` free for a new socket: OK when nothing is there; removes a stale socket (one that
// refuses connections). FAILED_PRECONDITION, leaving the path alone, for anything else there: a
// file that is not a socket, or a socket a live server answers on. INVALID_ARGUMENT for a path too
// long for sockaddr_un.
absl::Status ClaimUnixSocketPath(const std::string& path);

// Sets the file mode of a socket just created (chmod); INTERNAL with the reason if it fails.
absl::Status SetSocketMode(const std::string& path, mode_t mode);

// While alive, files are created with at most owner read/write (umask 0177), so a socket is never
// reachable with looser permissions before SetSocketMode widens them to what was asked.
class ScopedUmask {
 public:
  ScopedUmask();
  ~ScopedUmask();
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;

 private:
  mode_t previous_;
};

}  // namespace a2sf

#endif  // A2SF_COMMON_UNIX_SOCKET_H_
