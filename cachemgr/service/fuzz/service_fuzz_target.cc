#include "cachemgr/service/fuzz/service_fuzz_target.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cachemgr/service/cache_manager_service.h"
#include "cachemgr/service/proto_convert.h"
#include "cachemgr/store/cpu_score_store.h"
#include "common/shm/score_ring.h"

namespace a2sf::cachemgr {
namespace {

// Reads the script: every read past the end yields zeros, so every input is a valid script.
class Script {
 public:
  Script(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t Byte() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint32_t U32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t(Byte()) << (8 * i);
    return v;
  }
  // Mostly small values, sometimes anything: small shapes reach deep, large ones test the limits.
  uint32_t Dim() {
    const uint8_t b = Byte();
    return b < 240 ? b % 8 : U32();
  }
  std::string Bytes(size_t max) {
    const size_t length = Byte() | size_t{Byte()} << 8;
    const size_t n = std::min<size_t>(length % (max + 1), size_ - std::min(pos_, size_));
    std::string out(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

struct Opened {
  std::string id, secret;
  uint32_t layers = 0, heads = 0, entries = 0;
  uint64_t steps = 0;
};

// Operation bytes from here up send a ScoreBatch (below: what % 8 picks the other calls).
constexpr uint8_t kBatchOp = 0xE0;

const char* const kPolicies[] = {"a2sf", "h2o", "full", "local", "streaming_llm", "tova", "bogus", ""};

void Check(const grpc::Status& status, FuzzRunCounts* counts) {
  ++counts->calls;
  if (status.ok()) {
    ++counts->ok;
    return;
  }
  ++counts->refused;
  if (status.error_code() == grpc::StatusCode::UNKNOWN || status.error_code() == grpc::StatusCode::INTERNAL ||
      status.error_message().empty()) {
    std::fprintf(stderr, "fuzz finding: code %d, message '%s'\n", int(status.error_code()),
                 status.error_message().c_str());
    std::abort();
  }
}

v1::PolicySpec FuzzPolicy(Script& in) {
  v1::PolicySpec policy;
  policy.set_name(kPolicies[in.Byte() % 8]);
  const uint8_t flags = in.Byte();
  if (flags & 1) policy.set_alpha(double(in.Byte()) / 200.0);
  if (flags & 2) policy.set_recent_window(in.Dim());
  if (flags & 4) policy.set_sinks(in.Dim());
  if (flags & 8) policy.add_layer_alphas(double(in.Byte()) / 255.0);
  return policy;
}

void Open(Script& in, CacheManagerService& service, std::vector<Opened>* sessions, FuzzRunCounts* counts) {
  v1::OpenSessionRequest request;
  request.mutable_shape()->set_num_layers(in.Dim());
  request.mutable_shape()->set_num_kv_heads(in.Dim());
  request.mutable_shape()->set_query_heads_per_kv_head(in.Dim());
  request.mutable_shape()->set_max_context(in.Byte() < 128 ? 0 : in.Dim());
  if (in.Byte() & 1) *request.mutable_policy() = FuzzPolicy(in);
  const uint8_t budget = in.Byte();
  if (budget & 1) {
    request.mutable_budget()->set_ratio(double(in.Byte()) / 128.0);
    request.mutable_budget()->set_reference_length(in.Dim());
  } else if (budget & 2) {
    request.mutable_budget()->set_tokens(in.Dim());
  }
  request.set_client_label(in.Bytes(300));
  request.set_decision_lag(in.Byte() % 4);
  grpc::ServerContext context;
  v1::OpenSessionResponse response;
  const grpc::Status status = service.OpenSession(&context, &request, &response);
  Check(status, counts);
  if (status.ok()) {
    sessions->push_back({response.session_id(), response.session_secret(), request.shape().num_layers(),
                         request.shape().num_kv_heads(), 0, 0});
  }
}

// A step of a session: usually the right shape and step, sometimes anything.
v1::ScoreStep FuzzStep(Script& in, const Opened& session) {
  v1::ScoreStep step;
  step.set_session_id(session.id);
  const uint8_t mode = in.Byte();
  step.set_session_secret(mode & 1 ? session.secret : in.Bytes(40));
  step.set_step(mode & 2 ? session.steps : in.U32());
  step.set_position(mode & 4 ? session.steps : in.U32());
  step.set_kind(v1::StepKind(mode & 8 ? 1 : in.Byte() % 4));
  v1::ScoreTensor* scores = step.mutable_scores();
  scores->set_dtype(v1::ScoreDType(mode & 16 ? 1 : in.Byte() % 5));
  std::vector<uint32_t> shape = {session.layers, session.heads, session.entries + 1};
  if (!(mode & 32)) {
    shape.assign(in.Byte() % 6, 0);
    for (uint32_t& d : shape) d = in.Dim();
  }
  for (uint32_t d : shape) scores->add_shape(d);
  uint64_t values = 1;
  for (uint32_t d : shape) values = d == 0 || values <= (uint64_t{1} << 20) / d ? values * d : (uint64_t{1} << 21);
  const size_t bytes = (mode & 64) && values <= (uint64_t{1} << 20) ? values * (scores->dtype() == 1 ? 4 : 2)
                                                                     : in.Byte();
  std::string data(bytes, '\0');
  for (size_t i = 0; i < bytes; ++i) data[i] = char(i % 7 == 0 ? in.Byte() : 0x3c);  // 0x3c3c: a finite fp16
  scores->set_data(data);
  return step;
}

void Submit(Script& in, CacheManagerService& service, Opened& session, FuzzRunCounts* counts) {
  const v1::ScoreStep step = FuzzStep(in, session);
  grpc::ServerContext context;
  v1::EvictionDecision decision;
  const grpc::Status status = service.SubmitStep(&context, &step, &decision);
  Check(status, counts);
  if (status.ok()) {
    session.steps = decision.step() + 1;
    session.entries = decision.entries_after();
  }
}

void Finding(const char* what) {
  std::fprintf(stderr, "fuzz finding: %s\n", what);
  std::abort();
}

// How many steps a batch has: mostly a few, sometimes hundreds, sometimes about the batch limit.
int BatchSize(Script& in) {
  const uint8_t size = in.Byte();
  if (size < 240) return size % 12;
  if (size < 248) return int(in.U32() % 600);
  return CacheManagerService::kMaxBatchSteps - 4 + (size - 248);  // 4092 .. 4099
}

// A ScoreBatch as one worker step sends it: steps of many sessions (by index, or an unknown id), each
// fuzzed like a SubmitStep and then maybe twisted (no scores at all, as a header-only ring step;
// scores without data; another session's id with this one's secret; no id). Sessions may repeat.
// Served as StreamScoreBatches serves it; checked: one decision per step, every refusal with a clear
// code and message, at most one decided token step per session, and a session counted as served (a
// cut stream would free it) only when a step presented its secret.
void Batch(Script& in, CacheManagerService& service, std::vector<Opened>& sessions, FuzzRunCounts* counts) {
  v1::ScoreBatch batch;
  std::set<std::string> presented;  // ids whose right secret a step carried
  const int size = BatchSize(in);
  for (int i = 0; i < size; ++i) {
    const uint8_t pick = in.Byte();
    Opened stranger;  // an id no OpenSession returned (maybe empty)
    if (sessions.empty() || pick >= 0xF0) stranger = {in.Bytes(40), "", 1, 1, 0, 0};
    const Opened& session = stranger.layers != 0 ? stranger : sessions[pick % sessions.size()];
    v1::ScoreStep step = FuzzStep(in, session);
    switch (in.Byte() % 8) {
      case 4: step.clear_scores(); break;
      case 5: step.mutable_scores()->clear_data(); break;
      case 6: if (!sessions.empty()) step.set_session_id(sessions[(pick + 1) % sessions.size()].id); break;
      case 7: step.clear_session_id(); break;
      default: break;
    }
    if (!step.session_id().empty() && step.session_id() == session.id && step.session_secret() == session.secret) {
      presented.insert(session.id);
    }
    *batch.add_steps() = std::move(step);
  }
  v1::DecisionBatch answer;
  std::set<std::string> served;
  const grpc::Status status = service.ServeBatch(batch, &answer, &served);
  Check(status, counts);
  if (status.ok() != (size <= CacheManagerService::kMaxBatchSteps)) Finding("the batch limit was not applied");
  if (!status.ok()) return;
  if (answer.decisions_size() != batch.steps_size()) Finding("not one decision per step");
  std::map<std::string, int> decided_tokens;
  for (int k = 0; k < answer.decisions_size(); ++k) {
    const v1::SessionDecision& decision = answer.decisions(k);
    Check(grpc::Status(grpc::StatusCode(decision.code()), decision.message()), counts);
    if (decision.code() != 0) continue;
    ++counts->batch_steps_decided;
    if (batch.steps(k).kind() != v1::STEP_KIND_BULK_PREFILL && ++decided_tokens[decision.session_id()] > 1) {
      Finding("two token steps of one session decided in one batch");
    }
    for (Opened& s : sessions) {
      if (s.id == decision.session_id() && decision.decision().step() + 1 > s.steps) {
        s.steps = decision.decision().step() + 1;
        s.entries = decision.decision().entries_after();
      }
    }
  }
  for (const std::string& id : served) {
    if (presented.count(id) == 0) Finding("a session counted as served without its secret");
  }
}

// A ring slot with a fuzzed step record and payload, served as the stream handler would.
void RingSlot(Script& in, CacheManagerService& service, Opened& session, FuzzRunCounts* counts) {
  const uint32_t heads = session.layers * session.heads;
  if (heads == 0 || heads > 64) return;
  auto ring = ScoreRing::Create(2, ScoreRing::SlotBytesFor(4096, heads), heads);
  if (!ring.ok()) return;
  RingStep step;
  const uint8_t mode = in.Byte();
  step.step = mode & 1 ? session.steps : in.U32();
  step.kind = mode & 2 ? 1 : in.Byte() % 4;
  step.dtype = mode & 4 ? 1 : in.Byte() % 5;
  step.position = mode & 8 ? uint32_t(session.steps) : in.U32();
  step.num_dims = mode & 16 ? 3 : in.Byte() % 6;
  const uint32_t natural[4] = {session.layers, session.heads, session.entries + 1, 0};
  for (int i = 0; i < 4; ++i) step.shape[i] = mode & 32 ? natural[i] : in.Dim();
  const uint64_t natural_bytes = uint64_t{heads} * (session.entries + 1) * 4;
  step.payload_bytes = mode & 64 ? natural_bytes : (uint64_t{in.U32()} << (in.Byte() % 32));
  const size_t fill = std::min<uint64_t>((*ring)->payload_capacity(), natural_bytes);
  std::memset((*ring)->payload(0), 0x3c, fill);
  (*ring)->Publish(0, step);
  const absl::Status status = service.ServeRingStep(session.id, ring->get(), 0);
  Check(ToGrpc(status), counts);
  if (status.ok()) {
    ++session.steps;
    session.entries = (*ring)->decision(0).entries_after;
  }
}

}  // namespace

FuzzRunCounts RunServiceFuzzInput(const uint8_t* data, size_t size) {
  Script in(data, size);
  SessionManagerOptions options;
  options.max_sessions = 8;
  options.max_sessions_per_peer = 6;
  options.max_store_bytes = 64 << 20;
  options.max_session_bytes = 16 << 20;
  SessionManager manager(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(), options);
  CacheManagerServiceOptions service_options;
  service_options.stream_idle_timeout = absl::ZeroDuration();  // no reaper thread per input
  CacheManagerService service(&manager, service_options);
  PolicyAdminService admin(&manager, "");
  std::vector<Opened> sessions;
  FuzzRunCounts counts;
  for (int op = 0; op < 64 && !in.done(); ++op) {
    const uint8_t what = in.Byte();
    Opened* session = sessions.empty() ? nullptr : &sessions[in.Byte() % sessions.size()];
    grpc::ServerContext context;
    if (what >= kBatchOp) {
      Batch(in, service, sessions, &counts);
      continue;
    }
    switch (what % 8) {
      case 0:
        Open(in, service, &sessions, &counts);
        break;
      case 1:
      case 2:
        if (session != nullptr) Submit(in, service, *session, &counts);
        break;
      case 3:
        if (session != nullptr) RingSlot(in, service, *session, &counts);
        break;
      case 4: {
        v1::GetSessionRequest request;
        request.set_session_id(session != nullptr ? session->id : in.Bytes(40));
        request.set_session_secret(session != nullptr && (in.Byte() & 1) ? session->secret : in.Bytes(40));
        v1::SessionInfo info;
        Check(service.GetSession(&context, &request, &info), &counts);
        break;
      }
      case 5: {
        v1::CloseSessionRequest request;
        request.set_session_id(session != nullptr ? session->id : in.Bytes(40));
        request.set_session_secret(session != nullptr && (in.Byte() & 1) ? session->secret : in.Bytes(40));
        v1::CloseSessionResponse response;
        Check(service.CloseSession(&context, &request, &response), &counts);
        break;
      }
      case 6: {
        v1::SetSessionPolicyRequest request;
        request.set_session_id(session != nullptr ? session->id : in.Bytes(40));
        *request.mutable_policy() = FuzzPolicy(in);
        v1::SetSessionPolicyResponse response;
        Check(admin.SetSessionPolicy(&context, &request, &response), &counts);
        break;
      }
      case 7: {
        v1::ListSessionsResponse response;
        Check(admin.ListSessions(&context, nullptr, &response), &counts);
        for (const v1::SessionInfo& info : response.sessions()) {
          if (info.client_label().size() > 256) std::abort();  // labels are bounded
        }
        break;
      }
    }
  }
  // Closing every session must return every charged byte.
  for (const Opened& s : sessions) manager.Close(s.id).IgnoreError();
  if (manager.charged_bytes() != 0 || manager.session_count() != 0) {
    std::fprintf(stderr, "fuzz finding: %llu bytes still charged after closing everything\n",
                 static_cast<unsigned long long>(manager.charged_bytes()));
    std::abort();
  }
  return counts;
}

}  // namespace a2sf::cachemgr
