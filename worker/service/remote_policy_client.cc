#include "worker/service/remote_policy_client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/grpc/status.h"
#include "common/log.h"

namespace a2sf::worker {

absl::StatusOr<std::unique_ptr<RemotePolicyClient>> RemotePolicyClient::Open(std::shared_ptr<grpc::Channel> channel,
                                                                 const ModelConfig& model,
                                                                 const v1::PolicySpec* policy,
                                                                 const v1::Budget& budget,
                                                                 const RemotePolicyOptions& options) {
  std::unique_ptr<RemotePolicyClient> remote(new RemotePolicyClient());
  remote->stub_ = v1::CacheManager::NewStub(channel);
  remote->channel_ = channel;
  remote->model_ = model;
  v1::OpenSessionRequest request;
  request.mutable_shape()->set_num_layers(model.n_layers);
  request.mutable_shape()->set_num_kv_heads(model.n_kv_heads);
  request.mutable_shape()->set_query_heads_per_kv_head(model.group_size());
  request.mutable_shape()->set_max_context(model.seq_len);
  if (policy != nullptr) *request.mutable_policy() = *policy;
  *request.mutable_budget() = budget;
  request.set_client_label(options.label);
  request.set_decision_lag(options.decision_lag);
  std::unique_ptr<ScoreRing> ring;
  if (!options.ring_socket.empty()) {
    absl::StatusOr<std::unique_ptr<ScoreRing>> offered =
        OfferRing(options.ring_socket, uint32_t(model.n_layers * model.n_kv_heads), uint32_t(model.seq_len),
                  options.score_dtype, options.decision_lag, request.mutable_shared_memory_ring());
    if (offered.ok()) {
      ring = std::move(*offered);
      request.set_ring_optional(true);
    } else {
      A2SF_LOG(WARNING) << "no shared-memory ring (" << offered.status() << "); scores go over gRPC";
      request.clear_shared_memory_ring();
    }
  }
  if (options.offer_device_scores) remote->OfferDeviceScores(options, &request);
  if (absl::Status opened = remote->OpenSession(request, std::move(ring), options); !opened.ok()) return opened;
  return remote;
}

absl::Status RemotePolicyClient::OpenSession(const v1::OpenSessionRequest& request, std::unique_ptr<ScoreRing> ring,
                                       const RemotePolicyOptions& options) {
  v1::OpenSessionResponse response;
  grpc::ClientContext context;
  context.set_wait_for_ready(true);
  context.set_deadline(absl::ToChronoTime(absl::Now() + options.wait_for_cache_manager));
  grpc::Status status = stub_->OpenSession(&context, request, &response);
  if (!status.ok()) return FromGrpc(status);
  session_id_ = response.session_id();
  session_secret_ = response.session_secret();
  policy_evicts_ = response.policy_evicts();
  policy_ = response.policy();
  budget_tokens_ = response.budget_tokens();
  decision_lag_ = options.decision_lag;
  TransportSession session;
  session.session_id = session_id_;
  session.session_secret = session_secret_;
  session.channel = channel_;
  session.stub = stub_.get();
  session.score_dtype = options.score_dtype;
  session.decision_timeout = options.decision_timeout;
  ChooseTransport(response, session, std::move(ring), options.batcher);
  return absl::OkStatus();
}

void RemotePolicyClient::ChooseTransport(const v1::OpenSessionResponse& response, const TransportSession& session,
                                         std::unique_ptr<ScoreRing> ring, std::shared_ptr<ScoreBatcher> batcher) {
  if (response.has_ring_refusal()) {
    // Not a Unix socket, another machine, no ring socket there: the session is open, scores go inline.
    A2SF_LOG(WARNING) << "cache manager refused the shared-memory ring ("
                      << v1::RingRefusal::Reason_Name(response.ring_refusal().reason()) << ": "
                      << response.ring_refusal().message() << "); scores go over gRPC";
    ring.reset();
  }
  if (device_export_ != nullptr && !(ring != nullptr && response.device_scores().accepted())) {
    A2SF_LOG(WARNING) << "CUDA IPC refused ("
                      << v1::DeviceScoresRefusal_Name(response.device_scores().refusal()) << ": "
                      << response.device_scores().detail() << "); scores go through the "
                      << (ring != nullptr ? "shared-memory ring" : "gRPC");
    device_export_.reset();
  }
  if (device_export_ != nullptr) A2SF_LOG(INFO) << session_id_ << ": scores stay on the GPU (CUDA IPC)";
  route_ = device_export_ != nullptr ? Route::kDevice
           : ring != nullptr         ? Route::kRing
           : batcher != nullptr      ? Route::kBatched
                                     : Route::kGrpc;
  transport_session_ = session;
  ring_ = std::move(ring);
  batcher_ = std::move(batcher);
}

ScoreTransport* RemotePolicyClient::Transport() {
  if (transport_ != nullptr) return transport_.get();
  switch (route_) {
    case Route::kDevice:
      transport_ = MakeCudaIpcTransport(transport_session_, std::move(ring_), device_export_.get());
      break;
    case Route::kRing:
      transport_ = MakeRingTransport(transport_session_, std::move(ring_));
      break;
    case Route::kBatched:
      transport_ = MakeBatchedTransport(transport_session_, std::move(batcher_));
      break;
    case Route::kGrpc:
      transport_ = MakeGrpcTransport(transport_session_);
      break;
  }
  return transport_.get();
}

bool RemotePolicyClient::uses_device_scores() const {
  return route_ == Route::kDevice && device_export_ != nullptr && device_export_->bound();
}

void RemotePolicyClient::OfferDeviceScores(const RemotePolicyOptions& options, v1::OpenSessionRequest* request) {
  if (!request->has_shared_memory_ring() || options.decision_lag != 0) {
    A2SF_LOG(INFO) << "no CUDA IPC offer: it needs the shared-memory ring and --decision_lag=0";
    return;
  }
  absl::StatusOr<std::unique_ptr<DeviceScoreExport>> exported = DeviceScoreExport::Create(model_);
  if (!exported.ok()) {
    A2SF_LOG(WARNING) << "no CUDA IPC offer (" << exported.status() << "); scores go through the ring, or inline";
    return;
  }
  device_export_ = std::move(*exported);
  device_export_->FillOffer(request->mutable_device_scores());
}

absl::Status RemotePolicyClient::BindEngine(Engine* engine) {
  if (device_export_ == nullptr) return absl::OkStatus();
  return device_export_->Bind(engine);
}

RemotePolicyClient::~RemotePolicyClient() {
  // A cache manager that missed a deadline would keep CloseSession waiting too; it frees the session
  // itself when it sees the cancelled stream.
  // The transport goes last: a batcher it may be the last user of would cut its stream, which frees
  // the sessions the stream served before CloseSession could close this one.
  const bool answered = transport_ == nullptr || transport_->Close();
  if (stub_ != nullptr && !session_id_.empty() && answered) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::CloseSessionRequest request;
    request.set_session_id(session_id_);
    request.set_session_secret(session_secret_);
    v1::CloseSessionResponse response;
    stub_->CloseSession(&context, request, &response).IgnoreError();
  }
}

absl::Status RemotePolicyClient::Send(uint64_t step, v1::StepKind kind, uint32_t position, absl::Span<const float> scores,
                                std::vector<uint32_t> shape) {
  OutgoingStep outgoing;
  outgoing.step = step;
  outgoing.kind = kind;
  outgoing.position = position;
  outgoing.scores = scores;
  outgoing.shape = std::move(shape);
  if (absl::Status sent = Transport()->Send(outgoing); !sent.ok()) return sent;
  ++steps_in_flight_;
  return absl::OkStatus();
}

absl::StatusOr<EvictionDecision> RemotePolicyClient::AwaitDecision() {
  if (steps_in_flight_ == 0) return absl::FailedPreconditionError("AwaitDecision: no step was submitted");
  // A peer that broke the protocol fails the step with UNAVAILABLE (ProtocolViolation): the session is
  // lost as with a dropped connection; the step stays counted in flight like one whose read failed.
  absl::StatusOr<AnsweredStep> answer = Transport()->Await();
  if (!answer.ok()) return answer.status();
  --steps_in_flight_;
  return std::move(answer->decision);
}

absl::Status RemotePolicyClient::SubmitStep(uint64_t step, uint32_t position, absl::Span<const float> scores) {
  const uint32_t heads = uint32_t(model_.n_layers * model_.n_kv_heads);
  return Send(step, v1::STEP_KIND_TOKEN, position, scores,
              {uint32_t(model_.n_layers), uint32_t(model_.n_kv_heads), uint32_t(scores.size() / heads)});
}

absl::StatusOr<EvictionDecision> RemotePolicyClient::Step(uint64_t step, uint32_t position, absl::Span<const float> scores) {
  if (steps_in_flight_ != 0) return absl::FailedPreconditionError("Step: decisions of submitted steps are still unread");
  if (absl::Status s = SubmitStep(step, position, scores); !s.ok()) return s;
  return AwaitDecision();
}

absl::StatusOr<EvictionDecision> RemotePolicyClient::BulkPrefill(uint32_t first_position, uint32_t prompt_length,
                                                           absl::Span<const float> scores) {
  if (steps_in_flight_ != 0) return absl::FailedPreconditionError("BulkPrefill: only as the first step");
  if (absl::Status s = Send(0, v1::STEP_KIND_BULK_PREFILL, first_position, scores,
                            {uint32_t(model_.n_layers), uint32_t(model_.n_kv_heads), prompt_length, prompt_length});
      !s.ok()) {
    return s;
  }
  return AwaitDecision();
}

}  // namespace a2sf::worker
