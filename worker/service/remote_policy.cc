#include "worker/service/remote_policy.h"

#include <unistd.h>

#include <atomic>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/grpc/status.h"
#include "common/kv/proto_convert.h"
#include "common/log.h"
#include "common/shm/ring_handoff.h"

namespace a2sf::worker {

absl::Status RemotePolicy::OfferRing(const RemotePolicyOptions& options, v1::SharedMemoryRing* offer) {
  // Room for a whole context of scores per slot, and one slot per decision that can be in flight. The
  // pages are reserved up front; where shared memory is short, creation fails and the scores go over
  // gRPC instead.
  const uint32_t heads = uint32_t(model_.n_layers * model_.n_kv_heads);
  const uint64_t payload = uint64_t(heads) * model_.seq_len * kv::ScoreDTypeBytes(options.score_dtype);
  absl::StatusOr<std::unique_ptr<ScoreRing>> ring =
      ScoreRing::Create(std::min<uint32_t>(options.decision_lag + 2, ScoreRing::kMaxSlots),
                        ScoreRing::SlotBytesFor(payload, heads), heads);
  if (!ring.ok()) return ring.status();
  absl::StatusOr<std::string> handle = OfferRingDescriptor(options.ring_socket, (*ring)->fd());
  if (!handle.ok()) return handle.status();
  offer->set_handle(*handle);
  offer->set_num_slots((*ring)->num_slots());
  offer->set_slot_bytes((*ring)->slot_bytes());
  ring_ = std::move(*ring);
  return absl::OkStatus();
}

namespace {

// The cache manager names the field it refuses; only a refusal of the ring is worth a retry without
// it (a bad policy or budget would fail again, and must be reported as itself).
bool RefusesTheRing(const grpc::Status& status) {
  return status.error_code() != grpc::StatusCode::UNAVAILABLE &&
         status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED &&
         absl::StrContains(status.error_message(), "shared_memory_ring");
}

}  // namespace

absl::StatusOr<std::unique_ptr<RemotePolicy>> RemotePolicy::Open(std::shared_ptr<grpc::Channel> channel,
                                                                 const ModelConfig& model,
                                                                 const v1::PolicySpec* policy,
                                                                 const v1::Budget& budget,
                                                                 const RemotePolicyOptions& options) {
  std::unique_ptr<RemotePolicy> remote(new RemotePolicy());
  remote->stub_ = v1::CacheManager::NewStub(channel);
  remote->channel_ = channel;
  remote->model_ = model;
  remote->score_dtype_ = options.score_dtype;
  v1::OpenSessionRequest request;
  request.mutable_shape()->set_num_layers(model.n_layers);
  request.mutable_shape()->set_num_kv_heads(model.n_kv_heads);
  request.mutable_shape()->set_query_heads_per_kv_head(model.group_size());
  request.mutable_shape()->set_max_context(model.seq_len);
  if (policy != nullptr) *request.mutable_policy() = *policy;
  *request.mutable_budget() = budget;
  request.set_client_label(options.label);
  request.set_decision_lag(options.decision_lag);
  if (!options.ring_socket.empty()) {
    if (absl::Status offered = remote->OfferRing(options, request.mutable_shared_memory_ring()); !offered.ok()) {
      A2SF_LOG(WARNING) << "no shared-memory ring (" << offered << "); scores go over gRPC";
      request.clear_shared_memory_ring();
    }
  }
  v1::OpenSessionResponse response;
  grpc::ClientContext context;
  context.set_wait_for_ready(true);
  context.set_deadline(absl::ToChronoTime(absl::Now() + options.wait_for_cache_manager));
  grpc::Status status = remote->stub_->OpenSession(&context, request, &response);
  if (!status.ok() && remote->ring_ != nullptr && RefusesTheRing(status)) {
    // Refused ring (not a Unix socket, another machine, an older server): open without it.
    A2SF_LOG(WARNING) << "cache manager refused the shared-memory ring (" << status.error_message()
                      << "); scores go over gRPC";
    remote->ring_.reset();
    request.clear_shared_memory_ring();
    grpc::ClientContext retry;
    retry.set_deadline(absl::ToChronoTime(absl::Now() + options.wait_for_cache_manager));
    status = remote->stub_->OpenSession(&retry, request, &response);
  }
  if (!status.ok()) return FromGrpc(status);
  remote->session_id_ = response.session_id();
  remote->session_secret_ = response.session_secret();
  remote->policy_evicts_ = response.policy_evicts();
  remote->policy_ = response.policy();
  remote->budget_tokens_ = response.budget_tokens();
  remote->decision_lag_ = options.decision_lag;
  remote->decision_timeout_ = options.decision_timeout;
  remote->stream_context_ = std::make_unique<grpc::ClientContext>();
  remote->watchdog_ = std::make_unique<CallWatchdog>(remote->stream_context_.get());
  remote->stream_ = remote->stub_->StreamScores(remote->stream_context_.get());
  return remote;
}

RemotePolicy::~RemotePolicy() {
  if (ring_ != nullptr) ring_->Close();  // ends the cache manager's ring loop, and with it the stream
  if (stream_ != nullptr) {
    // A clean half-close lets the cache manager end the stream; CloseSession below frees the session.
    // Decisions still travelling (pipelined mode) are read first: Finish expects no unread message.
    if (broken_ || !stream_->WritesDone()) {
      stream_context_->TryCancel();
    } else {
      v1::EvictionDecision unused;
      for (; !awaiting_.empty() && stream_->Read(&unused); awaiting_.pop_front()) {
      }
    }
    stream_->Finish().IgnoreError();
  }
  // A cache manager that missed a deadline would keep CloseSession waiting too; it frees the session
  // itself when it sees the cancelled stream.
  if (stub_ != nullptr && !session_id_.empty() && !timed_out_) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::CloseSessionRequest request;
    request.set_session_id(session_id_);
    request.set_session_secret(session_secret_);
    v1::CloseSessionResponse response;
    stub_->CloseSession(&context, request, &response).IgnoreError();
  }
}

bool RemotePolicy::WriteWithDeadline(const v1::ScoreStep& message) {
  watchdog_->Arm(decision_timeout_);
  const bool written = stream_->Write(message);
  watchdog_->Disarm();
  return written;
}

absl::Status RemotePolicy::TimedOut() {
  timed_out_ = true;
  stream_context_->TryCancel();
  return Broken();
}

absl::Status RemotePolicy::Broken() {
  broken_ = true;
  if (watchdog_->fired()) timed_out_ = true;
  // Finish waits for every incoming message to be read: drain decisions still travelling first.
  v1::EvictionDecision unused;
  while (stream_->Read(&unused)) {
  }
  grpc::Status status = stream_->Finish();
  stream_.reset();
  if (timed_out_) {
    return absl::DeadlineExceededError(absl::StrCat("the cache manager did not answer within the decision deadline of ",
                                                    absl::FormatDuration(decision_timeout_),
                                                    " (--decision_timeout_ms)"));
  }
  if (status.ok()) return absl::UnavailableError("the cache manager closed the stream");
  // UNAVAILABLE for transport failures; the cache manager's own errors keep their code.
  return FromGrpc(status);
}

absl::Status RemotePolicy::SendThroughRing(uint64_t step, uint32_t kind, uint32_t position,
                                           absl::Span<const float> scores, std::initializer_list<uint32_t> shape) {
  if (broken_) return absl::UnavailableError("the stream to the cache manager is broken");
  if (!ring_attached_) {
    // The first message names the session and carries no scores: "serve me from the ring".
    v1::ScoreStep attach;
    attach.set_session_id(session_id_);
    attach.set_session_secret(session_secret_);
    if (!WriteWithDeadline(attach)) return Broken();
    ring_attached_ = true;
    first_message_ = false;
  }
  const size_t value_bytes = kv::ScoreDTypeBytes(score_dtype_);
  if (scores.size() * value_bytes > ring_->payload_capacity()) {
    return absl::ResourceExhaustedError("scores: larger than a shared-memory ring slot");
  }
  const uint64_t seq = ring_published_++;
  kv::EncodeScores(scores.data(), scores.size(), score_dtype_, ring_->payload(seq));
  RingStep header;
  header.step = step;
  header.kind = kind;
  header.dtype = kv::ScoreDTypeToProto(score_dtype_);
  header.position = position;
  header.num_dims = uint32_t(shape.size());
  std::copy(shape.begin(), shape.end(), header.shape);
  header.payload_bytes = scores.size() * value_bytes;
  ring_->Publish(seq, header);
  awaiting_.push_back(step);
  return absl::OkStatus();
}

absl::StatusOr<EvictionDecision> RemotePolicy::AwaitFromRing() {
  const uint64_t seq = ring_read_;
  const absl::Time deadline = decision_timeout_ == absl::InfiniteDuration() ? absl::InfiniteFuture()
                                                                            : absl::Now() + decision_timeout_;
  // Wait in short slices, checking between them that the cache manager is still connected and the
  // decision deadline has not passed.
  while (!ring_->WaitDecision(seq, std::min(absl::Milliseconds(100), std::max(deadline - absl::Now(),
                                                                              absl::ZeroDuration())))) {
    if (absl::Now() >= deadline) {
      if (ring_->WaitDecision(seq, absl::ZeroDuration())) break;
      return TimedOut();
    }
    const grpc_connectivity_state state = channel_->GetState(false);
    if (ring_->closed() || state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN ||
        state == GRPC_CHANNEL_IDLE) {
      if (ring_->WaitDecision(seq, absl::ZeroDuration())) break;  // it did answer before going away
      return Broken();
    }
  }
  ++ring_read_;
  const uint64_t step = awaiting_.front();
  awaiting_.pop_front();
  absl::StatusOr<EvictionDecision> decision = ring_->ReadDecision(seq, step);
  // The cache manager's error (it stops serving the ring) or a slot out of step: the ring is done.
  if (!decision.ok()) broken_ = true;
  return decision;
}

void RemotePolicy::Encode(v1::ScoreStep* message, absl::Span<const float> scores,
                          std::initializer_list<uint32_t> shape) {
  v1::ScoreTensor* tensor = message->mutable_scores();
  for (uint32_t d : shape) tensor->add_shape(d);
  tensor->set_dtype(kv::ScoreDTypeToProto(score_dtype_));
  // Encoded straight into the message: no second copy of the payload per step.
  std::string* data = tensor->mutable_data();
  data->resize(scores.size() * kv::ScoreDTypeBytes(score_dtype_));
  kv::EncodeScores(scores.data(), scores.size(), score_dtype_, data->data());
}

absl::Status RemotePolicy::Send(v1::ScoreStep* message, absl::Span<const float> scores,
                                std::initializer_list<uint32_t> shape) {
  if (broken_) return absl::UnavailableError("the stream to the cache manager is broken");
  if (first_message_) {
    message->set_session_id(session_id_);
    message->set_session_secret(session_secret_);
  }
  Encode(message, scores, shape);
  if (!WriteWithDeadline(*message)) return Broken();
  first_message_ = false;
  awaiting_.push_back(message->step());
  return absl::OkStatus();
}

absl::StatusOr<EvictionDecision> RemotePolicy::AwaitDecision() {
  if (broken_) return absl::UnavailableError("the stream to the cache manager is broken");
  if (awaiting_.empty()) return absl::FailedPreconditionError("AwaitDecision: no step was submitted");
  if (ring_ != nullptr && ring_attached_) return AwaitFromRing();
  v1::EvictionDecision decision;
  watchdog_->Arm(decision_timeout_);
  const bool read = stream_->Read(&decision);
  watchdog_->Disarm();
  if (!read) return Broken();
  const uint64_t step = awaiting_.front();
  awaiting_.pop_front();
  if (decision.step() != step) {
    return absl::DataLossError(absl::StrCat("cache manager answered step ", decision.step(), " to step ", step));
  }
  return kv::DecisionFromProto(decision);
}

absl::Status RemotePolicy::SubmitStep(uint64_t step, uint32_t position, absl::Span<const float> scores) {
  v1::ScoreStep message;
  message.set_step(step);
  message.set_position(position);
  message.set_kind(v1::STEP_KIND_TOKEN);
  const uint32_t heads = uint32_t(model_.n_layers * model_.n_kv_heads);
  if (ring_ != nullptr) {
    return SendThroughRing(step, v1::STEP_KIND_TOKEN, position, scores,
                           {uint32_t(model_.n_layers), uint32_t(model_.n_kv_heads), uint32_t(scores.size() / heads)});
  }
  return Send(&message, scores,
              {uint32_t(model_.n_layers), uint32_t(model_.n_kv_heads), uint32_t(scores.size() / heads)});
}

absl::StatusOr<EvictionDecision> RemotePolicy::Step(uint64_t step, uint32_t position, absl::Span<const float> scores) {
  if (!awaiting_.empty()) return absl::FailedPreconditionError("Step: decisions of submitted steps are still unread");
  if (absl::Status s = SubmitStep(step, position, scores); !s.ok()) return s;
  return AwaitDecision();
}

absl::StatusOr<EvictionDecision> RemotePolicy::BulkPrefill(uint32_t first_position, uint32_t prompt_length,
                                                           absl::Span<const float> scores) {
  if (!awaiting_.empty()) return absl::FailedPreconditionError("BulkPrefill: only as the first step");
  v1::ScoreStep message;
  message.set_step(0);
  message.set_position(first_position);
  message.set_kind(v1::STEP_KIND_BULK_PREFILL);
  if (ring_ != nullptr) {
    // A prompt's decision evicts many entries per head, more than a ring slot has room for: the bulk
    // step goes as one unary call, before the ring is attached.
    Encode(&message, scores, {uint32_t(model_.n_layers), uint32_t(model_.n_kv_heads), prompt_length, prompt_length});
    message.set_session_id(session_id_);
    message.set_session_secret(session_secret_);
    grpc::ClientContext context;
    if (decision_timeout_ != absl::InfiniteDuration()) {
      context.set_deadline(absl::ToChronoTime(absl::Now() + decision_timeout_));
    }
    v1::EvictionDecision decision;
    grpc::Status status = stub_->SubmitStep(&context, message, &decision);
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::DeadlineExceededError(absl::StrCat("the cache manager did not answer the bulk prefill within ",
                                                      absl::FormatDuration(decision_timeout_),
                                                      " (--decision_timeout_ms)"));
    }
    if (!status.ok()) return FromGrpc(status);
    return kv::DecisionFromProto(decision);
  }
  if (absl::Status s = Send(&message, scores, {uint32_t(model_.n_layers), uint32_t(model_.n_kv_heads), prompt_length,
                                               prompt_length});
      !s.ok()) {
    return s;
  }
  return AwaitDecision();
}

}  // namespace a2sf::worker
