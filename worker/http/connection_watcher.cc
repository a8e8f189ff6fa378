#include "worker/http/connection_watcher.h"

#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "httplib.h"

namespace a2sf::worker::http {

ConnectionWatcher::ConnectionWatcher(absl::Duration period) : period_(period), thread_([this] { Loop(); }) {}

ConnectionWatcher::~ConnectionWatcher() {
  {
    absl::MutexLock lock(&mutex_);
    stopping_ = true;
  }
  thread_.join();
}

ConnectionWatcher::Handle::~Handle() { watcher_->Remove(id_); }

std::unique_ptr<ConnectionWatcher::Handle> ConnectionWatcher::Watch(int fd, std::function<void()> on_closed) {
  absl::MutexLock lock(&mutex_);
  const uint64_t id = next_id_++;
  if (fd >= 0) entries_[id] = Entry{fd, std::move(on_closed)};
  return std::make_unique<Handle>(this, id);
}

void ConnectionWatcher::Remove(uint64_t id) {
  absl::MutexLock lock(&mutex_);
  entries_.erase(id);
}

size_t ConnectionWatcher::watched() const {
  absl::MutexLock lock(&mutex_);
  return entries_.size();
}

void ConnectionWatcher::Loop() {
  std::vector<uint64_t> ids;
  std::vector<pollfd> fds;
  for (;;) {
    ids.clear();
    fds.clear();
    {
      absl::MutexLock lock(&mutex_);
      mutex_.Await(absl::Condition(this, &ConnectionWatcher::HasWork));
      if (stopping_) return;
      for (const auto& [id, entry] : entries_) {
        ids.push_back(id);
        fds.push_back(pollfd{entry.fd, POLLRDHUP, 0});
      }
    }
    // A socket closed and reused meanwhile is harmless: only ids still registered are called back.
    if (poll(fds.data(), fds.size(), int(absl::ToInt64Milliseconds(period_))) <= 0) continue;
    absl::MutexLock lock(&mutex_);
    for (size_t i = 0; i < fds.size(); ++i) {
      if ((fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) == 0) continue;
      auto it = entries_.find(ids[i]);
      if (it == entries_.end()) continue;
      std::function<void()> on_closed = std::move(it->second.on_closed);
      entries_.erase(it);
      on_closed();
    }
  }
}

namespace {

// "address:port" of a socket address as httplib writes a request's (numeric host, no brackets).
std::pair<std::string, int> Endpoint(const sockaddr_storage& address, socklen_t size) {
  char host[NI_MAXHOST] = {};
  char port[NI_MAXSERV] = {};
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&address), size, host, sizeof(host), port, sizeof(port),
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
    return {"", -1};
  }
  return {host, std::atoi(port)};
}

bool IsConnection(int fd, const httplib::Request& request) {
  struct stat info;
  if (fstat(fd, &info) != 0 || !S_ISSOCK(info.st_mode)) return false;
  sockaddr_storage address;
  socklen_t size = sizeof(address);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) return false;
  if (Endpoint(address, size) != std::pair{request.remote_addr, request.remote_port}) return false;
  size = sizeof(address);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) != 0) return false;
  return Endpoint(address, size) == std::pair{request.local_addr, request.local_port};
}

}  // namespace

int ConnectionSocket(const httplib::Request& request) {
#ifdef CPPHTTPLIB_OPENSSL_SUPPORT
  if (request.ssl != nullptr) return SSL_get_fd(request.ssl);
#endif
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int found = -1;
  for (const dirent* entry; found < 0 && (entry = readdir(dir)) != nullptr;) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end != entry->d_name && *end == '\0' && fd != dirfd(dir) && IsConnection(int(fd), request)) found = int(fd);
  }
  closedir(dir);
  return found;
}

}  // namespace a2sf::worker::http
