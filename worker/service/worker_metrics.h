// The worker's Prometheus metrics (names prefixed a2sf_worker_, units in the names, vLLM's set where it
// applies; docs/METRICS.md lists every one with a query). WorkerMetrics owns the families; JobMetrics is
// one job's recorder, so the service calls one method per event (accepted, started, token, finished)
// and never touches a metric itself. Latency and token series carry `model` and `policy` labels so
// operators can compare eviction policies on the same traffic.
//
// Thread-safety: prometheus-cpp metrics are thread-safe; a JobMetrics belongs to its job's thread.
// Ownership: WorkerMetrics must outlive every JobMetrics made from it; both hold references into the
// registry, which must outlive them.
#ifndef A2SF_WORKER_SERVICE_WORKER_METRICS_H_
#define A2SF_WORKER_SERVICE_WORKER_METRICS_H_

#include <cstdint>
#include <string>

#include "a2sf/v1/generation.pb.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "prometheus/counter.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace a2sf::worker {

class WorkerMetrics {
 public:
  // `model` and `device` label every series that compares runs (and a2sf_worker_build_info).
  WorkerMetrics(prometheus::Registry* registry, const std::string& model, const std::string& device);

  // A job refused before it was admitted (too many jobs).
  void Rejected();
  // How an admitted job ended: finished, cancelled or failed.
  void Outcome(const char* outcome);

 private:
  friend class JobMetrics;
  const std::string model_;
  prometheus::Gauge& queued_jobs_;
  prometheus::Gauge& running_jobs_;
  prometheus::Family<prometheus::Counter>& jobs_;
  prometheus::Family<prometheus::Counter>& prompt_tokens_;
  prometheus::Family<prometheus::Counter>& generation_tokens_;
  prometheus::Family<prometheus::Histogram>& time_to_first_token_;
  prometheus::Family<prometheus::Histogram>& queue_wait_;
  prometheus::Family<prometheus::Histogram>& inter_token_latency_;
  prometheus::Family<prometheus::Histogram>& e2e_latency_;
  prometheus::Family<prometheus::Histogram>& tokens_per_second_;
  prometheus::Family<prometheus::Gauge>& kv_bytes_in_use_;
  prometheus::Family<prometheus::Counter>& evicted_entries_;
};

// One job's metrics. Constructed when the job is admitted (it counts as queued until Started); the
// destructor takes back whatever the job still holds (queue or running slot, KV bytes), so a job that
// fails anywhere leaves the gauges right. A null WorkerMetrics makes every call a no-op.
class JobMetrics {
 public:
  explicit JobMetrics(WorkerMetrics* metrics);
  JobMetrics(const JobMetrics&) = delete;
  JobMetrics& operator=(const JobMetrics&) = delete;
  ~JobMetrics();

  // The job's policy is known and decoding begins after `queued` in the scheduler's queue: queued ->
  // running, prompt tokens counted, the wait observed.
  void Started(const std::string& policy, uint32_t prompt_tokens, absl::Duration queued = absl::ZeroDuration());
  // A token was produced; `kv_bytes_held` is the job's KV cache now.
  void Token(size_t kv_bytes_held);
  // The job ended normally (finished or cancelled): end-to-end latency, decode speed, evictions.
  void Finished(const v1::JobStats& stats);

 private:
  void SetKvBytes(size_t bytes);

  WorkerMetrics* const metrics_;
  const absl::Time admitted_ = absl::Now();
  absl::Time last_token_;
  bool started_ = false;
  bool first_token_ = true;
  double kv_bytes_ = 0;
  prometheus::Counter* generation_tokens_ = nullptr;
  prometheus::Histogram* time_to_first_token_ = nullptr;
  prometheus::Histogram* inter_token_latency_ = nullptr;
  prometheus::Gauge* kv_bytes_in_use_ = nullptr;
  std::string policy_;
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_WORKER_METRICS_H_
