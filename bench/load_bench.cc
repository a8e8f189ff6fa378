// Load: N concurrent jobs (N = 1, 2, 4, 8, 16) on one worker, which decodes them in one batch.
// Aggregate tok/s (all jobs' tokens / wall time from the first request to the last token), per-token
// latency p50/p99 (gaps between a job's consecutive tokens as its client receives them) and time to
// first token p50/p99, with policies in-process and in a cache manager over the Unix socket's
// shared-memory ring. Ratios are to N = 1 of the same model and path, measured in the same run.
// Real servers in this process, real clients (one thread per job).
//
//   bazel run -c opt //bench:load_bench -- --fixtures=/path/to/shared/fixtures
//
// Models: stories260K from the fixtures (skipped without them or with --stories260k=false) and a
// synthetic stories110M-shaped model (random weights: same speed as the trained one, no download) in
// each type of --weights. Each (model, path) is measured in --rounds rounds that each run every job
// count in turn, so a round's N jobs and its 1 job are seconds apart; a row gives the median
// over rounds and, for the ratio to 1 job, the range of the rounds' own ratios (this machine's speed
// drifts by tens of percent over minutes, which one round's ratio would carry).
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
#include "bench/triad.h"
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
ABSL_FLAG(std::string, weights, "f32", "types the stories110M shape is held in (comma-separated: f32,f16,bf16,q8_0,q4_0)");
ABSL_FLAG(int, rounds, 3, "rounds over all job counts per model and path (rows: medians over rounds)");
ABSL_FLAG(bool, stories260k, true, "also measure stories260K from the fixtures");
ABSL_FLAG(bool, panels, true, "hold matrices in panels (false: row-major, the layout before panels)");

namespace a2sf {
namespace {

struct Load {
  double tokens_per_second = 0;
  double token_p50_ms = 0, token_p99_ms = 0;
  double ttft_p50_ms = 0, ttft_p99_ms = 0;
  int failed = 0;
};

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
  load.token_p50_ms = bench::Percentile(gaps, 0.5);
  load.token_p99_ms = bench::Percentile(gaps, 0.99);
  load.ttft_p50_ms = bench::Percentile(ttft, 0.5);
  load.ttft_p99_ms = bench::Percentile(ttft, 0.99);
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

double Median(const std::vector<Load>& rounds, double Load::*field) {
  std::vector<double> values;
  for (const Load& load : rounds) values.push_back(load.*field);
  return bench::Percentile(values, 0.5);
}

// One row: medians over rounds; "vs 1" is the ratio of the medians to 1 job's, followed by the range
// of the rounds' own ratios (round r's N jobs over round r's 1 job).
void PrintRow(const std::string& name, const char* path, int jobs, const std::vector<Load>& rounds,
              const std::vector<Load>* one) {
  const double tps = Median(rounds, &Load::tokens_per_second), p99 = Median(rounds, &Load::token_p99_ms);
  double ratio = 0, p99_ratio = 0, low = 0, high = 0;
  if (one != nullptr) {
    ratio = tps / std::max(1e-9, Median(*one, &Load::tokens_per_second));
    p99_ratio = p99 / std::max(1e-9, Median(*one, &Load::token_p99_ms));
    std::vector<double> per_round;
    for (size_t r = 0; r < rounds.size(); ++r) {
      per_round.push_back(rounds[r].tokens_per_second / std::max(1e-9, (*one)[r].tokens_per_second));
    }
    low = *std::min_element(per_round.begin(), per_round.end());
    high = *std::max_element(per_round.begin(), per_round.end());
  }
  int failed = 0;
  for (const Load& load : rounds) failed += load.failed;
  std::printf("%-27s %-14s %4d %10.1f %7.2fx %5.2f-%-5.2f %9.2f %9.2f %7.2fx %9.1f %9.1f %s\n", name.c_str(), path,
              jobs, tps, ratio, low, high, Median(rounds, &Load::token_p50_ms), p99, p99_ratio,
              Median(rounds, &Load::ttft_p50_ms), Median(rounds, &Load::ttft_p99_ms), failed > 0 ? "(failures)" : "");
  std::fflush(stdout);
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
  const std::vector<int> counts = JobCounts();
  std::vector<std::vector<Load>> rounds(counts.size());  // [count][round]
  for (int round = 0; round < std::max(1, absl::GetFlag(FLAGS_rounds)); ++round) {
    for (size_t c = 0; c < counts.size(); ++c) rounds[c].push_back(Measure(&client, request, counts[c]));
  }
  const auto one = std::find(counts.begin(), counts.end(), 1);
  const std::vector<Load>* one_rounds = one == counts.end() ? nullptr : &rounds[one - counts.begin()];
  for (size_t c = 0; c < counts.size(); ++c) PrintRow(name, path, counts[c], rounds[c], one_rounds);
  local.server->Shutdown(absl::ZeroDuration());
}

}  // namespace
}  // namespace a2sf

int main(int argc, char** argv) {
  using namespace a2sf;
  absl::ParseCommandLine(argc, argv);
  const auto types = bench::ParseWeightTypes(absl::GetFlag(FLAGS_weights));
  if (!types.ok()) {
    std::fprintf(stderr, "--weights: %s\n", std::string(types.status().message()).c_str());
    return 2;
  }
  bench::LocalCacheManager cachemgr("a2sf_load_bench", /*tcp=*/false);
  const auto models = bench::BenchModels(absl::GetFlag(FLAGS_fixtures), *types, absl::GetFlag(FLAGS_stories260k),
                                         absl::GetFlag(FLAGS_panels));
  std::printf("%d rounds per model and path; medians over rounds, \"rounds\": range of the rounds' own ratios\n",
              std::max(1, absl::GetFlag(FLAGS_rounds)));
  std::printf("%-27s %-14s %4s %10s %8s %-11s %9s %9s %8s %9s %9s\n", "model", "policy", "jobs", "tok/s", "vs 1",
              "rounds", "tok p50", "tok p99", "p99 vs 1", "TTFT p50", "TTFT p99");
  for (const auto& [name, weights] : models) {
    const int tokens = name == "stories260K" ? absl::GetFlag(FLAGS_tokens_260k) : absl::GetFlag(FLAGS_tokens_110m);
    RunModel(name, weights.get(), "in-process", "", tokens);
    if (absl::GetFlag(FLAGS_remote)) RunModel(name, weights.get(), "remote (ring)", cachemgr.unix_address(), tokens);
  }
  return 0;
}
