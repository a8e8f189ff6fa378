#include "common/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace a2sf {

absl::Status ClaimUnixSocketPath(const std::string& path) {
  sockaddr_un address{};
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat("Unix socket path must be 1 to ", sizeof(address.sun_path) - 1,
                                                   " characters: '", path, "'"));
  }
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrCat("Unix socket path ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " exists and is not a socket; refusing to replace it (remove it or choose another path)"));
  }
  // A socket: stale (its server is gone: connections are refused) or live. Any type of socket
  // answers a connect from a server that listens, even with the wrong type (EPROTOTYPE).
  const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), path.size());
  const int connected = connect(probe, reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  const int err = errno;
  close(probe);
  if (connected != 0 && err == ECONNREFUSED) {
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      return absl::FailedPreconditionError(absl::StrCat("removing stale socket ", path, ": ", std::strerror(errno)));
    }
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "a server already answers on ", path, connected == 0 ? "" : absl::StrCat(" (", std::strerror(err), ")"),
      "; refusing to take its socket (stop it or choose another path)"));
}

absl::Status SetSocketMode(const std::string& path, mode_t mode) {
  if (chmod(path.c_str(), mode) != 0) {
    return absl::InternalError(absl::StrFormat("chmod %04o %s: %s", mode, path, std::strerror(errno)));
  }
  return absl::OkStatus();
}

ScopedUmask::ScopedUmask() : previous_(umask(0177)) {}
ScopedUmask::~ScopedUmask() { umask(previous_); }

}  // namespace a2sf
