// The remote step cost per session when N sessions (1, 4, 8) step together, as a batch scheduler
// drives them (every SubmitStep, then every AwaitDecision): their scores sent as one message per
// worker step (ScoreBatcher, one score-store batch in the cache manager), as one message per session
// (a StreamScores stream each), through a shared-memory ring per session, and in-process (the
// baseline, measured in the same run). Real cache-manager service over its Unix socket in this
// process; the stories110M shape (12 layers x 12 KV heads: 58 KB of scores per session step) and the
// stories260K shape (5 x 4: 4 KB), A2SF at a budget of `--budget` entries, fp16 scores, steps
// measured after the budget is reached. The paths take turns, run after run, and
// each reports its best run, so that a busy machine's noise hits them alike.
//
//   bazel run -c opt //bench:session_batch_bench -- --steps=300
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/time/clock.h"
#include "cachemgr/service/cache_manager_service.h"
#include "cachemgr/store/cpu_score_store.h"
#include "common/grpc/server.h"
#include "common/shm/ring_handoff.h"
#include "worker/policy/in_process_policy_client.h"
#include "worker/service/remote_policy_client.h"

ABSL_FLAG(int, steps, 150, "measured steps per run");
ABSL_FLAG(int, runs, 5, "runs per configuration, interleaved with the other paths' (the best is reported)");
ABSL_FLAG(int, budget, 200, "budget in entries per head");
ABSL_FLAG(int, store_threads, 2, "the CPU score store's threads");

namespace a2sf {
namespace {

enum class Path { kInProcess, kStreamPerSession, kBatched, kWholeStep, kRing };

const char* Name(Path path) {
  switch (path) {
    case Path::kInProcess: return "in-process";
    case Path::kStreamPerSession: return "gRPC, a message per session";
    case Path::kBatched: return "gRPC, batcher (64 KB flushes)";
    case Path::kWholeStep: return "gRPC, a message per step";
    case Path::kRing: return "shared-memory ring per session";
  }
  return "";
}

std::vector<std::unique_ptr<worker::EvictionPolicyClient>> OpenClients(Path path, int sessions,
                                                                       const worker::ModelConfig& model,
                                                                       const std::string& unix_socket) {
  std::vector<std::unique_ptr<worker::EvictionPolicyClient>> clients;
  ChannelOptions plaintext;
  plaintext.plaintext = true;
  auto channel = *MakeChannel("unix:" + unix_socket, plaintext);
  auto batcher = std::make_shared<worker::ScoreBatcher>(
      channel, absl::Seconds(10), path == Path::kWholeStep ? SIZE_MAX : worker::ScoreBatcher::kDefaultFlushBytes);
  for (int i = 0; i < sessions; ++i) {
    if (path == Path::kInProcess) {
      cachemgr::BudgetSpec budget;
      budget.tokens = uint32_t(absl::GetFlag(FLAGS_budget));
      clients.push_back(std::move(*worker::InProcessPolicyClient::Create(model, {"a2sf", 0.3, {}, {}, {}}, budget)));
      continue;
    }
    v1::PolicySpec policy;
    policy.set_name("a2sf");
    policy.set_alpha(0.3);
    v1::Budget budget;
    budget.set_tokens(uint32_t(absl::GetFlag(FLAGS_budget)));
    worker::RemotePolicyOptions options;
    options.decision_timeout = absl::Seconds(10);
    if (path == Path::kBatched || path == Path::kWholeStep) options.batcher = batcher;
    if (path == Path::kRing) options.ring_socket = RingSocketPath(unix_socket);
    clients.push_back(std::move(*worker::RemotePolicyClient::Open(channel, model, &policy, budget, options)));
  }
  return clients;
}

// Microseconds per session step over the measured steps.
double Run(Path path, int sessions, const worker::ModelConfig& model, const std::string& unix_socket) {
  auto clients = OpenClients(path, sessions, model, unix_socket);
  const size_t heads = size_t(model.n_layers) * model.n_kv_heads;
  const int budget = absl::GetFlag(FLAGS_budget), measured = absl::GetFlag(FLAGS_steps);
  std::mt19937 random(11);
  std::uniform_real_distribution<float> uniform(0.0f, 0.05f);
  std::vector<float> scores(heads * (budget + 1));
  for (float& v : scores) v = uniform(random);
  std::vector<uint32_t> entries(sessions, 0);
  absl::Time start;
  for (int step = 0; step < budget + measured; ++step) {
    if (step == budget) start = absl::Now();
    for (int i = 0; i < sessions; ++i) {
      absl::Status s = clients[i]->SubmitStep(step, step, absl::MakeConstSpan(scores.data(), heads * (entries[i] + 1)));
      if (!s.ok()) std::fprintf(stderr, "%s: %s\n", Name(path), std::string(s.message()).c_str());
    }
    for (int i = 0; i < sessions; ++i) {
      auto decision = clients[i]->AwaitDecision();
      if (!decision.ok()) {
        std::fprintf(stderr, "%s: %s\n", Name(path), std::string(decision.status().message()).c_str());
        return 0;
      }
      entries[i] = decision->entries_after;
    }
  }
  return absl::ToDoubleMicroseconds(absl::Now() - start) / (double(measured) * sessions);
}

}  // namespace
}  // namespace a2sf

int main(int argc, char** argv) {
  using namespace a2sf;
  absl::ParseCommandLine(argc, argv);
  cachemgr::SessionManager manager(std::make_unique<cachemgr::CpuScoreStore>(absl::GetFlag(FLAGS_store_threads)),
                                   &cachemgr::PolicyRegistry::Builtin(), {});
  const std::string socket = "/tmp/a2sf_session_batch_bench-" + std::to_string(getpid()) + ".sock";
  auto ring_handoff = std::move(*RingHandoffServer::Start(RingSocketPath(socket), 0600));
  cachemgr::CacheManagerServiceOptions service_options;
  service_options.ring_handoff = ring_handoff.get();
  cachemgr::CacheManagerService cache_service(&manager, service_options);
  ServerOptions options;
  options.listen_addresses = {"unix:" + socket};
  options.plaintext = true;
  auto cachemgr = std::move(*RunningServer::Start(options, {&cache_service}));
  struct Shape {
    const char* name;
    int layers, kv_heads;
  };
  for (const Shape& shape : {Shape{"stories110M", 12, 12}, Shape{"stories260K", 5, 4}}) {
  worker::ModelConfig model;
  model.n_layers = shape.layers;
  model.n_heads = shape.kv_heads;
  model.n_kv_heads = shape.kv_heads;
  model.seq_len = 1024;
  std::printf("%s shape\n", shape.name);
  const Path paths[] = {Path::kInProcess, Path::kStreamPerSession, Path::kWholeStep, Path::kBatched, Path::kRing};
  constexpr int kPaths = 5;
  std::printf("%-32s %8s %16s %14s\n", "path", "sessions", "us/session-step", "in-process/x");
  for (int sessions : {1, 4, 8}) {
    std::vector<double> best(kPaths, 1e30);
    for (int run = 0; run < absl::GetFlag(FLAGS_runs); ++run) {
      for (int p = 0; p < kPaths; ++p) {
        const double us = Run(paths[p], sessions, model, socket);
        if (us > 0) best[p] = std::min(best[p], us);
      }
    }
    for (int p = 0; p < kPaths; ++p) {
      std::printf("%-32s %8d %16.1f %14.2f\n", Name(paths[p]), sessions, best[p], best[0] / best[p]);
    }
    std::fflush(stdout);
  }
  }
  cachemgr->Shutdown(absl::ZeroDuration());
  return 0;
}
