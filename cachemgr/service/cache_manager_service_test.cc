// The cache-manager service on 127.0.0.1 with an ephemeral port: decisions equal the library's,
// hostile requests get the right codes and leave sessions and the server healthy.
#include "cachemgr/service/cache_manager_service.h"

#include <cmath>
#include <cstring>
#include <random>
#include <thread>

#include <unistd.h>

#include "cachemgr/service/proto_convert.h"
#include "cachemgr/store/cpu_score_store.h"
#include "common/grpc/server.h"
#include "common/shm/score_ring.h"
#include "gtest/gtest.h"

namespace a2sf::cachemgr {
namespace {

class CacheManagerServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SessionManagerOptions options;
    options.max_sessions = 4;
    manager_ = std::make_unique<SessionManager>(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(), options);
    cache_ = std::make_unique<CacheManagerService>(manager_.get());
    admin_ = std::make_unique<PolicyAdminService>(manager_.get(), "s3cret");
    ServerOptions server_options;
    socket_path_ = "/tmp/a2sf-cmst-" + std::to_string(getpid()) + ".sock";
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
    return response;
  }

  static v1::ScoreStep MakeStep(const std::string& id, uint64_t step, const std::vector<float>& values,
                                uint32_t entries) {
    v1::ScoreStep s;
    s.set_session_id(id);
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
    v1::SessionInfo info;
    EXPECT_TRUE(stub_->GetSession(&context, request, &info).ok());
    return info.steps();
  }

  std::unique_ptr<SessionManager> manager_;
  std::unique_ptr<CacheManagerService> cache_;
  std::unique_ptr<PolicyAdminService> admin_;
  std::unique_ptr<RunningServer> server_;
  std::unique_ptr<v1::CacheManager::Stub> stub_;
  std::unique_ptr<v1::PolicyAdmin::Stub> admin_stub_;
  std::string socket_path_;
  std::unique_ptr<v1::CacheManager::Stub> unix_stub_;  // the same server over its Unix socket

  // Opens a Local(budget 2) session over `stub` with `ring` offered.
  grpc::Status OpenWithRing(v1::CacheManager::Stub* stub, const std::string& name, uint32_t slots, uint64_t slot_bytes,
                            v1::OpenSessionResponse* response, uint32_t layers = 2) {
    v1::OpenSessionRequest request;
    request.mutable_shape()->set_num_layers(layers);
    request.mutable_shape()->set_num_kv_heads(2);
    request.mutable_shape()->set_query_heads_per_kv_head(1);
    request.mutable_policy()->set_name("local");
    request.mutable_budget()->set_tokens(2);
    request.mutable_shared_memory_ring()->set_name(name);
    request.mutable_shared_memory_ring()->set_num_slots(slots);
    request.mutable_shared_memory_ring()->set_slot_bytes(slot_bytes);
    grpc::ClientContext context;
    return stub->OpenSession(&context, request, response);
  }
};

TEST_F(CacheManagerServiceTest, SharedMemoryRingServesStepsAndRefusesBadOffers) {
  const std::string name = "/a2sf-cmst-" + std::to_string(getpid());
  const uint64_t slot_bytes = ScoreRing::SlotBytesFor(4 * 64, 4);
  auto ring = ScoreRing::Create(name, 2, slot_bytes, 4);
  ASSERT_TRUE(ring.ok()) << ring.status();
  v1::OpenSessionResponse response;
  // Offers the server must refuse, each with a message that names the problem.
  grpc::Status status = OpenWithRing(stub_.get(), name, 2, slot_bytes, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << status.error_message();
  EXPECT_NE(status.error_message().find("Unix socket"), std::string::npos);
  status = OpenWithRing(unix_stub_.get(), "/etc/shadow", 2, slot_bytes, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  status = OpenWithRing(unix_stub_.get(), name + "-missing", 2, slot_bytes, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();
  status = OpenWithRing(unix_stub_.get(), name, 3, slot_bytes, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  status = OpenWithRing(unix_stub_.get(), name, 2, slot_bytes, &response, /*layers=*/3);  // 6 heads, ring for 4
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(manager_->session_count(), 0u);

  ASSERT_TRUE(OpenWithRing(unix_stub_.get(), name, 2, slot_bytes, &response).ok());
  (*ring)->Unlink();
  grpc::ClientContext stream_context;
  auto stream = unix_stub_->StreamScores(&stream_context);
  v1::ScoreStep attach;
  attach.set_session_id(response.session_id());
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

TEST_F(CacheManagerServiceTest, AttachWithoutARingIsFailedPrecondition) {
  v1::OpenSessionResponse session = Open("local", 2);
  grpc::ClientContext context;
  auto stream = stub_->StreamScores(&context);
  v1::ScoreStep attach;
  attach.set_session_id(session.session_id());
  ASSERT_TRUE(stream->Write(attach));
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
    auto expected = reference.Step(ref_id, t, t, {ScoreDType::kFp32, values.data(), values.size()});
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
  grpc::ClientContext context2;
  v1::ListSessionsResponse sessions;
  ASSERT_TRUE(admin_stub_->ListSessions(&context2, {}, &sessions).ok());
  ASSERT_EQ(sessions.sessions_size(), 1);
  EXPECT_EQ(sessions.sessions(0).policy().name(), "a2sf");
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

}  // namespace
}  // namespace a2sf::cachemgr
