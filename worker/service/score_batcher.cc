#include "worker/service/score_batcher.h"

#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/kv/proto_convert.h"
#include "common/peer_strings.h"

namespace a2sf::worker {

struct ScoreBatcher::Ticket {
  std::string session_id;
  uint64_t step = 0;
  bool sent = false;
  bool done = false;
  absl::StatusOr<AnsweredStep> result = absl::UnknownError("not answered");
};

ScoreBatcher::ScoreBatcher(std::shared_ptr<grpc::Channel> channel, absl::Duration decision_timeout,
                           size_t flush_bytes)
    : stub_(v1::CacheManager::NewStub(channel)),
      decision_timeout_(decision_timeout),
      flush_bytes_(flush_bytes),
      write_watchdog_(&context_),
      read_watchdog_(&context_) {}

ScoreBatcher::~ScoreBatcher() {
  absl::MutexLock lock(&mutex_);
  if (stream_ != nullptr && !finished_) {
    // Every session's client is gone (and closed its session): nothing is left to answer.
    context_.TryCancel();
    stream_->Finish().IgnoreError();
  }
}

absl::StatusOr<std::shared_ptr<ScoreBatcher::Ticket>> ScoreBatcher::Submit(v1::ScoreStep step) {
  absl::MutexLock lock(&mutex_);
  if (!broken_.ok()) return broken_;
  for (const std::shared_ptr<Ticket>& queued : queued_tickets_) {
    if (queued->session_id == step.session_id()) {
      if (absl::Status flushed = FlushLocked(); !flushed.ok()) return flushed;
      break;
    }
  }
  auto ticket = std::make_shared<Ticket>();
  ticket->session_id = step.session_id();
  ticket->step = step.step();
  queued_bytes_ += step.scores().data().size();
  queued_.add_steps()->Swap(&step);
  queued_tickets_.push_back(ticket);
  if (queued_bytes_ >= flush_bytes_) {
    if (absl::Status flushed = FlushLocked(); !flushed.ok()) return flushed;
  }
  return ticket;
}

absl::Status ScoreBatcher::Flush() {
  absl::MutexLock lock(&mutex_);
  return FlushLocked();
}

absl::Status ScoreBatcher::FlushLocked() {
  if (!broken_.ok()) return broken_;
  if (queued_tickets_.empty()) return absl::OkStatus();
  if (stream_ == nullptr) stream_ = stub_->StreamScoreBatches(&context_);
  write_watchdog_.Arm(decision_timeout_);
  const bool written = stream_->Write(queued_);
  write_watchdog_.Disarm();
  if (!written) {
    Break(FinishedStatus());
    return broken_;
  }
  ++batches_sent_;
  steps_sent_ += queued_tickets_.size();
  for (const std::shared_ptr<Ticket>& ticket : queued_tickets_) ticket->sent = true;
  in_flight_.push_back(std::move(queued_tickets_));
  queued_tickets_.clear();
  queued_.Clear();
  queued_bytes_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<AnsweredStep> ScoreBatcher::Await(const std::shared_ptr<Ticket>& ticket) {
  absl::MutexLock lock(&mutex_);
  while (!ticket->done) {
    if (!broken_.ok()) return broken_;
    if (!ticket->sent) {
      if (absl::Status flushed = FlushLocked(); !flushed.ok()) return flushed;
    } else if (!reading_) {
      ReadOneBatch();
    } else {
      answered_.Wait(&mutex_);
    }
  }
  return std::move(ticket->result);
}

void ScoreBatcher::ReadOneBatch() {
  // One reader at a time, without the mutex: other sessions keep submitting and flushing meanwhile.
  reading_ = true;
  grpc::ClientReaderWriter<v1::ScoreBatch, v1::DecisionBatch>* stream = stream_.get();
  v1::DecisionBatch batch;
  mutex_.Unlock();
  read_watchdog_.Arm(decision_timeout_);
  const bool read = stream->Read(&batch);
  read_watchdog_.Disarm();
  mutex_.Lock();
  reading_ = false;
  answered_.SignalAll();
  if (!broken_.ok()) return;  // a writer failed meanwhile: every ticket has its answer already
  if (!read) {
    Break(FinishedStatus());
    return;
  }
  absl::StatusOr<std::vector<absl::StatusOr<AnsweredStep>>> answers = AnswersOf(batch, in_flight_.front());
  if (!answers.ok()) {
    // The peer broke the protocol: no later answer on this stream can be trusted, whichever ticket it
    // names. Every session on it fails with the violation (UNAVAILABLE: the jobs take their
    // --on_cachemgr_failure route), and the call is cancelled so the cache manager frees its sessions.
    Break(answers.status());
    context_.TryCancel();
    return;
  }
  std::vector<std::shared_ptr<Ticket>> tickets = std::move(in_flight_.front());
  in_flight_.pop_front();
  for (size_t i = 0; i < tickets.size(); ++i) {
    tickets[i]->result = std::move((*answers)[i]);
    tickets[i]->done = true;
  }
}

absl::StatusOr<std::vector<absl::StatusOr<AnsweredStep>>> ScoreBatcher::AnswersOf(
    const v1::DecisionBatch& batch, const std::vector<std::shared_ptr<Ticket>>& tickets) {
  auto violation = [](absl::string_view what) {
    return ProtocolViolation(absl::StrCat("score batch: ", what, " (the stream is dropped for every session on it)"));
  };
  if (size_t(batch.decisions_size()) != tickets.size()) {
    return violation(absl::StrCat("answered a batch of ", tickets.size(), " steps with ", batch.decisions_size(),
                                  " decisions"));
  }
  std::vector<absl::StatusOr<AnsweredStep>> answers;
  answers.reserve(tickets.size());
  for (size_t i = 0; i < tickets.size(); ++i) {
    const v1::SessionDecision& decision = batch.decisions(int(i));
    const Ticket& ticket = *tickets[i];
    if (decision.session_id() != ticket.session_id) {
      return violation(absl::StrCat("decision ", i, " names session '", Utf8Prefix(decision.session_id(), 80),
                                    "', its step was session '", ticket.session_id, "''s"));
    }
    if (decision.code() != 0) {  // the cache manager refused this step: it fails alone
      answers.push_back(PeerError(decision.code(), decision.message()));
      continue;
    }
    if (decision.decision().step() != ticket.step) {
      return violation(absl::StrCat("decision ", i, " answers step ", decision.decision().step(), " of session '",
                                    ticket.session_id, "', its step was ", ticket.step));
    }
    absl::StatusOr<EvictionDecision> answer = kv::DecisionFromProto(decision.decision());
    if (!answer.ok()) {
      return violation(absl::StrCat("decision ", i, " is malformed: ", answer.status().message()));
    }
    answers.push_back(AnsweredStep{ticket.step, *std::move(answer)});
  }
  return answers;
}

absl::Status ScoreBatcher::FinishedStatus() {
  if (write_watchdog_.fired() || read_watchdog_.fired()) {
    timed_out_ = true;
    return StreamEndStatus(/*timed_out=*/true, decision_timeout_, grpc::Status::OK);
  }
  if (reading_) {
    // A read is in progress (a write failed): it fails too; the stream's status cannot be read now.
    context_.TryCancel();
    return absl::UnavailableError("lost the score stream to the cache manager");
  }
  context_.TryCancel();  // ends a half-broken stream so that Finish returns
  grpc::Status status = stream_->Finish();
  finished_ = true;
  return StreamEndStatus(/*timed_out=*/false, decision_timeout_, status);
}

void ScoreBatcher::Break(const absl::Status& status) {
  if (broken_.ok()) broken_ = status;
  for (const std::shared_ptr<Ticket>& ticket : queued_tickets_) ticket->result = broken_, ticket->done = true;
  for (const auto& batch : in_flight_) {
    for (const std::shared_ptr<Ticket>& ticket : batch) ticket->result = broken_, ticket->done = true;
  }
  queued_tickets_.clear();
  queued_.Clear();
  queued_bytes_ = 0;
  in_flight_.clear();
  answered_.SignalAll();
}

void ScoreBatcher::Forget(const std::string& session_id) {
  absl::MutexLock lock(&mutex_);
  v1::ScoreBatch kept;
  std::vector<std::shared_ptr<Ticket>> kept_tickets;
  queued_bytes_ = 0;
  for (size_t i = 0; i < queued_tickets_.size(); ++i) {
    if (queued_tickets_[i]->session_id == session_id) continue;
    queued_bytes_ += queued_.steps(int(i)).scores().data().size();
    kept.add_steps()->Swap(queued_.mutable_steps(int(i)));
    kept_tickets.push_back(std::move(queued_tickets_[i]));
  }
  queued_.Swap(&kept);
  queued_tickets_ = std::move(kept_tickets);
}

bool ScoreBatcher::broken() const {
  absl::MutexLock lock(&mutex_);
  return !broken_.ok();
}

bool ScoreBatcher::timed_out() const {
  absl::MutexLock lock(&mutex_);
  return timed_out_;
}

uint64_t ScoreBatcher::batches_sent() const {
  absl::MutexLock lock(&mutex_);
  return batches_sent_;
}

uint64_t ScoreBatcher::steps_sent() const {
  absl::MutexLock lock(&mutex_);
  return steps_sent_;
}

namespace {

// One session's steps through the worker's shared batcher.
class BatchedTransport final : public ScoreTransport {
 public:
  BatchedTransport(const TransportSession& session, std::shared_ptr<ScoreBatcher> batcher)
      : session_(session), batcher_(std::move(batcher)) {}

  absl::Status Send(const OutgoingStep& step) override {
    if (broken_) return TransportBrokenError();
    if (step.kind == v1::STEP_KIND_BULK_PREFILL) {  // apart from the batch: it would hold every session up
      unary_.Send(session_, step);
      return absl::OkStatus();
    }
    absl::StatusOr<std::shared_ptr<ScoreBatcher::Ticket>> ticket =
        batcher_->Submit(StepMessage(session_, step, /*with_credentials=*/true));
    if (!ticket.ok()) return ticket.status();
    tickets_.push_back(std::move(*ticket));
    return absl::OkStatus();
  }

  absl::StatusOr<AnsweredStep> Await() override {
    if (broken_) return TransportBrokenError();
    if (unary_.answered()) {  // a bulk prefill is a job's first step: nothing is queued before it
      absl::StatusOr<AnsweredStep> answer = unary_.Take();
      if (!answer.ok()) Break();
      return answer;
    }
    if (tickets_.empty()) return absl::FailedPreconditionError("no step is waiting for its decision");
    std::shared_ptr<ScoreBatcher::Ticket> ticket = std::move(tickets_.front());
    tickets_.pop_front();
    absl::StatusOr<AnsweredStep> answer = batcher_->Await(ticket);
    if (!answer.ok()) Break();
    return answer;
  }

  bool Close() override {
    // Decisions still travelling are simply not read; steps not yet sent are dropped.
    batcher_->Forget(session_.session_id);
    return !batcher_->timed_out();
  }
  bool shared_memory() const override { return false; }

 private:
  // After a failed step (refused, lost, a broken protocol) no step of the session follows: its steps
  // still queued are dropped, those in flight are answered and not read, later calls fail at once.
  void Break() {
    broken_ = true;
    batcher_->Forget(session_.session_id);
    tickets_.clear();
  }

  const TransportSession session_;
  std::shared_ptr<ScoreBatcher> batcher_;
  std::deque<std::shared_ptr<ScoreBatcher::Ticket>> tickets_;
  UnaryStep unary_;  // a bulk prefill
  bool broken_ = false;
};

}  // namespace

std::unique_ptr<ScoreTransport> MakeBatchedTransport(const TransportSession& session,
                                                     std::shared_ptr<ScoreBatcher> batcher) {
  return std::make_unique<BatchedTransport>(session, std::move(batcher));
}

}  // namespace a2sf::worker
