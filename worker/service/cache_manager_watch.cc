#include "worker/service/cache_manager_watch.h"

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "worker/service/cachemgr_status.h"

namespace a2sf::worker {

CacheManagerWatch::CacheManagerWatch(std::shared_ptr<grpc::Channel> channel, absl::Duration interval,
                                     OnChange on_change)
    : channel_(std::move(channel)), interval_(interval), on_change_(std::move(on_change)) {
  thread_ = std::thread([this] { Run(); });
}

CacheManagerWatch::~CacheManagerWatch() {
  stop_.Notify();
  thread_.join();
}

absl::Status CacheManagerWatch::Probe(const std::shared_ptr<grpc::Channel>& channel, absl::Duration timeout) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status = stub->Check(&context, {}, &response);
  if (!status.ok()) return UnreachableCacheManager(status);
  if (response.status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::UnavailableError(absl::StrCat("the cache manager reports ",
                                               grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())));
  }
  return absl::OkStatus();
}

void CacheManagerWatch::Run() {
  int last = -1;  // unknown
  do {
    const absl::Status status = Probe(channel_, interval_);
    const int now = status.ok() ? 1 : 0;
    if (now != last) on_change_(status.ok(), status);
    last = now;
  } while (!stop_.WaitForNotificationWithTimeout(interval_));
}

}  // namespace a2sf::worker
