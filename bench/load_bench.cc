// Load: N concurrent jobs (N = 1, 2, 4, 8, 16) on one worker, which decodes them in one batch.
// Aggregate tok/s (all jobs' tokens / wall time from the first request to the last token), per-token
// latency p50/p99 (gaps between a job's consecutive tokens as its client receives them) and time to
// first token p50/p99, with policies in-process and in a cache manager over the Unix socket's
// shared-memory ring. Ratios are to N = 1 of the same model and path, measured in the same run.
// Real servers in this process, real clients (one thread per job).
//
//   bazel run -c opt //bench:load_bench -- --fixtures=/path/to/shared/fixtures
//
// Models: stories260K from the fixtures (skipped without them) and a synthetic stories110M-shaped
// model (random weights: same speed as the trained one, no download).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "bench/bench_setup.h"
#include "client/client.h"
#include "common/grpc/server.h"
#include "common/shm/ring_handoff.h"
#include "worker/model/model.h"
#include "worker/service/generation_service.h"

ABSL_FLAG(std::string, fixtures, "", "fixtures folder with stories260K-dq.bin (default: $A2SF_FIXTURES)");
ABSL_FLAG(int, threads, 2, "threads of the worker's forward pass");
ABSL_FLAG(int, tokens_260k, 200, "tokens per stories260K job");
ABSL_FLAG(int, tokens_110m, 24, "tokens per stories110M job");
ABSL_FLAG(std::string, jobs, "1,2,4,8,16", "concurrent job counts");
ABSL_FLAG(bool, remote, true, "also measure policies in a cache manager over the shared-memory ring");

namespace a2sf {
namespace {

struct Load {
  double tokens_per_second = 0;
  double token_p50_ms = 0, token_p99_ms = 0;
  double ttft_p50_ms = 0, ttft_p99_ms = 0;
  int failed = 0;
};

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, size_t(q * double(values.size() - 1) + 0.5))];
}

// One job's client: its request time, then every token's arrival.
struct JobTimes {
  absl::Time sent;
  std::vector<absl::Time> tokens;
  bool ok = false;
};

Load Measure(client::WorkerClient* client, const v1::GenerateRequest& request, int jobs) {
  std::vector<JobTimes> times(jobs);
  std::vector<std::thread> threads;
  const absl::Time start = absl::Now();
  for (int j = 0; j < jobs; ++j) {
    threads.emplace_back([&, j] {
      JobTimes& t = times[j];
      t.sent = absl::Now();
      auto result = client->Generate(request, [&t](const v1::GeneratedTokens& chunk) {
        for (int i = 0; i < chunk.ids_size(); ++i) t.tokens.push_back(absl::Now());
      });
      t.ok = result.ok();
      if (!result.ok()) std::fprintf(stderr, "job: %s\n", std::string(result.status().message()).c_str());
    });
  }
  for (auto& t : threads) t.join();
  absl::Time end = start;
  size_t tokens = 0;
  std::vector<double> gaps, ttft;
  Load load;
  for (const JobTimes& t : times) {
    if (!t.ok || t.tokens.empty()) {
      ++load.failed;
      continue;
    }
    tokens += t.tokens.size();
    end = std::max(end, t.tokens.back());
    ttft.push_back(absl::ToDoubleMilliseconds(t.tokens.front() - t.sent));
    for (size_t i = 1; i < t.tokens.size(); ++i) gaps.push_back(absl::ToDoubleMilliseconds(t.tokens[i] - t.tokens[i - 1]));
  }
  load.tokens_per_second = double(tokens) / std::max(1e-9, absl::ToDoubleSeconds(end - start));
  load.token_p50_ms = Percentile(gaps, 0.5);
  load.token_p99_ms = Percentile(gaps, 0.99);
  load.ttft_p50_ms = Percentile(ttft, 0.5);
  load.ttft_p99_ms = Percentile(ttft, 0.99);
  return load;
}

std::vector<int> JobCounts() {
  std::vector<int> counts;
  std::string list = absl::GetFlag(FLAGS_jobs);
  for (size_t at = 0; at < list.size();) {
    const size_t comma = std::min(list.find(',', at), list.size());
    counts.push_back(std::stoi(list.substr(at, comma - at)));
    at = comma + 1;
  }
  return counts;
}

void RunModel(const std::string& name, const worker::ModelWeights* weights, const char* path,
              const std::string& cachemgr_unix, int tokens) {
  ChannelOptions plaintext;
  plaintext.plaintext = true;
  worker::WorkerOptions options;
  options.weights = weights;
  options.threads_per_job = absl::GetFlag(FLAGS_threads);
  options.max_batch = 16;
  options.default_policy.set_name("a2sf");
  if (!cachemgr_unix.empty()) {
    options.cache_manager = *MakeChannel(cachemgr_unix, plaintext);
    options.ring_socket = RingSocketPath(cachemgr_unix.substr(5));
  }
  bench::LocalWorker local(options);
  client::WorkerClient& client = *local.client;
  const v1::GenerateRequest request = bench::BosJob(*weights, tokens);
  Measure(&client, request, 1);  // warm-up
  Load one;
  for (int jobs : JobCounts()) {
    const Load load = Measure(&client, request, jobs);
    if (jobs == 1) one = load;
    std::printf("%-22s %-14s %4d %10.1f %7.2fx %9.2f %9.2f %7.2fx %9.1f %9.1f %s\n", name.c_str(), path, jobs,
                load.tokens_per_second, one.tokens_per_second > 0 ? load.tokens_per_second / one.tokens_per_second : 0.0,
                load.token_p50_ms, load.token_p99_ms, one.token_p99_ms > 0 ? load.token_p99_ms / one.token_p99_ms : 0.0,
                load.ttft_p50_ms, load.ttft_p99_ms, load.failed > 0 ? "(failures)" : "");
    std::fflush(stdout);
  }
  local.server->Shutdown(absl::ZeroDuration());
}

}  // namespace
}  // namespace a2sf

int main(int argc, char** argv) {
  using namespace a2sf;
  absl::ParseCommandLine(argc, argv);
  bench::LocalCacheManager cachemgr("a2sf_load_bench", /*tcp=*/false);
  const auto models = bench::BenchModels(absl::GetFlag(FLAGS_fixtures));
  std::printf("%-22s %-14s %4s %10s %8s %9s %9s %8s %9s %9s\n", "model", "policy", "jobs", "tok/s", "vs 1",
              "tok p50", "tok p99", "p99 vs 1", "TTFT p50", "TTFT p99");
  for (const auto& [name, weights] : models) {
    const int tokens = name == "stories260K" ? absl::GetFlag(FLAGS_tokens_260k) : absl::GetFlag(FLAGS_tokens_110m);
    RunModel(name, weights.get(), "in-process", "", tokens);
    if (absl::GetFlag(FLAGS_remote)) RunModel(name, weights.get(), "remote (ring)", cachemgr.unix_address(), tokens);
  }
  return 0;
}
