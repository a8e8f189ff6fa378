// The Generation API's serving surface on an in-process worker over gRPC: stop strings and stop
// tokens, every finish reason, the reported seed, logprobs against an independent log_softmax of the
// engine's logits, GetModelInfo, and refused jobs kept out of ListJobs.
#include <cmath>
#include <cstdlib>
#include <future>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "cachemgr/store/testing/gated_score_store.h"
#include "client/client.h"
#include "common/grpc/server.h"
#include "gtest/gtest.h"
#include "worker/engine/generator.h"
#include "worker/service/generation_service.h"
#include "worker/testing/fixtures.h"
#include "worker/testing/local_stack.h"

namespace a2sf {
namespace {

// A worker on stories260K (or `model`, same vocabulary, for the tokenizer), policy "full" by default;
// the tests read and cancel jobs from other calls than Generate, with the admin token.
class Worker : public worker::testing::LocalWorker {
 public:
  explicit Worker(const std::function<void(worker::WorkerOptions*)>& adjust = nullptr,
                  std::unique_ptr<worker::ModelWeights> model = nullptr)
      : LocalWorker(Options(adjust), std::move(model)) {}
  static constexpr char kAdminToken[] = "serving-test";
  client::WorkerClient client() { return LocalWorker::client(kAdminToken); }

 private:
  static worker::WorkerOptions Options(const std::function<void(worker::WorkerOptions*)>& adjust) {
    worker::WorkerOptions options;
    options.default_policy.set_name("full");
    options.worker_name = "w";
    options.model_name = "stories260K";
    options.admin_token = kAdminToken;
    if (adjust) adjust(&options);
    return options;
  }
};

// A Worker whose evicting policies run in a cache manager with a gated store: a test holds a job
// mid-step (gate) while it acts, instead of racing a job a fast machine may finish first.
struct GatedNode {
  explicit GatedNode(const std::function<void(worker::WorkerOptions*)>& adjust = nullptr)
      : cachemgr([this] {
          worker::testing::LocalCacheManagerOptions options;
          gate = worker::testing::InstallGate(&options);
          return options;
        }()),
        worker([&](worker::WorkerOptions* o) {
          o->cache_manager = worker::testing::PlaintextChannel(cachemgr.tcp_address());
          o->decision_timeout = absl::InfiniteDuration();
          if (adjust) adjust(o);
        }) {}
  cachemgr::testing::GatedScoreStore* gate = nullptr;  // owned by cachemgr's session manager
  worker::testing::LocalCacheManager cachemgr;
  Worker worker;
};

// A job whose steps reach the cache manager's store (an evicting policy).
v1::GenerateRequest Evicting(v1::GenerateRequest request) {
  request.mutable_policy()->set_name("a2sf");
  request.mutable_budget()->set_tokens(16);
  return request;
}

v1::GenerateRequest Greedy(uint32_t max_tokens) {
  v1::GenerateRequest request;
  request.set_text("Lily and Tom went to the park");
  request.set_max_tokens(max_tokens);
  request.mutable_stop()->set_stop_on_eos(false);
  return request;
}

TEST(Serving, StopStringAcrossATokenBoundaryEndsTheJobUnderEitherRule) {
  A2SF_REQUIRE_FIXTURES();
  Worker worker;
  auto free_run = worker.client().Generate(Greedy(60));
  ASSERT_TRUE(free_run.ok()) << free_run.status();
  // Each token's text, decoded independently here, to place a stop string across a boundary.
  std::vector<size_t> ends;
  std::string text;
  int previous = 433;  // the prompt's last token ("park")
  for (uint32_t id : free_run->ids) {
    text += worker.tokenizer().DecodePiece(previous, int(id));
    previous = int(id);
    ends.push_back(text.size());
  }
  ASSERT_EQ(text, free_run->text);
  size_t boundary = 0;
  for (size_t i = 5; i < ends.size() && boundary == 0; ++i) {
    if (ends[i] - ends[i - 1] >= 2 && ends[i + 1] - ends[i] >= 2) boundary = ends[i];
  }
  ASSERT_GT(boundary, 0u);
  const std::string stop = text.substr(boundary - 2, 4);
  const size_t at = text.find(stop);
  const size_t tokens_needed = std::lower_bound(ends.begin(), ends.end(), at + stop.size()) - ends.begin() + 1;

  v1::GenerateRequest request = Greedy(60);
  request.mutable_stop()->add_stop_strings(stop);
  request.mutable_stop()->add_stop_strings("never appears here");
  auto included = worker.client().Generate(request);
  ASSERT_TRUE(included.ok()) << included.status();
  EXPECT_EQ(included->finished.finish_reason(), v1::FINISH_REASON_STOP_STRING);
  EXPECT_EQ(included->finished.stop_string(), stop);
  EXPECT_EQ(included->text, text.substr(0, at + stop.size()));
  EXPECT_EQ(included->ids.size(), tokens_needed);
  EXPECT_EQ(included->finished.generated_tokens(), tokens_needed);

  request.mutable_stop()->set_include_stop_string(false);
  auto excluded = worker.client().Generate(request);
  ASSERT_TRUE(excluded.ok());
  EXPECT_EQ(excluded->text, text.substr(0, at));
  EXPECT_EQ(excluded->ids.size(), tokens_needed);
}

TEST(Serving, EveryFinishReason) {
  A2SF_REQUIRE_FIXTURES();
  Worker worker;
  auto max_tokens = worker.client().Generate(Greedy(10));
  ASSERT_TRUE(max_tokens.ok());
  EXPECT_EQ(max_tokens->finished.finish_reason(), v1::FINISH_REASON_MAX_TOKENS);

  auto full = worker.client().Generate(Greedy(0));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->finished.finish_reason(), v1::FINISH_REASON_CONTEXT_FULL);
  EXPECT_EQ(full->finished.prompt_tokens() + full->finished.generated_tokens() - 1,
            uint32_t(worker.weights().config().seq_len));

  v1::GenerateRequest stop_token = Greedy(10);
  stop_token.mutable_stop()->add_stop_token_ids(max_tokens->ids[3]);
  auto stopped = worker.client().Generate(stop_token);
  ASSERT_TRUE(stopped.ok());
  EXPECT_EQ(stopped->finished.finish_reason(), v1::FINISH_REASON_STOP_TOKEN);
  EXPECT_EQ(stopped->ids.back(), max_tokens->ids[3]);

  v1::GenerateRequest eos = Greedy(400);
  eos.mutable_stop()->clear_stop_on_eos();
  auto ended = worker.client().Generate(eos);
  ASSERT_TRUE(ended.ok());
  EXPECT_EQ(ended->finished.finish_reason(), v1::FINISH_REASON_EOS);
  EXPECT_TRUE(ended->ids.back() == 1 || ended->ids.back() == 2);

  // Cancelled while it waits at the gate mid-decode (it cannot have ended first).
  GatedNode node;
  client::WorkerClient client = node.worker.client();
  v1::GenerateRequest long_job = Evicting(Greedy(0));
  long_job.set_job_id("to-cancel");
  node.gate->HoldAfter(20);
  absl::StatusOr<client::GenerationResult> cancelled;
  std::thread job([&] { cancelled = client.Generate(long_job); });
  absl::Cleanup end_job = [&] {  // a failed ASSERT below still lets the job go and joins it
    node.gate->Release();
    if (job.joinable()) job.join();
  };
  ASSERT_TRUE(node.gate->AwaitHeld(absl::Seconds(30)));
  EXPECT_TRUE(*client.Cancel("to-cancel"));
  node.gate->Release();
  job.join();
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->finished.finish_reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_EQ(client.GetJob("to-cancel")->state(), v1::JOB_STATE_CANCELLED);
}

TEST(Serving, AnUnsetSeedIsDrawnReportedAndRepeatsTheRun) {
  A2SF_REQUIRE_FIXTURES();
  Worker worker;
  v1::GenerateRequest request = Greedy(40);
  request.mutable_sampling()->set_temperature(1.0);
  auto a = worker.client().Generate(request);
  auto b = worker.client().Generate(request);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->finished.seed(), b->finished.seed());
  EXPECT_EQ(a->accepted.seed(), a->finished.seed());
  request.mutable_sampling()->set_seed(a->finished.seed());
  auto again = worker.client().Generate(request);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ids, a->ids);
  EXPECT_EQ(again->finished.seed(), a->finished.seed());
}

// log_softmax of `logits`, in double, computed here rather than by the worker's code.
std::vector<double> LogSoftmax(absl::Span<const float> logits) {
  double max = -1e30, sum = 0;
  for (float x : logits) max = std::max(max, double(x));
  for (float x : logits) sum += std::exp(double(x) - max);
  std::vector<double> out;
  for (float x : logits) out.push_back(double(x) - max - std::log(sum));
  return out;
}

TEST(Serving, LogprobsEqualLogSoftmaxOfTheEnginesLogits) {
  A2SF_REQUIRE_FIXTURES();
  Worker worker;
  v1::GenerateRequest request = Greedy(12);
  request.mutable_logprobs()->set_generated(5);
  request.mutable_logprobs()->set_prompt(2);
  auto result = worker.client().Generate(request);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->logprobs.size(), result->ids.size());
  const std::vector<int> prompt = {1, 317, 269, 274, 287, 263, 377, 267, 265, 282, 295, 433};
  ASSERT_EQ(result->prompt_logprobs.tokens_size(), int(prompt.size()) - 1);
  std::vector<int> sequence = prompt;
  sequence.insert(sequence.end(), result->ids.begin(), result->ids.end());
  auto engine = std::move(*worker::Engine::Create(&worker.weights(), {}));
  for (size_t position = 0; position + 1 < sequence.size(); ++position) {
    ASSERT_TRUE(engine->Forward(sequence[position], int(position)).ok());
    const std::vector<double> expected = LogSoftmax(engine->logits());
    const bool in_prompt = position + 1 < prompt.size();
    const v1::TokenLogprobs& got =
        in_prompt ? result->prompt_logprobs.tokens(int(position)) : result->logprobs[position + 1 - prompt.size()];
    const int token = sequence[position + 1];
    EXPECT_EQ(got.token().id(), uint32_t(token));
    EXPECT_NEAR(got.token().logprob(), expected[token], 1e-4) << position;
    ASSERT_EQ(got.top_size(), in_prompt ? 2 : 5);
    std::vector<int> order(expected.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = int(i);
    std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return expected[x] > expected[y]; });
    for (int k = 0; k < got.top_size(); ++k) {
      EXPECT_EQ(got.top(k).id(), uint32_t(order[k])) << position;
      EXPECT_NEAR(got.top(k).logprob(), expected[order[k]], 1e-4);
    }
    const int rank = int(std::find(order.begin(), order.end(), token) - order.begin()) + 1;
    EXPECT_EQ(got.rank(), uint32_t(rank));
    if (!in_prompt) {
      EXPECT_EQ(rank, 1);  // greedy
    }
  }
  EXPECT_EQ(result->logprobs[0].token().piece(), worker.tokenizer().DecodePiece(433, int(result->ids[0])));
}

TEST(Serving, GetModelInfoDescribesTheModelAndTheWorker) {
  A2SF_REQUIRE_FIXTURES();
  Worker worker;
  auto info = worker.client().GetModelInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  const worker::ModelConfig& c = worker.weights().config();
  EXPECT_EQ(info->name(), "stories260K");
  EXPECT_EQ(info->context_length(), uint32_t(c.seq_len));
  EXPECT_EQ(info->vocab_size(), 512u);
  EXPECT_EQ(info->num_layers(), uint32_t(c.n_layers));
  EXPECT_EQ(info->num_kv_heads(), uint32_t(c.n_kv_heads));
  EXPECT_EQ(info->weight_format(), worker.weights().format());
  EXPECT_EQ(info->tokenizer(), "llama2.c");
  EXPECT_NE(info->chat_template().find("[INST]"), std::string::npos);
  EXPECT_EQ(info->default_policy().name(), "full");
  EXPECT_EQ(info->device(), "cpu");
  // stories260K has about 260K parameters.
  EXPECT_GT(info->parameters(), 200000u);
  EXPECT_LT(info->parameters(), 300000u);
}

TEST(Serving, RefusedJobsAreNotListedAndBadOptionsNameTheirField) {
  A2SF_REQUIRE_FIXTURES();
  Worker worker;
  struct Case {
    const char* field;
    v1::GenerateRequest request;
  };
  std::vector<Case> cases;
  v1::GenerateRequest r = Greedy(10);
  r.mutable_policy()->set_name("lru");
  cases.push_back({"policy", r});
  r = Greedy(10);
  r.mutable_sampling()->set_min_p(1.5);
  cases.push_back({"min_p", r});
  r = Greedy(10);
  r.mutable_sampling()->set_presence_penalty(3);
  cases.push_back({"presence_penalty", r});
  r = Greedy(10);
  r.mutable_stop()->add_stop_strings("");
  cases.push_back({"stop_strings", r});
  r = Greedy(10);
  r.mutable_stop()->add_stop_token_ids(512);
  cases.push_back({"stop_token_ids", r});
  r = Greedy(10);
  r.mutable_stop()->set_min_tokens(11);
  cases.push_back({"min_tokens", r});
  r = Greedy(10);
  r.mutable_logprobs()->set_generated(21);
  cases.push_back({"logprobs.generated", r});
  r = Greedy(600);
  cases.push_back({"context", r});
  for (const Case& c : cases) {
    auto result = worker.client().Generate(c.request);
    ASSERT_FALSE(result.ok()) << c.field;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(result.status().message().find(c.field), std::string::npos) << result.status();
  }
  v1::GenerateRequest ok = Greedy(5);
  ok.set_job_id("fine");
  ASSERT_TRUE(worker.client().Generate(ok).ok());
  auto jobs = worker.client().ListJobs();
  ASSERT_TRUE(jobs.ok());
  ASSERT_EQ(jobs->jobs_size(), 1);
  EXPECT_EQ(jobs->jobs(0).stats().job_id(), "fine");
}

// Jobs running together in the batch (and queued behind --max_batch) stream exactly the tokens each
// gets alone, and report where they queued.
TEST(Serving, ConcurrentJobsGetTheirAloneTokensAndReportTheirQueueing) {
  A2SF_REQUIRE_FIXTURES();
  for (int max_batch : {1, 3}) {
    Worker worker([max_batch](worker::WorkerOptions* o) {
      o->max_batch = max_batch;
      o->max_waiting = 8;
      o->prefill_chunk = 4;
      o->default_policy.set_name("a2sf");
    });
    std::vector<v1::GenerateRequest> requests;
    for (int i = 0; i < 5; ++i) {
      v1::GenerateRequest request = Greedy(30 + 5 * i);
      request.set_text(std::string("Lily and Tom went to the park") + std::string(i, '!'));
      request.mutable_budget()->set_tokens(8 + 2 * i);
      requests.push_back(request);
    }
    std::vector<std::vector<uint32_t>> alone;
    for (const auto& request : requests) alone.push_back(worker.client().Generate(request)->ids);
    std::vector<std::future<absl::StatusOr<client::GenerationResult>>> together;
    for (const auto& request : requests) {
      together.push_back(std::async(std::launch::async, [&worker, request] { return worker.client().Generate(request); }));
    }
    for (size_t i = 0; i < requests.size(); ++i) {
      auto result = together[i].get();
      ASSERT_TRUE(result.ok()) << result.status();
      EXPECT_EQ(result->ids, alone[i]) << "job " << i << ", max_batch " << max_batch;
      EXPECT_LT(result->finished.queue_position(), 5u);
      EXPECT_GE(result->finished.queue_wait_ms(), 0.0);
    }
  }
}

TEST(Serving, AJobWhoseKvCacheCanNeverFitIsRefusedNamingTheLimit) {
  A2SF_REQUIRE_FIXTURES();
  Worker worker([](worker::WorkerOptions* o) { o->max_kv_bytes = 4096; });
  auto result = worker.client().Generate(Greedy(20));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_NE(result.status().message().find("--max_kv_bytes"), std::string::npos) << result.status();
  auto jobs = worker.client().ListJobs();
  ASSERT_TRUE(jobs.ok());
  EXPECT_EQ(jobs->jobs_size(), 0);
}

// The bytes a refused job's KV cache needs, from the refusal's message (0 if it names none).
size_t NeededKvBytes(const absl::Status& refusal) {
  const std::string message(refusal.message());
  const size_t at = message.find("needs ");
  return at == std::string::npos ? 0 : size_t(std::strtoull(message.c_str() + at + 6, nullptr, 10));
}

// --kv_type=f16 halves what a job reserves and q8_0 takes 10 of f32's 32 bytes: stories260K holds 5
// layers x 4 KV heads x 2 (keys, values) rows of 8 dims per cached token, 4 bytes a dim in f32, 2 in
// f16, and one short q8_0 block (2 + 8 bytes) a row; a job an f32 worker refuses for --max_kv_bytes
// runs on an f16 worker with the same limit.
TEST(Serving, F16AndQ8_0KvCachesAreAdmittedForTheirBytes) {
  A2SF_REQUIRE_FIXTURES();
  const worker::WeightType types[] = {worker::WeightType::kF32, worker::WeightType::kF16, worker::WeightType::kQ8_0};
  size_t needed[3] = {0, 0, 0};
  for (int i = 0; i < 3; ++i) {
    Worker tiny([&, i](worker::WorkerOptions* o) {
      o->max_kv_bytes = 1;
      o->kv_type = types[i];
    });
    needed[i] = NeededKvBytes(tiny.client().Generate(Greedy(20)).status());
  }
  ASSERT_GT(needed[0], 0u);
  EXPECT_EQ(needed[0] % (5 * 4 * 8 * 2 * 4), 0u) << needed[0];
  EXPECT_EQ(needed[1] * 2, needed[0]);
  EXPECT_EQ(needed[2] * 32, needed[0] * 10);
  Worker f32([&](worker::WorkerOptions* o) { o->max_kv_bytes = needed[1]; });
  EXPECT_EQ(f32.client().Generate(Greedy(20)).status().code(), absl::StatusCode::kInvalidArgument);
  Worker f16([&](worker::WorkerOptions* o) {
    o->max_kv_bytes = needed[1];
    o->kv_type = worker::WeightType::kF16;
  });
  auto result = f16.client().Generate(Greedy(20));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->ids.size(), 20u);
  EXPECT_GT(result->finished.kv_bytes_peak(), 0u);
  EXPECT_LE(result->finished.kv_bytes_peak(), needed[1]);  // what it held fits what it reserved
  EXPECT_EQ(result->finished.kv_bytes_peak() % (5 * 4 * 8 * 2 * 2), 0u) << "whole f16 entries";
  Worker q8([&](worker::WorkerOptions* o) {
    o->max_kv_bytes = needed[2];
    o->kv_type = worker::WeightType::kQ8_0;
  });
  auto quantized = q8.client().Generate(Greedy(20));
  ASSERT_TRUE(quantized.ok()) << quantized.status();
  EXPECT_EQ(quantized->ids.size(), 20u);
  EXPECT_LE(quantized->finished.kv_bytes_peak(), needed[2]);
  EXPECT_EQ(quantized->finished.kv_bytes_peak() % (5 * 4 * 10 * 2), 0u) << "whole q8_0 entries";
}

// Polls GetJob until `id` is in `state` (false after ~5 s).
bool AwaitState(Worker& worker, const std::string& id, v1::JobState state) {
  for (int i = 0; i < 5000; ++i) {
    auto job = worker.client().GetJob(id);
    if (job.ok() && job->state() == state) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

// One job decoding and four queued behind it (FIFO): a sixth is refused; a job cancelled while queued
// ends at once as cancelled with no tokens, and the others run to their end. The decoding job cannot
// end (and let the queue move) before the test has looked: its policy runs in a cache manager whose
// token steps wait at a gate until the test opens it.
TEST(Serving, BeyondTheQueueJobsAreRefusedAndACancelledQueuedJobEndsAtOnce) {
  A2SF_REQUIRE_FIXTURES();
  GatedNode node([](worker::WorkerOptions* o) {
    o->max_batch = 1;
    o->max_waiting = 4;
  });
  Worker& worker = node.worker;
  cachemgr::testing::GatedScoreStore& gate = *node.gate;
  gate.HoldAfter(2);
  std::vector<std::future<absl::StatusOr<client::GenerationResult>>> longs;
  for (int i = 0; i < 4; ++i) {
    v1::GenerateRequest long_job = Evicting(Greedy(0));  // until the context is full
    long_job.set_job_id("long" + std::to_string(i));
    longs.push_back(std::async(std::launch::async, [&worker, long_job] { return worker.client().Generate(long_job); }));
    if (i == 0) {
      ASSERT_TRUE(gate.AwaitHeld(absl::Seconds(30)));
    }
    ASSERT_TRUE(AwaitState(worker, long_job.job_id(), i == 0 ? v1::JOB_STATE_RUNNING : v1::JOB_STATE_QUEUED));
  }
  v1::GenerateRequest queued = Greedy(5);
  queued.set_job_id("queued");
  auto second = std::async(std::launch::async, [&] { return worker.client().Generate(queued); });
  ASSERT_TRUE(AwaitState(worker, "queued", v1::JOB_STATE_QUEUED));
  auto refused = worker.client().Generate(Greedy(5), nullptr, /*retries=*/0);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  const auto cancelled_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(*worker.client().Cancel("queued"));
  auto cancelled = second.get();
  EXPECT_LT(std::chrono::steady_clock::now() - cancelled_at, std::chrono::seconds(2));
  ASSERT_TRUE(cancelled.ok()) << cancelled.status();
  EXPECT_EQ(cancelled->finished.finish_reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_TRUE(cancelled->ids.empty());
  EXPECT_EQ(cancelled->accepted.queue_position(), 3u);
  gate.Release();
  for (int i = 0; i < 4; ++i) {
    auto result = longs[i].get();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->finished.finish_reason(), v1::FINISH_REASON_CONTEXT_FULL);
    EXPECT_EQ(result->accepted.queue_position(), uint32_t(std::max(0, i - 1)));
    if (i > 0) {
      EXPECT_GT(result->finished.queue_wait_ms(), 0.0);
    }
  }
}

// A job waiting in the worker's queue holds its cache-manager session but no stream: its transport
// (on the ring: the stream that attaches the ring) is made at its first step. Before, every queued job
// held a stream and a worker's queue could use up the cache manager's --max_streams_per_peer.
TEST(Serving, AQueuedJobHoldsItsSessionButNoStream) {
  A2SF_REQUIRE_FIXTURES();
  worker::testing::LocalCacheManagerOptions options;
  cachemgr::testing::GatedScoreStore& gate = *worker::testing::InstallGate(&options);
  options.unix_socket = worker::testing::UniqueSocketPath();
  worker::testing::LocalCacheManager cachemgr(std::move(options));
  Worker worker([&](worker::WorkerOptions* o) {
    o->cache_manager = worker::testing::PlaintextChannel(cachemgr.unix_address());
    o->ring_socket = cachemgr.ring_socket();
    o->decision_timeout = absl::InfiniteDuration();
    o->max_batch = 1;
  });
  gate.HoldAfter(2);
  v1::GenerateRequest running = Evicting(Greedy(40));
  running.set_job_id("running");
  auto first = std::async(std::launch::async, [&] { return worker.client().Generate(running); });
  ASSERT_TRUE(gate.AwaitHeld(absl::Seconds(30)));
  v1::GenerateRequest waiting = Evicting(Greedy(5));
  waiting.set_job_id("waiting");
  auto second = std::async(std::launch::async, [&] { return worker.client().Generate(waiting); });
  ASSERT_TRUE(AwaitState(worker, "waiting", v1::JOB_STATE_QUEUED));
  EXPECT_EQ(cachemgr.manager()->Ids().size(), 2u);     // both sessions are open
  EXPECT_EQ(cachemgr.service()->open_streams(), 1u);  // the running job's ring stream only
  gate.Release();
  for (auto* job : {&first, &second}) {
    auto result = job->get();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_TRUE(result->accepted.shared_memory());
    EXPECT_TRUE(result->finished.shared_memory());
  }
  EXPECT_EQ(cachemgr.manager()->Ids().size(), 0u);
}

}  // namespace
}  // namespace a2sf
