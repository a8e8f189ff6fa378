// The worker's edge towards Generate clients (issue 11, worker side): what a caller is told when the
// cache manager fails (never its internals), TLS failures named as such, the request contract
// (empty text, unknown enum values, tiny temperatures) and who may read or cancel a job.
#include <cstdlib>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cachemgr/store/testing/gated_score_store.h"
#include "client/client.h"
#include "common/grpc/server.h"
#include "gtest/gtest.h"
#include "worker/service/generation_service.h"
#include "worker/testing/fixtures.h"
#include "worker/testing/local_stack.h"

namespace a2sf {
namespace {

struct NodeSetup {
  bool remote = true;
  bool shared_memory = false;
  size_t max_sessions = 64;
  std::string admin_token;
  ChannelOptions to_cachemgr;   // plaintext unless a test says otherwise
  ServerTlsOptions cachemgr_tls;  // set: the cache manager's TCP port speaks TLS
  // The cache manager's token steps pass a gate (Node::gate) the test opens and closes; the worker then
  // waits for decisions without a deadline.
  bool gated = false;
};

// A cache manager (in this process) and a worker using it.
class Node {
 public:
  explicit Node(NodeSetup setup) {
    worker::WorkerOptions options;
    options.default_policy.set_name("a2sf");
    options.admin_token = setup.admin_token;
    options.cache_manager_wait = absl::Seconds(1);
    if (setup.remote) {
      worker::testing::LocalCacheManagerOptions cachemgr;
      cachemgr.sessions.max_sessions = setup.max_sessions;
      if (setup.shared_memory) cachemgr.unix_socket = worker::testing::UniqueSocketPath();
      cachemgr.tls = setup.cachemgr_tls;
      if (setup.gated) {
        gate_ = worker::testing::InstallGate(&cachemgr);
        options.decision_timeout = absl::InfiniteDuration();
      }
      cachemgr_ = std::make_unique<worker::testing::LocalCacheManager>(std::move(cachemgr));
      if (setup.cachemgr_tls.cert_chain_path.empty()) setup.to_cachemgr.plaintext = true;
      options.cache_manager = *MakeChannel(
          setup.shared_memory ? cachemgr_->unix_address() : cachemgr_->tcp_address(), setup.to_cachemgr);
      if (setup.shared_memory) options.ring_socket = cachemgr_->ring_socket();
    }
    worker_ = std::make_unique<worker::testing::LocalWorker>(options);
  }
  client::WorkerClient client() { return worker_->client(); }
  std::unique_ptr<v1::Generation::Stub> stub() { return worker_->stub(); }
  cachemgr::SessionManager* manager() { return cachemgr_->manager(); }
  cachemgr::testing::GatedScoreStore& gate() { return *gate_; }

 private:
  cachemgr::testing::GatedScoreStore* gate_ = nullptr;  // owned by cachemgr_'s session manager
  std::unique_ptr<worker::testing::LocalCacheManager> cachemgr_;
  std::unique_ptr<worker::testing::LocalWorker> worker_;
};

v1::GenerateRequest Job(uint32_t max_tokens = 40) {
  v1::GenerateRequest request;
  request.set_text("Lily and Tom went to the park");
  request.set_max_tokens(max_tokens);
  request.mutable_stop()->set_stop_on_eos(false);
  request.mutable_policy()->set_name("a2sf");
  request.mutable_policy()->set_alpha(0.3);
  request.mutable_budget()->set_tokens(16);
  return request;
}

// Nothing of the cache manager's vocabulary reaches the caller.
void ExpectNoInternals(const absl::Status& status) {
  for (const char* internal : {"--max_sessions", "session_id", "s-", "KV cache full", "ring", "step "}) {
    EXPECT_FALSE(absl::StrContains(status.message(), internal)) << "'" << internal << "' leaked: " << status;
  }
}

TEST(WorkerEdge, AFullCacheManagerIsResourceExhaustedInTheCallersTerms) {
  A2SF_REQUIRE_FIXTURES();
  NodeSetup setup;
  setup.max_sessions = 1;
  setup.gated = true;
  Node node(setup);
  // One job holds the only session: it waits at the gate in its fourth token step (it cannot have
  // ended) while a second one asks.
  node.gate().HoldAfter(3);
  std::thread holder([&] { node.client().Generate(Job(480), nullptr, 0).IgnoreError(); });
  absl::Cleanup end_holder = [&] {  // a failed ASSERT below still lets the job go and joins it
    node.gate().Release();
    if (holder.joinable()) holder.join();
  };
  ASSERT_TRUE(node.gate().AwaitHeld(absl::Seconds(30)));
  auto second = node.client().Generate(Job(), nullptr, 0);
  node.gate().Release();
  holder.join();
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted) << second.status();
  EXPECT_TRUE(absl::StrContains(second.status().message(), "retry")) << second.status();
  ExpectNoInternals(second.status());
}

TEST(WorkerEdge, ASessionEndedUnderARunningJobIsAbortedWithoutItsId) {
  A2SF_REQUIRE_FIXTURES();
  NodeSetup setup;
  setup.gated = true;
  Node node(setup);
  node.gate().HoldAfter(3);
  absl::StatusOr<client::GenerationResult> result;
  std::thread job([&] { result = node.client().Generate(Job(480), nullptr, 0); });
  absl::Cleanup end_job = [&] {  // a failed ASSERT below still lets the job go and joins it
    node.gate().Release();
    if (job.joinable()) job.join();
  };
  // The job waits at the gate mid-step, its session locked: Close takes the session out at once
  // (then waits for that step), so the job's next step finds it gone.
  ASSERT_TRUE(node.gate().AwaitHeld(absl::Seconds(30)));
  const std::vector<std::string> ids = node.manager()->Ids();
  ASSERT_EQ(ids.size(), 1u);
  std::thread closer([&] { EXPECT_TRUE(node.manager()->Close(ids[0]).ok()); });
  const absl::Time close_deadline = absl::Now() + absl::Seconds(30);
  while (node.manager()->session_count() > 0 && absl::Now() < close_deadline) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(node.manager()->session_count(), 0u) << "the session was not closed within 30 s";
  node.gate().Release();
  closer.join();
  job.join();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kAborted) << result.status();
  ExpectNoInternals(result.status());
}

TEST(WorkerEdge, AnInvalidPolicyIsReportedAsItselfNotAsARefusedRing) {
  A2SF_REQUIRE_FIXTURES();
  NodeSetup setup;
  setup.shared_memory = true;
  Node node(setup);
  v1::GenerateRequest request = Job();
  request.mutable_policy()->set_name("lru");
  ::testing::internal::CaptureStderr();
  auto result = node.client().Generate(request, nullptr, 0);
  const std::string log = ::testing::internal::GetCapturedStderr();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), "lru")) << result.status();
  EXPECT_FALSE(absl::StrContains(log, "refused the shared-memory ring")) << log;
  // A valid job still gets the ring.
  auto ok = node.client().Generate(Job(), nullptr, 0);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_TRUE(ok->finished.shared_memory());
}

TEST(WorkerEdge, ATlsMismatchWithTheCacheManagerIsNamed) {
  A2SF_REQUIRE_FIXTURES();
  const std::string dir = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") + "/edge-tls";
  const std::string script = "set -e; mkdir -p " + dir + "; cd " + dir +
                             "; openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "
                             "key.pem -out cert.pem -days 1 -subj /CN=localhost -addext "
                             "subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null";
  if (std::system(("bash -c \"" + script + "\"").c_str()) != 0) GTEST_SKIP() << "openssl could not make a certificate";
  NodeSetup setup;
  setup.cachemgr_tls = {dir + "/cert.pem", dir + "/key.pem", ""};
  // The worker does not trust the cache manager's self-signed certificate (system roots only).
  Node node(setup);
  auto result = node.client().Generate(Job(), nullptr, 0);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_TRUE(absl::StartsWith(result.status().message(), "TLS handshake with the cache manager failed: "))
      << result.status();
}

TEST(WorkerEdge, TheRequestContractIsEnforced) {
  A2SF_REQUIRE_FIXTURES();
  NodeSetup setup;
  setup.remote = false;
  Node node(setup);
  v1::GenerateRequest empty = Job();
  empty.set_text("");
  auto result = node.client().Generate(empty, nullptr, 0);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), "prompt.text")) << result.status();
  v1::GenerateRequest unknown = Job();
  unknown.set_prefill(static_cast<v1::PrefillMode>(99));
  result = node.client().Generate(unknown, nullptr, 0);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), "prefill")) << result.status();
  // Job ids are logged and listed: too long, or not printable ASCII (a line break, a terminal escape,
  // U+0085 NEXT LINE, U+202E RIGHT-TO-LEFT OVERRIDE), is refused.
  for (const std::string& id : {std::string(129, 'j'), std::string("a\nfake log line"), std::string("x\x1b[2J"),
                                std::string("next\xC2\x85line"), std::string("\xE2\x80\xAEreversed")}) {
    v1::GenerateRequest named = Job();
    named.set_job_id(id);
    result = node.client().Generate(named, nullptr, 0);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
    EXPECT_TRUE(absl::StrContains(result.status().message(), "job_id")) << result.status();
  }
  // Temperatures too small to divide by sample greedily: the greedy run's tokens, not garbage.
  auto greedy = node.client().Generate(Job(), nullptr, 0);
  ASSERT_TRUE(greedy.ok()) << greedy.status();
  // The context holds prompt + max_tokens - 1 (the last token is never forwarded); one more is refused
  // with the most that fits.
  const uint32_t room = 512 - greedy->finished.prompt_tokens() + 1;
  result = node.client().Generate(Job(room + 1), nullptr, 0);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), absl::StrCat("max_tokens may be at most ", room)))
      << result.status();
  v1::GenerateRequest fits = Job(room);
  fits.mutable_budget()->set_tokens(512);
  auto full = node.client().Generate(fits, nullptr, 0);
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->ids.size(), room);
  for (double temperature : {1e-40, 1e-31, 1e-7}) {
    v1::GenerateRequest tiny = Job();
    tiny.mutable_sampling()->set_temperature(temperature);
    tiny.mutable_sampling()->set_seed(3);
    auto sampled = node.client().Generate(tiny, nullptr, 0);
    ASSERT_TRUE(sampled.ok()) << sampled.status();
    EXPECT_EQ(sampled->ids, greedy->ids) << "temperature " << temperature;
  }
}

// A prompt-only job (a scoring call) forwards its prompt under its policy, reports the prompt's
// logprobs, generates nothing and ends MAX_TOKENS; its prompt logprobs are a generating job's. It asks
// max_tokens 0 and min_tokens 0.
TEST(WorkerEdge, APromptOnlyJobScoresThePromptAndGeneratesNothing) {
  A2SF_REQUIRE_FIXTURES();
  Node node(NodeSetup{});  // the policy in the cache manager, evicting during the prompt
  v1::GenerateRequest generating = Job(5);
  generating.set_text("Lily and Tom went to the park. They saw a big red ball and a little dog.");
  generating.mutable_logprobs()->set_prompt(2);
  v1::GenerateRequest scoring = generating;
  scoring.set_max_tokens(0);
  scoring.set_prompt_only(true);
  auto generated = node.client().Generate(generating, nullptr, 0);
  auto scored = node.client().Generate(scoring, nullptr, 0);
  ASSERT_TRUE(generated.ok()) << generated.status();
  ASSERT_TRUE(scored.ok()) << scored.status();
  EXPECT_TRUE(scored->ids.empty());
  EXPECT_EQ(scored->finished.generated_tokens(), 0u);
  EXPECT_EQ(scored->finished.finish_reason(), v1::FINISH_REASON_MAX_TOKENS);
  EXPECT_GT(scored->finished.evictions(), 0u);  // the prompt outgrew the 16-token budget
  // The full cache of a job that forwarded its whole prompt and nothing more: the generating job's
  // (prompt + 5 - 1 positions) less its 4 generated positions.
  EXPECT_EQ(scored->finished.kv_bytes_full_cache() * (scored->finished.prompt_tokens() + 4),
            generated->finished.kv_bytes_full_cache() * scored->finished.prompt_tokens());
  ASSERT_GT(scored->finished.prompt_tokens(), 16u);
  ASSERT_EQ(scored->prompt_logprobs.tokens_size(), int(scored->finished.prompt_tokens()) - 1);
  ASSERT_EQ(scored->prompt_logprobs.tokens_size(), generated->prompt_logprobs.tokens_size());
  for (int i = 0; i < scored->prompt_logprobs.tokens_size(); ++i) {
    EXPECT_EQ(scored->prompt_logprobs.tokens(i).token().logprob(), generated->prompt_logprobs.tokens(i).token().logprob())
        << i;
  }
  for (auto [max_tokens, min_tokens] : {std::pair<uint32_t, uint32_t>{3, 0}, {0, 1}}) {
    v1::GenerateRequest bad = scoring;
    bad.set_max_tokens(max_tokens);
    bad.mutable_stop()->set_min_tokens(min_tokens);
    auto refused = node.client().Generate(bad, nullptr, 0);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
    EXPECT_TRUE(absl::StrContains(refused.status().message(), "prompt_only")) << refused.status();
  }
}

// Client-chosen ids share the worker's namespace, and every response shows the counter: a client that
// takes the next ids does not make the worker's own jobs (every HTTP request's) fail; they skip them.
TEST(WorkerEdge, ClientChosenIdsCannotTakeTheWorkersNextIds) {
  A2SF_REQUIRE_FIXTURES();
  NodeSetup setup;
  setup.remote = false;
  Node node(setup);
  auto first = node.client().Generate(Job(), nullptr, 0);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string id = first->finished.job_id();
  const size_t dash = id.rfind('-');
  ASSERT_NE(dash, std::string::npos) << id;
  const std::string prefix = id.substr(0, dash + 1);
  const uint64_t n = std::stoull(id.substr(dash + 1));
  for (uint64_t taken = n + 1; taken <= n + 3; ++taken) {
    v1::GenerateRequest named = Job();
    named.set_job_id(absl::StrCat(prefix, taken));
    auto squatter = node.client().Generate(named, nullptr, 0);
    ASSERT_TRUE(squatter.ok()) << squatter.status();
  }
  auto next = node.client().Generate(Job(), nullptr, 0);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->finished.job_id(), absl::StrCat(prefix, n + 4));
  // A client's own id still may not be reused while the worker keeps that job.
  v1::GenerateRequest again = Job();
  again.set_job_id(absl::StrCat(prefix, n + 2));
  auto refused = node.client().Generate(again, nullptr, 0);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists) << refused.status();
}

grpc::Status CancelAs(v1::Generation::Stub* stub, const std::string& job_id, const std::string& job_token,
                      const std::string& bearer, v1::CancelJobResponse* response) {
  grpc::ClientContext context;
  if (!bearer.empty()) context.AddMetadata("authorization", "Bearer " + bearer);
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  request.set_job_token(job_token);
  return stub->CancelJob(&context, request, response);
}

grpc::Status GetAs(v1::Generation::Stub* stub, const std::string& job_id, const std::string& job_token,
                   const std::string& bearer, v1::JobStatus* response) {
  grpc::ClientContext context;
  if (!bearer.empty()) context.AddMetadata("authorization", "Bearer " + bearer);
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  request.set_job_token(job_token);
  return stub->GetJob(&context, request, response);
}

grpc::Status ListAs(v1::Generation::Stub* stub, const std::string& bearer, v1::ListJobsResponse* response) {
  grpc::ClientContext context;
  if (!bearer.empty()) context.AddMetadata("authorization", "Bearer " + bearer);
  return stub->ListJobs(&context, {}, response);
}

TEST(WorkerEdge, AThirdPartyCannotReadOrCancelAnotherClientsJob) {
  A2SF_REQUIRE_FIXTURES();
  NodeSetup setup;
  setup.admin_token = "op-secret";
  setup.gated = true;  // the jobs to cancel wait at the gate until they are cancelled
  Node node(setup);
  auto owner = node.stub();
  auto third = node.stub();  // another client, on its own connection too
  v1::GenerateRequest request = Job(480);
  request.set_job_id("victim");
  grpc::ClientContext context;
  auto reader = owner->Generate(&context, request);
  v1::GenerateResponse response;
  ASSERT_TRUE(reader->Read(&response));
  ASSERT_TRUE(response.has_accepted());
  const std::string token = response.job_token();
  EXPECT_EQ(token.size(), 32u);
  // While the job runs, the third party knows its id but not its token.
  v1::CancelJobResponse cancelled;
  v1::JobStatus status;
  v1::ListJobsResponse list;
  EXPECT_EQ(CancelAs(third.get(), "victim", "", "", &cancelled).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(CancelAs(third.get(), "victim", std::string(32, '0'), "", &cancelled).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(CancelAs(third.get(), "victim", "", "wrong", &cancelled).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetAs(third.get(), "victim", "", "", &status).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(ListAs(third.get(), "", &list).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(ListAs(third.get(), "wrong", &list).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // The owner reads its job with the token; the operator lists with the admin token (no tokens shown).
  ASSERT_TRUE(GetAs(third.get(), "victim", token, "", &status).ok());
  EXPECT_EQ(status.stats().job_id(), "victim");
  ASSERT_TRUE(ListAs(third.get(), "op-secret", &list).ok());
  EXPECT_FALSE(absl::StrContains(list.DebugString(), token));
  // The job ran to its end: nobody could cancel it.
  size_t tokens = 0;
  while (reader->Read(&response)) tokens += size_t(response.tokens().ids_size());
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(tokens, 480u);
  // The owner's token, or the admin token, does cancel (the job cannot have ended: it waits at the
  // gate in its third token step until the cancellation is in).
  for (const bool as_admin : {false, true}) {
    node.gate().HoldAfter(2);
    grpc::ClientContext second_context;
    request.set_job_id(as_admin ? "second" : "first");
    auto second = owner->Generate(&second_context, request);
    ASSERT_TRUE(second->Read(&response));
    ASSERT_TRUE(node.gate().AwaitHeld(absl::Seconds(30)));
    ASSERT_TRUE(CancelAs(third.get(), request.job_id(), as_admin ? "" : response.job_token(),
                         as_admin ? "op-secret" : "", &cancelled).ok());
    node.gate().Release();
    EXPECT_TRUE(cancelled.cancelled());
    v1::JobStats finished;
    while (second->Read(&response)) {
      if (response.has_finished()) finished = response.finished();
    }
    EXPECT_TRUE(second->Finish().ok());
    EXPECT_EQ(finished.finish_reason(), v1::FINISH_REASON_CANCELLED);
  }
}

}  // namespace
}  // namespace a2sf
