// JobMetrics keeps the worker's gauges right whatever path a job takes: queued -> running -> gone,
// KV bytes as the sum over jobs, and everything a job held given back when it fails early.
#include "worker/service/worker_metrics.h"

#include <sstream>

#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"

namespace a2sf::worker {
namespace {

class WorkerMetricsTest : public ::testing::Test {
 protected:
  // The value of the series `name{labels...}` as exposed (labels as they print, e.g. policy="h2o").
  double Value(const std::string& name, const std::string& labels = "") {
    const std::string text = prometheus::TextSerializer().Serialize(registry_.Collect());
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind(name, 0) != 0 || (line[name.size()] != ' ' && line[name.size()] != '{')) continue;
      if (!labels.empty() && line.find(labels) == std::string::npos) continue;
      return std::stod(line.substr(line.rfind(' ') + 1));
    }
    return -1;
  }
  prometheus::Registry registry_;
  WorkerMetrics metrics_{&registry_, "m", "cpu"};
};

TEST_F(WorkerMetricsTest, AJobIsQueuedThenRunningThenGone) {
  {
    JobMetrics job(&metrics_);
    EXPECT_EQ(Value("a2sf_worker_queued_jobs"), 1);
    EXPECT_EQ(Value("a2sf_worker_running_jobs"), 0);
    job.Started("h2o", 12);
    EXPECT_EQ(Value("a2sf_worker_queued_jobs"), 0);
    EXPECT_EQ(Value("a2sf_worker_running_jobs"), 1);
    EXPECT_EQ(Value("a2sf_worker_prompt_tokens_total", "policy=\"h2o\""), 12);
    job.Token(100);
    job.Token(200);
    job.Token(300);
    EXPECT_EQ(Value("a2sf_worker_tokens_total", "policy=\"h2o\""), 3);
    EXPECT_EQ(Value("a2sf_worker_time_to_first_token_seconds_count", "policy=\"h2o\""), 1);
    EXPECT_EQ(Value("a2sf_worker_inter_token_latency_seconds_count", "policy=\"h2o\""), 2);
    v1::JobStats stats;
    stats.set_evictions(7);
    stats.set_generated_tokens(3);
    stats.set_tokens_per_second(250);
    job.Finished(stats);
    EXPECT_EQ(Value("a2sf_worker_evicted_entries_total", "policy=\"h2o\""), 7);
    EXPECT_EQ(Value("a2sf_worker_job_tokens_per_second_count", "policy=\"h2o\""), 1);
    EXPECT_EQ(Value("a2sf_worker_job_tokens_per_second_sum", "policy=\"h2o\""), 250);
    EXPECT_EQ(Value("a2sf_worker_e2e_request_latency_seconds_count", "policy=\"h2o\""), 1);
  }
  EXPECT_EQ(Value("a2sf_worker_running_jobs"), 0);
  EXPECT_EQ(Value("a2sf_worker_kv_bytes_in_use", "policy=\"h2o\""), 0);
}

// A scoring call (prompt-only, no tokens) and a one-token job have no decode rate: they add no zero to
// the speed histogram, but count as ended jobs.
TEST_F(WorkerMetricsTest, JobsWithoutADecodeRateLeaveTheSpeedHistogramAlone) {
  for (uint32_t generated : {0u, 1u}) {
    JobMetrics job(&metrics_);
    job.Started("a2sf", 8);
    for (uint32_t t = 0; t < generated; ++t) job.Token(100);
    v1::JobStats stats;
    stats.set_generated_tokens(generated);
    job.Finished(stats);
  }
  EXPECT_EQ(Value("a2sf_worker_e2e_request_latency_seconds_count", "policy=\"a2sf\""), 2);
  EXPECT_LE(Value("a2sf_worker_job_tokens_per_second_count", "policy=\"a2sf\""), 0);
}

TEST_F(WorkerMetricsTest, KvBytesInUseIsTheSumOverRunningJobsByPolicy) {
  JobMetrics a(&metrics_), b(&metrics_), c(&metrics_);
  a.Started("h2o", 1);
  b.Started("h2o", 1);
  c.Started("a2sf", 1);
  a.Token(1000);
  b.Token(500);
  c.Token(64);
  EXPECT_EQ(Value("a2sf_worker_kv_bytes_in_use", "policy=\"h2o\""), 1500);
  EXPECT_EQ(Value("a2sf_worker_kv_bytes_in_use", "policy=\"a2sf\""), 64);
  a.Token(800);  // an eviction shrank a's cache
  EXPECT_EQ(Value("a2sf_worker_kv_bytes_in_use", "policy=\"h2o\""), 1300);
  a.Finished(v1::JobStats());
  EXPECT_EQ(Value("a2sf_worker_kv_bytes_in_use", "policy=\"h2o\""), 500);
}

TEST_F(WorkerMetricsTest, AJobThatFailsEarlyGivesBackWhatItHeld) {
  { JobMetrics refused_session(&metrics_); }  // failed before it started
  {
    JobMetrics failed_mid_job(&metrics_);
    failed_mid_job.Started("a2sf", 3);
    failed_mid_job.Token(4096);
  }  // no Finished: the engine failed
  EXPECT_EQ(Value("a2sf_worker_queued_jobs"), 0);
  EXPECT_EQ(Value("a2sf_worker_running_jobs"), 0);
  EXPECT_EQ(Value("a2sf_worker_kv_bytes_in_use", "policy=\"a2sf\""), 0);
  EXPECT_EQ(Value("a2sf_worker_e2e_request_latency_seconds_count", "policy=\"a2sf\""), -1);
}

TEST_F(WorkerMetricsTest, BuildInfoAndOutcomes) {
  EXPECT_EQ(Value("a2sf_worker_build_info", "model=\"m\""), 1);
  metrics_.Rejected();
  metrics_.Outcome("cancelled");
  EXPECT_EQ(Value("a2sf_worker_jobs_total", "outcome=\"rejected\""), 1);
  EXPECT_EQ(Value("a2sf_worker_jobs_total", "outcome=\"cancelled\""), 1);
  JobMetrics null_metrics(nullptr);  // a worker without --metrics_listen
  null_metrics.Started("a2sf", 1);
  null_metrics.Token(1);
  null_metrics.Finished(v1::JobStats());
}

}  // namespace
}  // namespace a2sf::worker
