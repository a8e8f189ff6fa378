// MetricsServer: a Prometheus registry served over HTTP at /metrics (prometheus-cpp's exposer), for
// the servers' operational metrics. Thread-safe (prometheus-cpp metrics are).
#ifndef A2SF_COMMON_METRICS_METRICS_SERVER_H_
#define A2SF_COMMON_METRICS_METRICS_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/exposer.h"
#include "prometheus/registry.h"

namespace a2sf {

// Checks an HTTP listen address ("host:port" with an IPv4 literal, a [bracketed] IPv6 literal or a
// host name, and a port in [0, 65535]) before civetweb sees it: civetweb reads what it can of a
// malformed one. INVALID_ARGUMENT naming the problem.
absl::Status CheckListenAddress(const std::string& address);

class MetricsServer {
 public:
  // Listens on "host:port" (port 0: any free port). INVALID_ARGUMENT for a malformed address,
  // UNAVAILABLE when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(const std::string& address);
  // A server's --metrics_listen: null when `address` is empty, else Start's result, logged.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> StartIfAsked(const std::string& address);

  prometheus::Registry& registry() { return *registry_; }
  // Runs `refresh` at every scrape, before the registry is read: for gauges cheaper to read from
  // their source than to track (sessions by policy, bytes a store holds). Call before serving
  // starts to matter; `refresh` runs on the exposer's threads and must be thread-safe.
  void OnScrape(std::function<void()> refresh);
  int port() const { return port_; }

 private:
  class RefreshingRegistry;
  MetricsServer() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<RefreshingRegistry> collectable_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace a2sf

#endif  // A2SF_COMMON_METRICS_METRICS_SERVER_H_
