// The whole path on 127.0.0.1: a client submits jobs to a worker whose policies run in a cache
// manager. Tokens must equal the in-process engine's for every policy; bad requests get the right
// codes and leave both servers healthy; a vanished cache manager fails jobs with UNAVAILABLE.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <future>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "cachemgr/service/cache_manager_service.h"
#include "cachemgr/policy_library.h"
#include "cachemgr/store/testing/gated_score_store.h"
#include "client/client.h"
#include "common/grpc/server.h"
#include "common/shm/ring_handoff.h"
#include "common/metrics/metrics_server.h"
#include "gtest/gtest.h"
#include "worker/engine/generator.h"
#include "worker/policy/in_process_policy_client.h"
#include "worker/service/generation_service.h"
#include "worker/service/remote_policy_client.h"
#include "worker/testing/fixtures.h"
#include "worker/testing/local_stack.h"

namespace a2sf {
namespace {

using worker::testing::FixturesDir;

class Stack {
 public:
  // `gate`: the cache manager's token steps pass it (a test holds a job mid-step with it).
  explicit Stack(bool remote, kv::ScoreDType encoding = kv::ScoreDType::kFp32, bool metrics = false,
                 bool fallback = false, uint32_t decision_lag = 0, bool shared_memory = false, bool gated = false)
      : gated_(gated) {
    if (shared_memory) socket_path_ = worker::testing::UniqueSocketPath();
    if (metrics) {
      cachemgr_metrics_server_ = std::move(*MetricsServer::Start("127.0.0.1:0"));
      worker_metrics_server_ = std::move(*MetricsServer::Start("127.0.0.1:0"));
      cachemgr_metrics_ = std::make_shared<cachemgr::CacheManagerMetrics>(&cachemgr_metrics_server_->registry());
      worker_metrics_ = std::make_unique<worker::WorkerMetrics>(&worker_metrics_server_->registry(), "stories260K",
                                                                "cpu");
      cachemgr_metrics_server_->OnScrape([this] {
        cachemgr_scraped_ = true;
        if (cachemgr_ != nullptr) cachemgr_metrics_->Refresh(*cachemgr_->manager());
      });
    }
    if (remote) StartCacheManager();
    worker::WorkerOptions options;
    options.score_dtype = encoding;
    options.default_policy.set_name("a2sf");
    options.worker_name = "w";
    options.metrics = worker_metrics_.get();
    options.fallback_in_process = fallback;
    options.decision_lag = decision_lag;
    options.cache_manager_wait = absl::Seconds(3);
    if (gated) options.decision_timeout = absl::Seconds(10);  // a held step is no stalled cache manager
    if (remote) {
      // With shared memory the worker dials the cache manager's Unix socket.
      options.cache_manager = worker::testing::PlaintextChannel(shared_memory ? cachemgr_->unix_address()
                                                                              : cachemgr_->tcp_address());
      if (shared_memory) options.ring_socket = cachemgr_->ring_socket();
    }
    worker_ = std::make_unique<worker::testing::LocalWorker>(options);
  }

  // A new cache manager (on `port`, and the same Unix socket); the last one must be stopped.
  void StartCacheManager(int port = 0) {
    worker::testing::LocalCacheManagerOptions options;
    options.service.metrics = cachemgr_metrics_.get();
    options.unix_socket = socket_path_;
    options.port = port;
    if (gated_) gate_ = worker::testing::InstallGate(&options);
    cachemgr_.reset();
    cachemgr_ = std::make_unique<worker::testing::LocalCacheManager>(std::move(options));
  }

  void StopCacheManager() { cachemgr_->Stop(); }
  // The cache manager's Unix socket (with shared memory).
  const std::string& UnixSocketPath() const { return socket_path_; }
  int cachemgr_port() const { return cachemgr_->port(); }
  client::AdminClient admin() { return client::AdminClient(worker::testing::PlaintextChannel(cachemgr_->tcp_address()), ""); }

  client::WorkerClient client() { return worker_->client(); }
  const worker::ModelWeights& weights() const { return worker_->weights(); }
  cachemgr::SessionManager* manager() { return cachemgr_->manager(); }
  cachemgr::testing::GatedScoreStore& gate() { return *gate_; }
  std::shared_ptr<grpc::Channel> worker_channel() { return worker_->channel(); }
  int cachemgr_metrics_port() const { return cachemgr_metrics_server_->port(); }
  bool cachemgr_scraped() const { return cachemgr_scraped_; }  // a scrape of the cache manager began
  int worker_metrics_port() const { return worker_metrics_server_->port(); }

 private:
  const bool gated_;
  std::atomic<bool> cachemgr_scraped_{false};
  std::string socket_path_;  // the cache manager's Unix socket (shared memory), kept across restarts
  std::unique_ptr<MetricsServer> cachemgr_metrics_server_, worker_metrics_server_;
  std::shared_ptr<cachemgr::CacheManagerMetrics> cachemgr_metrics_;
  std::unique_ptr<worker::WorkerMetrics> worker_metrics_;
  cachemgr::testing::GatedScoreStore* gate_ = nullptr;  // owned by cachemgr_'s session manager
  std::unique_ptr<worker::testing::LocalCacheManager> cachemgr_;
  std::unique_ptr<worker::testing::LocalWorker> worker_;
};

v1::GenerateRequest Request(const std::string& policy, uint32_t budget, uint32_t max_tokens = 120) {
  v1::GenerateRequest request;
  request.set_text("Lily and Tom went to the park");
  request.set_max_tokens(max_tokens);
  request.mutable_policy()->set_name(policy);
  if (policy == "a2sf") request.mutable_policy()->set_alpha(0.3);
  if (policy == "streaming_llm") request.mutable_policy()->set_sinks(2);
  request.mutable_budget()->set_tokens(budget);
  return request;
}

// The tokens of Request()'s prompt generated on a CPU engine under `policy_client`. `before_run` sees
// the engine first (a remote policy binds it).
std::vector<uint32_t> GenerateWith(const worker::ModelWeights& weights, worker::EvictionPolicyClient* policy_client,
                                   uint32_t max_tokens,
                                   const std::function<void(worker::Engine*)>& before_run = nullptr) {
  const std::vector<int> prompt = {1, 317, 269, 274, 287, 263, 377, 267, 265, 282, 295, 433};
  worker::EngineOptions options;
  options.cache_capacity =
      worker::RequiredCacheCapacity(policy_client, int(prompt.size()), int(max_tokens), false);
  auto engine = std::move(*worker::Engine::Create(&weights, options));
  if (before_run) before_run(engine.get());
  worker::GenerateOptions generate;
  generate.max_new_tokens = int(max_tokens);
  auto result = worker::Generate(engine.get(), policy_client, prompt, generate);
  EXPECT_TRUE(result.ok()) << result.status();
  if (!result.ok()) return {};
  return std::vector<uint32_t>(result->generated.begin(), result->generated.end());
}

std::vector<uint32_t> InProcess(const worker::ModelWeights& weights, const std::string& policy, uint32_t budget,
                                uint32_t max_tokens, uint32_t decision_lag = 0) {
  cachemgr::PolicySpec spec;
  spec.name = policy;
  if (policy == "a2sf") spec.alpha = 0.3;
  if (policy == "streaming_llm") spec.sinks = 2;
  cachemgr::BudgetSpec b;
  b.tokens = budget;
  auto local = std::move(*worker::InProcessPolicyClient::Create(weights.config(), spec, b, decision_lag));
  return GenerateWith(weights, local.get(), max_tokens);
}

TEST(EndToEnd, RemotePolicyTokensEqualInProcessTokensForEveryPolicy) {
  A2SF_REQUIRE_FIXTURES();
  Stack stack(/*remote=*/true);
  for (const char* policy : {"full", "local", "streaming_llm", "h2o", "tova", "a2sf"}) {
    auto result = stack.client().Generate(Request(policy, 16));
    ASSERT_TRUE(result.ok()) << policy << ": " << result.status();
    EXPECT_EQ(result->ids, InProcess(stack.weights(), policy, 16, 120)) << policy;
    EXPECT_EQ(result->finished.policy_location(), v1::POLICY_LOCATION_REMOTE);
    EXPECT_EQ(result->finished.policy().name(), policy);
    if (std::string(policy) != "full") {
      EXPECT_GT(result->finished.evictions(), 0u) << policy;
      EXPECT_LT(result->finished.kv_bytes_peak(), result->finished.kv_bytes_full_cache());
    }
    EXPECT_FALSE(result->text.empty());
  }
  // Every job closed its session.
  EXPECT_EQ(stack.manager()->session_count(), 0u);
}

TEST(EndToEnd, PipelinedRemoteTokensEqualPipelinedInProcessTokens) {
  A2SF_REQUIRE_FIXTURES();
  for (uint32_t lag : {1u, 4u}) {
    Stack stack(/*remote=*/true, kv::ScoreDType::kFp32, false, false, lag);
    for (const char* policy : {"local", "h2o", "tova", "a2sf"}) {
      SCOPED_TRACE(::testing::Message() << policy << " lag " << lag);
      auto result = stack.client().Generate(Request(policy, 16));
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_EQ(result->ids, InProcess(stack.weights(), policy, 16, 120, lag));
      EXPECT_EQ(result->finished.decision_lag(), lag);
      // The cache ran exactly K entries over the synchronous cache's budget + 1.
      const worker::ModelConfig& c = stack.weights().config();
      EXPECT_EQ(result->finished.kv_bytes_peak(), uint64_t(16 + 1 + lag) * c.n_layers * c.kv_dim() * 2 * 4);
      EXPECT_GT(result->finished.evictions(), 0u);
    }
    EXPECT_EQ(stack.manager()->session_count(), 0u);
  }
  // Pipelining changes when decisions land, so the tokens differ from the synchronous ones.
  Stack sync(/*remote=*/false);
  EXPECT_NE(InProcess(sync.weights(), "a2sf", 16, 120, 4), InProcess(sync.weights(), "a2sf", 16, 120, 0));
}

TEST(EndToEnd, SharedMemoryRingGivesTheSameTokensAsGrpc) {
  A2SF_REQUIRE_FIXTURES();
  for (uint32_t lag : {0u, 2u}) {
    Stack stack(/*remote=*/true, kv::ScoreDType::kFp32, false, false, lag, /*shared_memory=*/true);
    for (const char* policy : {"local", "h2o", "tova", "a2sf"}) {
      SCOPED_TRACE(::testing::Message() << policy << " lag " << lag);
      auto result = stack.client().Generate(Request(policy, 16));
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_TRUE(result->finished.shared_memory());
      EXPECT_EQ(result->ids, InProcess(stack.weights(), policy, 16, 120, lag));
    }
    // A bulk prefill goes through the ring too.
    v1::GenerateRequest bulk = Request("a2sf", 4, 20);
    bulk.set_prefill(v1::PREFILL_MODE_BULK);
    auto bulk_result = stack.client().Generate(bulk);
    ASSERT_TRUE(bulk_result.ok()) << bulk_result.status();
    EXPECT_TRUE(bulk_result->finished.shared_memory());
    EXPECT_EQ(stack.manager()->session_count(), 0u);
  }
}

// A bulk prefill sent inline goes as its own unary call, not in the worker's shared batch (its P x P
// scores would hold up every other session's step there), and decides exactly what the ring's does.
TEST(EndToEnd, ABulkPrefillInlineGivesTheRingsTokens) {
  A2SF_REQUIRE_FIXTURES();
  Stack ring(/*remote=*/true, kv::ScoreDType::kFp32, false, false, 0, /*shared_memory=*/true);
  Stack inline_scores(/*remote=*/true, kv::ScoreDType::kFp32);
  for (const char* policy : {"h2o", "a2sf"}) {
    SCOPED_TRACE(policy);
    v1::GenerateRequest bulk = Request(policy, 4, 20);
    bulk.set_prefill(v1::PREFILL_MODE_BULK);
    auto over_ring = ring.client().Generate(bulk);
    auto inline_result = inline_scores.client().Generate(bulk);
    ASSERT_TRUE(over_ring.ok()) << over_ring.status();
    ASSERT_TRUE(inline_result.ok()) << inline_result.status();
    EXPECT_FALSE(inline_result->finished.shared_memory());
    EXPECT_GT(inline_result->finished.evictions(), 0u);
    EXPECT_EQ(inline_result->ids, over_ring->ids);
  }
  EXPECT_EQ(inline_scores.manager()->session_count(), 0u);
}

// fp16 scores offered over the ring socket `ring_socket`, with a 3 s wait for the cache manager.
worker::RemotePolicyOptions RingOptions(const std::string& ring_socket) {
  worker::RemotePolicyOptions options;
  options.score_dtype = kv::ScoreDType::kFp16;
  options.label = "t";
  options.wait_for_cache_manager = absl::Seconds(3);
  options.ring_socket = ring_socket;
  return options;
}

TEST(EndToEnd, SharedMemoryOverTcpIsRefusedAndScoresGoInline) {
  A2SF_REQUIRE_FIXTURES();
  Stack stack(/*remote=*/true, kv::ScoreDType::kFp32, false, false, 0, /*shared_memory=*/true);
  ChannelOptions plaintext;
  plaintext.plaintext = true;
  // The ring is handed over on the ring socket, but the session is opened over TCP: refused.
  auto remote = worker::RemotePolicyClient::Open(*MakeChannel("127.0.0.1:" + std::to_string(stack.cachemgr_port()), plaintext),
                                           stack.weights().config(), nullptr, [] {
                                             v1::Budget b;
                                             b.set_tokens(8);
                                             return b;
                                           }(), RingOptions(RingSocketPath(stack.UnixSocketPath())));
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_FALSE((*remote)->uses_shared_memory());
  std::vector<float> scores(size_t(stack.weights().config().n_layers) * stack.weights().config().n_kv_heads, 1.0f);
  auto decision = (*remote)->Step(0, 0, scores);
  ASSERT_TRUE(decision.ok()) << decision.status();
  EXPECT_EQ(decision->entries_after, 1u);
  // No ring socket to hand the ring to (unavailable): the session opens inline over the Unix socket.
  ChannelOptions unix_channel;
  unix_channel.plaintext = true;
  v1::Budget budget;
  budget.set_tokens(8);
  auto unavailable = worker::RemotePolicyClient::Open(
      *MakeChannel("unix:" + stack.UnixSocketPath(), unix_channel), stack.weights().config(), nullptr, budget,
      RingOptions(stack.UnixSocketPath() + ".no-such-ring-socket"));
  ASSERT_TRUE(unavailable.ok()) << unavailable.status();
  EXPECT_FALSE((*unavailable)->uses_shared_memory());
  auto inline_decision = (*unavailable)->Step(0, 0, scores);
  ASSERT_TRUE(inline_decision.ok()) << inline_decision.status();
  EXPECT_EQ(inline_decision->entries_after, 1u);
}

TEST(EndToEnd, CalibratedPerLayerAlphasWorkThroughTheServices) {
  A2SF_REQUIRE_FIXTURES();
  Stack stack(/*remote=*/true);
  const std::vector<double> alphas = {0.0, 0.2, 0.7, 0.3, 0.8};
  v1::GenerateRequest request = Request("a2sf", 16);
  request.mutable_policy()->clear_alpha();
  for (double a : alphas) request.mutable_policy()->add_layer_alphas(a);
  auto result = stack.client().Generate(request);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->finished.policy().layer_alphas_size(), 5);
  // The same per-layer policy in-process.
  cachemgr::PolicySpec spec;
  spec.name = "a2sf";
  spec.layer_alphas = alphas;
  cachemgr::BudgetSpec budget;
  budget.tokens = 16;
  auto local = std::move(*worker::InProcessPolicyClient::Create(stack.weights().config(), spec, budget));
  const std::vector<int> prompt = {1, 317, 269, 274, 287, 263, 377, 267, 265, 282, 295, 433};
  worker::EngineOptions options;
  options.cache_capacity = 17;
  auto engine = std::move(*worker::Engine::Create(&stack.weights(), options));
  worker::GenerateOptions generate;
  generate.max_new_tokens = 120;
  auto expected = worker::Generate(engine.get(), local.get(), prompt, generate);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(result->ids, std::vector<uint32_t>(expected->generated.begin(), expected->generated.end()));
  // A wrong number of layer alphas is refused with the field named.
  request.mutable_policy()->add_layer_alphas(0.5);
  auto bad = stack.client().Generate(request);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("layer_alphas"), std::string::npos) << bad.status();
}

TEST(EndToEnd, AnOperatorsDefaultPolicyThatDoesNotFitTheModelIsAServerError) {
  A2SF_REQUIRE_FIXTURES();
  Stack stack(/*remote=*/true);
  v1::PolicySpec six_layers;  // the fixture model has 5
  six_layers.set_name("a2sf");
  for (double a : {0.1, 0.2, 0.3, 0.4, 0.5, 0.6}) six_layers.add_layer_alphas(a);
  ASSERT_TRUE(stack.admin().SetDefault(six_layers).ok());
  v1::GenerateRequest unnamed = Request("a2sf", 16, 10);
  unnamed.clear_policy();
  auto refused = stack.client().Generate(unnamed);
  ASSERT_FALSE(refused.ok());
  // Not INVALID_ARGUMENT (HTTP 400): the request is fine; the message names the default and the way out.
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInternal) << refused.status();
  EXPECT_NE(refused.status().message().find("default policy"), std::string::npos) << refused.status();
  EXPECT_NE(refused.status().message().find("Name a policy in the request"), std::string::npos) << refused.status();
  // A request naming its own policy is served, and a default that fits serves the unnamed one again.
  EXPECT_TRUE(stack.client().Generate(Request("a2sf", 16, 10)).ok());
  v1::PolicySpec h2o;
  h2o.set_name("h2o");
  ASSERT_TRUE(stack.admin().SetDefault(h2o).ok());
  auto served = stack.client().Generate(unnamed);
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(served->finished.policy().name(), "h2o");
  EXPECT_EQ(stack.manager()->session_count(), 0u);
}

// GET http://127.0.0.1:port/metrics with a plain socket.
std::string Scrape(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return "";
  }
  const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  (void)!::write(fd, request.data(), request.size());
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = ::read(fd, buffer, sizeof(buffer))) > 0;) response.append(buffer, size_t(n));
  ::close(fd);
  return response;
}

double MetricValue(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
}

// The sum of every series of `name` whose labels contain all of `labels` (-1: no such series).
double SeriesSum(const std::string& text, const std::string& name, const std::vector<std::string>& labels = {}) {
  double sum = -1;
  size_t at = 0;
  while ((at = text.find("\n" + name, at)) != std::string::npos) {
    const size_t end = text.find('\n', at + 1);
    const std::string line = text.substr(at + 1, end - at - 1);
    at = end;
    const char next = line[name.size()];
    if (next != ' ' && next != '{') continue;
    bool match = true;
    for (const std::string& label : labels) match &= line.find(label) != std::string::npos;
    if (match) sum = std::max(sum, 0.0) + std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

TEST(EndToEnd, PrometheusMetricsCountStepsTokensAndJobs) {
  A2SF_REQUIRE_FIXTURES();
  Stack stack(/*remote=*/true, kv::ScoreDType::kFp16, /*metrics=*/true);
  const std::string idle = Scrape(stack.worker_metrics_port());
  EXPECT_EQ(SeriesSum(idle, "a2sf_worker_build_info", {"model=\"stories260K\"", "device=\"cpu\"", "version="}), 1.0);
  EXPECT_EQ(SeriesSum(idle, "a2sf_worker_tokens_total"), -1.0);  // no job, no policy label yet
  auto result = stack.client().Generate(Request("a2sf", 16, 50));
  ASSERT_TRUE(result.ok()) << result.status();
  const std::string worker_text = Scrape(stack.worker_metrics_port());
  const std::string cachemgr_text = Scrape(stack.cachemgr_metrics_port());
  ASSERT_NE(worker_text.find("200 OK"), std::string::npos) << worker_text;
  const std::vector<std::string> a2sf = {"model=\"stories260K\"", "policy=\"a2sf\""};
  EXPECT_EQ(SeriesSum(worker_text, "a2sf_worker_tokens_total", a2sf), 50.0);
  EXPECT_EQ(SeriesSum(worker_text, "a2sf_worker_prompt_tokens_total", a2sf), double(result->finished.prompt_tokens()));
  EXPECT_EQ(SeriesSum(worker_text, "a2sf_worker_time_to_first_token_seconds_count", a2sf), 1.0);
  EXPECT_EQ(SeriesSum(worker_text, "a2sf_worker_inter_token_latency_seconds_count", a2sf), 49.0);
  EXPECT_EQ(SeriesSum(worker_text, "a2sf_worker_e2e_request_latency_seconds_count", a2sf), 1.0);
  EXPECT_GT(SeriesSum(worker_text, "a2sf_worker_e2e_request_latency_seconds_sum", a2sf),
            SeriesSum(worker_text, "a2sf_worker_time_to_first_token_seconds_sum", a2sf));
  EXPECT_NE(worker_text.find("a2sf_worker_jobs_total{outcome=\"finished\"} 1"), std::string::npos) << worker_text;
  EXPECT_EQ(MetricValue(worker_text, "a2sf_worker_running_jobs"), 0.0);
  EXPECT_EQ(MetricValue(worker_text, "a2sf_worker_queued_jobs"), 0.0);
  EXPECT_EQ(SeriesSum(worker_text, "a2sf_worker_kv_bytes_in_use"), 0.0);  // the job ended: nothing held
  EXPECT_EQ(SeriesSum(worker_text, "a2sf_worker_evicted_entries_total", a2sf), double(result->finished.evictions()));
  // 12 prompt positions + 49 generated positions forwarded = 61 steps.
  EXPECT_EQ(MetricValue(cachemgr_text, "a2sf_cachemgr_steps_total"), 61.0) << cachemgr_text;
  EXPECT_EQ(MetricValue(cachemgr_text, "a2sf_cachemgr_evicted_entries_total"), double(result->finished.evictions()));
  EXPECT_GT(MetricValue(cachemgr_text, "a2sf_cachemgr_score_bytes_received_total"), 0.0);
  EXPECT_EQ(MetricValue(cachemgr_text, "a2sf_cachemgr_step_seconds_count"), 61.0);
  EXPECT_EQ(SeriesSum(cachemgr_text, "a2sf_cachemgr_sessions"), 0.0);
  EXPECT_EQ(SeriesSum(cachemgr_text, "a2sf_cachemgr_sessions", {"policy=\"h2o\""}), 0.0);  // every policy listed
  EXPECT_EQ(MetricValue(cachemgr_text, "a2sf_cachemgr_store_bytes_in_use"), 0.0);
  EXPECT_EQ(SeriesSum(cachemgr_text, "a2sf_cachemgr_build_info"), 1.0);
  // An error is counted by its code.
  auto bad = stack.client().Generate(Request("lru", 8));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(Scrape(stack.cachemgr_metrics_port()).find("a2sf_cachemgr_errors_total{code=\"INVALID_ARGUMENT\"} 1"),
            std::string::npos);
}

TEST(EndToEnd, MetricsShowARunningJobWhileItRuns) {
  A2SF_REQUIRE_FIXTURES();
  Stack stack(/*remote=*/true, kv::ScoreDType::kFp16, /*metrics=*/true, false, 0, false, /*gated=*/true);
  // Scrape while the job's 21st token step waits at the gate (past the prompt): the job is mid-decode,
  // its session open. The cache manager's scrape reads every session under its lock, which the held
  // step holds: it starts while the step is held and reads the session as soon as the step lets it go
  // (the job has hundreds of steps left).
  stack.gate().HoldAfter(20);
  absl::StatusOr<client::GenerationResult> result;
  std::thread job([&] { result = stack.client().Generate(Request("h2o", 16, 400)); });
  absl::Cleanup end_job = [&] {  // a failed ASSERT below still lets the job go and joins it
    stack.gate().Release();
    if (job.joinable()) job.join();
  };
  std::string worker_text, cachemgr_text;
  ASSERT_TRUE(stack.gate().AwaitHeld(absl::Seconds(30)));
  worker_text = Scrape(stack.worker_metrics_port());
  std::thread cachemgr_scrape([&] { cachemgr_text = Scrape(stack.cachemgr_metrics_port()); });
  const absl::Time scrape_deadline = absl::Now() + absl::Seconds(30);
  while (!stack.cachemgr_scraped() && absl::Now() < scrape_deadline) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_TRUE(stack.cachemgr_scraped()) << "the cache manager's metrics were not scraped within 30 s";
  stack.gate().Release();
  cachemgr_scrape.join();
  job.join();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(MetricValue(worker_text, "a2sf_worker_running_jobs"), 1.0) << worker_text;
  EXPECT_GT(SeriesSum(worker_text, "a2sf_worker_kv_bytes_in_use", {"policy=\"h2o\""}), 0.0);
  EXPECT_EQ(SeriesSum(cachemgr_text, "a2sf_cachemgr_sessions", {"policy=\"h2o\""}), 1.0) << cachemgr_text;
  EXPECT_EQ(SeriesSum(cachemgr_text, "a2sf_cachemgr_sessions", {"policy=\"a2sf\""}), 0.0);
  EXPECT_GT(MetricValue(cachemgr_text, "a2sf_cachemgr_store_bytes_in_use"), 0.0);
  const std::string after = Scrape(stack.cachemgr_metrics_port());
  EXPECT_EQ(SeriesSum(after, "a2sf_cachemgr_sessions", {"policy=\"h2o\""}), 0.0);
  EXPECT_EQ(MetricValue(after, "a2sf_cachemgr_store_bytes_in_use"), 0.0);
}

TEST(EndToEnd, SixteenConcurrentJobsComplete) {
  A2SF_REQUIRE_FIXTURES();
  Stack stack(/*remote=*/true, kv::ScoreDType::kFp16);
  const std::vector<uint32_t> expected = [&] {
    auto r = stack.client().Generate(Request("h2o", 20, 60));
    EXPECT_TRUE(r.ok());
    return r->ids;
  }();
  std::vector<std::thread> threads;
  std::atomic<int> matches{0};
  for (int i = 0; i < 16; ++i) {
    threads.emplace_back([&] {
      auto r = stack.client().Generate(Request("h2o", 20, 60));
      // Memory per job is bounded by the budget: (20 + 1) entries x 5 layers x 4 KV heads x 8 dims
      // x (K + V) x 4 bytes, whatever the sequence length.
      if (r.ok() && r->ids == expected && r->finished.kv_bytes_peak() <= 21u * 5 * 4 * 8 * 2 * 4) ++matches;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(matches.load(), 16);
  EXPECT_EQ(stack.manager()->session_count(), 0u);
  EXPECT_EQ(stack.manager()->store().BytesHeld(), 0u);  // every session's accumulators were freed
}

TEST(EndToEnd, BadRequestsGetTheRightCodesAndTheStackStaysHealthy) {
  A2SF_REQUIRE_FIXTURES();
  Stack stack(/*remote=*/true);
  struct Case {
    const char* what;
    v1::GenerateRequest request;
    absl::StatusCode code;
  };
  std::vector<Case> cases;
  v1::GenerateRequest empty = Request("a2sf", 8);
  empty.clear_text();
  cases.push_back({"no prompt", empty, absl::StatusCode::kInvalidArgument});
  v1::GenerateRequest no_ids = Request("a2sf", 8);
  no_ids.mutable_token_ids();
  cases.push_back({"empty token ids", no_ids, absl::StatusCode::kInvalidArgument});
  v1::GenerateRequest long_prompt = Request("a2sf", 8, 400);
  long_prompt.set_text(std::string(3000, 'a'));
  cases.push_back({"over-long prompt", long_prompt, absl::StatusCode::kInvalidArgument});
  v1::GenerateRequest bad_id = Request("a2sf", 8);
  bad_id.mutable_token_ids()->add_ids(1);
  bad_id.mutable_token_ids()->add_ids(99999);
  cases.push_back({"bad token id", bad_id, absl::StatusCode::kInvalidArgument});
  cases.push_back({"unknown policy", Request("lru", 8), absl::StatusCode::kInvalidArgument});
  v1::GenerateRequest bad_alpha = Request("a2sf", 8);
  bad_alpha.mutable_policy()->set_alpha(-1);
  cases.push_back({"bad alpha", bad_alpha, absl::StatusCode::kInvalidArgument});
  cases.push_back({"zero budget", Request("a2sf", 0), absl::StatusCode::kInvalidArgument});
  v1::GenerateRequest beyond_context = Request("a2sf", 8, 600);
  cases.push_back({"max_tokens beyond the context", beyond_context, absl::StatusCode::kInvalidArgument});
  v1::GenerateRequest bad_top_p = Request("a2sf", 8);
  bad_top_p.mutable_sampling()->set_temperature(1.0);
  bad_top_p.mutable_sampling()->set_top_p(3.0);
  cases.push_back({"bad top_p", bad_top_p, absl::StatusCode::kInvalidArgument});
  v1::GenerateRequest bad_utf8 = Request("a2sf", 8);
  bad_utf8.set_text("bad \xff text");
  cases.push_back({"invalid UTF-8", bad_utf8, absl::StatusCode::kInvalidArgument});
  for (const Case& c : cases) {
    auto result = stack.client().Generate(c.request);
    ASSERT_FALSE(result.ok()) << c.what;
    EXPECT_EQ(result.status().code(), c.code) << c.what << ": " << result.status();
  }
  EXPECT_EQ(*client::CheckHealth(stack.worker_channel(), absl::Seconds(5)), "SERVING");
  EXPECT_TRUE(stack.client().Generate(Request("a2sf", 8, 10)).ok());
  EXPECT_EQ(stack.manager()->session_count(), 0u);
}

TEST(EndToEnd, AGoneCacheManagerFailsJobsWithUnavailable) {
  A2SF_REQUIRE_FIXTURES();
  Stack stack(/*remote=*/true);
  ASSERT_TRUE(stack.client().Generate(Request("a2sf", 8, 10)).ok());
  stack.StopCacheManager();
  auto result = stack.client().Generate(Request("a2sf", 8, 10), nullptr, 0, absl::Seconds(30));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_EQ(*client::CheckHealth(stack.worker_channel(), absl::Seconds(5)), "SERVING");
}

TEST(EndToEnd, CacheManagerKilledMidJobFailsOrFallsBackAsConfigured) {
  A2SF_REQUIRE_FIXTURES();
  struct Case {
    bool fallback;
    uint32_t lag;
    bool shared_memory;
  };
  for (auto [fallback, lag, shared_memory] : {Case{false, 0, false}, Case{true, 0, false}, Case{false, 3, false},
                                              Case{true, 3, false}, Case{false, 0, true}, Case{true, 2, true}}) {
    SCOPED_TRACE(::testing::Message() << (fallback ? "continue in-process" : "fail") << ", lag " << lag
                                      << (shared_memory ? ", shared memory" : ""));
    Stack stack(/*remote=*/true, kv::ScoreDType::kFp32, /*metrics=*/false, fallback, lag, shared_memory,
                /*gated=*/true);
    const int port = stack.cachemgr_port();
    // Stop the cache manager while the session's 21st token step waits at the gate: the job cannot
    // have ended. The step is let go only once the job has (the server's stop cancelled its calls
    // first), so no decision after the stop reaches the worker.
    stack.gate().HoldAfter(20);
    std::atomic<bool> stopped{false};
    std::thread stopper([&] {
      if (!stack.gate().AwaitHeld(absl::Seconds(30))) return;
      stopped = true;
      stack.StopCacheManager();  // returns once the held step's handler has
    });
    v1::GenerateRequest request = Request("a2sf", 16, 400);
    request.mutable_stop()->set_stop_on_eos(false);  // the job must outlast the switch
    auto result = stack.client().Generate(request, nullptr, 0, absl::Seconds(60));
    stack.gate().Release();
    stopper.join();
    ASSERT_TRUE(stopped);
    if (fallback) {
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_EQ(result->ids.size(), 400u);
      EXPECT_EQ(result->finished.generated_tokens(), result->ids.size());
      EXPECT_EQ(result->finished.policy_location(), v1::POLICY_LOCATION_FALLBACK_IN_PROCESS);
    } else {
      ASSERT_FALSE(result.ok());
      EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
    }
    // A cache manager back on the same address serves new jobs (the channel reconnects).
    stack.StartCacheManager(port);
    auto next = stack.client().Generate(Request("a2sf", 16, 30), nullptr, 0, absl::Seconds(60));
    ASSERT_TRUE(next.ok()) << next.status();
    EXPECT_EQ(next->finished.policy_location(), v1::POLICY_LOCATION_REMOTE);
  }
}

// Swaps the policy of its in-process session just before `swap_step`, as the cache manager did.
class SwappingPolicy final : public worker::EvictionPolicyClient {
 public:
  SwappingPolicy(std::unique_ptr<worker::InProcessPolicyClient> inner, uint64_t swap_step, cachemgr::PolicySpec next)
      : inner_(std::move(inner)), swap_step_(swap_step), next_(std::move(next)) {}
  absl::StatusOr<kv::EvictionDecision> Step(uint64_t step, uint32_t position, absl::Span<const float> scores) override {
    if (step == swap_step_) {
      EXPECT_TRUE(inner_->manager()->SetPolicy(inner_->session().id, next_).ok());
    }
    return inner_->Step(step, position, scores);
  }
  absl::StatusOr<kv::EvictionDecision> BulkPrefill(uint32_t p, uint32_t n, absl::Span<const float> s) override {
    return inner_->BulkPrefill(p, n, s);
  }
  uint32_t budget_tokens() const override { return inner_->budget_tokens(); }
  bool evicts() const override { return true; }

 private:
  std::unique_ptr<worker::InProcessPolicyClient> inner_;
  uint64_t swap_step_;
  cachemgr::PolicySpec next_;
};

TEST(EndToEnd, RuntimeSwapOfARunningSessionChangesDecisionsFromTheNextStep) {
  A2SF_REQUIRE_FIXTURES();
  Stack stack(/*remote=*/true, kv::ScoreDType::kFp32, false, false, 0, false, /*gated=*/true);
  v1::GenerateRequest request = Request("h2o", 12, 200);
  request.mutable_stop()->set_stop_on_eos(false);
  v1::PolicySpec next;
  next.set_name("a2sf");
  next.set_alpha(0.1);
  // Swap while the job's 31st token step waits at the gate. The swap waits for that step's session
  // lock; the gate lets the job on one step at a time until the swap is in, so the job cannot end
  // first.
  stack.gate().HoldAfter(30);
  absl::StatusOr<client::GenerationResult> result;
  std::thread job([&] { result = stack.client().Generate(request); });
  absl::Cleanup end_job = [&] {  // a failed ASSERT below still lets the job go and joins it
    stack.gate().Release();
    if (job.joinable()) job.join();
  };
  ASSERT_TRUE(stack.gate().AwaitHeld(absl::Seconds(30)));
  const std::vector<std::string> sessions = stack.manager()->Ids();
  ASSERT_EQ(sessions.size(), 1u);
  const std::string swapped_session = sessions[0];
  auto swapped = std::async(std::launch::async, [&] { return stack.admin().SetSessionPolicy(swapped_session, next); });
  while (swapped.wait_for(std::chrono::milliseconds(20)) != std::future_status::ready) {
    stack.gate().PassOne();
    ASSERT_TRUE(stack.gate().AwaitHeld(absl::Seconds(30)));
  }
  stack.gate().Release();
  job.join();
  auto swap = swapped.get();
  ASSERT_TRUE(swap.ok()) << swap.status();
  EXPECT_EQ(swap->previous_policy().name(), "h2o");
  const uint64_t swap_step = swap->effective_from_step();
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_GT(swap_step, 0u);
  // The job's statistics name the session that was swapped.
  EXPECT_EQ(result->finished.session_id(), swapped_session);
  EXPECT_EQ(result->accepted.session_id(), swapped_session);
  // The library with the same swap at the same step gives exactly the same tokens...
  cachemgr::PolicySpec h2o;
  h2o.name = "h2o";
  cachemgr::BudgetSpec budget;
  budget.tokens = 12;
  cachemgr::PolicySpec a2sf;
  a2sf.name = "a2sf";
  a2sf.alpha = 0.1;
  const std::vector<int> prompt = {1, 317, 269, 274, 287, 263, 377, 267, 265, 282, 295, 433};
  auto run = [&](uint64_t at) {
    SwappingPolicy policy(std::move(*worker::InProcessPolicyClient::Create(stack.weights().config(), h2o, budget)), at, a2sf);
    worker::EngineOptions options;
    options.cache_capacity = 13;
    auto engine = std::move(*worker::Engine::Create(&stack.weights(), options));
    worker::GenerateOptions generate;
    generate.max_new_tokens = 200;
    generate.stop_on_eos = false;
    auto r = worker::Generate(engine.get(), &policy, prompt, generate);
    EXPECT_TRUE(r.ok());
    return std::vector<uint32_t>(r->generated.begin(), r->generated.end());
  };
  EXPECT_EQ(result->ids, run(swap_step));
  // ...while never swapping gives different ones: the swap changed the decisions.
  EXPECT_NE(result->ids, run(~0ull));
}

TEST(EndToEnd, InProcessWorkerNeedsNoCacheManager) {
  A2SF_REQUIRE_FIXTURES();
  Stack stack(/*remote=*/false);
  auto result = stack.client().Generate(Request("tova", 12));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->ids, InProcess(stack.weights(), "tova", 12, 120));
  EXPECT_EQ(result->finished.policy_location(), v1::POLICY_LOCATION_IN_PROCESS);
}

// CUDA IPC offered by the worker: without a GPU nothing is offered, with one a CPU store refuses it;
// either way the session takes the ring (over the Unix socket) or inline gRPC (over TCP, where the ring
// is refused too), and the tokens equal the in-process run's.
TEST(EndToEnd, ADeviceScoresOfferFallsBackToTheRingThenToInline) {
  A2SF_REQUIRE_FIXTURES();
  Stack stack(/*remote=*/true, kv::ScoreDType::kFp32, false, false, 0, /*shared_memory=*/true);
  ChannelOptions plaintext;
  plaintext.plaintext = true;
  const std::vector<uint32_t> expected = InProcess(stack.weights(), "a2sf", 16, 60);
  for (const bool over_unix : {true, false}) {
    SCOPED_TRACE(over_unix ? "unix socket" : "tcp");
    const std::string target =
        over_unix ? "unix:" + stack.UnixSocketPath() : "127.0.0.1:" + std::to_string(stack.cachemgr_port());
    worker::RemotePolicyOptions options;
    options.score_dtype = kv::ScoreDType::kFp32;
    options.label = "ipc-fallback";
    options.wait_for_cache_manager = absl::Seconds(3);
    options.ring_socket = RingSocketPath(stack.UnixSocketPath());
    options.offer_device_scores = true;
    v1::PolicySpec policy;
    policy.set_name("a2sf");
    policy.set_alpha(0.3);
    v1::Budget budget;
    budget.set_tokens(16);
    auto remote = worker::RemotePolicyClient::Open(*MakeChannel(target, plaintext), stack.weights().config(), &policy,
                                             budget, options);
    ASSERT_TRUE(remote.ok()) << remote.status();
    EXPECT_FALSE((*remote)->uses_device_scores());
    EXPECT_EQ((*remote)->uses_shared_memory(), over_unix);
    const std::vector<uint32_t> tokens = GenerateWith(stack.weights(), remote->get(), 60, [&](worker::Engine* engine) {
      // Nothing accepted: binding is a no-op, the engine keeps its own buffers.
      EXPECT_TRUE((*remote)->BindEngine(engine).ok());
      EXPECT_FALSE(engine->writes_device_scores());
    });
    EXPECT_EQ(tokens, expected);
  }
  EXPECT_EQ(stack.manager()->session_count(), 0u);
}

}  // namespace
}  // namespace a2sf
