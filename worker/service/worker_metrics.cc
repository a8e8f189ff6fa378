#include "worker/service/worker_metrics.h"

#include "absl/time/clock.h"
#include "common/cli.h"

namespace a2sf::worker {

namespace {

using Buckets = prometheus::Histogram::BucketBoundaries;

// Seconds from a fraction of a millisecond (the test model on a CPU, a GPU step) to tens of minutes
// (a long prompt queued behind others on a CPU).
const Buckets& TimeToFirstTokenBuckets() {
  static const Buckets b = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                            2.5,   5,      10,    20,   40,    80,   160, 320,  640};
  return b;
}
const Buckets& InterTokenBuckets() {
  static const Buckets b = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                            0.05,   0.1,     0.25,   0.5,   1,      2.5,   5};
  return b;
}
const Buckets& EndToEndBuckets() {
  static const Buckets b = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,   2.5,  5,    10,
                            20,   40,    80,   160, 320,  640, 1280, 2560};
  return b;
}

template <typename Builder>
auto& Register(Builder builder, const char* name, const char* help, prometheus::Registry* registry) {
  return builder.Name(name).Help(help).Register(*registry);
}

}  // namespace

WorkerMetrics::WorkerMetrics(prometheus::Registry* registry, const std::string& model, const std::string& device)
    : model_(model),
      queued_jobs_(Register(prometheus::BuildGauge(), "a2sf_worker_queued_jobs",
                            "Jobs accepted and not decoding yet (opening their policy session, waiting in the queue for "
                            "room in the batch or KV memory, allocating the engine)",
                            registry)
                       .Add({})),
      running_jobs_(Register(prometheus::BuildGauge(), "a2sf_worker_running_jobs", "Jobs decoding now", registry).Add({})),
      jobs_(Register(prometheus::BuildCounter(), "a2sf_worker_jobs_total",
                     "Jobs by outcome: finished, cancelled, failed, rejected", registry)),
      prompt_tokens_(Register(prometheus::BuildCounter(), "a2sf_worker_prompt_tokens_total",
                              "Prompt tokens of started jobs", registry)),
      generation_tokens_(
          Register(prometheus::BuildCounter(), "a2sf_worker_tokens_total", "Tokens generated", registry)),
      time_to_first_token_(Register(prometheus::BuildHistogram(), "a2sf_worker_time_to_first_token_seconds",
                                    "Time from admitting a job to its first generated token", registry)),
      queue_wait_(Register(prometheus::BuildHistogram(), "a2sf_worker_queue_wait_seconds",
                           "Time a job waited in the queue for room in the batch (--max_batch) or KV memory "
                           "(--max_kv_bytes)",
                           registry)),
      inter_token_latency_(Register(prometheus::BuildHistogram(), "a2sf_worker_inter_token_latency_seconds",
                                    "Time between consecutive generated tokens of a job", registry)),
      e2e_latency_(Register(prometheus::BuildHistogram(), "a2sf_worker_e2e_request_latency_seconds",
                            "Time from admitting a job to its end (finished or cancelled)", registry)),
      tokens_per_second_(Register(prometheus::BuildHistogram(), "a2sf_worker_job_tokens_per_second",
                                  "Decode speed per ended job", registry)),
      kv_bytes_in_use_(Register(prometheus::BuildGauge(), "a2sf_worker_kv_bytes_in_use",
                                "Bytes of K and V held by the running jobs now", registry)),
      evicted_entries_(Register(prometheus::BuildCounter(), "a2sf_worker_evicted_entries_total",
                                "KV entries evicted, over all jobs, layers and KV heads", registry)) {
  Register(prometheus::BuildGauge(), "a2sf_worker_build_info", "Always 1; the labels describe the build and model",
           registry)
      .Add({{"version", kVersion}, {"model", model}, {"device", device}})
      .Set(1);
}

void WorkerMetrics::Rejected() { jobs_.Add({{"outcome", "rejected"}}).Increment(); }

void WorkerMetrics::Outcome(const char* outcome) { jobs_.Add({{"outcome", outcome}}).Increment(); }

JobMetrics::JobMetrics(WorkerMetrics* metrics) : metrics_(metrics) {
  if (metrics_ != nullptr) metrics_->queued_jobs_.Increment();
}

JobMetrics::~JobMetrics() {
  if (metrics_ == nullptr) return;
  SetKvBytes(0);
  (started_ ? metrics_->running_jobs_ : metrics_->queued_jobs_).Decrement();
}

void JobMetrics::Started(const std::string& policy, uint32_t prompt_tokens, absl::Duration queued) {
  if (metrics_ == nullptr || started_) return;
  started_ = true;
  policy_ = policy.empty() ? "default" : policy;
  const prometheus::Labels labels = {{"model", metrics_->model_}, {"policy", policy_}};
  metrics_->queued_jobs_.Decrement();
  metrics_->running_jobs_.Increment();
  metrics_->prompt_tokens_.Add(labels).Increment(prompt_tokens);
  metrics_->queue_wait_.Add({{"model", metrics_->model_}}, TimeToFirstTokenBuckets())
      .Observe(absl::ToDoubleSeconds(queued));
  generation_tokens_ = &metrics_->generation_tokens_.Add(labels);
  time_to_first_token_ = &metrics_->time_to_first_token_.Add(labels, TimeToFirstTokenBuckets());
  inter_token_latency_ = &metrics_->inter_token_latency_.Add(labels, InterTokenBuckets());
  kv_bytes_in_use_ = &metrics_->kv_bytes_in_use_.Add(labels);
}

void JobMetrics::Token(size_t kv_bytes_held) {
  if (metrics_ == nullptr || !started_) return;
  const absl::Time now = absl::Now();
  if (first_token_) {
    time_to_first_token_->Observe(absl::ToDoubleSeconds(now - admitted_));
    first_token_ = false;
  } else {
    inter_token_latency_->Observe(absl::ToDoubleSeconds(now - last_token_));
  }
  last_token_ = now;
  generation_tokens_->Increment();
  SetKvBytes(kv_bytes_held);
}

void JobMetrics::Finished(const v1::JobStats& stats) {
  if (metrics_ == nullptr || !started_) return;
  const prometheus::Labels labels = {{"model", metrics_->model_}, {"policy", policy_}};
  metrics_->e2e_latency_.Add(labels, EndToEndBuckets()).Observe(absl::ToDoubleSeconds(absl::Now() - admitted_));
  // A decode rate needs two tokens: scoring calls (prompt-only) and one-token jobs would add zeros.
  if (stats.generated_tokens() >= 2) {
    metrics_->tokens_per_second_.Add(labels, Buckets{1, 3, 10, 30, 100, 300, 1000, 3000, 10000})
        .Observe(stats.tokens_per_second());
  }
  metrics_->evicted_entries_.Add(labels).Increment(double(stats.evictions()));
  SetKvBytes(0);
}

// The gauge is the sum over jobs: each job adds the change of its own bytes.
void JobMetrics::SetKvBytes(size_t bytes) {
  if (kv_bytes_in_use_ == nullptr) return;
  kv_bytes_in_use_->Increment(double(bytes) - kv_bytes_);
  kv_bytes_ = double(bytes);
}

}  // namespace a2sf::worker
