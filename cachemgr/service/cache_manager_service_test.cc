// The cache-manager service on 127.0.0.1 with an ephemeral port: decisions equal the library's,
// hostile requests get the right codes and leave sessions and the server healthy.
#include "common/testing/temp_socket.h"
#include "cachemgr/service/cache_manager_service.h"

#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cachemgr/service/proto_convert.h"
#include "cachemgr/store/cpu_score_store.h"
#include "common/grpc/server.h"
#include "common/shm/ring_handoff.h"
#include "common/shm/score_ring.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"

namespace a2sf::cachemgr {
namespace {

class CacheManagerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SessionManagerOptions options;
    options.max_sessions = MaxSessions();
    options.max_session_bytes = 1 << 20;
    manager_ = std::make_unique<SessionManager>(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(), options);
    socket_path_ = a2sf::testing::TempSocketPath("cmst");
    ring_handoff_ = std::move(*RingHandoffServer::Start(RingSocketPath(socket_path_), 0600));
    CacheManagerServiceOptions service_options;
    service_options.ring_handoff = ring_handoff_.get();
    service_options.stream_idle_timeout = absl::Seconds(3);
    cache_ = std::make_unique<CacheManagerService>(manager_.get(), service_options);
    admin_ = std::make_unique<PolicyAdminService>(manager_.get(), "s3cret");
    ServerOptions server_options;
    server_options.listen_addresses = {"127.0.0.1:0", "unix:" + socket_path_};
    server_options.plaintext = true;
    server_options.max_receive_message_bytes = 1 << 20;
    server_ = std::move(*RunningServer::Start(server_options, {cache_.get(), admin_.get()}));
    ChannelOptions channel_options;
    channel_options.plaintext = true;
    auto channel = *MakeChannel(server_->dial_address(0), channel_options);
    stub_ = v1::CacheManager::NewStub(channel);
    unix_stub_ = v1::CacheManager::NewStub(*MakeChannel(server_->dial_address(1), channel_options));
    admin_stub_ = v1::PolicyAdmin::NewStub(channel);
  }

  virtual size_t MaxSessions() const { return 4; }

  v1::OpenSessionResponse Open(const std::string& policy, uint32_t budget, std::optional<double> alpha = {}) {
    v1::OpenSessionRequest request;
    request.mutable_shape()->set_num_layers(2);
    request.mutable_shape()->set_num_kv_heads(2);
    request.mutable_shape()->set_query_heads_per_kv_head(2);
    request.mutable_policy()->set_name(policy);
    if (alpha) request.mutable_policy()->set_alpha(*alpha);
    request.mutable_budget()->set_tokens(budget);
    grpc::ClientContext context;
    v1::OpenSessionResponse response;
    grpc::Status status = stub_->OpenSession(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    secrets_[response.session_id()] = response.session_secret();
    return response;
  }

  // A step of session `id` with its secret (empty id: a later message of a stream).
  v1::ScoreStep MakeStep(const std::string& id, uint64_t step, const std::vector<float>& values, uint32_t entries) {
    v1::ScoreStep s;
    s.set_session_id(id);
    if (!id.empty()) s.set_session_secret(secrets_[id]);
    s.set_step(step);
    s.set_position(step);
    s.set_kind(v1::STEP_KIND_TOKEN);
    s.mutable_scores()->set_dtype(v1::SCORE_DTYPE_FP32);
    s.mutable_scores()->add_shape(2);
    s.mutable_scores()->add_shape(2);
    s.mutable_scores()->add_shape(entries);
    s.mutable_scores()->set_data(std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
    return s;
  }

  grpc::Status Submit(const v1::ScoreStep& step, v1::EvictionDecision* decision = nullptr) {
    grpc::ClientContext context;
    v1::EvictionDecision unused;
    return stub_->SubmitStep(&context, step, decision ? decision : &unused);
  }

  uint64_t StepsOf(const std::string& id) {
    grpc::ClientContext context;
    v1::GetSessionRequest request;
    request.set_session_id(id);
    request.set_session_secret(secrets_[id]);
    v1::SessionInfo info;
    EXPECT_TRUE(stub_->GetSession(&context, request, &info).ok());
    return info.steps();
  }

  std::map<std::string, std::string> secrets_;  // session id -> secret
  std::unique_ptr<RingHandoffServer> ring_handoff_;
  std::unique_ptr<SessionManager> manager_;
  std::unique_ptr<CacheManagerService> cache_;
  std::unique_ptr<PolicyAdminService> admin_;
  std::unique_ptr<RunningServer> server_;
  std::unique_ptr<v1::CacheManager::Stub> stub_;
  std::unique_ptr<v1::PolicyAdmin::Stub> admin_stub_;
  std::string socket_path_;
  std::unique_ptr<v1::CacheManager::Stub> unix_stub_;  // the same server over its Unix socket

  // Hands `ring`'s descriptor to the ring socket; returns the handle.
  std::string Offer(const ScoreRing& ring) {
    absl::StatusOr<std::string> handle = OfferRingDescriptor(RingSocketPath(socket_path_), ring.fd());
    EXPECT_TRUE(handle.ok()) << handle.status();
    return handle.value_or("");
  }

  // Opens a Local(budget 2) session over `stub` with the ring behind `handle` offered.
  grpc::Status OpenWithRing(v1::CacheManager::Stub* stub, const std::string& handle, uint32_t slots,
                            uint64_t slot_bytes, v1::OpenSessionResponse* response, uint32_t layers = 2,
                            bool optional = false) {
    v1::OpenSessionRequest request;
    request.mutable_shape()->set_num_layers(layers);
    request.mutable_shape()->set_num_kv_heads(2);
    request.mutable_shape()->set_query_heads_per_kv_head(1);
    request.mutable_policy()->set_name("local");
    request.mutable_budget()->set_tokens(2);
    request.mutable_shared_memory_ring()->set_handle(handle);
    request.mutable_shared_memory_ring()->set_num_slots(slots);
    request.mutable_shared_memory_ring()->set_slot_bytes(slot_bytes);
    request.set_ring_optional(optional);
    grpc::ClientContext context;
    grpc::Status status = stub->OpenSession(&context, request, response);
    secrets_[response->session_id()] = response->session_secret();
    return status;
  }

  v1::ScoreStep AttachMessage(const std::string& id) {
    v1::ScoreStep attach;
    attach.set_session_id(id);
    attach.set_session_secret(secrets_[id]);
    return attach;
  }
};

TEST_F(CacheManagerServiceTest, SharedMemoryRingServesStepsAndRefusesBadOffers) {
  const uint64_t slot_bytes = ScoreRing::SlotBytesFor(4 * 64, 4);
  auto ring = ScoreRing::Create(2, slot_bytes, 4);
  ASSERT_TRUE(ring.ok()) << ring.status();
  v1::OpenSessionResponse response;
  // Offers the server must refuse, each with a message that names the problem.
  grpc::Status status = OpenWithRing(stub_.get(), Offer(**ring), 2, slot_bytes, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_NE(status.error_message().find("Unix socket"), std::string::npos);
  status = OpenWithRing(unix_stub_.get(), "not-a-handle", 2, slot_bytes, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();
  status = OpenWithRing(unix_stub_.get(), Offer(**ring), 3, slot_bytes, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  status = OpenWithRing(unix_stub_.get(), Offer(**ring), 2, slot_bytes, &response, /*layers=*/3);  // 6 heads, ring for 4
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  {
    // Names are no longer followed: the cache manager opens nothing on a peer's say-so.
    v1::OpenSessionRequest request;
    request.mutable_shape()->set_num_layers(2);
    request.mutable_shape()->set_num_kv_heads(2);
    request.mutable_budget()->set_tokens(2);
    request.mutable_shared_memory_ring()->set_name("/a2sf-someone-elses");
    request.mutable_shared_memory_ring()->set_num_slots(2);
    request.mutable_shared_memory_ring()->set_slot_bytes(slot_bytes);
    grpc::ClientContext context;
    status = unix_stub_->OpenSession(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  }
  EXPECT_EQ(manager_->session_count(), 0u);

  const std::string handle = Offer(**ring);
  ASSERT_TRUE(OpenWithRing(unix_stub_.get(), handle, 2, slot_bytes, &response).ok());
  v1::OpenSessionResponse again;
  EXPECT_EQ(OpenWithRing(unix_stub_.get(), handle, 2, slot_bytes, &again).error_code(),
            grpc::StatusCode::NOT_FOUND);  // a handle is good for one session
  grpc::ClientContext stream_context;
  auto stream = unix_stub_->StreamScores(&stream_context);
  const v1::ScoreStep attach = AttachMessage(response.session_id());
  ASSERT_TRUE(stream->Write(attach));
  // Three Local steps through the ring; the third evicts position 0 in each of the 4 heads.
  for (uint64_t seq = 0; seq < 3; ++seq) {
    const uint32_t n = uint32_t(seq + 1);
    auto* values = static_cast<float*>((*ring)->payload(seq));
    for (uint32_t i = 0; i < 4 * n; ++i) values[i] = 0.25f;
    RingStep step;
    step.step = seq;
    step.kind = v1::STEP_KIND_TOKEN;
    step.dtype = v1::SCORE_DTYPE_FP32;
    step.position = uint32_t(seq);
    step.num_dims = 3;
    step.shape[0] = 2;
    step.shape[1] = 2;
    step.shape[2] = n;
    step.payload_bytes = 4 * n * 4;
    (*ring)->Publish(seq, step);
    ASSERT_TRUE((*ring)->WaitDecision(seq, absl::Seconds(10)));
    const RingDecision& d = (*ring)->decision(seq);
    EXPECT_EQ(d.code, 0) << d.message;
    EXPECT_EQ(d.step, seq);
    EXPECT_EQ(d.evictions_per_head, seq == 2 ? 1u : 0u);
    if (seq == 0) {
      // The first stream serves the ring now: a second stream cannot attach it too.
      grpc::ClientContext second_context;
      auto second = unix_stub_->StreamScores(&second_context);
      second->Write(attach);
      second->WritesDone();
      const grpc::Status second_status = second->Finish();
      EXPECT_EQ(second_status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
      EXPECT_NE(second_status.error_message().find("already attached"), std::string::npos);
    }
    if (seq == 2) {
      EXPECT_EQ(d.has_slots, 1u);
      for (uint32_t h = 0; h < 4; ++h) EXPECT_EQ((*ring)->decision_positions(seq)[h], 0u);
    }
  }
  // A hostile slot: a payload larger than the slot. The step is refused, the session is unchanged, and
  // the stream ends with the same status.
  RingStep bad;
  bad.step = 3;
  bad.kind = v1::STEP_KIND_TOKEN;
  bad.dtype = v1::SCORE_DTYPE_FP32;
  bad.position = 3;
  bad.num_dims = 3;
  bad.shape[0] = 2;
  bad.shape[1] = 2;
  bad.shape[2] = 1u << 20;
  bad.payload_bytes = uint64_t(4) << 22;
  (*ring)->Publish(3, bad);
  ASSERT_TRUE((*ring)->WaitDecision(3, absl::Seconds(10)));
  EXPECT_EQ((*ring)->decision(3).code, int(absl::StatusCode::kInvalidArgument));
  EXPECT_NE(std::string((*ring)->decision(3).message).find("room for"), std::string::npos);
  stream->WritesDone();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(StepsOf(response.session_id()), 3u);
  // The session goes on inline (3 entries + 1 new).
  std::vector<float> next(4 * 3, 0.25f);
  EXPECT_TRUE(Submit(MakeStep(response.session_id(), 3, next, 3)).ok());
}

TEST_F(CacheManagerServiceTest, AnOptionalRingIsRefusedWithAReasonAndTheSessionGoesInline) {
  const uint64_t slot_bytes = ScoreRing::SlotBytesFor(4 * 64, 4);
  auto ring = ScoreRing::Create(2, slot_bytes, 4);
  ASSERT_TRUE(ring.ok()) << ring.status();
  // Over TCP: the session opens, the refusal says why in a field (no error text to match).
  v1::OpenSessionResponse tcp;
  ASSERT_TRUE(OpenWithRing(stub_.get(), Offer(**ring), 2, slot_bytes, &tcp, 2, /*optional=*/true).ok());
  ASSERT_TRUE(tcp.has_ring_refusal());
  EXPECT_EQ(tcp.ring_refusal().reason(), v1::RingRefusal::REASON_NOT_UNIX_SOCKET);
  EXPECT_NE(tcp.ring_refusal().message().find("Unix socket"), std::string::npos) << tcp.ring_refusal().message();
  // A bad offer over the Unix socket: refused as invalid, the session opens all the same.
  v1::OpenSessionResponse bad;
  ASSERT_TRUE(OpenWithRing(unix_stub_.get(), "not-a-handle", 2, slot_bytes, &bad, 2, true).ok());
  EXPECT_EQ(bad.ring_refusal().reason(), v1::RingRefusal::REASON_INVALID_OFFER);
  EXPECT_EQ(manager_->session_count(), 2u);
  // The refused sessions have no ring to attach, and take their steps inline.
  grpc::ClientContext stream_context;
  auto stream = unix_stub_->StreamScores(&stream_context);
  ASSERT_TRUE(stream->Write(AttachMessage(tcp.session_id())));
  stream->WritesDone();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  v1::EvictionDecision decision;
  ASSERT_TRUE(Submit(MakeStep(bad.session_id(), 0, std::vector<float>(4, 0.5f), 1), &decision).ok());
  EXPECT_EQ(decision.entries_after(), 1u);
  // An offer the server takes carries no refusal.
  v1::OpenSessionResponse taken;
  ASSERT_TRUE(OpenWithRing(unix_stub_.get(), Offer(**ring), 2, slot_bytes, &taken, 2, true).ok());
  EXPECT_FALSE(taken.has_ring_refusal());
}

TEST_F(CacheManagerServiceTest, ABatchDecidesEverySessionAndABadStepFailsOnlyItself) {
  // Three Local(2) sessions; the batch stream and, for comparison, one stream per session.
  const std::string a = Open("local", 2).session_id(), b = Open("local", 2).session_id(),
                    c = Open("local", 2).session_id();
  grpc::ClientContext context;
  auto stream = stub_->StreamScoreBatches(&context);
  for (uint64_t step = 0; step < 3; ++step) {
    const uint32_t n = uint32_t(step + 1);
    v1::ScoreBatch batch;
    *batch.add_steps() = MakeStep(a, step, std::vector<float>(4 * n, 0.5f), n);
    // b's step presents c's secret: refused alone, b unchanged.
    v1::ScoreStep hostile = MakeStep(b, step, std::vector<float>(4 * n, 0.5f), n);
    hostile.set_session_secret(secrets_[c]);
    *batch.add_steps() = hostile;
    *batch.add_steps() = MakeStep(c, step, std::vector<float>(4 * n, 0.5f), n);
    ASSERT_TRUE(stream->Write(batch));
    v1::DecisionBatch answer;
    ASSERT_TRUE(stream->Read(&answer));
    ASSERT_EQ(answer.decisions_size(), 3);
    EXPECT_EQ(answer.decisions(0).session_id(), a);
    EXPECT_EQ(answer.decisions(0).code(), 0) << answer.decisions(0).message();
    EXPECT_EQ(answer.decisions(1).code(), int(grpc::StatusCode::PERMISSION_DENIED)) << answer.decisions(1).message();
    EXPECT_EQ(answer.decisions(2).code(), 0) << answer.decisions(2).message();
    // The same decision a session gets alone (Local keeps the newest 2: step 2 evicts position 0).
    for (int i : {0, 2}) {
      EXPECT_EQ(answer.decisions(i).decision().step(), step);
      EXPECT_EQ(answer.decisions(i).decision().entries_after(), std::min(n, 2u));
      EXPECT_EQ(answer.decisions(i).decision().evictions_per_head(), step == 2 ? 1u : 0u);
      if (step == 2) {
        EXPECT_EQ(answer.decisions(i).decision().evicted_positions(0), 0u);
      }
    }
  }
  EXPECT_EQ(StepsOf(a), 3u);
  EXPECT_EQ(StepsOf(b), 0u);
  EXPECT_EQ(StepsOf(c), 3u);
  // Unknown session, missing id, a session twice, an out-of-step step and a bad shape: each alone.
  v1::ScoreBatch batch;
  *batch.add_steps() = MakeStep("s-nope", 0, std::vector<float>(4, 0.5f), 1);
  *batch.add_steps() = MakeStep("", 0, std::vector<float>(4, 0.5f), 1);
  *batch.add_steps() = MakeStep(b, 0, std::vector<float>(4, 0.5f), 1);
  *batch.add_steps() = MakeStep(b, 1, std::vector<float>(8, 0.5f), 2);
  *batch.add_steps() = MakeStep(a, 7, std::vector<float>(16, 0.5f), 4);
  *batch.add_steps() = MakeStep(c, 3, std::vector<float>(5, 0.5f), 1);
  ASSERT_TRUE(stream->Write(batch));
  v1::DecisionBatch answer;
  ASSERT_TRUE(stream->Read(&answer));
  ASSERT_EQ(answer.decisions_size(), 6);
  EXPECT_EQ(answer.decisions(0).code(), int(grpc::StatusCode::NOT_FOUND));
  EXPECT_EQ(answer.decisions(1).code(), int(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(answer.decisions(2).code(), 0) << answer.decisions(2).message();
  EXPECT_EQ(answer.decisions(3).code(), int(grpc::StatusCode::INVALID_ARGUMENT)) << answer.decisions(3).message();
  EXPECT_EQ(answer.decisions(4).code(), int(grpc::StatusCode::FAILED_PRECONDITION));
  EXPECT_EQ(answer.decisions(5).code(), int(grpc::StatusCode::INVALID_ARGUMENT));
  EXPECT_EQ(StepsOf(a), 3u);
  EXPECT_EQ(StepsOf(b), 1u);
  EXPECT_EQ(StepsOf(c), 3u);
  // An unknown step kind and a position beyond the wire's range: refused alone, the sessions unchanged.
  v1::ScoreBatch odd;
  v1::ScoreStep unknown_kind = MakeStep(a, 3, std::vector<float>(16, 0.5f), 4);
  unknown_kind.set_kind(v1::StepKind(77));
  *odd.add_steps() = unknown_kind;
  v1::ScoreStep far_position = MakeStep(c, 3, std::vector<float>(16, 0.5f), 4);
  far_position.set_position(uint64_t(1) << 40);
  *odd.add_steps() = far_position;
  ASSERT_TRUE(stream->Write(odd));
  ASSERT_TRUE(stream->Read(&answer));
  ASSERT_EQ(answer.decisions_size(), 2);
  EXPECT_EQ(answer.decisions(0).code(), int(grpc::StatusCode::INVALID_ARGUMENT)) << answer.decisions(0).message();
  EXPECT_EQ(answer.decisions(1).code(), int(grpc::StatusCode::INVALID_ARGUMENT)) << answer.decisions(1).message();
  EXPECT_EQ(StepsOf(a), 3u);
  EXPECT_EQ(StepsOf(c), 3u);
  // Cutting the stream frees the sessions its steps named with their secrets.
  context.TryCancel();
  stream->Finish().IgnoreError();
  for (int i = 0; i < 100 && manager_->session_count() > 0; ++i) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(manager_->session_count(), 0u);
}

// A batch stream that has served more sessions than its pruning threshold (64: the set is pruned
// after the first batch here) still frees every open one it served when it is cut: the pruning
// forgets closed sessions only.
class CacheManagerManySessionsTest : public CacheManagerServiceTest {
 protected:
  size_t MaxSessions() const override { return 128; }
};

TEST_F(CacheManagerManySessionsTest, ACutBatchStreamFreesItsOpenSessionsPastThePruning) {
  std::vector<std::string> ids;
  for (int i = 0; i < 80; ++i) ids.push_back(Open("local", 2).session_id());
  grpc::ClientContext context;
  auto stream = stub_->StreamScoreBatches(&context);
  v1::ScoreBatch batch;
  for (const std::string& id : ids) *batch.add_steps() = MakeStep(id, 0, std::vector<float>(4, 0.5f), 1);
  ASSERT_TRUE(stream->Write(batch));
  v1::DecisionBatch answer;
  ASSERT_TRUE(stream->Read(&answer));
  ASSERT_EQ(answer.decisions_size(), 80);
  // Half closed by their workers; the other half is still open when the stream is cut.
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(manager_->Close(ids[size_t(i)]).ok());
  EXPECT_EQ(manager_->session_count(), 40u);
  context.TryCancel();
  stream->Finish().IgnoreError();
  for (int i = 0; i < 100 && manager_->session_count() > 0; ++i) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(manager_->session_count(), 0u);
}

double CounterValue(prometheus::Registry& registry, const std::string& name) {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name == name && !family.metric.empty()) return family.metric[0].counter.value;
  }
  ADD_FAILURE() << name << " not registered";
  return -1;
}

// A batch's metrics count what was decided: each decided step's own score bytes, not a share of every
// step's that reached the store (a step the store then refused, here one out of step, is an error).
TEST_F(CacheManagerServiceTest, ABatchCountsTheScoreBytesOfTheStepsItDecidedOnly) {
  prometheus::Registry registry;
  CacheManagerMetrics metrics(&registry);
  CacheManagerServiceOptions options;
  options.metrics = &metrics;
  CacheManagerService service(manager_.get(), options);
  const std::string a = Open("local", 2).session_id(), b = Open("local", 2).session_id(),
                    c = Open("local", 2).session_id();
  v1::ScoreBatch batch;
  *batch.add_steps() = MakeStep(a, 0, std::vector<float>(4, 0.5f), 1);  // 16 bytes of fp32
  v1::ScoreStep half = MakeStep(b, 0, {}, 1);                            // 8 bytes of fp16
  half.mutable_scores()->set_dtype(v1::SCORE_DTYPE_FP16);
  half.mutable_scores()->set_data(std::string(8, '\0'));
  *batch.add_steps() = half;
  *batch.add_steps() = MakeStep(c, 5, std::vector<float>(4, 0.5f), 1);  // out of step: refused before the store
  v1::DecisionBatch answer;
  std::set<std::string> served;
  ASSERT_TRUE(service.ServeBatch(batch, &answer, &served).ok());
  ASSERT_EQ(answer.decisions_size(), 3);
  EXPECT_EQ(answer.decisions(0).code(), 0) << answer.decisions(0).message();
  EXPECT_EQ(answer.decisions(1).code(), 0) << answer.decisions(1).message();
  EXPECT_EQ(answer.decisions(2).code(), int(grpc::StatusCode::FAILED_PRECONDITION));
  EXPECT_EQ(CounterValue(registry, "a2sf_cachemgr_steps_total"), 2.0);
  EXPECT_EQ(CounterValue(registry, "a2sf_cachemgr_score_bytes_received_total"), 16.0 + 8.0);
}

TEST_F(CacheManagerServiceTest, AnOversizedBatchEndsTheStream) {
  grpc::ClientContext context;
  auto stream = stub_->StreamScoreBatches(&context);
  v1::ScoreBatch batch;
  for (int i = 0; i < 4097; ++i) batch.add_steps()->set_session_id("s-x");
  ASSERT_TRUE(stream->Write(batch));
  stream->WritesDone();
  v1::DecisionBatch answer;
  EXPECT_FALSE(stream->Read(&answer));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(CacheManagerServiceTest, AttachWithoutARingIsFailedPrecondition) {
  v1::OpenSessionResponse session = Open("local", 2);
  grpc::ClientContext context;
  auto stream = stub_->StreamScores(&context);
  ASSERT_TRUE(stream->Write(AttachMessage(session.session_id())));
  stream->WritesDone();
  grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_EQ(StepsOf(session.session_id()), 0u);
}

TEST_F(CacheManagerServiceTest, StreamedDecisionsEqualTheLibrarysOnTheSameScores) {
  const v1::OpenSessionResponse opened = Open("a2sf", 5, 0.4);
  EXPECT_EQ(opened.budget_tokens(), 5u);
  EXPECT_EQ(opened.score_backend(), "cpu");
  // The same steps straight into a library session.
  SessionManager reference(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(), {});
  SessionConfig config;
  config.geometry = {2, 2};
  config.policy = PolicySpec{"a2sf", 0.4, {}, std::nullopt, std::nullopt};
  config.budget.tokens = 5;
  const std::string ref_id = reference.Open(config)->id;

  grpc::ClientContext context;
  auto stream = stub_->StreamScores(&context);
  std::mt19937 rng(3);
  uint32_t entries = 0;
  for (uint64_t t = 0; t < 30; ++t) {
    std::vector<float> values(4 * (entries + 1));
    for (float& v : values) v = float(rng() % 10) / 10.0f;
    ASSERT_TRUE(stream->Write(MakeStep(t == 0 ? opened.session_id() : "", t, values, entries + 1)));
    v1::EvictionDecision decision;
    ASSERT_TRUE(stream->Read(&decision));
    auto expected = reference.Step(ref_id, t, t, {kv::ScoreDType::kFp32, values.data(), values.size()});
    ASSERT_TRUE(expected.ok());
    EXPECT_EQ(decision.step(), t);
    EXPECT_EQ(std::vector<uint32_t>(decision.evicted_slots().begin(), decision.evicted_slots().end()),
              expected->decision.evicted_slots);
    EXPECT_EQ(decision.policy_name(), "a2sf");
    entries = decision.entries_after();
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(entries, 5u);
  // A clean half-close keeps the session.
  EXPECT_EQ(StepsOf(opened.session_id()), 30u);
}

TEST_F(CacheManagerServiceTest, HostileStepsGetTheRightCodesAndChangeNothing) {
  const std::string id = Open("a2sf", 3, 0.5).session_id();
  ASSERT_TRUE(Submit(MakeStep(id, 0, {0.5f, 0.5f, 0.5f, 0.5f}, 1)).ok());
  const std::vector<float> good(8, 0.25f);
  struct Case {
    const char* what;
    v1::ScoreStep step;
    grpc::StatusCode code;
  };
  std::vector<Case> cases;
  cases.push_back({"wrong entry count", MakeStep(id, 1, std::vector<float>(12, 0.1f), 3), grpc::StatusCode::INVALID_ARGUMENT});
  std::vector<float> nan = good;
  nan[5] = std::nanf("");
  cases.push_back({"NaN", MakeStep(id, 1, nan, 2), grpc::StatusCode::INVALID_ARGUMENT});
  cases.push_back({"out of order", MakeStep(id, 5, good, 2), grpc::StatusCode::FAILED_PRECONDITION});
  cases.push_back({"unknown session", MakeStep("s-nope", 1, good, 2), grpc::StatusCode::NOT_FOUND});
  v1::ScoreStep short_data = MakeStep(id, 1, good, 2);
  short_data.mutable_scores()->mutable_data()->resize(7);
  cases.push_back({"payload shorter than shape", short_data, grpc::StatusCode::INVALID_ARGUMENT});
  v1::ScoreStep no_dtype = MakeStep(id, 1, good, 2);
  no_dtype.mutable_scores()->set_dtype(v1::SCORE_DTYPE_UNSPECIFIED);
  cases.push_back({"no dtype", no_dtype, grpc::StatusCode::INVALID_ARGUMENT});
  v1::ScoreStep rank2 = MakeStep(id, 1, good, 2);
  rank2.mutable_scores()->mutable_shape()->RemoveLast();
  cases.push_back({"wrong rank", rank2, grpc::StatusCode::INVALID_ARGUMENT});
  v1::ScoreStep huge = MakeStep(id, 1, std::vector<float>(400000, 0.1f), 2);
  cases.push_back({"message over the size limit", huge, grpc::StatusCode::RESOURCE_EXHAUSTED});
  // Wire positions are uint64; C++ positions are 31-bit: refused at the edge, never truncated (2^32 + 1
  // would otherwise become the valid position 1).
  for (uint64_t wide : {(uint64_t{1} << 32) + 1, uint64_t{kv::kMaxPosition} + 1}) {
    v1::ScoreStep far = MakeStep(id, 1, good, 2);
    far.set_position(wide);
    cases.push_back({"position beyond the 31-bit range", far, grpc::StatusCode::INVALID_ARGUMENT});
  }
  for (const Case& c : cases) {
    grpc::Status status = Submit(c.step);
    EXPECT_EQ(status.error_code(), c.code) << c.what << ": " << status.error_message();
    EXPECT_FALSE(status.error_message().empty()) << c.what;
  }
  EXPECT_EQ(StepsOf(id), 1u);
  v1::EvictionDecision decision;
  ASSERT_TRUE(Submit(MakeStep(id, 1, good, 2), &decision).ok());
  EXPECT_EQ(decision.entries_after(), 2u);
}

TEST_F(CacheManagerServiceTest, BadOpenRequestsAndCapacity) {
  auto open = [&](v1::OpenSessionRequest request) {
    grpc::ClientContext context;
    v1::OpenSessionResponse response;
    return stub_->OpenSession(&context, request, &response);
  };
  v1::OpenSessionRequest request;
  request.mutable_shape()->set_num_layers(2);
  request.mutable_shape()->set_num_kv_heads(2);
  request.mutable_shape()->set_query_heads_per_kv_head(1);
  request.mutable_budget()->set_tokens(4);
  request.mutable_policy()->set_name("lru");
  grpc::Status status = open(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("policy.name"), std::string::npos);
  request.mutable_policy()->set_name("a2sf");
  request.mutable_policy()->set_alpha(1.5);
  EXPECT_NE(open(request).error_message().find("policy.alpha"), std::string::npos);
  request.mutable_policy()->clear_alpha();
  request.mutable_budget()->Clear();
  EXPECT_NE(open(request).error_message().find("budget"), std::string::npos);
  request.mutable_budget()->set_tokens(4);
  request.set_decision_lag(65);
  status = open(request);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("decision_lag"), std::string::npos);
  request.set_decision_lag(2);  // pipelined sessions count against the same capacity
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(open(request).ok());
  EXPECT_EQ(open(request).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(CacheManagerServiceTest, CuttingAStreamFreesItsSession) {
  const std::string id = Open("local", 3).session_id();
  {
    grpc::ClientContext context;
    auto stream = stub_->StreamScores(&context);
    ASSERT_TRUE(stream->Write(MakeStep(id, 0, {1, 1, 1, 1}, 1)));
    v1::EvictionDecision decision;
    ASSERT_TRUE(stream->Read(&decision));
    context.TryCancel();
    stream->Finish().IgnoreError();
  }
  for (int i = 0; i < 100 && manager_->session_count() > 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(manager_->session_count(), 0u);
}

TEST_F(CacheManagerServiceTest, AdminChangesNeedTheBearerToken) {
  const std::string id = Open("h2o", 4).session_id();
  v1::SetSessionPolicyRequest request;
  request.set_session_id(id);
  request.mutable_policy()->set_name("a2sf");
  request.mutable_policy()->set_alpha(0.2);
  v1::SetSessionPolicyResponse response;
  {
    grpc::ClientContext context;
    EXPECT_EQ(admin_stub_->SetSessionPolicy(&context, request, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer wrong");
    EXPECT_EQ(admin_stub_->SetSessionPolicy(&context, request, &response).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer s3cret");
    ASSERT_TRUE(admin_stub_->SetSessionPolicy(&context, request, &response).ok());
    EXPECT_EQ(response.previous_policy().name(), "h2o");
    EXPECT_EQ(response.policy().name(), "a2sf");
    EXPECT_EQ(response.effective_from_step(), 0u);
  }
  // Reads need no token.
  grpc::ClientContext context;
  v1::ListPoliciesResponse policies;
  ASSERT_TRUE(admin_stub_->ListPolicies(&context, {}, &policies).ok());
  EXPECT_EQ(policies.policies_size(), 6);
  // Listing sessions is an admin read (issue 11): ids and labels of every worker's sessions.
  grpc::ClientContext context_no_token;
  v1::ListSessionsResponse sessions;
  EXPECT_EQ(admin_stub_->ListSessions(&context_no_token, {}, &sessions).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  grpc::ClientContext context2;
  context2.AddMetadata("authorization", "Bearer s3cret");
  ASSERT_TRUE(admin_stub_->ListSessions(&context2, {}, &sessions).ok());
  ASSERT_EQ(sessions.sessions_size(), 1);
  EXPECT_EQ(sessions.sessions(0).policy().name(), "a2sf");
  // ... and never reveals a session's secret.
  EXPECT_EQ(sessions.SerializeAsString().find(secrets_[id]), std::string::npos);
  // A bad default is refused and the old one stays.
  grpc::ClientContext context3;
  context3.AddMetadata("authorization", "Bearer s3cret");
  v1::SetDefaultPolicyRequest bad;
  bad.mutable_policy()->set_name("tova");
  bad.mutable_policy()->set_alpha(0.5);
  v1::PolicySpec resolved;
  EXPECT_EQ(admin_stub_->SetDefaultPolicy(&context3, bad, &resolved).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext context4;
  ASSERT_TRUE(admin_stub_->GetDefaultPolicy(&context4, {}, &resolved).ok());
  EXPECT_EQ(resolved.name(), "a2sf");
}

// Issue 11, finding 2: the session id alone no longer lets a third party touch a session.
TEST_F(CacheManagerServiceTest, AThirdPartyWithOnlyTheSessionIdIsRefused) {
  const v1::OpenSessionResponse opened = Open("local", 3);
  const std::string id = opened.session_id();
  ASSERT_EQ(opened.session_secret().size(), 32u);
  ASSERT_TRUE(Submit(MakeStep(id, 0, {1, 1, 1, 1}, 1)).ok());
  for (const std::string& secret : {std::string(), std::string(32, '0'), opened.session_secret().substr(1)}) {
    v1::ScoreStep step = MakeStep(id, 1, std::vector<float>(8, 0.5f), 2);
    step.set_session_secret(secret);
    grpc::Status status = Submit(step);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << status.error_message();
    EXPECT_NE(status.error_message().find("session_secret"), std::string::npos);
    {
      grpc::ClientContext context;
      auto stream = stub_->StreamScores(&context);
      ASSERT_TRUE(stream->Write(step));
      stream->WritesDone();
      EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
    }
    {
      grpc::ClientContext context;
      v1::GetSessionRequest request;
      request.set_session_id(id);
      request.set_session_secret(secret);
      v1::SessionInfo info;
      EXPECT_EQ(stub_->GetSession(&context, request, &info).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    }
    {
      grpc::ClientContext context;
      v1::CloseSessionRequest request;
      request.set_session_id(id);
      request.set_session_secret(secret);
      v1::CloseSessionResponse closed;
      EXPECT_EQ(stub_->CloseSession(&context, request, &closed).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    }
  }
  // Nothing the third party sent changed the session; its owner goes on.
  EXPECT_EQ(manager_->session_count(), 1u);
  EXPECT_EQ(StepsOf(id), 1u);
  EXPECT_TRUE(Submit(MakeStep(id, 1, std::vector<float>(8, 0.5f), 2)).ok());
  // Two sessions never share a secret.
  EXPECT_NE(Open("local", 3).session_secret(), opened.session_secret());
}

// Issue 11, finding 1: whatever a peer does to its ring, only its own session fails.
TEST_F(CacheManagerServiceTest, AHostileRingFailsOnlyItsOwnSession) {
  const std::string bystander = Open("local", 2).session_id();
  const uint64_t slot_bytes = ScoreRing::SlotBytesFor(4 * 64, 4);
  auto ring = ScoreRing::Create(2, slot_bytes, 4);
  ASSERT_TRUE(ring.ok()) << ring.status();
  v1::OpenSessionResponse response;
  ASSERT_TRUE(OpenWithRing(unix_stub_.get(), Offer(**ring), 2, slot_bytes, &response).ok());
  grpc::ClientContext stream_context;
  auto stream = unix_stub_->StreamScores(&stream_context);
  ASSERT_TRUE(stream->Write(AttachMessage(response.session_id())));
  const int fd = (*ring)->fd();
  // Truncation was the SIGBUS of the finding: the seals refuse it.
  EXPECT_NE(ftruncate(fd, 0), 0);
  EXPECT_EQ(errno, EPERM);
  // Holes, a rewritten header and a garbage step with absurd counters: read as data, never faults.
  ASSERT_EQ(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, off_t(256 + 2 * slot_bytes)), 0);
  void* base = mmap(nullptr, 256 + 2 * slot_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(base, MAP_FAILED);
  std::memset(base, 0x5a, 64);  // magic, geometry
  RingStep garbage;
  garbage.step = 7;
  garbage.kind = 99;
  garbage.num_dims = 3;
  garbage.shape[0] = 0xffffffffu;
  garbage.payload_bytes = ~uint64_t{0};
  (*ring)->Publish(0, garbage);
  ASSERT_TRUE((*ring)->WaitDecision(0, absl::Seconds(10)));
  EXPECT_EQ((*ring)->decision(0).code, int(absl::StatusCode::kInvalidArgument)) << (*ring)->decision(0).message;
  stream->WritesDone();
  const grpc::Status ended = stream->Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << ended.error_message();
  EXPECT_FALSE(ended.error_message().empty());
  munmap(base, 256 + 2 * slot_bytes);
  // The server goes on serving everybody else.
  EXPECT_TRUE(Submit(MakeStep(bystander, 0, {1, 1, 1, 1}, 1)).ok());

  // A ring that stops advancing holds only its own stream, until the idle timeout (3 s here) cancels
  // it and frees its session.
  auto idle_ring = ScoreRing::Create(2, slot_bytes, 4);
  ASSERT_TRUE(idle_ring.ok());
  v1::OpenSessionResponse idle;
  ASSERT_TRUE(OpenWithRing(unix_stub_.get(), Offer(**idle_ring), 2, slot_bytes, &idle).ok());
  grpc::ClientContext idle_context;
  auto idle_stream = unix_stub_->StreamScores(&idle_context);
  ASSERT_TRUE(idle_stream->Write(AttachMessage(idle.session_id())));
  EXPECT_TRUE(Submit(MakeStep(bystander, 1, std::vector<float>(8, 1), 2)).ok());
  const absl::Time start = absl::Now();
  v1::EvictionDecision unused;
  EXPECT_FALSE(idle_stream->Read(&unused));
  EXPECT_EQ(idle_stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  // The bystander and the hostile session (a failed step leaves a session as it was) remain.
  for (int i = 0; i < 100 && manager_->session_count() > 2; ++i) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(manager_->session_count(), 2u);
}

// Issue 11, findings 3 and 5: tiny requests cannot make the store reserve huge amounts, and
// dimensions that overflow 64 bits are INVALID_ARGUMENT, never a wrapped size that passes.
TEST_F(CacheManagerServiceTest, HugeShapesAreRefusedBeforeAnythingIsAllocated) {
  v1::OpenSessionRequest request;
  request.mutable_shape()->set_num_layers(1024);
  request.mutable_shape()->set_num_kv_heads(1024);
  request.mutable_shape()->set_query_heads_per_kv_head(1);
  for (uint32_t budget : {8u, 10000u}) {
    request.mutable_budget()->set_tokens(budget);
    grpc::ClientContext context;
    v1::OpenSessionResponse response;
    grpc::Status status = stub_->OpenSession(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
    EXPECT_NE(status.error_message().find("--max_session_bytes"), std::string::npos) << status.error_message();
  }
  EXPECT_EQ(manager_->session_count(), 0u);
  EXPECT_EQ(manager_->charged_bytes(), 0u);
  const std::string id = Open("a2sf", 4, 0.5).session_id();
  v1::ScoreStep bulk = MakeStep(id, 0, {}, 0);
  bulk.set_kind(v1::STEP_KIND_BULK_PREFILL);
  bulk.mutable_scores()->clear_shape();
  for (uint32_t d : {16u, 1u, 1u << 30, 1u << 30}) bulk.mutable_scores()->add_shape(d);
  bulk.mutable_scores()->clear_data();
  grpc::Status status = Submit(bulk);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  v1::ScoreStep token = MakeStep(id, 0, {}, 0);
  token.mutable_scores()->clear_shape();
  for (uint32_t d : {0xffffffffu, 0xffffffffu, 0xffffffffu}) token.mutable_scores()->add_shape(d);
  status = Submit(token);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(StepsOf(id), 0u);
}

// Issue 11, finding 6: a swap that the worker could not follow is refused up front.
TEST_F(CacheManagerServiceTest, SwapsThatChangeWhetherThePolicyEvictsAreRefused) {
  const v1::OpenSessionResponse evicting = Open("a2sf", 4, 0.3);
  const v1::OpenSessionResponse full = Open("full", 4);
  EXPECT_TRUE(evicting.policy_evicts());
  EXPECT_FALSE(full.policy_evicts());
  auto swap = [&](const std::string& id, const std::string& policy) {
    v1::SetSessionPolicyRequest request;
    request.set_session_id(id);
    request.mutable_policy()->set_name(policy);
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer s3cret");
    v1::SetSessionPolicyResponse response;
    return admin_stub_->SetSessionPolicy(&context, request, &response);
  };
  grpc::Status status = swap(evicting.session_id(), "full");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_NE(status.error_message().find("budget"), std::string::npos) << status.error_message();
  status = swap(full.session_id(), "a2sf");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_NE(status.error_message().find("no scores"), std::string::npos) << status.error_message();
  EXPECT_TRUE(swap(evicting.session_id(), "h2o").ok());
  EXPECT_TRUE(swap(full.session_id(), "full").ok());
  // The refused swaps changed nothing: the sessions still step under their policies.
  v1::EvictionDecision decision;
  ASSERT_TRUE(Submit(MakeStep(evicting.session_id(), 0, {1, 1, 1, 1}, 1), &decision).ok());
  EXPECT_EQ(decision.policy_name(), "h2o");
  ASSERT_TRUE(Submit(MakeStep(full.session_id(), 0, {1, 1, 1, 1}, 1), &decision).ok());
  EXPECT_EQ(decision.policy_name(), "full");
}

// Issue 11, finding 7: a label cut at 256 bytes stays valid UTF-8, so GetSession and ListSessions
// keep working for everybody.
// A step's shape must be the session's [layers, KV heads, entries], not only hold as many values: a
// session of 3 layers x 2 KV heads refuses scores shaped [2, 3, 1] (transposed: the same count) and
// takes [3, 2, 1]; so too a bulk prefill.
TEST_F(CacheManagerServiceTest, ATransposedScoreShapeIsRefused) {
  v1::OpenSessionRequest request;
  request.mutable_shape()->set_num_layers(3);
  request.mutable_shape()->set_num_kv_heads(2);
  request.mutable_shape()->set_query_heads_per_kv_head(1);
  request.mutable_policy()->set_name("a2sf");
  request.mutable_budget()->set_tokens(4);
  grpc::ClientContext context;
  v1::OpenSessionResponse opened;
  ASSERT_TRUE(stub_->OpenSession(&context, request, &opened).ok());
  secrets_[opened.session_id()] = opened.session_secret();
  auto shaped = [&](v1::StepKind kind, std::vector<uint32_t> shape, size_t values) {
    v1::ScoreStep step = MakeStep(opened.session_id(), 0, std::vector<float>(values, 0.5f), 1);
    step.set_kind(kind);
    step.mutable_scores()->clear_shape();
    for (uint32_t d : shape) step.mutable_scores()->add_shape(d);
    return step;
  };
  const grpc::Status transposed = Submit(shaped(v1::STEP_KIND_TOKEN, {2, 3, 1}, 6));
  EXPECT_EQ(transposed.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(transposed.error_message().find("scores.shape: [2, 3, ...]"), std::string::npos)
      << transposed.error_message();
  const grpc::Status bulk = Submit(shaped(v1::STEP_KIND_BULK_PREFILL, {2, 3, 2, 2}, 24));
  EXPECT_EQ(bulk.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bulk.error_message().find("scores.shape: [2, 3, ...]"), std::string::npos) << bulk.error_message();
  EXPECT_EQ(StepsOf(opened.session_id()), 0u) << "neither was applied";
  const grpc::Status right = Submit(shaped(v1::STEP_KIND_TOKEN, {3, 2, 1}, 6));
  EXPECT_TRUE(right.ok()) << right.error_message();
}

// Errors that echo a peer's oversized string -- a 100 KB policy name, a 100 KB session id -- reach
// the client with their code and a message cut to kMaxStatusMessageBytes (uncut, the trailing
// metadata would exceed gRPC's limit and the client would get no status), and the connection serves on.
TEST_F(CacheManagerServiceTest, ErrorsEchoingOversizedStringsArriveCut) {
  const std::string huge(100000, 'p');
  v1::OpenSessionRequest request;
  request.mutable_shape()->set_num_layers(2);
  request.mutable_shape()->set_num_kv_heads(2);
  request.mutable_shape()->set_query_heads_per_kv_head(2);
  request.mutable_policy()->set_name(huge);
  request.mutable_budget()->set_tokens(4);
  grpc::ClientContext open_context;
  open_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::OpenSessionResponse opened;
  const grpc::Status refused = stub_->OpenSession(&open_context, request, &opened);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << refused.error_message().substr(0, 200);
  EXPECT_LE(refused.error_message().size(), kMaxStatusMessageBytes);
  EXPECT_NE(refused.error_message().find("more bytes cut]"), std::string::npos) << refused.error_message();

  grpc::ClientContext get_context;
  get_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetSessionRequest get;
  get.set_session_id(huge);
  get.set_session_secret("x");
  v1::SessionInfo info;
  const grpc::Status missing = stub_->GetSession(&get_context, get, &info);
  EXPECT_NE(missing.error_code(), grpc::StatusCode::OK);
  EXPECT_NE(missing.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_NE(missing.error_code(), grpc::StatusCode::INTERNAL) << missing.error_message().substr(0, 200);
  EXPECT_LE(missing.error_message().size(), kMaxStatusMessageBytes);

  Open("a2sf", 4);  // the same connection serves on
}

TEST_F(CacheManagerServiceTest, LongLabelsAreCutOnACharacterBoundary) {
  v1::OpenSessionRequest request;
  request.mutable_shape()->set_num_layers(2);
  request.mutable_shape()->set_num_kv_heads(2);
  request.mutable_shape()->set_query_heads_per_kv_head(1);
  request.mutable_budget()->set_tokens(4);
  std::string label(255, 'x');
  for (int i = 0; i < 10; ++i) label += "\xE2\x82\xAC";  // U+20AC straddles byte 256
  request.set_client_label(label);
  grpc::ClientContext context;
  v1::OpenSessionResponse opened;
  ASSERT_TRUE(stub_->OpenSession(&context, request, &opened).ok());
  secrets_[opened.session_id()] = opened.session_secret();
  grpc::ClientContext get_context;
  v1::GetSessionRequest get;
  get.set_session_id(opened.session_id());
  get.set_session_secret(opened.session_secret());
  v1::SessionInfo info;
  grpc::Status status = stub_->GetSession(&get_context, get, &info);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(info.client_label(), std::string(255, 'x'));
  grpc::ClientContext list_context;
  list_context.AddMetadata("authorization", "Bearer s3cret");
  v1::ListSessionsResponse sessions;
  EXPECT_TRUE(admin_stub_->ListSessions(&list_context, {}, &sessions).ok());
}

size_t ThreadCount() {
  size_t n = 0;
  DIR* dir = opendir("/proc/self/task");
  while (dir != nullptr && readdir(dir) != nullptr) ++n;
  if (dir != nullptr) closedir(dir);
  return n - 2;  // . and ..
}

// Issue 11, finding 9: a flood of idle streams neither grows threads without bound nor locks out a
// new client; the idle streams are cancelled after the idle timeout.
TEST(CacheManagerIdleStreams, AFloodOfIdleStreamsIsBounded) {
  SessionManager manager(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(), {});
  CacheManagerServiceOptions service_options;
  service_options.max_streams = 16;
  service_options.stream_idle_timeout = absl::Seconds(2);
  CacheManagerService service(&manager, service_options);
  ServerOptions server_options;
  server_options.listen_addresses = {"127.0.0.1:0"};
  server_options.plaintext = true;
  server_options.max_threads = 64;
  auto server = RunningServer::Start(server_options, {&service});
  ASSERT_TRUE(server.ok()) << server.status();
  ChannelOptions channel_options;
  channel_options.plaintext = true;
  auto stub = v1::CacheManager::NewStub(*MakeChannel((*server)->dial_address(0), channel_options));
  const size_t threads_before = ThreadCount();
  constexpr int kStreams = 300;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientReaderWriter<v1::ScoreStep, v1::EvictionDecision>>> streams;
  for (int i = 0; i < kStreams; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    streams.push_back(stub->StreamScores(contexts.back().get()));
  }
  absl::SleepFor(absl::Milliseconds(500));
  EXPECT_LT(ThreadCount(), threads_before + 100) << "idle streams hold a thread each";
  // A new client still gets its calls answered.
  v1::OpenSessionRequest request;
  request.mutable_shape()->set_num_layers(1);
  request.mutable_shape()->set_num_kv_heads(1);
  request.mutable_shape()->set_query_heads_per_kv_head(1);
  request.mutable_budget()->set_tokens(4);
  grpc::ClientContext open_context;
  open_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::OpenSessionResponse opened;
  grpc::Status status = stub->OpenSession(&open_context, request, &opened);
  EXPECT_TRUE(status.ok()) << status.error_message();
  // Streams past --max_streams were refused at once; the admitted ones are cancelled once idle.
  int exhausted = 0, cancelled = 0;
  for (auto& stream : streams) {
    const grpc::StatusCode code = stream->Finish().error_code();
    exhausted += code == grpc::StatusCode::RESOURCE_EXHAUSTED;
    cancelled += code == grpc::StatusCode::CANCELLED;
  }
  EXPECT_EQ(exhausted + cancelled, kStreams);
  EXPECT_LE(cancelled, 16);
  // And a new stream is served.
  grpc::ClientContext stream_context;
  auto stream = stub->StreamScores(&stream_context);
  v1::ScoreStep step;
  step.set_session_id(opened.session_id());
  step.set_session_secret(opened.session_secret());
  step.set_kind(v1::STEP_KIND_TOKEN);
  step.mutable_scores()->set_dtype(v1::SCORE_DTYPE_FP32);
  for (uint32_t d : {1u, 1u, 1u}) step.mutable_scores()->add_shape(d);
  const float one = 1.0f;
  step.mutable_scores()->set_data(std::string(reinterpret_cast<const char*>(&one), 4));
  ASSERT_TRUE(stream->Write(step));
  v1::EvictionDecision decision;
  EXPECT_TRUE(stream->Read(&decision));
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  (*server)->Shutdown(absl::ZeroDuration());
}

// --max_streams_per_peer: a server on 127.0.0.1 (peer "ipv4:127.0.0.1") and a Unix socket (peer "unix:"),
// at most 2 score streams per peer and 8 in all.
class CacheManagerStreamQuota : public ::testing::Test {
 protected:
  void Start(absl::Duration stream_idle_timeout) {
    manager_ = std::make_unique<SessionManager>(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(),
                                                SessionManagerOptions{});
    CacheManagerServiceOptions options;
    options.max_streams = 8;
    options.max_streams_per_peer = 2;
    options.stream_idle_timeout = stream_idle_timeout;
    service_ = std::make_unique<CacheManagerService>(manager_.get(), options);
    ServerOptions server_options;
    server_options.listen_addresses = {"127.0.0.1:0", "unix:" + a2sf::testing::TempSocketPath("quota")};
    server_options.plaintext = true;
    server_ = std::move(*RunningServer::Start(server_options, {service_.get()}));
    tcp_ = NewStub(0);
    unix_ = NewStub(1);
  }
  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown(absl::ZeroDuration());
  }

  // A stub on a connection of its own (a local subchannel pool: dropping the stub's channel hangs up).
  std::unique_ptr<v1::CacheManager::Stub> NewStub(int listener) {
    grpc::ChannelArguments arguments;
    arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return v1::CacheManager::NewStub(
        grpc::CreateCustomChannel(server_->dial_address(listener), grpc::InsecureChannelCredentials(), arguments));
  }

  struct BatchStream {
    std::unique_ptr<grpc::ClientContext> context = std::make_unique<grpc::ClientContext>();
    std::unique_ptr<grpc::ClientReaderWriter<v1::ScoreBatch, v1::DecisionBatch>> stream;
  };
  // Opens a StreamScoreBatches stream; admitted: the server answered an empty batch. Refused: its status.
  BatchStream Open(v1::CacheManager::Stub* stub, grpc::Status* refused = nullptr) {
    BatchStream opened;
    opened.context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    opened.stream = stub->StreamScoreBatches(opened.context.get());
    v1::DecisionBatch answer;
    if (opened.stream->Write(v1::ScoreBatch()) && opened.stream->Read(&answer)) return opened;
    const grpc::Status status = opened.stream->Finish();
    if (refused != nullptr) *refused = status;
    opened.stream.reset();
    return opened;
  }
  static void Close(BatchStream* open) {
    open->stream->WritesDone();
    EXPECT_TRUE(open->stream->Finish().ok());
  }

  // Waits (up to 10 s) until the server has forgotten every stream of `peer` (a hang-up reaches it
  // asynchronously).
  bool AwaitNoStreamsOf(const std::string& peer) {
    for (absl::Time end = absl::Now() + absl::Seconds(10); absl::Now() < end; absl::SleepFor(absl::Milliseconds(5))) {
      if (service_->open_streams(peer) == 0) return true;
    }
    return false;
  }

  std::unique_ptr<SessionManager> manager_;
  std::unique_ptr<CacheManagerService> service_;
  std::unique_ptr<RunningServer> server_;
  std::unique_ptr<v1::CacheManager::Stub> tcp_, unix_;
};

TEST_F(CacheManagerStreamQuota, APeerAtItsQuotaIsRefusedWhileAnotherPeerIsServed) {
  Start(absl::ZeroDuration());
  BatchStream first = Open(tcp_.get()), second = Open(tcp_.get());
  ASSERT_NE(first.stream, nullptr);
  ASSERT_NE(second.stream, nullptr);
  // Its third stream is refused, on another connection too (the quota is the peer's, not the
  // connection's), and so is a StreamScores call (both kinds count).
  auto other_connection = NewStub(0);
  grpc::Status refused;
  EXPECT_EQ(Open(other_connection.get(), &refused).stream, nullptr);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();
  EXPECT_NE(refused.error_message().find("--max_streams_per_peer=2"), std::string::npos) << refused.error_message();
  EXPECT_NE(refused.error_message().find("127.0.0.1"), std::string::npos) << refused.error_message();
  {
    grpc::ClientContext context;
    auto stream = tcp_->StreamScores(&context);
    stream->WritesDone();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  }
  // Another peer is served meanwhile.
  BatchStream local = Open(unix_.get());
  ASSERT_NE(local.stream, nullptr) << "the Unix-socket peer was starved";
  EXPECT_EQ(service_->open_streams("ipv4:127.0.0.1"), 2u);
  EXPECT_EQ(service_->open_streams("unix:"), 1u);
  EXPECT_EQ(service_->open_streams(), 3u);
  // A stream that ends frees its place: the handler forgot it before its status was sent.
  Close(&first);
  BatchStream again = Open(tcp_.get());
  EXPECT_NE(again.stream, nullptr);
  Close(&again);
  Close(&second);
  Close(&local);
  EXPECT_EQ(service_->open_streams(), 0u);
}

// A hostile peer that fills its quota and hangs up, over and over (cancelling its calls, or dropping
// its connection with the calls open), leaks no place: afterwards it has exactly its quota again.
TEST_F(CacheManagerStreamQuota, APeerThatHangsUpRepeatedlyLeaksNoPlaces) {
  Start(absl::ZeroDuration());
  BatchStream bystander = Open(unix_.get());
  ASSERT_NE(bystander.stream, nullptr);
  for (int round = 0; round < 20; ++round) {
    auto stub = NewStub(0);
    BatchStream a = Open(stub.get()), b = Open(stub.get());
    ASSERT_NE(a.stream, nullptr) << "round " << round;
    ASSERT_NE(b.stream, nullptr) << "round " << round;
    if (round % 2 == 0) {
      a.context->TryCancel();
      b.context->TryCancel();
      EXPECT_EQ(a.stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
      EXPECT_EQ(b.stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
    } else {
      // Gone without a word: the calls and the connection are dropped unfinished.
      for (BatchStream* dropped : {&a, &b}) {
        dropped->stream.reset();
        dropped->context.reset();
      }
      stub.reset();
    }
    ASSERT_TRUE(AwaitNoStreamsOf("ipv4:127.0.0.1")) << "round " << round << ": a hung-up stream kept its place";
  }
  EXPECT_EQ(service_->open_streams(), 1u);  // the bystander's
  BatchStream a = Open(tcp_.get()), b = Open(tcp_.get());
  EXPECT_NE(a.stream, nullptr);
  EXPECT_NE(b.stream, nullptr);
  grpc::Status refused;
  EXPECT_EQ(Open(tcp_.get(), &refused).stream, nullptr);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // The bystander's stream was served throughout.
  v1::DecisionBatch answer;
  ASSERT_TRUE(bystander.stream->Write(v1::ScoreBatch()));
  EXPECT_TRUE(bystander.stream->Read(&answer));
  Close(&a);
  Close(&b);
  Close(&bystander);
}

TEST_F(CacheManagerStreamQuota, AStreamCancelledForIdlingFreesItsPlace) {
  Start(absl::Seconds(1));
  BatchStream a = Open(tcp_.get()), b = Open(tcp_.get());
  ASSERT_NE(a.stream, nullptr);
  ASSERT_NE(b.stream, nullptr);
  // Neither sends again: the reaper cancels both.
  EXPECT_EQ(a.stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_EQ(b.stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ASSERT_TRUE(AwaitNoStreamsOf("ipv4:127.0.0.1"));
  BatchStream again = Open(tcp_.get());
  EXPECT_NE(again.stream, nullptr);
  Close(&again);
}

}  // namespace
}  // namespace a2sf::cachemgr

namespace a2sf::cachemgr {
namespace {

v1::DeviceScoresOffer SomeDeviceOffer() {
  v1::DeviceScoresOffer offer;
  offer.set_memory_handle(std::string(64, '\x11'));
  offer.set_event_handle(std::string(64, '\x22'));
  offer.set_buffer_bytes(4096);
  offer.set_dtype(v1::SCORE_DTYPE_FP32);
  offer.set_device_uuid(std::string(32, 'a'));
  offer.set_pci_bus_id("0000:00:00.0");
  return offer;
}

// CUDA IPC on a CPU store: the offer is refused with the structured reason, the session opens and its
// ring serves host steps; a header-only (device) step in that session fails only that session.
TEST_F(CacheManagerServiceTest, ACpuBackendRefusesDeviceScoresWithItsReasonAndKeepsTheRing) {
  const uint64_t slot_bytes = ScoreRing::SlotBytesFor(4 * 64, 4);
  auto ring = ScoreRing::Create(2, slot_bytes, 4);
  ASSERT_TRUE(ring.ok()) << ring.status();
  v1::OpenSessionRequest request;
  request.mutable_shape()->set_num_layers(2);
  request.mutable_shape()->set_num_kv_heads(2);
  request.mutable_shape()->set_query_heads_per_kv_head(1);
  request.mutable_policy()->set_name("local");
  request.mutable_budget()->set_tokens(2);
  request.mutable_shared_memory_ring()->set_handle(Offer(**ring));
  request.mutable_shared_memory_ring()->set_num_slots(2);
  request.mutable_shared_memory_ring()->set_slot_bytes(slot_bytes);
  *request.mutable_device_scores() = SomeDeviceOffer();
  v1::OpenSessionResponse response;
  {
    grpc::ClientContext context;
    ASSERT_TRUE(unix_stub_->OpenSession(&context, request, &response).ok());
  }
  secrets_[response.session_id()] = response.session_secret();
  ASSERT_TRUE(response.has_device_scores());
  EXPECT_FALSE(response.device_scores().accepted());
  EXPECT_EQ(response.device_scores().refusal(), v1::DEVICE_SCORES_REFUSAL_NOT_CUDA_BACKEND);
  EXPECT_NE(response.device_scores().detail().find("cpu"), std::string::npos) << response.device_scores().detail();

  grpc::ClientContext stream_context;
  auto stream = unix_stub_->StreamScores(&stream_context);
  ASSERT_TRUE(stream->Write(AttachMessage(response.session_id())));
  // A host step through the ring is decided as usual.
  const float scores[4] = {0.5f, 0.5f, 0.5f, 0.5f};
  std::memcpy((*ring)->payload(0), scores, sizeof(scores));
  RingStep step;
  step.kind = v1::STEP_KIND_TOKEN;
  step.dtype = v1::SCORE_DTYPE_FP32;
  step.num_dims = 3;
  step.shape[0] = 2;
  step.shape[1] = 2;
  step.shape[2] = 1;
  step.payload_bytes = sizeof(scores);
  (*ring)->Publish(0, step);
  ASSERT_TRUE((*ring)->WaitDecision(0, absl::Seconds(10)));
  EXPECT_EQ((*ring)->decision(0).code, 0) << (*ring)->decision(0).message;
  // A device step in a session whose offer was refused: FAILED_PRECONDITION, the stream ends with it.
  step.step = 1;
  step.position = 1;
  step.shape[2] = 2;
  step.payload_bytes = 2 * sizeof(scores);
  (*ring)->PublishDeviceStep(1, step);
  ASSERT_TRUE((*ring)->WaitDecision(1, absl::Seconds(10)));
  EXPECT_EQ((*ring)->decision(1).code, int(absl::StatusCode::kFailedPrecondition)) << (*ring)->decision(1).message;
  EXPECT_NE(std::string((*ring)->decision(1).message).find("device buffer"), std::string::npos);
  stream->WritesDone();
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(StepsOf(response.session_id()), 1u);  // the refused step changed nothing
}

// The order of the checks, each with its reason; without a GPU a cuda store's offer fails on the device.
TEST(DeviceScoresOffer, EachConditionRefusesWithItsOwnReason) {
  std::shared_ptr<const DeviceScores> accepted;
  const v1::DeviceScoresOffer offer = SomeDeviceOffer();
  EXPECT_EQ(AnswerDeviceScoresOffer(offer, {"cpu", true, 0}, &accepted).refusal(),
            v1::DEVICE_SCORES_REFUSAL_NOT_CUDA_BACKEND);
  EXPECT_EQ(AnswerDeviceScoresOffer(offer, {"cuda", false, 0}, &accepted).refusal(), v1::DEVICE_SCORES_REFUSAL_NO_RING);
  EXPECT_EQ(AnswerDeviceScoresOffer(offer, {"cuda", true, 2}, &accepted).refusal(),
            v1::DEVICE_SCORES_REFUSAL_PIPELINED);
  v1::DeviceScoresOffer bad = offer;
  bad.set_dtype(v1::SCORE_DTYPE_UNSPECIFIED);
  EXPECT_EQ(AnswerDeviceScoresOffer(bad, {"cuda", true, 0}, &accepted).refusal(), v1::DEVICE_SCORES_REFUSAL_BAD_OFFER);
  bad = offer;
  bad.set_buffer_bytes(0);
  EXPECT_EQ(AnswerDeviceScoresOffer(bad, {"cuda", true, 0}, &accepted).refusal(), v1::DEVICE_SCORES_REFUSAL_BAD_OFFER);
  // Well formed, but these handles name no GPU allocation of this machine: another device (no GPU
  // here), or a handle that does not open.
  const v1::DeviceScoresAnswer answer = AnswerDeviceScoresOffer(offer, {"cuda", true, 0}, &accepted);
  EXPECT_FALSE(answer.accepted());
  EXPECT_TRUE(answer.refusal() == v1::DEVICE_SCORES_REFUSAL_OTHER_DEVICE ||
              answer.refusal() == v1::DEVICE_SCORES_REFUSAL_OPEN_FAILED)
      << answer.ShortDebugString();
  EXPECT_FALSE(answer.detail().empty());
  EXPECT_EQ(accepted, nullptr);
}

// What a hostile header can claim about the device buffer: only a step that fits it is read.
TEST(DeviceScoresOffer, AHeaderOnlyStepMustFitTheSessionsBuffer) {
  RingStep step;
  step.kind = kRingStepKindDeviceToken;
  step.dtype = v1::SCORE_DTYPE_FP32;
  step.num_dims = 3;
  step.shape[0] = 2;
  step.shape[1] = 2;
  step.shape[2] = 8;
  step.payload_bytes = 2 * 2 * 8 * 4;
  EXPECT_EQ(DeviceScoreView(nullptr, step).status().code(), absl::StatusCode::kFailedPrecondition);
  float fake_device_memory[32];
  DeviceScores buffer;
  buffer.pointer = fake_device_memory;
  buffer.bytes = sizeof(fake_device_memory);
  absl::StatusOr<ScoreView> view = DeviceScoreView(&buffer, step);
  ASSERT_TRUE(view.ok()) << view.status();
  EXPECT_TRUE(view->on_device);
  EXPECT_EQ(view->data, fake_device_memory);
  EXPECT_EQ(view->num_values, 32u);
  RingStep bad = step;
  bad.shape[2] = 9;  // past the buffer
  bad.payload_bytes = 2 * 2 * 9 * 4;
  EXPECT_EQ(DeviceScoreView(&buffer, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = step;
  bad.payload_bytes -= 4;  // disagrees with the shape
  EXPECT_EQ(DeviceScoreView(&buffer, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = step;
  bad.dtype = v1::SCORE_DTYPE_FP16;  // not the offered dtype
  bad.payload_bytes /= 2;
  EXPECT_EQ(DeviceScoreView(&buffer, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = step;
  bad.num_dims = 4;  // a bulk prefill's rank
  EXPECT_EQ(DeviceScoreView(&buffer, bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad = step;
  bad.shape[0] = 0xffffffffu;  // an overflowing count
  bad.shape[1] = 0xffffffffu;
  EXPECT_EQ(DeviceScoreView(&buffer, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace a2sf::cachemgr
