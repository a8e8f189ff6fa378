#include "worker/service/score_transport.h"

#include "absl/strings/str_cat.h"
#include "common/grpc/status.h"
#include "common/kv/proto_convert.h"

namespace a2sf::worker {

void EncodeScoreTensor(kv::ScoreDType dtype, absl::Span<const float> scores, absl::Span<const uint32_t> shape,
                       v1::ScoreTensor* tensor) {
  for (uint32_t d : shape) tensor->add_shape(d);
  tensor->set_dtype(kv::ScoreDTypeToProto(dtype));
  // Encoded straight into the message: no second copy of the payload per step.
  std::string* data = tensor->mutable_data();
  data->resize(scores.size() * kv::ScoreDTypeBytes(dtype));
  kv::EncodeScores(scores.data(), scores.size(), dtype, data->data());
}

v1::ScoreStep StepMessage(const TransportSession& session, const OutgoingStep& step, bool with_credentials) {
  v1::ScoreStep message;
  message.set_step(step.step);
  message.set_position(step.position);
  message.set_kind(step.kind);
  if (with_credentials) {
    message.set_session_id(session.session_id);
    message.set_session_secret(session.session_secret);
  }
  EncodeScoreTensor(session.score_dtype, step.scores, step.shape, message.mutable_scores());
  return message;
}

namespace {

absl::StatusOr<AnsweredStep> SubmitUnary(const TransportSession& session, const OutgoingStep& step) {
  const v1::ScoreStep message = StepMessage(session, step, /*with_credentials=*/true);
  grpc::ClientContext context;
  if (session.decision_timeout != absl::InfiniteDuration()) {
    context.set_deadline(absl::ToChronoTime(absl::Now() + session.decision_timeout));
  }
  v1::EvictionDecision decision;
  grpc::Status status = session.stub->SubmitStep(&context, message, &decision);
  if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::DeadlineExceededError(absl::StrCat("the cache manager did not answer the bulk prefill within ",
                                                    absl::FormatDuration(session.decision_timeout),
                                                    " (--decision_timeout_ms)"));
  }
  if (!status.ok()) return FromGrpc(status);
  absl::StatusOr<EvictionDecision> answer = kv::DecisionFromProto(decision);
  if (!answer.ok()) return ProtocolViolation(answer.status().message());
  if (absl::Status matched = CheckAnsweredStep(step.step, decision.step()); !matched.ok()) return matched;
  return AnsweredStep{decision.step(), *std::move(answer)};
}

}  // namespace

void UnaryStep::Send(const TransportSession& session, const OutgoingStep& step) {
  answer_ = SubmitUnary(session, step);
}

absl::StatusOr<AnsweredStep> UnaryStep::Take() {
  absl::StatusOr<AnsweredStep> answer = *std::move(answer_);
  answer_.reset();
  return answer;
}

absl::Status ProtocolViolation(absl::string_view why) {
  return absl::UnavailableError(absl::StrCat("the cache manager broke the protocol: ", why));
}

absl::Status CheckAnsweredStep(uint64_t asked, uint64_t answered) {
  if (answered == asked) return absl::OkStatus();
  return ProtocolViolation(absl::StrCat("it answered step ", answered, " to step ", asked));
}

absl::Status StepsAwaitingDecision::Answered(uint64_t answered) {
  const uint64_t asked = steps_.front();
  steps_.pop_front();
  return CheckAnsweredStep(asked, answered);
}

absl::Status TransportBrokenError() { return absl::UnavailableError("the stream to the cache manager is broken"); }

SessionStream::SessionStream(v1::CacheManager::Stub* stub, absl::Duration decision_timeout)
    : watchdog_(&context_), decision_timeout_(decision_timeout) {
  stream_ = stub->StreamScores(&context_);
}

SessionStream::~SessionStream() { Abandon(); }

bool SessionStream::Write(const v1::ScoreStep& message) {
  if (stream_ == nullptr) return false;
  watchdog_.Arm(decision_timeout_);
  const bool written = stream_->Write(message);
  watchdog_.Disarm();
  return written;
}

bool SessionStream::Read(v1::EvictionDecision* decision) {
  if (stream_ == nullptr) return false;
  watchdog_.Arm(decision_timeout_);
  const bool read = stream_->Read(decision);
  watchdog_.Disarm();
  return read;
}

absl::Status SessionStream::TimedOut() {
  timed_out_ = true;
  context_.TryCancel();
  return Broken();
}

absl::Status SessionStream::Broken() {
  broken_ = true;
  grpc::Status status = grpc::Status::OK;
  if (stream_ != nullptr) status = DrainAndFinish(/*half_close=*/false);
  // Past the decision deadline (not the grace of a stream without one: that peer was merely cut off).
  if (watchdog_.fired() && decision_timeout_ != absl::InfiniteDuration()) timed_out_ = true;
  return StreamEndStatus(timed_out_, decision_timeout_, status);
}

void SessionStream::Abandon() {
  broken_ = true;
  if (stream_ == nullptr) return;
  context_.TryCancel();
  stream_->Finish().IgnoreError();
  stream_.reset();
}

// Finish waits for every incoming message to be read, so everything the peer still sends is read
// first: the decisions travelling in pipelined mode, and whatever a broken peer sends beyond them (a
// decision answered twice would otherwise hold Finish forever). The decision deadline, or without one
// kDrainGrace, bounds it all (the call is then cancelled).
grpc::Status SessionStream::DrainAndFinish(bool half_close) {
  watchdog_.Arm(decision_timeout_ != absl::InfiniteDuration() ? decision_timeout_ : kDrainGrace);
  if (half_close && !stream_->WritesDone()) context_.TryCancel();
  v1::EvictionDecision unused;
  while (stream_->Read(&unused)) {
  }
  watchdog_.Disarm();
  grpc::Status status = stream_->Finish();
  stream_.reset();
  return status;
}

absl::Status StreamEndStatus(bool timed_out, absl::Duration decision_timeout, const grpc::Status& finished) {
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat("the cache manager did not answer within the decision deadline of ",
                                                    absl::FormatDuration(decision_timeout),
                                                    " (--decision_timeout_ms)"));
  }
  if (finished.ok() || finished.error_code() == grpc::StatusCode::CANCELLED) {
    return absl::UnavailableError("the cache manager closed the score stream");
  }
  return FromGrpc(finished);
}

bool SessionStream::Close() {
  // A clean half-close lets the cache manager end the stream (CloseSession then frees the session).
  if (stream_ != nullptr) DrainAndFinish(/*half_close=*/true).IgnoreError();
  return !timed_out_ && !watchdog_.fired();
}

namespace {

// Each step a StreamScores message, each decision its answer.
class GrpcTransport final : public ScoreTransport {
 public:
  explicit GrpcTransport(const TransportSession& session)
      : session_(session), stream_(session.stub, session.decision_timeout) {}

  absl::Status Send(const OutgoingStep& step) override {
    if (stream_.broken()) return TransportBrokenError();
    const v1::ScoreStep message = StepMessage(session_, step, /*with_credentials=*/first_message_);
    if (!stream_.Write(message)) return stream_.Broken();
    first_message_ = false;
    awaiting_.Sent(step.step);
    return absl::OkStatus();
  }

  absl::StatusOr<AnsweredStep> Await() override {
    if (stream_.broken()) return TransportBrokenError();
    if (awaiting_.empty()) return absl::FailedPreconditionError("no step is waiting for its decision");
    v1::EvictionDecision decision;
    if (!stream_.Read(&decision)) return stream_.Broken();
    absl::StatusOr<EvictionDecision> answer = kv::DecisionFromProto(decision);
    if (!answer.ok()) return Break(ProtocolViolation(answer.status().message()));
    if (absl::Status matched = awaiting_.Answered(decision.step()); !matched.ok()) return Break(matched);
    return AnsweredStep{decision.step(), *std::move(answer)};
  }

  bool Close() override { return stream_.Close(); }
  bool shared_memory() const override { return false; }

 private:
  // Ends the transport after a protocol violation (`why`, returned): the stream's next message can no
  // longer be matched to its step, so no step follows (later calls fail with UNAVAILABLE).
  absl::Status Break(absl::Status why) {
    stream_.Abandon();
    return why;
  }

  const TransportSession session_;
  SessionStream stream_;
  bool first_message_ = true;
  StepsAwaitingDecision awaiting_;
};

}  // namespace

std::unique_ptr<ScoreTransport> MakeGrpcTransport(const TransportSession& session) {
  return std::make_unique<GrpcTransport>(session);
}

}  // namespace a2sf::worker
