#include "cachemgr/service/cache_manager_service.h"

#include <unistd.h>

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cachemgr/service/proto_convert.h"
#include "common/kv/positions.h"
#include "common/kv/proto_convert.h"
#include "common/grpc/bearer_token.h"
#include "common/log.h"
#include "common/peer_strings.h"
#include "grpcpp/security/auth_context.h"
#include "common/cli.h"

namespace a2sf::cachemgr {

CacheManagerMetrics::CacheManagerMetrics(prometheus::Registry* registry)
    : sessions_(prometheus::BuildGauge().Name("a2sf_cachemgr_sessions").Help("Open sessions by policy").Register(*registry)),
      store_bytes_(prometheus::BuildGauge()
                       .Name("a2sf_cachemgr_store_bytes_in_use")
                       .Help("Bytes the score store holds for open sessions (accumulators, positions)")
                       .Register(*registry)
                       .Add({})),
      steps_(prometheus::BuildCounter().Name("a2sf_cachemgr_steps_total").Help("Steps decided").Register(*registry).Add({})),
      evicted_entries_(prometheus::BuildCounter()
                           .Name("a2sf_cachemgr_evicted_entries_total")
                           .Help("KV entries evicted, over all layers and KV heads")
                           .Register(*registry)
                           .Add({})),
      bytes_received_(prometheus::BuildCounter()
                          .Name("a2sf_cachemgr_score_bytes_received_total")
                          .Help("Bytes of attention scores of the steps decided (a refused step's are not counted)")
                          .Register(*registry)
                          .Add({})),
      step_latency_(prometheus::BuildHistogram()
                        .Name("a2sf_cachemgr_step_seconds")
                        .Help("Time to decide one step (accumulate, select, evict)")
                        .Register(*registry)
                        .Add({}, prometheus::Histogram::BucketBoundaries{1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3,
                                                                         2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25,
                                                                         0.5, 1})),
      errors_(prometheus::BuildCounter().Name("a2sf_cachemgr_errors_total").Help("Failed calls by gRPC code").Register(*registry)) {
  prometheus::BuildGauge()
      .Name("a2sf_cachemgr_build_info")
      .Help("Always 1; the labels describe the build")
      .Register(*registry)
      .Add({{"version", kVersion}})
      .Set(1);
}

void CacheManagerMetrics::Refresh(const SessionManager& manager) {
  std::map<std::string, int> by_policy;
  for (const std::string& name : manager.registry().Names()) by_policy[name] = 0;  // zeros, not gaps
  for (const SessionInfo& session : manager.List()) ++by_policy[session.policy.name];
  for (const auto& [policy, count] : by_policy) sessions_.Add({{"policy", policy}}).Set(count);
  store_bytes_.Set(double(manager.store().BytesHeld()));
}

void CacheManagerMetrics::RecordStep(double seconds, uint64_t evictions, uint64_t bytes) {
  steps_.Increment();
  evicted_entries_.Increment(double(evictions));
  bytes_received_.Increment(double(bytes));
  step_latency_.Observe(seconds);
}

void CacheManagerMetrics::RecordError(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                       "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int index = int(code);
  errors_.Add({{"code", index >= 0 && index < 17 ? kNames[index] : "OTHER"}}).Increment();
}

std::string PeerIdentity(const grpc::ServerContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const grpc::string_ref& id : auth->GetPeerIdentity()) return "tls:" + std::string(id.data(), id.size());
  }
  const std::string peer = context.peer();
  if (absl::StartsWith(peer, "unix:")) return "unix:";
  const size_t port = peer.rfind(':');
  return port == std::string::npos ? peer : peer.substr(0, port);
}

namespace {

int64_t NowNs() { return absl::GetCurrentTimeNanos(); }

// Session ids and labels come from peers: what goes back into messages is kept short and whole.
std::string Quoted(absl::string_view text) { return absl::StrCat("'", Utf8Prefix(text, 80), "'"); }

}  // namespace

CacheManagerService::CacheManagerService(SessionManager* manager, CacheManagerServiceOptions options)
    : manager_(manager), options_(options), metrics_(options.metrics) {
  if (options_.stream_idle_timeout > absl::ZeroDuration()) {
    reaper_ = std::thread([this] {
      const absl::Duration period = std::min(options_.stream_idle_timeout / 4, absl::Seconds(1));
      while (!stop_reaper_.WaitForNotificationWithTimeout(period)) CancelIdleStreams();
    });
  }
}

CacheManagerService::~CacheManagerService() {
  stop_reaper_.Notify();
  if (reaper_.joinable()) reaper_.join();
}

grpc::Status CacheManagerService::AdmitStream(grpc::ServerContext* context, std::atomic<int64_t>* last_active_ns) {
  last_active_ns->store(NowNs());
  std::string peer = PeerIdentity(*context);
  absl::MutexLock lock(&streams_mutex_);
  size_t& of_peer = streams_per_peer_[peer];
  if (options_.max_streams_per_peer > 0 && of_peer >= options_.max_streams_per_peer) {
    return Error(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                              absl::StrCat("this peer (", Quoted(peer), ") has ", of_peer,
                                           " score streams open, the most one peer may hold at once ",
                                           "(--max_streams_per_peer=", options_.max_streams_per_peer,
                                           "); end one of them first")));
  }
  if (options_.max_streams > 0 && streams_.size() >= options_.max_streams) {
    if (of_peer == 0) streams_per_peer_.erase(peer);
    return Error(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                              absl::StrCat(streams_.size(), " score streams are open, the most this cache manager ",
                                           "serves at once (--max_streams=", options_.max_streams, ")")));
  }
  ++of_peer;
  streams_[context] = {last_active_ns, std::move(peer)};
  return grpc::Status::OK;
}

void CacheManagerService::ForgetStream(grpc::ServerContext* context) {
  absl::MutexLock lock(&streams_mutex_);
  auto it = streams_.find(context);
  if (it == streams_.end()) return;
  auto of_peer = streams_per_peer_.find(it->second.peer);
  if (of_peer != streams_per_peer_.end() && --of_peer->second == 0) streams_per_peer_.erase(of_peer);
  streams_.erase(it);
}

size_t CacheManagerService::open_streams() const {
  absl::MutexLock lock(&streams_mutex_);
  return streams_.size();
}

size_t CacheManagerService::open_streams(const std::string& peer) const {
  absl::MutexLock lock(&streams_mutex_);
  auto it = streams_per_peer_.find(peer);
  return it == streams_per_peer_.end() ? 0 : it->second;
}

void CacheManagerService::CancelIdleStreams() {
  const int64_t cutoff = NowNs() - absl::ToInt64Nanoseconds(options_.stream_idle_timeout);
  absl::MutexLock lock(&streams_mutex_);  // held while cancelling: a handler forgets its stream first
  for (const auto& [context, stream] : streams_) {
    if (stream.last_active_ns->load() < cutoff && !context->IsCancelled()) {
      A2SF_LOG(INFO) << "cancelling a score stream idle for more than " << options_.stream_idle_timeout
                     << " (--stream_idle_timeout_s)";
      context->TryCancel();
    }
  }
}

grpc::Status CacheManagerService::Error(const grpc::Status& status) {
  if (metrics_ != nullptr && !status.ok()) metrics_->RecordError(status.error_code());
  return status;
}

absl::StatusOr<std::shared_ptr<ScoreRing>> CacheManagerService::AttachOfferedRing(
    const grpc::ServerContext& context, const v1::OpenSessionRequest& request, v1::RingRefusal::Reason* refusal) {
  if (!request.has_shared_memory_ring()) return nullptr;
  *refusal = v1::RingRefusal::REASON_NOT_UNIX_SOCKET;
  if (!absl::StartsWith(context.peer(), "unix:")) {
    return absl::FailedPreconditionError(absl::StrCat("shared_memory_ring: offered over ", context.peer(),
                                                      "; a ring is accepted only over the cache manager's Unix socket"));
  }
  const v1::SharedMemoryRing& offer = request.shared_memory_ring();
  *refusal = v1::RingRefusal::REASON_INVALID_OFFER;
  if (!offer.name().empty()) {
    return absl::InvalidArgumentError(
        "shared_memory_ring.name: rings are no longer opened by name; hand the segment's descriptor to the ring "
        "socket and give its handle (shared_memory_ring.handle)");
  }
  if (options_.ring_handoff == nullptr) {
    *refusal = v1::RingRefusal::REASON_NO_RING_SOCKET;
    return absl::FailedPreconditionError("shared_memory_ring: this cache manager has no ring socket");
  }
  absl::StatusOr<int> fd = options_.ring_handoff->Take(offer.handle());
  if (!fd.ok()) return fd.status();
  absl::StatusOr<std::unique_ptr<ScoreRing>> ring = ScoreRing::Attach(*fd, offer.num_slots(), offer.slot_bytes());
  close(*fd);  // the mapping keeps the segment
  if (!ring.ok()) return ring.status();
  const v1::ModelShape& shape = request.shape();
  if ((*ring)->heads() != uint64_t{shape.num_layers()} * shape.num_kv_heads()) {
    return absl::InvalidArgumentError("shared_memory_ring: its decision area is sized for another number of heads");
  }
  return std::shared_ptr<ScoreRing>(std::move(*ring));
}

grpc::Status CacheManagerService::OpenSession(grpc::ServerContext* context, const v1::OpenSessionRequest* request,
                                              v1::OpenSessionResponse* response) {
  SessionConfig config;
  const v1::ModelShape& shape = request->shape();
  config.geometry = {shape.num_layers(), shape.num_kv_heads()};
  config.query_heads_per_kv_head = shape.query_heads_per_kv_head();
  config.max_context = shape.max_context();
  if (request->has_policy()) config.policy = FromProto(request->policy());
  absl::StatusOr<BudgetSpec> budget = FromProto(request->budget());
  if (!budget.ok()) return Error(ToGrpc(budget.status()));
  config.budget = *budget;
  config.label = std::string(Utf8Prefix(request->client_label(), 256));
  config.owner = PeerIdentity(*context);
  config.decision_lag = request->decision_lag();
  v1::RingRefusal::Reason refusal = v1::RingRefusal::REASON_UNSPECIFIED;
  absl::StatusOr<std::shared_ptr<ScoreRing>> ring = AttachOfferedRing(*context, *request, &refusal);
  if (!ring.ok()) {
    if (!request->ring_optional()) return Error(ToGrpc(ring.status()));
    // A structured refusal: the session opens without the ring and the worker sends inline.
    response->mutable_ring_refusal()->set_reason(refusal);
    response->mutable_ring_refusal()->set_message(std::string(Utf8Prefix(ring.status().message(), 512)));
    A2SF_LOG(DEBUG) << "ring refused, the session goes inline: " << ring.status();
    ring = std::shared_ptr<ScoreRing>();
  }
  absl::StatusOr<SessionInfo> info = manager_->Open(config);
  if (!info.ok()) return Error(ToGrpc(info.status()));
  std::shared_ptr<const DeviceScores> device_scores;
  if (request->has_device_scores()) {
    *response->mutable_device_scores() = AnswerDeviceScoresOffer(
        request->device_scores(), {manager_->store().backend(), *ring != nullptr, config.decision_lag},
        &device_scores);
    A2SF_LOG(DEBUG) << info->id << ": device scores "
                    << (device_scores != nullptr ? "accepted" : response->device_scores().detail());
  }
  if (*ring != nullptr) {
    absl::MutexLock lock(&rings_mutex_);
    rings_[info->id] = *ring;
    if (device_scores != nullptr) device_scores_[info->id] = std::move(device_scores);
  }
  response->set_session_id(info->id);
  response->set_session_secret(info->secret);
  response->set_policy_evicts(info->evicts);
  response->set_budget_tokens(info->budget_tokens);
  *response->mutable_policy() = ToProto(info->policy);
  response->set_score_backend(manager_->store().backend());
  response->set_decision_lag(config.decision_lag);
  A2SF_LOG(DEBUG) << "opened " << info->id << " (" << config.label << ", " << config.owner << ") policy "
                  << PolicySpecToString(info->policy) << " budget " << info->budget_tokens << " lag "
                  << config.decision_lag;
  return grpc::Status::OK;
}

grpc::Status CacheManagerService::CloseSession(grpc::ServerContext*, const v1::CloseSessionRequest* request,
                                               v1::CloseSessionResponse* response) {
  if (absl::Status auth = manager_->Authorize(request->session_id(), request->session_secret()); !auth.ok()) {
    return Error(ToGrpc(auth));
  }
  absl::StatusOr<SessionInfo> info = manager_->Close(request->session_id());
  ForgetRing(request->session_id());
  if (!info.ok()) return Error(ToGrpc(info.status()));
  response->set_steps(info->steps);
  response->set_evictions(info->evictions);
  return grpc::Status::OK;
}

absl::StatusOr<StepResult> CacheManagerService::RunStep(const std::string& session_id, v1::StepKind kind,
                                                        uint64_t step, uint32_t position, uint32_t prompt_length,
                                                        const ScoreView& scores, uint64_t bytes) {
  const absl::Time start = absl::Now();
  absl::StatusOr<StepResult> result =
      kind == v1::STEP_KIND_BULK_PREFILL ? manager_->BulkPrefill(session_id, step, position, prompt_length, scores)
                                         : manager_->Step(session_id, step, position, scores);
  if (result.ok() && metrics_ != nullptr) {
    metrics_->RecordStep(absl::ToDoubleSeconds(absl::Now() - start), result->decision.evicted_positions.size(), bytes);
  }
  return result;
}

namespace {

// A wire step's own fields, checked (kind, scores, position, a bulk prefill's square shape): the one
// place every inline step -- unary, streamed or batched -- is read.
struct CheckedStep {
  v1::StepKind kind = v1::STEP_KIND_TOKEN;  // TOKEN (UNSPECIFIED reads as TOKEN) or BULK_PREFILL
  ScoreView scores;
  uint32_t position = 0;
  uint32_t prompt_length = 0;  // bulk prefills only
};

absl::StatusOr<CheckedStep> CheckWireStep(const v1::ScoreStep& step) {
  const bool bulk = step.kind() == v1::STEP_KIND_BULK_PREFILL;
  if (!bulk && step.kind() != v1::STEP_KIND_TOKEN && step.kind() != v1::STEP_KIND_UNSPECIFIED) {
    return absl::InvalidArgumentError("kind: unknown step kind");
  }
  CheckedStep checked;
  checked.kind = bulk ? v1::STEP_KIND_BULK_PREFILL : v1::STEP_KIND_TOKEN;
  absl::StatusOr<ScoreView> view = ScoreViewOf(step.scores(), bulk ? 4 : 3);
  if (!view.ok()) return view.status();
  checked.scores = *view;
  absl::StatusOr<uint32_t> position = kv::PositionFromWire(step.position(), "position");
  if (!position.ok()) return position.status();
  checked.position = *position;
  if (bulk) {
    if (step.scores().shape(2) != step.scores().shape(3)) {
      return absl::InvalidArgumentError("scores.shape: a bulk prefill needs [L, H, P, P]");
    }
    checked.prompt_length = step.scores().shape(2);
  }
  return checked;
}

}  // namespace

grpc::Status CacheManagerService::Step(const std::string& session_id, const v1::ScoreStep& step,
                                       v1::EvictionDecision* decision) {
  absl::StatusOr<CheckedStep> checked = CheckWireStep(step);
  if (!checked.ok()) return Error(ToGrpc(checked.status()));
  absl::StatusOr<StepResult> result = RunStep(session_id, checked->kind, step.step(), checked->position,
                                              checked->prompt_length, checked->scores, step.scores().data().size());
  if (!result.ok()) return Error(ToGrpc(result.status()));
  kv::DecisionToProto(result->step, result->decision, result->policy_name, decision);
  return grpc::Status::OK;
}

std::shared_ptr<ScoreRing> CacheManagerService::RingOf(const std::string& session_id) {
  absl::MutexLock lock(&rings_mutex_);
  auto it = rings_.find(session_id);
  return it == rings_.end() ? nullptr : it->second;
}

std::shared_ptr<const DeviceScores> CacheManagerService::DeviceScoresOf(const std::string& session_id) {
  absl::MutexLock lock(&rings_mutex_);
  auto it = device_scores_.find(session_id);
  return it == device_scores_.end() ? nullptr : it->second;
}

void CacheManagerService::ForgetRing(const std::string& session_id) {
  absl::MutexLock lock(&rings_mutex_);
  rings_.erase(session_id);
  device_scores_.erase(session_id);
}

namespace {

// Reads what a worker wrote into a ring slot as a score view; everything is bounds-checked.
absl::StatusOr<ScoreView> RingScoreView(const ScoreRing& ring, uint64_t seq, const RingStep& step) {
  ScoreView view;
  absl::StatusOr<kv::ScoreDType> dtype = kv::ScoreDTypeFromProto(int(step.dtype));
  if (!dtype.ok()) return dtype.status();
  view.dtype = *dtype;
  if (step.kind != v1::STEP_KIND_TOKEN && step.kind != v1::STEP_KIND_UNSPECIFIED &&
      step.kind != v1::STEP_KIND_BULK_PREFILL) {
    return absl::InvalidArgumentError(absl::StrCat("kind: unknown step kind ", step.kind));
  }
  const uint32_t rank = step.kind == v1::STEP_KIND_BULK_PREFILL ? 4 : 3;
  if (step.num_dims > 4) {
    return absl::InvalidArgumentError(absl::StrCat("scores.shape: a ring slot holds at most 4 dimensions, got ",
                                                   step.num_dims));
  }
  absl::StatusOr<uint64_t> values = ScoreValueCount(absl::MakeConstSpan(step.shape, step.num_dims), int(rank));
  if (!values.ok()) return values.status();
  const uint64_t count = *values;
  if (count * kv::ScoreDTypeBytes(view.dtype) != step.payload_bytes || step.payload_bytes > ring.payload_capacity()) {
    return absl::InvalidArgumentError(absl::StrCat("scores: ", step.payload_bytes, " bytes in the ring slot (room for ",
                                                   ring.payload_capacity(), "), shape and dtype say ",
                                                   count * kv::ScoreDTypeBytes(view.dtype)));
  }
  if (rank == 4 && step.shape[2] != step.shape[3]) {
    return absl::InvalidArgumentError("scores.shape: a bulk prefill needs [L, H, P, P]");
  }
  view.data = ring.step_payload(seq);
  view.num_values = count;
  view.layers = step.shape[0];  // rank >= 3 was checked
  view.kv_heads = step.shape[1];
  return view;
}

}  // namespace

absl::StatusOr<ScoreView> CacheManagerService::RingStepScores(const std::string& session_id, const ScoreRing& ring,
                                                             uint64_t seq, const RingStep& step,
                                                             std::shared_ptr<const DeviceScores>* in_use) {
  if (step.kind != kRingStepKindDeviceToken) return RingScoreView(ring, seq, step);
  *in_use = DeviceScoresOf(session_id);
  return DeviceScoreView(in_use->get(), step);
}

grpc::Status CacheManagerService::ServeRing(grpc::ServerContext* context, const std::string& session_id,
                                            ScoreRing* ring, std::atomic<int64_t>* last_active_ns) {
  A2SF_LOG(DEBUG) << session_id << ": serving steps from its shared-memory ring";
  for (uint64_t seq = 0;; ++seq) {
    // A cancelled call (the worker went away, or this server is shutting down) stops serving at once,
    // even while the worker keeps publishing.
    while (!ring->WaitStep(seq, absl::Milliseconds(50)) || context->IsCancelled()) {
      if (ring->closed() || context->IsCancelled()) return grpc::Status::OK;
    }
    last_active_ns->store(NowNs());
    absl::Status served = ServeRingStep(session_id, ring, seq);
    if (!served.ok()) {
      ring->Close();
      return Error(ToGrpc(served));
    }
  }
}

absl::Status CacheManagerService::ServeRingStep(const std::string& session_id, ScoreRing* ring, uint64_t seq) {
  // Copy the step header out of the shared slot: the worker could rewrite it meanwhile.
  const RingStep step = ring->step(seq);
  std::shared_ptr<const DeviceScores> device_scores;
  absl::StatusOr<ScoreView> view = RingStepScores(session_id, *ring, seq, step, &device_scores);
  const v1::StepKind kind = step.kind == kRingStepKindDeviceToken ? v1::STEP_KIND_TOKEN : v1::StepKind(step.kind);
  absl::StatusOr<StepResult> result =
      view.ok() ? RunStep(session_id, kind, step.step, step.position,
                          step.kind == v1::STEP_KIND_BULK_PREFILL ? step.shape[2] : 0, *view, step.payload_bytes)
                : absl::StatusOr<StepResult>(view.status());
  return ring->CompleteDecision(seq, step.step,
                                result.ok() ? absl::StatusOr<kv::EvictionDecision>(std::move(result->decision))
                                            : absl::StatusOr<kv::EvictionDecision>(result.status()));
}

grpc::Status CacheManagerService::SubmitStep(grpc::ServerContext*, const v1::ScoreStep* request,
                                             v1::EvictionDecision* response) {
  if (request->session_id().empty()) {
    return Error(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "session_id: required"));
  }
  if (absl::Status auth = manager_->Authorize(request->session_id(), request->session_secret()); !auth.ok()) {
    return Error(ToGrpc(auth));
  }
  return Step(request->session_id(), *request, response);
}

grpc::Status CacheManagerService::StreamScores(
    grpc::ServerContext* context, grpc::ServerReaderWriter<v1::EvictionDecision, v1::ScoreStep>* stream) {
  std::atomic<int64_t> last_active_ns{0};
  if (grpc::Status admitted = AdmitStream(context, &last_active_ns); !admitted.ok()) return admitted;
  std::string session_id;
  grpc::Status status = ServeStream(context, stream, &last_active_ns, &session_id);
  ForgetStream(context);
  // The worker is gone (or the stream sat idle too long): nobody will close this session.
  if (context->IsCancelled() && !session_id.empty()) FreeCutSession(session_id);
  return status;
}

void CacheManagerService::FreeCutSession(const std::string& session_id) {
  if (manager_->Close(session_id).ok()) A2SF_LOG(INFO) << "freed " << session_id << ": its stream was cut";
  ForgetRing(session_id);
}

namespace {

void SetStepError(const absl::Status& status, v1::SessionDecision* decision) {
  decision->set_code(int32_t(status.code()));
  decision->set_message(std::string(Utf8Prefix(status.message(), 1024)));
}

}  // namespace

grpc::Status CacheManagerService::StreamScoreBatches(
    grpc::ServerContext* context, grpc::ServerReaderWriter<v1::DecisionBatch, v1::ScoreBatch>* stream) {
  std::atomic<int64_t> last_active_ns{0};
  if (grpc::Status admitted = AdmitStream(context, &last_active_ns); !admitted.ok()) return admitted;
  std::set<std::string> served;
  size_t prune_at = 64;
  grpc::Status status = grpc::Status::OK;
  v1::ScoreBatch batch;
  v1::DecisionBatch answer;
  while (stream->Read(&batch)) {
    last_active_ns.store(NowNs());
    answer.Clear();
    status = ServeBatch(batch, &answer, &served);
    if (!status.ok() || !stream->Write(answer)) break;
    // A worker's batch stream lives as long as it has jobs: forget the sessions closed since, each time
    // the set has doubled (amortised: one lookup per served session per doubling).
    if (served.size() >= prune_at) {
      for (auto it = served.begin(); it != served.end();) it = manager_->IsOpen(*it) ? std::next(it) : served.erase(it);
      prune_at = std::max<size_t>(64, 2 * served.size());
    }
  }
  ForgetStream(context);
  if (context->IsCancelled()) {
    for (const std::string& session_id : served) FreeCutSession(session_id);
  }
  return status;
}

absl::Status CacheManagerService::AdmitBatchStep(const v1::ScoreStep& step, v1::SessionDecision* decision,
                                                 std::vector<SessionManager::BatchedStep>* tokens,
                                                 std::set<std::string>* served) {
  auto refuse = [this](absl::Status status) {
    if (metrics_ != nullptr) metrics_->RecordError(grpc::StatusCode(status.code()));
    return status;
  };
  if (step.session_id().empty()) return refuse(absl::InvalidArgumentError("session_id: required on every step of a batch"));
  absl::StatusOr<SessionManager::AuthorizedSession> session =
      manager_->AuthorizeSession(step.session_id(), step.session_secret());
  if (!session.ok()) return refuse(session.status());
  served->insert(step.session_id());
  if (step.kind() == v1::STEP_KIND_BULK_PREFILL) {
    // A prompt's bulk step has its own store call; it is rare (a job's first step). Step counts its errors.
    return FromGrpc(Step(step.session_id(), step, decision->mutable_decision()));
  }
  absl::StatusOr<CheckedStep> checked = CheckWireStep(step);
  if (!checked.ok()) return refuse(checked.status());
  tokens->push_back({*std::move(session), step.step(), checked->position, checked->scores});
  return absl::OkStatus();
}

grpc::Status CacheManagerService::ServeBatch(const v1::ScoreBatch& batch, v1::DecisionBatch* answer,
                                             std::set<std::string>* served) {
  if (batch.steps_size() > kMaxBatchSteps) {
    return Error(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              absl::StrCat("steps: ", batch.steps_size(), " in one batch, at most ", kMaxBatchSteps)));
  }
  std::vector<SessionManager::BatchedStep> tokens;
  std::vector<int> token_index;  // tokens[k] is batch.steps(token_index[k])
  for (const v1::ScoreStep& step : batch.steps()) {
    v1::SessionDecision* decision = answer->add_decisions();
    decision->set_session_id(std::string(Utf8Prefix(step.session_id(), 128)));
    const size_t queued = tokens.size();
    absl::Status status = AdmitBatchStep(step, decision, &tokens, served);
    if (tokens.size() > queued) token_index.push_back(answer->decisions_size() - 1);
    if (!status.ok()) SetStepError(status, decision);  // counted where it was found
  }
  const absl::Time start = absl::Now();
  std::vector<absl::StatusOr<StepResult>> results = manager_->StepBatch(tokens);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  for (size_t k = 0; k < results.size(); ++k) {
    v1::SessionDecision* decision = answer->mutable_decisions(token_index[k]);
    if (!results[k].ok()) {
      Error(ToGrpc(results[k].status())).IgnoreError();
      SetStepError(results[k].status(), decision);
      continue;
    }
    kv::DecisionToProto(results[k]->step, results[k]->decision, results[k]->policy_name, decision->mutable_decision());
    // Each step decided is charged an equal share of the batch's store time (shared with the batch's
    // refused steps, which took part in it) and its own scores' bytes (as a step alone is): a step
    // that failed counts as an error, not as scores decided.
    if (metrics_ != nullptr) {
      metrics_->RecordStep(seconds / double(results.size()), results[k]->decision.evicted_positions.size(),
                           batch.steps(token_index[k]).scores().data().size());
    }
  }
  return grpc::Status::OK;
}

grpc::Status CacheManagerService::ServeStream(grpc::ServerContext* context,
                                              grpc::ServerReaderWriter<v1::EvictionDecision, v1::ScoreStep>* stream,
                                              std::atomic<int64_t>* last_active_ns, std::string* session_id) {
  v1::ScoreStep step;
  v1::EvictionDecision decision;
  while (stream->Read(&step)) {
    last_active_ns->store(NowNs());
    if (session_id->empty()) {
      if (step.session_id().empty()) {
        return Error(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                  "session_id: required on the first message of a stream"));
      }
      if (absl::Status auth = manager_->Authorize(step.session_id(), step.session_secret()); !auth.ok()) {
        return Error(ToGrpc(auth));
      }
      *session_id = step.session_id();
    } else if (!step.session_id().empty() && step.session_id() != *session_id) {
      return Error(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                absl::StrCat("session_id: this stream serves ", Quoted(*session_id), ", got ",
                                             Quoted(step.session_id()))));
    }
    if (step.scores().payload_case() == v1::ScoreTensor::PAYLOAD_NOT_SET && step.scores().shape_size() == 0) {
      return AttachRing(context, *session_id, last_active_ns);
    }
    decision.Clear();
    grpc::Status status = Step(*session_id, step, &decision);
    if (!status.ok()) return status;
    if (!stream->Write(decision)) break;
  }
  return grpc::Status::OK;
}

grpc::Status CacheManagerService::AttachRing(grpc::ServerContext* context, const std::string& session_id,
                                             std::atomic<int64_t>* last_active_ns) {
  // An attach message: the session's steps come through its shared-memory ring from now on.
  std::shared_ptr<ScoreRing> ring = RingOf(session_id);
  if (ring == nullptr) {
    return Error(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                              "scores: empty, and the session has no shared-memory ring to attach"));
  }
  {
    // One consumer per ring: a second attach would race the first for the same slots.
    absl::MutexLock lock(&rings_mutex_);
    if (!serving_.insert(session_id).second) {
      return Error(grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                                "scores: the session's shared-memory ring is already attached to a stream"));
    }
  }
  grpc::Status served = ServeRing(context, session_id, ring.get(), last_active_ns);
  ring->Close();
  absl::MutexLock lock(&rings_mutex_);
  serving_.erase(session_id);
  return served;
}

grpc::Status CacheManagerService::GetSession(grpc::ServerContext*, const v1::GetSessionRequest* request,
                                             v1::SessionInfo* response) {
  if (absl::Status auth = manager_->Authorize(request->session_id(), request->session_secret()); !auth.ok()) {
    return Error(ToGrpc(auth));
  }
  absl::StatusOr<SessionInfo> info = manager_->Get(request->session_id());
  if (!info.ok()) return Error(ToGrpc(info.status()));
  *response = ToProto(*info);
  return grpc::Status::OK;
}

grpc::Status PolicyAdminService::Authorize(const grpc::ServerContext* context) const {
  if (admin_token_.empty()) return grpc::Status::OK;
  switch (CheckBearerToken(*context, admin_token_)) {
    case BearerToken::kMissing:
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          "PolicyAdmin changes and ListSessions need 'authorization: Bearer <token>' metadata");
    case BearerToken::kWrong:
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "the bearer token is not the admin token");
    case BearerToken::kMatches:
      break;
  }
  return grpc::Status::OK;
}

grpc::Status PolicyAdminService::ListPolicies(grpc::ServerContext*, const v1::ListPoliciesRequest*,
                                              v1::ListPoliciesResponse* response) {
  for (const PolicyInfo& info : manager_->registry().Describe()) *response->add_policies() = ToProto(info);
  return grpc::Status::OK;
}

grpc::Status PolicyAdminService::GetDefaultPolicy(grpc::ServerContext*, const v1::GetDefaultPolicyRequest*,
                                                  v1::PolicySpec* response) {
  *response = ToProto(manager_->default_policy());
  return grpc::Status::OK;
}

grpc::Status PolicyAdminService::SetDefaultPolicy(grpc::ServerContext* context,
                                                  const v1::SetDefaultPolicyRequest* request,
                                                  v1::PolicySpec* response) {
  if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
  absl::StatusOr<PolicySpec> resolved = manager_->SetDefaultPolicy(FromProto(request->policy()));
  if (!resolved.ok()) return ToGrpc(resolved.status());
  A2SF_LOG(INFO) << "default policy is now " << PolicySpecToString(*resolved);
  *response = ToProto(*resolved);
  return grpc::Status::OK;
}

grpc::Status PolicyAdminService::SetSessionPolicy(grpc::ServerContext* context,
                                                  const v1::SetSessionPolicyRequest* request,
                                                  v1::SetSessionPolicyResponse* response) {
  if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
  absl::StatusOr<PolicySwap> swap = manager_->SetPolicy(request->session_id(), FromProto(request->policy()));
  if (!swap.ok()) return ToGrpc(swap.status());
  A2SF_LOG(INFO) << "session " << request->session_id() << ": " << PolicySpecToString(swap->previous) << " -> "
                 << PolicySpecToString(swap->current) << " from step " << swap->effective_from_step;
  *response->mutable_previous_policy() = ToProto(swap->previous);
  *response->mutable_policy() = ToProto(swap->current);
  response->set_effective_from_step(swap->effective_from_step);
  return grpc::Status::OK;
}

grpc::Status PolicyAdminService::ListSessions(grpc::ServerContext* context, const v1::ListSessionsRequest*,
                                              v1::ListSessionsResponse* response) {
  // Ids and labels of other peers' sessions: an admin read. Secrets are never listed (ToProto has none).
  if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
  for (const SessionInfo& info : manager_->List()) *response->add_sessions() = ToProto(info);
  return grpc::Status::OK;
}

}  // namespace a2sf::cachemgr
