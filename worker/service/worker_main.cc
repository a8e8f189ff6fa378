// a2sf-worker: the Generation server. Policies run in the cache manager given by --cachemgr, or
// in-process when it is empty.
//   a2sf-worker --model=stories260K.bin --tokenizer=tok512.bin --listen=127.0.0.1:50052 --plaintext
//     --cachemgr=unix:/run/a2sf/cachemgr.sock
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <utility>

#include "common/cli.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "common/grpc/server.h"
#include "common/grpc/server_main.h"
#include "common/log.h"
#include "common/shm/ring_handoff.h"
#include "common/metrics/metrics_server.h"
#include "cachemgr/policy_library.h"
#include "worker/http/openai_server.h"
#include "worker/engine/engine_flags.h"
#include "worker/model/load_flags.h"
#include "worker/service/cache_manager_watch.h"
#include "worker/service/generation_service.h"

ABSL_FLAG(std::string, model, "", "llama2.c .bin checkpoint, GGUF file or Hugging Face folder");
ABSL_FLAG(std::string, model_name, "",
          "the model's name in GetModelInfo, the HTTP API and metrics labels (default: --model's file or folder name)");
ABSL_FLAG(std::string, tokenizer, "", "tokenizer.bin or tokenizer.model (default: a GGUF model's own; without either, token-id prompts only)");
ABSL_FLAG(std::string, listen, "127.0.0.1:50052", "comma-separated host:port addresses");
ABSL_FLAG(bool, plaintext, false, "serve without TLS (must be chosen explicitly)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain");
ABSL_FLAG(std::string, tls_key, "", "PEM private key");
ABSL_FLAG(std::string, tls_client_ca, "", "PEM CA for mutual TLS");
ABSL_FLAG(std::string, cachemgr, "", "cache manager address (host:port or unix:/path); empty: policies in-process");
ABSL_FLAG(bool, cachemgr_plaintext, false, "talk to the cache manager without TLS (Unix sockets always are)");
ABSL_FLAG(std::string, cachemgr_ca, "", "PEM roots to verify the cache manager");
ABSL_FLAG(std::string, cachemgr_cert, "", "client certificate for mutual TLS to the cache manager");
ABSL_FLAG(std::string, cachemgr_key, "", "client key for mutual TLS to the cache manager");
ABSL_FLAG(std::string, score_dtype, "fp16", "scores sent to the cache manager: fp16 or fp32");
ABSL_FLAG(std::string, on_cachemgr_failure, "fail",
          "when the cache manager goes away mid-job: fail (the job ends with UNAVAILABLE) or continue "
          "(the same policy continues in-process from the cached entries, scores restarting at 0)");
ABSL_FLAG(uint32_t, decision_lag, 0,
          "pipelined decisions: apply each step's eviction decision K steps late, so it travels while the next "
          "tokens are computed (the cache holds up to K extra entries); 0: synchronous");
ABSL_FLAG(bool, batch_scores, true,
          "send the inline scores of all jobs over one stream, the steps that coincide as one message "
          "(StreamScoreBatches); false: a StreamScores stream per job (cache managers before batches)");
ABSL_FLAG(bool, shared_memory, true,
          "with --cachemgr=unix:...: hand scores over in a shared-memory ring (gRPC stays the control plane; "
          "falls back to inline scores if the cache manager refuses it)");
ABSL_FLAG(bool, cuda_ipc, true,
          "with --device=cuda, the ring and --decision_lag=0: offer the cache manager each job's score buffer on "
          "the GPU (CUDA IPC), so scores stay on the device; refused or unavailable: the ring as usual");
ABSL_FLAG(int, cachemgr_wait_ms, 5000, "how long a new job waits for an unreachable cache manager to come back");
// 1 s: a decision at LLaMA-2-7B shape takes ~1-3 ms for one session and ~90 ms per step with 64
// sessions sharing one cache-manager core (docs/PERFORMANCE.md), so 1 s is over 10x the most loaded
// measured step, while a stall still costs a job at most a second before it fails or continues.
ABSL_FLAG(int, decision_timeout_ms, 1000,
          "the most one step waits for the cache manager's decision; then the job fails with DEADLINE_EXCEEDED "
          "(--on_cachemgr_failure=fail) or continues in-process (continue). 0: no deadline");
ABSL_FLAG(int, cachemgr_keepalive_ms, 10000,
          "HTTP/2 keepalive ping interval on the connection to the cache manager; a ping unanswered for "
          "--cachemgr_keepalive_timeout_ms declares it dead (0: no keepalive)");
ABSL_FLAG(int, cachemgr_keepalive_timeout_ms, 5000, "see --cachemgr_keepalive_ms");
ABSL_FLAG(int, cachemgr_health_interval_ms, 1000,
          "with --on_cachemgr_failure=fail: how often the worker checks its cache manager; while it is "
          "unreachable the worker's own health is NOT_SERVING");
ABSL_FLAG(std::string, admin_token, "",
          "bearer token that may list, read and cancel every job (empty: ListJobs is open; GetJob/CancelJob "
          "always need the job's job_token or this token; also $A2SF_WORKER_ADMIN_TOKEN)");
ABSL_FLAG(std::string, default_policy, "a2sf", "policy of jobs that name none (in-process mode)");
ABSL_FLAG(int, threads, 1, "threads of the batch's forward pass (every running job decodes in it)");
ABSL_FLAG(int, max_batch, 16, "jobs decoding together, one forward pass per step for all (more wait in the queue)");
ABSL_FLAG(int, max_waiting, 64, "jobs waiting in the queue beyond --max_batch (RESOURCE_EXHAUSTED beyond)");
ABSL_FLAG(int64_t, max_kv_bytes, 0,
          "the running jobs' KV-cache reservations together (a job waits until its reservation fits; one that "
          "never can is refused); 0: no limit");
ABSL_FLAG(int, prefill_chunk, 16, "prompt tokens a job forwards per step, interleaved with the others' decoding");
ABSL_FLAG(std::string, name, "", "worker name in statistics (default: host name)");
ABSL_FLAG(std::string, metrics_listen, "", "serve Prometheus metrics over HTTP here, e.g. 0.0.0.0:9092 (empty: off)");
ABSL_FLAG(std::string, http_listen, "",
          "serve the OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models, /health) here, "
          "e.g. 127.0.0.1:8000, with the gRPC port's TLS options (empty: off)");
ABSL_FLAG(int, max_streams_per_connection, 64, "concurrent calls one client connection may hold (0: gRPC's default)");
ABSL_FLAG(std::string, port_file, "", "write the first bound TCP port here once serving");

namespace a2sf {
namespace {

// Exit codes: a bad flag is 2 (checked before anything loads), a failure to start is 1.
constexpr int kBadFlags = 2, kStartFailed = 1;

int Fail(int exit_code, absl::string_view message) {
  A2SF_LOG(ERROR) << message;
  return exit_code;
}

// The job scheduler's flags: batch, queue, KV budget, threads.
absl::Status ReadSchedulingFlags(worker::WorkerOptions* options) {
  options->threads_per_job = absl::GetFlag(FLAGS_threads);
  options->max_batch = absl::GetFlag(FLAGS_max_batch);
  options->max_waiting = absl::GetFlag(FLAGS_max_waiting);
  options->prefill_chunk = absl::GetFlag(FLAGS_prefill_chunk);
  if (options->max_batch < 1 || options->max_waiting < 0 || options->prefill_chunk < 1 ||
      absl::GetFlag(FLAGS_max_kv_bytes) < 0 || options->threads_per_job < 1 || options->threads_per_job > 256) {
    return absl::InvalidArgumentError(
        "--max_batch, --prefill_chunk: >= 1; --max_waiting, --max_kv_bytes: >= 0; --threads: 1..256");
  }
  options->max_kv_bytes = size_t(absl::GetFlag(FLAGS_max_kv_bytes));
  return absl::OkStatus();
}

// How the worker talks to its cache manager (the channel itself is made once the model is loaded).
absl::Status ReadCacheManagerFlags(worker::WorkerOptions* options) {
  const std::string dtype = absl::GetFlag(FLAGS_score_dtype);
  if (dtype != "fp16" && dtype != "fp32") return absl::InvalidArgumentError("--score_dtype: fp16 or fp32");
  options->score_dtype = dtype == "fp32" ? kv::ScoreDType::kFp32 : kv::ScoreDType::kFp16;
  const std::string on_failure = absl::GetFlag(FLAGS_on_cachemgr_failure);
  if (on_failure != "fail" && on_failure != "continue") {
    return absl::InvalidArgumentError("--on_cachemgr_failure: fail or continue");
  }
  options->fallback_in_process = on_failure == "continue";
  options->decision_lag = absl::GetFlag(FLAGS_decision_lag);
  if (options->decision_lag > cachemgr::kMaxDecisionLag) {
    return absl::InvalidArgumentError(absl::StrCat("--decision_lag: at most ", cachemgr::kMaxDecisionLag));
  }
  options->batch_scores = absl::GetFlag(FLAGS_batch_scores);
  if (absl::GetFlag(FLAGS_shared_memory) && absl::StartsWith(absl::GetFlag(FLAGS_cachemgr), "unix:")) {
    options->ring_socket = RingSocketPath(absl::GetFlag(FLAGS_cachemgr).substr(5));
  }
  options->offer_device_scores = absl::GetFlag(FLAGS_cuda_ipc);
  options->cache_manager_wait = absl::Milliseconds(absl::GetFlag(FLAGS_cachemgr_wait_ms));
  options->decision_timeout = absl::GetFlag(FLAGS_decision_timeout_ms) <= 0
                                  ? absl::InfiniteDuration()
                                  : absl::Milliseconds(absl::GetFlag(FLAGS_decision_timeout_ms));
  return absl::OkStatus();
}

// The HTTP addresses are bound when the servers start, after the model's load: a malformed one is named
// now (one that cannot be bound still shows then).
absl::Status CheckHttpAddresses() {
  for (const auto& [flag, address] : {std::pair<const char*, std::string>{"--metrics_listen", absl::GetFlag(FLAGS_metrics_listen)},
                                      {"--http_listen", absl::GetFlag(FLAGS_http_listen)}}) {
    if (address.empty()) continue;
    if (absl::Status s = CheckListenAddress(address); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

// The TLS files are read when the servers start, after the model's load: one that cannot be read is
// named now.
absl::Status CheckTlsFiles() {
  const std::pair<const char*, std::string> files[] = {
      {"--tls_cert", absl::GetFlag(FLAGS_tls_cert)},         {"--tls_key", absl::GetFlag(FLAGS_tls_key)},
      {"--tls_client_ca", absl::GetFlag(FLAGS_tls_client_ca)}, {"--cachemgr_ca", absl::GetFlag(FLAGS_cachemgr_ca)},
      {"--cachemgr_cert", absl::GetFlag(FLAGS_cachemgr_cert)}, {"--cachemgr_key", absl::GetFlag(FLAGS_cachemgr_key)}};
  for (const auto& [flag, path] : files) {
    if (!path.empty() && access(path.c_str(), R_OK) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(flag, ": cannot read '", path, "'"));
    }
  }
  return absl::OkStatus();
}

// Names and credentials: the model's and the worker's names, the admin token, the default policy.
void ReadIdentityFlags(worker::WorkerOptions* options) {
  options->model_name = absl::GetFlag(FLAGS_model_name);
  if (options->model_name.empty()) {
    std::vector<std::string> parts = absl::StrSplit(absl::GetFlag(FLAGS_model), '/', absl::SkipEmpty());
    options->model_name = parts.empty() ? "model" : parts.back();
  }
  options->default_policy.set_name(absl::GetFlag(FLAGS_default_policy));
  char host[256] = "worker";
  gethostname(host, sizeof(host) - 1);
  options->worker_name = absl::GetFlag(FLAGS_name).empty() ? host : absl::GetFlag(FLAGS_name);
  options->admin_token = absl::GetFlag(FLAGS_admin_token);
  if (options->admin_token.empty() && std::getenv("A2SF_WORKER_ADMIN_TOKEN") != nullptr) {
    options->admin_token = std::getenv("A2SF_WORKER_ADMIN_TOKEN");
  }
  if (options->admin_token.empty()) A2SF_LOG(WARNING) << "no --admin_token: ListJobs shows every job to every client";
}

// The channel to --cachemgr (none when it is empty: policies run in-process).
absl::Status ConnectCacheManager(worker::WorkerOptions* options) {
  if (absl::GetFlag(FLAGS_cachemgr).empty()) {
    A2SF_LOG(INFO) << "no --cachemgr: policies run in-process";
    return absl::OkStatus();
  }
  ChannelOptions channel;
  channel.keepalive_time = absl::Milliseconds(std::max(0, absl::GetFlag(FLAGS_cachemgr_keepalive_ms)));
  channel.keepalive_timeout = absl::Milliseconds(std::max(1, absl::GetFlag(FLAGS_cachemgr_keepalive_timeout_ms)));
  channel.plaintext = absl::GetFlag(FLAGS_cachemgr_plaintext);
  channel.ca_cert_path = absl::GetFlag(FLAGS_cachemgr_ca);
  channel.client_cert_chain_path = absl::GetFlag(FLAGS_cachemgr_cert);
  channel.client_private_key_path = absl::GetFlag(FLAGS_cachemgr_key);
  auto made = MakeChannel(absl::GetFlag(FLAGS_cachemgr), channel);
  if (!made.ok()) return made.status();
  options->cache_manager = *made;
  A2SF_LOG(INFO) << "policies run in the cache manager at " << absl::GetFlag(FLAGS_cachemgr) << " (scores as "
                 << absl::GetFlag(FLAGS_score_dtype) << ")";
  return absl::OkStatus();
}

// The model and its tokenizer, as the engine flags ask.
struct LoadedModel {
  std::unique_ptr<worker::ModelWeights> weights;
  std::unique_ptr<worker::Tokenizer> tokenizer;
};

absl::StatusOr<LoadedModel> LoadModelAndTokenizer(const worker::EngineFlags& flags) {
  LoadedModel model;
  auto weights = worker::LoadModel(absl::GetFlag(FLAGS_model), flags.load);
  if (!weights.ok()) return weights.status();
  model.weights = std::move(*weights);
  A2SF_LOG(INFO) << "model: " << worker::DescribeLoadedModel(*model.weights);
  auto tokenizer = worker::LoadTokenizerForModel(absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_tokenizer));
  if (!tokenizer.ok()) return tokenizer.status();
  model.tokenizer = std::move(*tokenizer);
  if (flags.device == worker::EngineDevice::kCuda) A2SF_LOG(INFO) << "engine on the GPU";
  A2SF_LOG(INFO) << "model " << absl::GetFlag(FLAGS_model) << ": " << model.weights->format();
  return model;
}

// While the cache manager is unreachable, the worker's health is NOT_SERVING: a worker that fails
// jobs without its cache manager cannot run one then. Null when there is nothing to watch.
std::unique_ptr<worker::CacheManagerWatch> WatchCacheManager(const worker::WorkerOptions& options,
                                                             RunningServer* running) {
  if (options.cache_manager == nullptr || options.fallback_in_process) return nullptr;
  return std::make_unique<worker::CacheManagerWatch>(
      options.cache_manager, absl::Milliseconds(std::max(10, absl::GetFlag(FLAGS_cachemgr_health_interval_ms))),
      [running](bool reachable, const absl::Status& why) {
        if (reachable) {
          A2SF_LOG(INFO) << "cache manager reachable: SERVING";
        } else {
          A2SF_LOG(WARNING) << "cache manager unreachable (" << why.message() << "): NOT_SERVING";
        }
        running->SetServing(reachable);
      });
}

// Serves gRPC (and HTTP when asked) until a termination signal, then drains.
int Serve(const worker::WorkerOptions& options, const worker::Tokenizer* tokenizer) {
  worker::GenerationService service(options);
  ServerOptions server_options;
  server_options.name = "a2sf-worker";
  server_options.listen_addresses = SplitAddresses(absl::GetFlag(FLAGS_listen));
  server_options.max_concurrent_streams_per_connection = absl::GetFlag(FLAGS_max_streams_per_connection);
  server_options.plaintext = absl::GetFlag(FLAGS_plaintext);
  server_options.tls = {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_tls_client_ca)};
  auto server = RunningServer::Start(server_options, {&service});
  if (!server.ok()) return Fail(kStartFailed, server.status().message());
  std::unique_ptr<worker::CacheManagerWatch> watch = WatchCacheManager(options, server->get());
  worker::http::OpenAiServerOptions http_options;
  http_options.listen = absl::GetFlag(FLAGS_http_listen);
  http_options.plaintext = server_options.plaintext;
  http_options.tls = server_options.tls;
  auto http = worker::http::OpenAiServer::StartIfAsked(
      http_options, {options.model_name, tokenizer, options.weights->config().seq_len, options.max_batch + options.max_waiting},
      (*server)->server()->InProcessChannel(grpc::ChannelArguments()));
  if (!http.ok()) return Fail(kStartFailed, http.status().message());
  WritePortFile(absl::GetFlag(FLAGS_port_file), (*server)->bound_port(0));
  WaitForTerminationSignal();
  watch.reset();  // before the shutdown's NOT_SERVING, which it must not undo
  A2SF_LOG(INFO) << "draining: " << service.running_jobs() << " running jobs (up to 60 s)";
  (*server)->Shutdown(absl::Seconds(60));
  http->reset();  // after the gRPC drain: HTTP jobs are gRPC calls, finished or cancelled by now
  (*server)->Wait();
  return 0;
}

int Main() {
  // Every flag is checked before the model's load: a typo or a missing GPU should not cost one.
  if (absl::GetFlag(FLAGS_model).empty()) return Fail(kBadFlags, "--model is required");
  absl::StatusOr<worker::EngineFlags> engine = worker::EngineFlagsFromFlags();
  if (!engine.ok()) {
    const bool bad_flag = engine.status().code() == absl::StatusCode::kInvalidArgument;
    return Fail(bad_flag ? kBadFlags : kStartFailed, engine.status().message());
  }
  worker::WorkerOptions options;
  options.device = engine->device;
  options.kv_type = engine->kv_type;
  if (absl::Status flags = ReadSchedulingFlags(&options); !flags.ok()) return Fail(kBadFlags, flags.message());
  if (absl::Status flags = ReadCacheManagerFlags(&options); !flags.ok()) return Fail(kBadFlags, flags.message());
  if (absl::Status flags = CheckTlsFiles(); !flags.ok()) return Fail(kBadFlags, flags.message());
  if (absl::Status flags = CheckHttpAddresses(); !flags.ok()) return Fail(kBadFlags, flags.message());
  ReadIdentityFlags(&options);
  absl::StatusOr<LoadedModel> model = LoadModelAndTokenizer(*engine);
  if (!model.ok()) return Fail(kStartFailed, model.status().message());
  options.weights = model->weights.get();
  options.tokenizer = model->tokenizer.get();
  if (absl::Status connected = ConnectCacheManager(&options); !connected.ok()) {
    return Fail(kStartFailed, connected.message());
  }
  absl::StatusOr<std::unique_ptr<MetricsServer>> metrics_server =
      MetricsServer::StartIfAsked(absl::GetFlag(FLAGS_metrics_listen));
  if (!metrics_server.ok()) return Fail(kStartFailed, metrics_server.status().message());
  std::unique_ptr<worker::WorkerMetrics> metrics;
  if (*metrics_server != nullptr) {
    metrics = std::make_unique<worker::WorkerMetrics>(&(*metrics_server)->registry(), options.model_name,
                                                      absl::GetFlag(FLAGS_device));
    options.metrics = metrics.get();
  }
  return Serve(options, model->tokenizer.get());
}

}  // namespace
}  // namespace a2sf

int main(int argc, char** argv) {
  a2sf::ParseCommandLine(argc, argv,
                         {"a2sf-worker",
                          "the A2SF worker: serves LLaMA-2 generation (gRPC Generation API) with a policy-evicted KV "
                          "cache.\n  a2sf-worker --model=stories260K.bin --tokenizer=tok512.bin "
                          "--listen=127.0.0.1:50052 --plaintext [--cachemgr=unix:/run/a2sf/cachemgr.sock]",
                          {}});
  return a2sf::Main();
}
