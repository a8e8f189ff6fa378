// CacheManagerWatch: tells the worker's health service whether the worker can run a job. With
// --on_cachemgr_failure=fail a worker whose cache manager is unreachable fails every job, so load
// balancers must see it NOT_SERVING until the cache manager answers again. The watch asks the cache
// manager's grpc.health.v1 service every `interval` (with that as the call's deadline, so a stopped
// cache manager counts as unreachable too) and calls `on_change` when reachability changes, and once
// with the first answer.
//
// Thread-safety: owns one thread; `on_change` runs on it. The destructor stops and joins the thread
// (after it, `on_change` is never called again). Ownership: the channel is shared.
#ifndef A2SF_WORKER_SERVICE_CACHE_MANAGER_WATCH_H_
#define A2SF_WORKER_SERVICE_CACHE_MANAGER_WATCH_H_

#include <functional>
#include <memory>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace a2sf::worker {

class CacheManagerWatch {
 public:
  using OnChange = std::function<void(bool reachable, const absl::Status& why)>;
  CacheManagerWatch(std::shared_ptr<grpc::Channel> channel, absl::Duration interval, OnChange on_change);
  CacheManagerWatch(const CacheManagerWatch&) = delete;
  CacheManagerWatch& operator=(const CacheManagerWatch&) = delete;
  ~CacheManagerWatch();

  // One health check: OK when the cache manager answered SERVING within `timeout`.
  static absl::Status Probe(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout);

 private:
  void Run();

  std::shared_ptr<grpc::Channel> channel_;
  absl::Duration interval_;
  OnChange on_change_;
  absl::Notification stop_;
  std::thread thread_;
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_CACHE_MANAGER_WATCH_H_
