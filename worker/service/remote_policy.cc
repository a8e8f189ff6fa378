#include "worker/service/remote_policy.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "cachemgr/service/proto_convert.h"
#include "common/float16.h"

namespace a2sf::worker {

absl::StatusOr<std::unique_ptr<RemotePolicy>> RemotePolicy::Open(std::shared_ptr<grpc::Channel> channel,
                                                                 const ModelConfig& model,
                                                                 const v1::PolicySpec* policy,
                                                                 const v1::Budget& budget, ScoreEncoding encoding,
                                                                 const std::string& label,
                                                                 absl::Duration wait_for_cache_manager,
                                                                 uint32_t decision_lag) {
  std::unique_ptr<RemotePolicy> remote(new RemotePolicy());
  remote->stub_ = v1::CacheManager::NewStub(channel);
  remote->model_ = model;
  remote->encoding_ = encoding;
  v1::OpenSessionRequest request;
  request.mutable_shape()->set_num_layers(model.n_layers);
  request.mutable_shape()->set_num_kv_heads(model.n_kv_heads);
  request.mutable_shape()->set_query_heads_per_kv_head(model.group_size());
  request.mutable_shape()->set_max_context(model.seq_len);
  if (policy != nullptr) *request.mutable_policy() = *policy;
  *request.mutable_budget() = budget;
  request.set_client_label(label);
  request.set_decision_lag(decision_lag);
  v1::OpenSessionResponse response;
  grpc::ClientContext context;
  context.set_wait_for_ready(true);
  context.set_deadline(absl::ToChronoTime(absl::Now() + wait_for_cache_manager));
  grpc::Status status = remote->stub_->OpenSession(&context, request, &response);
  if (!status.ok()) return cachemgr::FromGrpc(status);
  remote->session_id_ = response.session_id();
  remote->policy_ = response.policy();
  remote->budget_tokens_ = response.budget_tokens();
  remote->decision_lag_ = decision_lag;
  remote->stream_context_ = std::make_unique<grpc::ClientContext>();
  remote->stream_ = remote->stub_->StreamScores(remote->stream_context_.get());
  return remote;
}

RemotePolicy::~RemotePolicy() {
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
  if (stub_ != nullptr && !session_id_.empty()) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::CloseSessionRequest request;
    request.set_session_id(session_id_);
    v1::CloseSessionResponse response;
    stub_->CloseSession(&context, request, &response).IgnoreError();
  }
}

absl::Status RemotePolicy::Broken() {
  broken_ = true;
  // Finish waits for every incoming message to be read: drain decisions still travelling first.
  v1::EvictionDecision unused;
  while (stream_->Read(&unused)) {
  }
  grpc::Status status = stream_->Finish();
  stream_.reset();
  if (status.ok()) return absl::UnavailableError("the cache manager closed the stream");
  // UNAVAILABLE for transport failures; the cache manager's own errors keep their code.
  return cachemgr::FromGrpc(status);
}

absl::Status RemotePolicy::Send(v1::ScoreStep* message, absl::Span<const float> scores,
                                std::initializer_list<uint32_t> shape) {
  if (broken_) return absl::UnavailableError("the stream to the cache manager is broken");
  if (first_message_) message->set_session_id(session_id_);
  v1::ScoreTensor* tensor = message->mutable_scores();
  for (uint32_t d : shape) tensor->add_shape(d);
  if (encoding_ == ScoreEncoding::kFp32) {
    tensor->set_dtype(v1::SCORE_DTYPE_FP32);
    tensor->set_data(reinterpret_cast<const char*>(scores.data()), scores.size() * 4);
  } else {
    tensor->set_dtype(v1::SCORE_DTYPE_FP16);
    buffer_.resize(scores.size() * 2);
    for (size_t i = 0; i < scores.size(); ++i) {
      const uint16_t h = FloatToHalf(scores[i]);
      std::memcpy(&buffer_[2 * i], &h, 2);
    }
    tensor->set_data(buffer_);
  }
  if (!stream_->Write(*message)) return Broken();
  first_message_ = false;
  awaiting_.push_back(message->step());
  return absl::OkStatus();
}

absl::StatusOr<EvictionDecision> RemotePolicy::AwaitDecision() {
  if (broken_) return absl::UnavailableError("the stream to the cache manager is broken");
  if (awaiting_.empty()) return absl::FailedPreconditionError("AwaitDecision: no step was submitted");
  v1::EvictionDecision decision;
  if (!stream_->Read(&decision)) return Broken();
  const uint64_t step = awaiting_.front();
  awaiting_.pop_front();
  if (decision.step() != step) {
    return absl::DataLossError(absl::StrCat("cache manager answered step ", decision.step(), " to step ", step));
  }
  EvictionDecision out;
  out.evictions_per_head = decision.evictions_per_head();
  out.entries_after = decision.entries_after();
  out.evicted_slots.assign(decision.evicted_slots().begin(), decision.evicted_slots().end());
  out.evicted_positions.assign(decision.evicted_positions().begin(), decision.evicted_positions().end());
  return out;
}

absl::Status RemotePolicy::SubmitStep(uint64_t step, uint32_t position, absl::Span<const float> scores) {
  v1::ScoreStep message;
  message.set_step(step);
  message.set_position(position);
  message.set_kind(v1::STEP_KIND_TOKEN);
  const uint32_t heads = uint32_t(model_.n_layers * model_.n_kv_heads);
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
  if (absl::Status s = Send(&message, scores, {uint32_t(model_.n_layers), uint32_t(model_.n_kv_heads), prompt_length,
                                               prompt_length});
      !s.ok()) {
    return s;
  }
  return AwaitDecision();
}

}  // namespace a2sf::worker
