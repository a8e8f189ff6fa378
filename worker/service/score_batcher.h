// ScoreBatcher: one worker's connection for the inline scores of all its remote sessions. Steps that
// the sessions' clients submit are kept until one of them needs a decision (its AwaitDecision): then
// everything pending goes as one ScoreBatch message on one StreamScoreBatches stream, and the
// cache manager answers all of them with one DecisionBatch (one store batch there). A scheduler that
// submits the steps of all its sequences before awaiting the first decision gets one message per
// worker step; jobs on their own threads get whatever coincides.
//
// Sessions stay separate: each step carries its session id and secret, and a step the cache manager
// refuses fails only its own session. A deadline missed or a lost connection fails every session
// waiting on the stream (they wait on the same cache manager), and so does an answer that breaks the
// protocol -- not one decision per step, a decision naming another session or step than the one it
// stands for, a malformed decision: such a peer cannot be trusted with any session, so every one on
// the stream fails with UNAVAILABLE naming the violation (their jobs then fail or continue in-process
// as --on_cachemgr_failure says) and the stream is cancelled. The batcher is then broken() and the
// owner makes a new one for later sessions.
//
// Thread-safety: thread-safe; any number of sessions' clients, on any threads, share one batcher.
// Ownership: shared (std::shared_ptr) by the clients of its sessions and its creator.
#ifndef A2SF_WORKER_SERVICE_SCORE_BATCHER_H_
#define A2SF_WORKER_SERVICE_SCORE_BATCHER_H_

#include <deque>
#include <memory>
#include <vector>

#include "a2sf/v1/cache_manager.grpc.pb.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "worker/service/call_watchdog.h"
#include "worker/service/score_transport.h"

namespace a2sf::worker {

class ScoreBatcher {
 public:
  // The stream opens on the first flush. `decision_timeout` bounds each wait for a batch's answer.
  // Queued steps go as soon as they hold `flush_bytes` of scores: large steps (stories110M: 58 KB)
  // then travel while the next ones are encoded and the cache manager decides them meanwhile, small
  // ones (stories260K: 4 KB) still share a message (docs/PERFORMANCE.md, "Batches of sessions").
  static constexpr size_t kDefaultFlushBytes = 64 << 10;
  ScoreBatcher(std::shared_ptr<grpc::Channel> channel, absl::Duration decision_timeout,
               size_t flush_bytes = kDefaultFlushBytes);
  ~ScoreBatcher();
  ScoreBatcher(const ScoreBatcher&) = delete;
  ScoreBatcher& operator=(const ScoreBatcher&) = delete;

  // A session's step waiting for its decision.
  struct Ticket;
  // Queues `step` (session id and secret set) for the next batch. A session's earlier step still
  // queued is flushed first: one batch holds one step per session. Flushes once flush_bytes are queued.
  absl::StatusOr<std::shared_ptr<Ticket>> Submit(v1::ScoreStep step);
  // The decision of `ticket`'s step: flushes the queued steps if it is among them, then waits for
  // its batch's answer.
  absl::StatusOr<AnsweredStep> Await(const std::shared_ptr<Ticket>& ticket);
  // Sends the queued steps now (no-op when none).
  absl::Status Flush();
  // Drops `session_id`'s queued steps (its client is closing).
  void Forget(const std::string& session_id);
  bool broken() const;
  bool timed_out() const;
  // Batches written to the stream and the steps they carried, whether or not they were then answered
  // (what travelled, for statistics and benchmarks; a step refused or lost is not a decision).
  uint64_t batches_sent() const;
  uint64_t steps_sent() const;

 private:
  absl::Status FlushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Reads one DecisionBatch (mutex_ released meanwhile) and hands its decisions to their tickets.
  void ReadOneBatch() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // The answers of `tickets` (the oldest batch in flight) in `batch`: a step the cache manager refused
  // fails alone with its status. UNAVAILABLE naming the violation when the answer breaks the protocol
  // (not one decision per step, a decision naming another session or step, a malformed decision).
  static absl::StatusOr<std::vector<absl::StatusOr<AnsweredStep>>> AnswersOf(
      const v1::DecisionBatch& batch, const std::vector<std::shared_ptr<Ticket>>& tickets);
  // Fails every ticket in flight and marks the batcher broken.
  void Break(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);
  // Why the stream failed (StreamEndStatus), after finishing it unless a read is in progress.
  absl::Status FinishedStatus() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_);

  std::unique_ptr<v1::CacheManager::Stub> stub_;
  const absl::Duration decision_timeout_;
  const size_t flush_bytes_;
  mutable absl::Mutex mutex_;
  absl::CondVar answered_;
  grpc::ClientContext context_;
  // The writer (under mutex_) and the one reader (reading_) each bound their own operation.
  CallWatchdog write_watchdog_;
  CallWatchdog read_watchdog_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ScoreBatch, v1::DecisionBatch>> stream_ ABSL_GUARDED_BY(mutex_);
  v1::ScoreBatch queued_ ABSL_GUARDED_BY(mutex_);
  size_t queued_bytes_ ABSL_GUARDED_BY(mutex_) = 0;
  std::vector<std::shared_ptr<Ticket>> queued_tickets_ ABSL_GUARDED_BY(mutex_);
  std::deque<std::vector<std::shared_ptr<Ticket>>> in_flight_ ABSL_GUARDED_BY(mutex_);  // oldest first
  bool reading_ ABSL_GUARDED_BY(mutex_) = false;
  absl::Status broken_ ABSL_GUARDED_BY(mutex_);
  bool timed_out_ ABSL_GUARDED_BY(mutex_) = false;
  bool finished_ ABSL_GUARDED_BY(mutex_) = false;  // stream_->Finish was called
  uint64_t batches_sent_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t steps_sent_ ABSL_GUARDED_BY(mutex_) = 0;
};

// A ScoreTransport for one session over a shared ScoreBatcher.
std::unique_ptr<ScoreTransport> MakeBatchedTransport(const TransportSession& session,
                                                     std::shared_ptr<ScoreBatcher> batcher);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_SCORE_BATCHER_H_
