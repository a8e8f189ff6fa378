#include "common/metrics/metrics_server.h"

#include <arpa/inet.h>

#include <exception>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"

namespace a2sf {
namespace {

// Connections the metrics endpoint serves at once (Prometheus scrapes one at a time per target).
constexpr int kMetricsThreads = 8;

}  // namespace

// civetweb reads what it can of a malformed address (e.g. "999.1.1.1:1" binds port 1 on every
// interface), so check the form first: host:port with an IPv4 literal, a [bracketed] IPv6 literal
// or a host name, and a port in [0, 65535].
absl::Status CheckListenAddress(const std::string& address) {
  const size_t colon = address.rfind(':');
  const auto bad = [&](const char* why) {
    return absl::InvalidArgumentError(absl::StrCat("address '", address, "': ", why, " (want host:port)"));
  };
  if (colon == std::string::npos || colon == 0) return bad("no host");
  uint32_t port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port > 65535) return bad("bad port");
  const std::string host = address.substr(0, colon);
  unsigned char buffer[16];
  if (host.front() == '[') {
    if (host.back() != ']' || inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), buffer) != 1) {
      return bad("bad IPv6 address");
    }
    return absl::OkStatus();
  }
  bool numeric = true;
  for (char c : host) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '-') return bad("bad host name");
    numeric &= absl::ascii_isdigit(c) || c == '.';
  }
  if (numeric && inet_pton(AF_INET, host.c_str(), buffer) != 1) return bad("bad IPv4 address");
  return absl::OkStatus();
}

// The registry as the exposer sees it: the refresh functions run, then the registry is collected.
class MetricsServer::RefreshingRegistry : public prometheus::Collectable {
 public:
  explicit RefreshingRegistry(std::shared_ptr<prometheus::Registry> registry) : registry_(std::move(registry)) {}
  void Add(std::function<void()> refresh) {
    absl::MutexLock lock(&mutex_);
    refreshers_.push_back(std::move(refresh));
  }
  std::vector<prometheus::MetricFamily> Collect() const override {
    {
      absl::MutexLock lock(&mutex_);
      for (const auto& refresh : refreshers_) refresh();
    }
    return registry_->Collect();
  }

 private:
  const std::shared_ptr<prometheus::Registry> registry_;
  mutable absl::Mutex mutex_;
  std::vector<std::function<void()>> refreshers_ ABSL_GUARDED_BY(mutex_);
};

void MetricsServer::OnScrape(std::function<void()> refresh) { collectable_->Add(std::move(refresh)); }

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(const std::string& address) {
  if (absl::Status s = CheckListenAddress(address); !s.ok()) return s;
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  server->registry_ = std::make_shared<prometheus::Registry>();
  // prometheus-cpp reports bind failures by throwing; keep exceptions inside this function.
  try {
    // civetweb serves one connection per thread, and prometheus-cpp's default is two threads with
    // civetweb's 30 s read timeout: two idle connections held a scrape for 30 s (and with it the
    // autoscaler's metric). More threads, and a connection that sends no request for 5 s is dropped.
    server->exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", address, "num_threads", std::to_string(kMetricsThreads), "request_timeout_ms", "5000"});
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", address, ": ", e.what()));
  }
  server->collectable_ = std::make_shared<RefreshingRegistry>(server->registry_);
  server->exposer_->RegisterCollectable(server->collectable_);
  const std::vector<int> ports = server->exposer_->GetListeningPorts();
  server->port_ = ports.empty() ? 0 : ports.front();
  return server;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::StartIfAsked(const std::string& address) {
  if (address.empty()) return std::unique_ptr<MetricsServer>();
  absl::StatusOr<std::unique_ptr<MetricsServer>> server = Start(address);
  if (server.ok()) A2SF_LOG(INFO) << "metrics on http://" << address << "/metrics (port " << (*server)->port() << ")";
  return server;
}

}  // namespace a2sf
