// The shared-memory ScoreTransport (score_transport.h): steps and decisions through a ScoreRing; with
// a device buffer the cache manager accepted (CUDA IPC), token steps' scores stay on the GPU.
#include <cstring>
#include <optional>

#include "common/grpc/status.h"
#include "common/kv/proto_convert.h"
#include "common/shm/ring_handoff.h"
#include "worker/service/score_transport.h"

namespace a2sf::worker {

absl::StatusOr<std::unique_ptr<ScoreRing>> OfferRing(const std::string& ring_socket, uint32_t heads,
                                                     uint32_t seq_len, kv::ScoreDType score_dtype,
                                                     uint32_t decision_lag, v1::SharedMemoryRing* offer) {
  // Room for a whole context of scores per slot, and one slot per decision that can be in flight. The
  // pages are reserved up front; where shared memory is short, creation fails and the scores go over
  // gRPC instead.
  const uint64_t payload = uint64_t(heads) * seq_len * kv::ScoreDTypeBytes(score_dtype);
  absl::StatusOr<std::unique_ptr<ScoreRing>> ring = ScoreRing::Create(
      std::min<uint32_t>(decision_lag + 2, ScoreRing::kMaxSlots), ScoreRing::SlotBytesFor(payload, heads), heads);
  if (!ring.ok()) return ring.status();
  absl::StatusOr<std::string> handle = OfferRingDescriptor(ring_socket, (*ring)->fd());
  if (!handle.ok()) return handle.status();
  offer->set_handle(*handle);
  offer->set_num_slots((*ring)->num_slots());
  offer->set_slot_bytes((*ring)->slot_bytes());
  return std::move(*ring);
}

namespace {

class RingTransport final : public ScoreTransport {
 public:
  RingTransport(const TransportSession& session, std::unique_ptr<ScoreRing> ring,
                const DeviceScoreExport* device = nullptr)
      : session_(session), ring_(std::move(ring)), device_(device), stream_(session.stub, session.decision_timeout) {}
  ~RingTransport() override { ring_->Close(); }

  absl::Status Send(const OutgoingStep& step) override {
    if (stream_.broken()) return TransportBrokenError();
    if (step.kind == v1::STEP_KIND_BULK_PREFILL) {  // before the ring is attached: a job's first step
      unary_.Send(session_, step);
      return absl::OkStatus();
    }
    if (absl::Status attached = Attach(); !attached.ok()) return attached;
    return Publish(step);
  }

  absl::StatusOr<AnsweredStep> Await() override {
    if (unary_.answered()) {
      absl::StatusOr<AnsweredStep> answer = unary_.Take();
      if (!answer.ok()) return Break(answer.status());
      return answer;
    }
    if (stream_.broken()) return TransportBrokenError();
    if (awaiting_.empty()) return absl::FailedPreconditionError("no step is waiting for its decision");
    if (absl::Status answered = WaitForDecision(ring_read_); !answered.ok()) return answered;
    return TakeDecision(ring_read_++);
  }

  bool Close() override {
    ring_->Close();  // ends the cache manager's ring loop, and with it the stream
    return stream_.Close();  // decisions come through the ring, never on the stream
  }
  bool shared_memory() const override { return true; }
  // Accepted and bound: an unbound export (Bind failed) leaves every step's scores in the ring slot.
  bool device_scores() const override { return device_ != nullptr && device_->bound(); }

 private:
  // The first message names the session and carries no scores: "serve me from the ring".
  absl::Status Attach() {
    if (attached_) return absl::OkStatus();
    v1::ScoreStep attach;
    attach.set_session_id(session_.session_id);
    attach.set_session_secret(session_.session_secret);
    if (!stream_.Write(attach)) return stream_.Broken();
    attached_ = true;
    return absl::OkStatus();
  }

  absl::Status Publish(const OutgoingStep& step) {
    if (device_ != nullptr && step.kind == v1::STEP_KIND_TOKEN && device_->Holds(step.scores)) {
      // The scores are already in the exported device buffer (the engine wrote them and recorded the
      // event): only the header travels, in the engine's fp32.
      ring_->PublishDeviceStep(ring_published_++, Header(step, v1::SCORE_DTYPE_FP32, 4));
      awaiting_.Sent(step.step);
      return absl::OkStatus();
    }
    const size_t value_bytes = kv::ScoreDTypeBytes(session_.score_dtype);
    if (step.scores.size() * value_bytes > ring_->payload_capacity()) {
      return absl::ResourceExhaustedError("scores: larger than a shared-memory ring slot");
    }
    const uint64_t seq = ring_published_++;
    kv::EncodeScores(step.scores.data(), step.scores.size(), session_.score_dtype, ring_->payload(seq));
    ring_->Publish(seq, Header(step, kv::ScoreDTypeToProto(session_.score_dtype), value_bytes));
    awaiting_.Sent(step.step);
    return absl::OkStatus();
  }

  // The slot header of `step`, its scores as `dtype` (`value_bytes` each).
  static RingStep Header(const OutgoingStep& step, v1::ScoreDType dtype, size_t value_bytes) {
    RingStep header;
    header.step = step.step;
    header.kind = step.kind;
    header.dtype = dtype;
    header.position = step.position;
    header.num_dims = uint32_t(step.shape.size());
    std::copy(step.shape.begin(), step.shape.end(), header.shape);
    header.payload_bytes = step.scores.size() * value_bytes;
    return header;
  }

  // Waits in short slices, checking between them that the cache manager is still connected and the
  // decision deadline has not passed.
  absl::Status WaitForDecision(uint64_t seq) {
    const absl::Duration timeout = stream_.decision_timeout();
    const absl::Time deadline =
        timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : absl::Now() + timeout;
    while (!ring_->WaitDecision(seq, std::min(absl::Milliseconds(100),
                                              std::max(deadline - absl::Now(), absl::ZeroDuration())))) {
      if (absl::Now() >= deadline) {
        if (ring_->WaitDecision(seq, absl::ZeroDuration())) break;
        return stream_.TimedOut();
      }
      const grpc_connectivity_state state = session_.channel->GetState(false);
      if (ring_->closed() || state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN ||
          state == GRPC_CHANNEL_IDLE) {
        if (ring_->WaitDecision(seq, absl::ZeroDuration())) break;  // it did answer before going away
        return stream_.Broken();
      }
    }
    return absl::OkStatus();
  }

  // The decision in slot `seq`, which must answer the step published there. A refusal, a malformed
  // slot or a decision for another step (ProtocolViolation) ends the ring: the slots behind it cannot
  // be matched to their steps any more.
  absl::StatusOr<AnsweredStep> TakeDecision(uint64_t seq) {
    absl::StatusOr<RingAnswer> answer = ring_->ReadDecision(seq);
    if (!answer.ok()) return Break(ProtocolViolation(answer.status().message()));
    if (!answer->refusal.ok()) return Break(answer->refusal);
    if (absl::Status matched = awaiting_.Answered(answer->step); !matched.ok()) return Break(matched);
    return AnsweredStep{answer->step, std::move(answer->decision)};
  }

  // Ends the transport after a refusal or a protocol violation (`why`, returned): later calls fail
  // with UNAVAILABLE. Closing the ring ends an honest cache manager's ring loop; the stream is
  // abandoned (cancelled), so a broken peer that serves on, or never ends the stream, holds nothing.
  absl::Status Break(absl::Status why) {
    ring_->Close();
    stream_.Abandon();
    return why;
  }

  const TransportSession session_;
  std::unique_ptr<ScoreRing> ring_;
  const DeviceScoreExport* device_;  // CUDA IPC accepted; null: scores always in the slot
  SessionStream stream_;
  bool attached_ = false;
  uint64_t ring_published_ = 0, ring_read_ = 0;  // sequence numbers in the ring
  StepsAwaitingDecision awaiting_;  // the step published in each slot not yet read
  UnaryStep unary_;  // a bulk prefill
};

}  // namespace

std::unique_ptr<ScoreTransport> MakeRingTransport(const TransportSession& session, std::unique_ptr<ScoreRing> ring) {
  return std::make_unique<RingTransport>(session, std::move(ring));
}

std::unique_ptr<ScoreTransport> MakeCudaIpcTransport(const TransportSession& session, std::unique_ptr<ScoreRing> ring,
                                                     const DeviceScoreExport* device) {
  return std::make_unique<RingTransport>(session, std::move(ring), device);
}

}  // namespace a2sf::worker
