#include "worker/service/cachemgr_status.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/default_policy_misfit.h"
#include "worker/service/cache_manager_watch.h"

namespace a2sf::worker {

namespace {

bool LooksLikeTlsFailure(const std::string& message) {
  const std::string lower = absl::AsciiStrToLower(message);
  return absl::StrContains(lower, "handshake") || absl::StrContains(lower, "ssl") ||
         absl::StrContains(lower, "tls") || absl::StrContains(lower, "certificate");
}

}  // namespace

absl::Status UnreachableCacheManager(const grpc::Status& status) {
  if (LooksLikeTlsFailure(status.error_message())) {
    return absl::UnavailableError(absl::StrCat("TLS handshake with the cache manager failed: ", status.error_message()));
  }
  return absl::UnavailableError(absl::StrCat("cache manager unreachable: ", status.error_message()));
}

absl::Status OpenFailureForClient(const absl::Status& status, const std::shared_ptr<grpc::Channel>& channel) {
  // The operator's default policy does not fit the job: the message says so and how to get past it.
  if (IsDefaultPolicyMisfit(status)) return absl::InternalError(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return status;  // about the request's own policy or budget, with the field named
    case absl::StatusCode::kResourceExhausted:
      return absl::ResourceExhaustedError(
          "the cache manager serving this worker has no room for another job now; retry later or on another worker");
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded: {
      // A wait-for-ready call that timed out says only "Deadline Exceeded"; a fail-fast probe carries
      // gRPC's last connection error (refused, TLS handshake, ...).
      absl::Status probe = CacheManagerWatch::Probe(channel, absl::Seconds(1));
      if (!probe.ok() && probe.message() != "cache manager unreachable: Deadline Exceeded") return probe;
      return absl::UnavailableError(absl::StrCat("cache manager unreachable: ", status.message()));
    }
    default:
      return absl::UnavailableError("this worker's cache manager refused to serve the job; retry on another worker");
  }
}

absl::Status MidJobFailureForClient(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kDeadlineExceeded:
      return absl::DeadlineExceededError(
          "the cache manager did not decide a step within the worker's decision deadline; the job was stopped");
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kAborted:
      return absl::UnavailableError("the worker lost its cache manager mid-job; the job was stopped");
    default:
      return absl::AbortedError(
          "the cache manager ended the job's eviction session (e.g. an operator's policy change or a closed "
          "session); the job was stopped and may be retried");
  }
}

}  // namespace a2sf::worker
