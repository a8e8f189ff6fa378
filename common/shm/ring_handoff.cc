#include "common/shm/ring_handoff.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/peer_strings.h"
#include "common/unix_socket.h"

namespace a2sf {

namespace {

constexpr char kOffer[] = "a2sf-ring-offer-1";
constexpr size_t kReplyBytes = 256;  // "OK <handle>" or "<absl code> <message>"

sockaddr_un AddressOf(const std::string& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.data(), std::min(path.size(), sizeof(address.sun_path) - 1));
  return address;
}

void SetTimeouts(int fd, absl::Duration timeout) {
  const timeval tv = absl::ToTimeval(timeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

void Reply(int connection, const std::string& text) {
  send(connection, text.data(), std::min(text.size(), kReplyBytes), MSG_NOSIGNAL);
}

std::string ErrorReply(const absl::Status& status) {
  return absl::StrCat(int(status.code()), " ", Utf8Prefix(status.message(), kReplyBytes - 8));
}

}  // namespace

std::string RingSocketPath(const std::string& unix_socket_path) { return unix_socket_path + ".ring"; }

absl::StatusOr<std::string> OfferRingDescriptor(const std::string& socket_path, int fd) {
  const int connection = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (connection < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  SetTimeouts(connection, absl::Seconds(5));
  const sockaddr_un address = AddressOf(socket_path);
  if (connect(connection, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    const int err = errno;
    close(connection);
    return absl::UnavailableError(absl::StrCat("ring socket ", socket_path, ": ", std::strerror(err)));
  }
  iovec iov{const_cast<char*>(kOffer), sizeof(kOffer)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(header), &fd, sizeof(int));
  char reply[kReplyBytes + 1] = {};
  ssize_t got = -1;
  if (sendmsg(connection, &message, MSG_NOSIGNAL) >= 0) got = recv(connection, reply, kReplyBytes, 0);
  const int err = errno;
  close(connection);
  if (got <= 0) {
    return absl::UnavailableError(absl::StrCat("ring socket ", socket_path, ": no answer (",
                                               got < 0 ? std::strerror(err) : "closed", ")"));
  }
  const std::string text(reply, size_t(got));
  if (text.rfind("OK ", 0) == 0) return text.substr(3);
  const size_t space = text.find(' ');
  int64_t code = 0;  // not a number: UNKNOWN (PeerError)
  if (!absl::SimpleAtoi(text.substr(0, space), &code)) code = 0;
  return PeerError(code, space == std::string::npos ? text : text.substr(space + 1));
}

absl::StatusOr<std::unique_ptr<RingHandoffServer>> RingHandoffServer::Start(const std::string& socket_path,
                                                                           int mode) {
  if (absl::Status s = ClaimUnixSocketPath(socket_path); !s.ok()) return s;
  const int listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (listen_fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  const sockaddr_un address = AddressOf(socket_path);
  int bound;
  {
    ScopedUmask umask;
    bound = bind(listen_fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  }
  if (bound != 0 || listen(listen_fd, 64) != 0) {
    const int err = errno;
    close(listen_fd);
    return absl::UnavailableError(absl::StrCat("ring socket ", socket_path, ": ", std::strerror(err)));
  }
  if (absl::Status s = SetSocketMode(socket_path, mode_t(mode)); !s.ok()) {
    close(listen_fd);
    unlink(socket_path.c_str());
    return s;
  }
  std::unique_ptr<RingHandoffServer> server(new RingHandoffServer(socket_path, listen_fd));
  server->thread_ = std::thread([s = server.get()] { s->Serve(); });
  return server;
}

RingHandoffServer::RingHandoffServer(std::string path, int listen_fd) : path_(std::move(path)), listen_fd_(listen_fd) {}

RingHandoffServer::~RingHandoffServer() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
  close(listen_fd_);
  unlink(path_.c_str());
  absl::MutexLock lock(&mutex_);
  for (auto& [handle, pending] : pending_) close(pending.fd);
}

// One poll over the listening socket and every connection not yet served: a connection is served
// when its offer has arrived (a SOCK_SEQPACKET message arrives whole, so reading it never waits), and
// closed unanswered after kIoTimeout without one -- a peer that connects and sends nothing delays no
// other. Past kMaxConnections waiting, the oldest is closed for the newest.
void RingHandoffServer::Serve() {
  struct Waiting {
    int fd;
    absl::Time deadline;
  };
  std::vector<Waiting> waiting;
  std::vector<pollfd> polled;
  while (!stop_.HasBeenNotified()) {
    polled.assign(1, pollfd{listen_fd_, POLLIN, 0});
    for (const Waiting& w : waiting) polled.push_back(pollfd{w.fd, POLLIN, 0});
    if (poll(polled.data(), polled.size(), 100) < 0) continue;
    const absl::Time now = absl::Now();
    std::vector<Waiting> still;
    for (size_t i = 0; i < waiting.size(); ++i) {
      const short events = polled[i + 1].revents;
      if ((events & POLLIN) != 0) {
        ServeConnection(waiting[i].fd);
      } else if ((events & (POLLHUP | POLLERR | POLLNVAL)) == 0 && now < waiting[i].deadline) {
        still.push_back(waiting[i]);
        continue;
      }
      close(waiting[i].fd);
    }
    waiting = std::move(still);
    if ((polled[0].revents & POLLIN) == 0) continue;
    const int connection = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (connection < 0) continue;
    if (waiting.size() >= kMaxConnections) {
      close(waiting.front().fd);
      waiting.erase(waiting.begin());
    }
    waiting.push_back({connection, now + kIoTimeout});
  }
  for (const Waiting& w : waiting) close(w.fd);
}

void RingHandoffServer::ServeConnection(int connection) {
  SetTimeouts(connection, kIoTimeout);
  ucred peer{};
  socklen_t peer_size = sizeof(peer);
  if (getsockopt(connection, SOL_SOCKET, SO_PEERCRED, &peer, &peer_size) != 0) return;
  char buffer[sizeof(kOffer)] = {};
  iovec iov{buffer, sizeof(buffer)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof(control);
  // With room for one descriptor, any more the peer sends are closed by the kernel (MSG_CTRUNC).
  const ssize_t got = recvmsg(connection, &message, MSG_CMSG_CLOEXEC);
  int fd = -1;
  for (cmsghdr* h = got > 0 ? CMSG_FIRSTHDR(&message) : nullptr; h != nullptr; h = CMSG_NXTHDR(&message, h)) {
    if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS && h->cmsg_len == CMSG_LEN(sizeof(int))) {
      std::memcpy(&fd, CMSG_DATA(h), sizeof(int));
    }
  }
  if (got != ssize_t(sizeof(kOffer)) || std::memcmp(buffer, kOffer, sizeof(kOffer)) != 0 || fd < 0) {
    if (fd >= 0) close(fd);
    Reply(connection, ErrorReply(absl::InvalidArgumentError("ring socket: expected one offer with one descriptor")));
    return;
  }
  // The descriptor must be the peer's own, sealed segment (score_ring.h checks seals and size again
  // when OpenSession maps it).
  struct stat st;
  const int seals = fcntl(fd, F_GET_SEALS);
  absl::Status verdict;
  if (fstat(fd, &st) != 0 || st.st_uid != peer.uid) {
    verdict = absl::PermissionDeniedError(absl::StrCat("ring socket: the segment is not owned by the sending peer (uid ",
                                                       peer.uid, ")"));
  } else if (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW)) {
    verdict = absl::FailedPreconditionError(
        "ring socket: the segment must be a memfd sealed with F_SEAL_SHRINK | F_SEAL_GROW");
  }
  absl::StatusOr<std::string> handle = verdict.ok() ? Register(fd) : absl::StatusOr<std::string>(verdict);
  if (!handle.ok()) {
    close(fd);
    A2SF_LOG(WARNING) << "refused a score ring from pid " << peer.pid << " uid " << peer.uid << ": "
                      << handle.status().message();
    Reply(connection, ErrorReply(handle.status()));
    return;
  }
  Reply(connection, "OK " + *handle);
}

absl::StatusOr<std::string> RingHandoffServer::Register(int fd) {
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mutex_);
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (it->second.expires < now) {
      close(it->second.fd);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  if (pending_.size() >= kMaxPending) {
    return absl::ResourceExhaustedError(absl::StrCat("ring socket: ", kMaxPending,
                                                     " offered rings already wait for their OpenSession"));
  }
  std::string handle = RandomHexSecret();
  pending_[handle] = {fd, now + kPendingTtl};
  return handle;
}

absl::StatusOr<int> RingHandoffServer::Take(const std::string& handle) {
  absl::MutexLock lock(&mutex_);
  auto it = pending_.find(handle);
  if (it == pending_.end() || it->second.expires < absl::Now()) {
    return absl::NotFoundError("shared_memory_ring.handle: unknown, already used or expired (offer the ring again)");
  }
  const int fd = it->second.fd;
  pending_.erase(it);
  return fd;
}

size_t RingHandoffServer::pending() const {
  absl::MutexLock lock(&mutex_);
  return pending_.size();
}

}  // namespace a2sf
