// ScoreTransport: how one remote session's steps travel to the cache manager and its decisions come
// back. RemotePolicyClient opens the session and picks one transport when the session opens; it then
// only calls Send, Await and Close (each transport keeps its own steps in flight):
//   - MakeGrpcTransport: each step is a StreamScores message, each decision the answer message;
//   - MakeBatchedTransport (score_batcher.h): the steps of all the worker's sessions that coincide
//     travel as one StreamScoreBatches message and are decided as one batch;
//   - MakeRingTransport: steps and decisions go through a shared-memory ScoreRing the cache manager
//     accepted at OpenSession (OfferRing), the stream only attaches the ring and carries the end
//     status. A bulk prefill (larger decisions than a slot holds) goes as one unary SubmitStep
//     (UnaryStep, as on the batched transport);
//   - MakeCudaIpcTransport: the ring, and the scores of a token step stay on the GPU: the cache
//     manager accepted the worker's exported score buffer at OpenSession (DeviceScoreExport), the
//     engine writes each step's scores there, and the ring slot carries only the step header
//     (kRingStepKindDeviceToken). A step whose scores are not the bound engine's latest (no engine
//     bound yet) goes as on the plain ring; a bulk prefill goes as one unary SubmitStep.
// Failures: UNAVAILABLE when the cache manager went away, DEADLINE_EXCEEDED when it did not answer
// within the decision deadline (the call is then cancelled), the cache manager's own status when it
// refused a step, UNAVAILABLE "the cache manager broke the protocol: ..." (ProtocolViolation) when a
// decision is malformed or answers another step than the oldest sent -- on every transport, by one
// rule (CheckAnsweredStep; StepsAwaitingDecision keeps a transport's steps sent). After any failure
// the transport is broken: its call is cancelled (the cache manager frees the session when it sees
// that), nothing more is read from a peer that may never stop sending, and later calls fail at once
// with UNAVAILABLE (TransportBrokenError).
//
// Thread-safety: not thread-safe; one job (one thread) uses a transport.
// Ownership: a transport owns its stream and ring; the channel and stub are shared (TransportSession).
#ifndef A2SF_WORKER_SERVICE_SCORE_TRANSPORT_H_
#define A2SF_WORKER_SERVICE_SCORE_TRANSPORT_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "a2sf/v1/cache_manager.grpc.pb.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/kv/score_dtype.h"
#include "common/shm/score_ring.h"
#include "grpcpp/grpcpp.h"
#include "worker/engine/generator.h"
#include "worker/service/call_watchdog.h"
#include "worker/service/device_score_export.h"

namespace a2sf::worker {

// What every transport of one session shares: the session's credentials and the connection.
struct TransportSession {
  std::string session_id;
  std::string session_secret;  // presented with the session's first message and with unary calls
  std::shared_ptr<grpc::Channel> channel;
  v1::CacheManager::Stub* stub = nullptr;  // not owned; outlives the transport
  kv::ScoreDType score_dtype = kv::ScoreDType::kFp16;
  // The most one step may wait for its decision; InfiniteDuration: no deadline.
  absl::Duration decision_timeout = absl::InfiniteDuration();
};

// One step as the engine hands it over. `shape` is [L, H, entries] for a token step, [L, H, P, P]
// for a bulk prefill.
struct OutgoingStep {
  uint64_t step = 0;
  v1::StepKind kind = v1::STEP_KIND_TOKEN;
  uint32_t position = 0;
  absl::Span<const float> scores;
  std::vector<uint32_t> shape;
};

// A decision as it came back, with the step number the cache manager says it answers.
struct AnsweredStep {
  uint64_t step = 0;
  EvictionDecision decision;
};

// What a transport fails a step with when the cache manager broke the protocol (`why`: a decision it
// cannot decode, one for another step, a batch that does not match its steps): UNAVAILABLE "the cache
// manager broke the protocol: <why>". The session is lost as with a dropped connection (the job fails
// or continues in-process, as --on_cachemgr_failure says), not refused: the peer's own refusals keep
// their codes, DATA_LOSS included.
absl::Status ProtocolViolation(absl::string_view why);

// The rule every transport matches a decision to its step by: decisions come back in the order the
// steps were sent, each naming the step it answers. OK when `answered` is `asked`, else
// ProtocolViolation "it answered step <answered> to step <asked>".
absl::Status CheckAnsweredStep(uint64_t asked, uint64_t answered);

// The steps one transport has sent whose decisions have not come back, oldest first, each decision
// checked against its step by CheckAnsweredStep.
// Thread-safety: not thread-safe (its transport's thread).
class StepsAwaitingDecision {
 public:
  void Sent(uint64_t step) { steps_.push_back(step); }
  bool empty() const { return steps_.empty(); }
  // The oldest step's decision came back saying it answers `answered`: the step leaves (either way)
  // and the check's status is returned. REQUIRES: !empty().
  absl::Status Answered(uint64_t answered);

 private:
  std::deque<uint64_t> steps_;
};

// What Send and Await of a broken transport fail with: UNAVAILABLE, at once.
absl::Status TransportBrokenError();

class ScoreTransport {
 public:
  virtual ~ScoreTransport() = default;
  // Hands over one step; its decision comes from a later Await (in order).
  virtual absl::Status Send(const OutgoingStep& step) = 0;
  // The decision of the oldest step sent and not yet awaited.
  virtual absl::StatusOr<AnsweredStep> Await() = 0;
  // Ends the transport; decisions may still be travelling (they are drained, not used). Returns false
  // when the cache manager missed a deadline (then the session is not worth closing: it frees the
  // session itself when it sees the cancelled call).
  virtual bool Close() = 0;
  virtual bool shared_memory() const = 0;
  // True when token steps' scores stay on the GPU (MakeCudaIpcTransport).
  virtual bool device_scores() const { return false; }
};

std::unique_ptr<ScoreTransport> MakeGrpcTransport(const TransportSession& session);
std::unique_ptr<ScoreTransport> MakeRingTransport(const TransportSession& session, std::unique_ptr<ScoreRing> ring);
// `device` (not owned) outlives the transport.
std::unique_ptr<ScoreTransport> MakeCudaIpcTransport(const TransportSession& session, std::unique_ptr<ScoreRing> ring,
                                                     const DeviceScoreExport* device);

// Creates a ring sized for `seq_len` entries per head and `decision_lag` decisions in flight, hands
// its descriptor over `ring_socket` and describes it in `offer`. Errors leave no ring (the caller
// then sends inline).
absl::StatusOr<std::unique_ptr<ScoreRing>> OfferRing(const std::string& ring_socket, uint32_t heads,
                                                     uint32_t seq_len, kv::ScoreDType score_dtype,
                                                     uint32_t decision_lag, v1::SharedMemoryRing* offer);

// Packs `scores` into `tensor` with `shape` in the session's score dtype (kv::EncodeScores).
void EncodeScoreTensor(kv::ScoreDType dtype, absl::Span<const float> scores, absl::Span<const uint32_t> shape,
                       v1::ScoreTensor* tensor);

// `step` as the wire's message, its scores in the session's dtype; `with_credentials`: the session's
// id and secret too (every unary or batched step, a stream's first).
v1::ScoreStep StepMessage(const TransportSession& session, const OutgoingStep& step, bool with_credentials);

// A prompt's bulk prefill step as one unary SubmitStep within the decision deadline. Its decision
// evicts many entries per head (more than a ring slot holds) and its P x P scores take the store a
// while, so on the ring and the batched transports it travels apart from the ring and from the
// shared batch of the other sessions' steps. Send makes the call; its outcome waits for the
// transport's next Await (Take), where every transport reports its decisions' failures: the
// decision, decoded and matched to its step by CheckAnsweredStep (ProtocolViolation when it is
// malformed or answers another step), or the call's failure (DEADLINE_EXCEEDED past the decision
// deadline, the cache manager's refusal with its own code).
// Thread-safety: not thread-safe (its transport's thread).
class UnaryStep {
 public:
  void Send(const TransportSession& session, const OutgoingStep& step);
  bool answered() const { return answer_.has_value(); }
  // The outcome of the step sent, once. REQUIRES: answered().
  absl::StatusOr<AnsweredStep> Take();

 private:
  std::optional<absl::StatusOr<AnsweredStep>> answer_;
};

// Why a score stream (StreamScores, StreamScoreBatches) ended, one rule for every transport:
// DEADLINE_EXCEEDED naming --decision_timeout_ms when the cache manager missed the decision deadline
// (`timed_out`); UNAVAILABLE when it closed the stream (OK) or the call was cancelled; otherwise the
// stream's own status (UNAVAILABLE for transport failures; the cache manager's errors keep their code).
absl::Status StreamEndStatus(bool timed_out, absl::Duration decision_timeout, const grpc::Status& finished);

// The StreamScores call both transports hold: writes and reads bounded by the decision deadline, and
// one place that turns its end into a status.
class SessionStream {
 public:
  // How long ending the stream reads what the peer still sends when there is no decision deadline
  // (--decision_timeout_ms=0): an honest cache manager ends the stream within milliseconds of the
  // half-close; one that never does is cancelled, not waited for.
  static constexpr absl::Duration kDrainGrace = absl::Seconds(2);

  SessionStream(v1::CacheManager::Stub* stub, absl::Duration decision_timeout);
  ~SessionStream();
  bool Write(const v1::ScoreStep& message);  // false: the stream is gone (call Broken)
  bool Read(v1::EvictionDecision* decision);
  // Ends the stream and says why: DEADLINE_EXCEEDED after a missed deadline, UNAVAILABLE for a lost
  // or closed stream, the cache manager's own status otherwise. What the peer still sends is read
  // first, within the decision deadline or kDrainGrace.
  absl::Status Broken();
  absl::Status TimedOut();  // cancels the call of a cache manager that did not answer in time
  // Ends the stream after a failure whose end status is not needed (a refusal, a protocol violation):
  // cancels the call and finishes it at once -- nothing more is read from a peer that may never stop
  // sending or never end the stream. The cache manager frees the session when it sees the cancelled
  // call. broken() from then on.
  void Abandon();
  // A clean end: half-closes, reads every decision still travelling (however many the peer sends)
  // and finishes, all within the decision deadline, or kDrainGrace when there is none (past it the
  // call is cancelled). False when the deadline or the grace passed (the cache manager frees the
  // session when it sees the cancelled call).
  bool Close();
  bool broken() const { return broken_; }
  absl::Duration decision_timeout() const { return decision_timeout_; }

 private:
  // Reads what the peer still sends and finishes the call (after a half-close when `half_close`),
  // within the decision deadline, or kDrainGrace without one.
  grpc::Status DrainAndFinish(bool half_close);

  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ScoreStep, v1::EvictionDecision>> stream_;
  CallWatchdog watchdog_;
  absl::Duration decision_timeout_;
  bool broken_ = false;
  bool timed_out_ = false;
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_SCORE_TRANSPORT_H_
