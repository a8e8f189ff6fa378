// Tokens/s of the same generation job with its policy in-process, in a cache manager over TCP
// loopback, over the Unix socket (gRPC messages), and over the Unix socket with the shared-memory
// ring; each synchronous and pipelined (decision lag 2). Real servers in this process, a real client;
// the figure is the worker's own decode tokens/s (JobStats), best of `--runs`, as a ratio to the
// in-process run measured in the same process.
//
//   bazel run -c opt //bench:remote_path_bench -- --fixtures=/path/to/shared/fixtures
//
// Models: stories260K from the fixtures (skipped without them) and a synthetic stories110M-shaped
// model (random weights: same speed as the trained one, no download).
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "bench/bench_setup.h"
#include "client/client.h"
#include "common/grpc/server.h"
#include "common/shm/ring_handoff.h"
#include "worker/model/model.h"
#include "worker/service/generation_service.h"

ABSL_FLAG(std::string, fixtures, "", "fixtures folder with stories260K-dq.bin (default: $A2SF_FIXTURES)");
ABSL_FLAG(int, runs, 3, "runs per configuration (the best is reported)");
ABSL_FLAG(int, tokens_260k, 400, "tokens per stories260K job");
ABSL_FLAG(int, tokens_110m, 40, "tokens per stories110M job");

namespace a2sf {
namespace {

struct Path {
  const char* name;
  bool remote;
  bool unix_socket;
  bool shared_memory;
};

double Run(const worker::ModelWeights* weights, const Path& path, uint32_t lag, const std::string& cachemgr_tcp,
           const std::string& cachemgr_unix, int tokens, int runs) {
  ChannelOptions plaintext;
  plaintext.plaintext = true;
  worker::WorkerOptions options;
  options.weights = weights;
  options.score_dtype = kv::ScoreDType::kFp16;
  options.decision_lag = lag;
  if (path.shared_memory) options.ring_socket = RingSocketPath(cachemgr_unix.substr(5));
  options.default_policy.set_name("a2sf");
  if (path.remote) options.cache_manager = *MakeChannel(path.unix_socket ? cachemgr_unix : cachemgr_tcp, plaintext);
  bench::LocalWorker local(options);
  client::WorkerClient& client = *local.client;
  v1::GenerateRequest request = bench::BosJob(*weights, tokens);
  request.mutable_policy()->set_alpha(0.3);
  double best = 0;
  for (int i = 0; i < runs; ++i) {
    auto result = client.Generate(request);
    if (!result.ok()) {
      std::fprintf(stderr, "%s: %s\n", path.name, std::string(result.status().message()).c_str());
      return 0;
    }
    best = std::max(best, result->finished.tokens_per_second());
  }
  local.server->Shutdown(absl::ZeroDuration());
  return best;
}

}  // namespace
}  // namespace a2sf

int main(int argc, char** argv) {
  using namespace a2sf;
  absl::ParseCommandLine(argc, argv);
  bench::LocalCacheManager cachemgr("a2sf_remote_path_bench", /*tcp=*/true);
  const auto models = bench::BenchModels(absl::GetFlag(FLAGS_fixtures));

  const Path paths[] = {{"in-process", false, false, false},
                        {"TCP loopback", true, false, false},
                        {"Unix socket, gRPC", true, true, false},
                        {"Unix socket, shared memory", true, true, true}};
  std::printf("%-22s %-28s %4s %10s %14s\n", "model", "policy location", "lag", "tok/s", "vs in-process");
  for (const auto& [name, weights] : models) {
    const int tokens = name == "stories260K" ? absl::GetFlag(FLAGS_tokens_260k) : absl::GetFlag(FLAGS_tokens_110m);
    for (uint32_t lag : {0u, 2u}) {
      double baseline = 0;
      for (const Path& path : paths) {
        const double tps = Run(weights.get(), path, lag, cachemgr.tcp_address(), cachemgr.unix_address(), tokens,
                               absl::GetFlag(FLAGS_runs));
        if (!path.remote) baseline = tps;
        std::printf("%-22s %-28s %4u %10.1f %14.2f\n", name.c_str(), path.name, lag, tps,
                    baseline > 0 ? tps / baseline : 0.0);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
