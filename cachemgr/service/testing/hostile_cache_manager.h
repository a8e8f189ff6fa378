// HostileCacheManager: a CacheManager service for tests of the worker's side of the score streams. It
// serves every call through a real CacheManagerService, but answers the steps it is told to target in
// a way that breaks the protocol (one decision per step, in order, each for its step's session and
// step): on StreamScoreBatches a decision for another session, one for a session the batch never
// named, one missing, one extra, one for another step, or the stream ended after the batch was read;
// on a session's StreamScores (served step by step through the real SubmitStep) one extra decision,
// one for another step, or the stream ended after the step was read; on a session's shared-memory
// ring (given a ring hand-off server: the ring is attached here, the honest service opens the session
// without it, and each slot is served through the real SubmitStep) a decision for another step, a
// malformed one, or the ring closed and the stream ended after the step was read; on a unary
// SubmitStep (how a ring or a batching worker sends a bulk prefill) a decision for another step or a
// malformed one. On every stream and ring, a decision for another step can be followed by the call
// held open until the worker cancels it (kWrongStepThenHold: a peer that never lets go), and so can
// an honest answer (kHoldAfterAnswer: the worker's clean close meets a peer that never ends). Breaches
// that do not apply to a path are served honestly there.
//
// Thread-safety: thread-safe (gRPC calls its handlers on any threads; Target may be called meanwhile).
// Ownership: `honest` and `ring_handoff` are not owned and outlive the service.
#ifndef A2SF_CACHEMGR_SERVICE_TESTING_HOSTILE_CACHE_MANAGER_H_
#define A2SF_CACHEMGR_SERVICE_TESTING_HOSTILE_CACHE_MANAGER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "a2sf/v1/cache_manager.grpc.pb.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cachemgr/service/cache_manager_service.h"
#include "common/grpc/server.h"
#include "common/shm/ring_handoff.h"
#include "common/shm/score_ring.h"

namespace a2sf::cachemgr::testing {

enum class Breach {
  kNone,
  kWrongSession,     // the first two decisions swapped (one step alone: renamed to kUnknownSession's id)
  kUnknownSession,   // the first decision names a session the batch does not carry
  kMissingDecision,  // the last decision left out
  kExtraDecision,    // the first decision sent twice
  kWrongStep,        // the first decision answers another step of its session
  kCutStream,        // the batch is read and the stream ends (OK) without an answer (a ring: closed)
  kMalformed,        // the first decision claims evictions it does not list
  kWrongStepThenHold,  // kWrongStep, then the call is held open -- nothing more read, written or served
                       // (the ring neither) -- until the worker cancels it (or kHoldCap passes)
  kHoldAfterAnswer,    // answered honestly, then the call is held open so, even after the worker's
                       // half-close or closed ring
};
// The longest a call is held: far above what a test waits for the worker to let go.
inline constexpr absl::Duration kHoldCap = absl::Seconds(30);
const char* BreachName(Breach breach);

class HostileCacheManager final : public v1::CacheManager::Service {
 public:
  // `ring_handoff` null: rings are offered to the honest service (which has none, so refuses them).
  explicit HostileCacheManager(CacheManagerService* honest, RingHandoffServer* ring_handoff = nullptr)
      : honest_(honest), ring_handoff_(ring_handoff) {}

  // From now on a batch holding a step for which `targets` is true is answered with `breach`.
  void Target(std::function<bool(const v1::ScoreStep&)> targets, Breach breach);
  // Answers (batches, steps, ring slots) carried out with a breach so far.
  int breaches() const;

  grpc::Status OpenSession(grpc::ServerContext* context, const v1::OpenSessionRequest* request,
                           v1::OpenSessionResponse* response) override;
  grpc::Status CloseSession(grpc::ServerContext* context, const v1::CloseSessionRequest* request,
                            v1::CloseSessionResponse* response) override;
  grpc::Status StreamScores(grpc::ServerContext* context,
                            grpc::ServerReaderWriter<v1::EvictionDecision, v1::ScoreStep>* stream) override;
  grpc::Status SubmitStep(grpc::ServerContext* context, const v1::ScoreStep* request,
                          v1::EvictionDecision* response) override;
  grpc::Status GetSession(grpc::ServerContext* context, const v1::GetSessionRequest* request,
                          v1::SessionInfo* response) override {
    return honest_->GetSession(context, request, response);
  }
  grpc::Status StreamScoreBatches(grpc::ServerContext* context,
                                  grpc::ServerReaderWriter<v1::DecisionBatch, v1::ScoreBatch>* stream) override;

 private:
  // The breach to answer `step` with (kNone when it is not targeted).
  Breach BreachFor(const v1::ScoreStep& step);
  // The breach to answer `batch` with (kNone when none of its steps is targeted).
  Breach BreachFor(const v1::ScoreBatch& batch);
  // Counts `breach` as committed (none for kNone) and returns it: called where it is carried out, so
  // a targeted step the honest service refused is not counted.
  Breach Count(Breach breach);
  // The ring a session was opened with here; null when none.
  std::shared_ptr<ScoreRing> RingOf(const std::string& session_id);
  // Serves the ring of the session `attach` names, slot by slot through the honest SubmitStep, until
  // the worker closes it, the call is cancelled, a step is refused (the ring is then closed) or a
  // kCutStream breach.
  grpc::Status ServeRing(grpc::ServerContext* context, const v1::ScoreStep& attach, ScoreRing* ring);

  CacheManagerService* const honest_;
  RingHandoffServer* const ring_handoff_;
  mutable absl::Mutex mutex_;
  std::map<std::string, std::shared_ptr<ScoreRing>> rings_ ABSL_GUARDED_BY(mutex_);
  std::function<bool(const v1::ScoreStep&)> targets_ ABSL_GUARDED_BY(mutex_);
  Breach breach_ ABSL_GUARDED_BY(mutex_) = Breach::kNone;
  int breaches_ ABSL_GUARDED_BY(mutex_) = 0;
};

// What the worker's tests of a hostile cache manager run against: a SessionManager (a one-thread CPU
// store, the built-in policies), its CacheManagerService on 127.0.0.1:<free port>, and a
// HostileCacheManager over that same service (the same sessions) on another free port, with a ring
// hand-off server of its own on a temporary Unix socket (hostile_ring_socket); plaintext.
// Construction fails the process if a server cannot start (a test cannot test anything then).
class HostileCacheManagerStack {
 public:
  HostileCacheManagerStack();
  ~HostileCacheManagerStack();

  SessionManager* manager() { return manager_.get(); }
  HostileCacheManager* hostile() { return hostile_.get(); }
  RunningServer* honest_server() { return honest_server_.get(); }
  const std::shared_ptr<grpc::Channel>& honest_channel() const { return honest_channel_; }
  const std::shared_ptr<grpc::Channel>& hostile_channel() const { return hostile_channel_; }
  std::string hostile_address() const { return hostile_server_->dial_address(0); }
  // Where a worker offers the hostile cache manager its shared-memory rings (RemotePolicyOptions.ring_socket).
  const std::string& hostile_ring_socket() const { return ring_socket_; }

 private:
  std::unique_ptr<SessionManager> manager_;
  std::unique_ptr<CacheManagerService> service_;
  std::string ring_socket_;
  std::unique_ptr<RingHandoffServer> ring_handoff_;
  std::unique_ptr<HostileCacheManager> hostile_;
  std::unique_ptr<RunningServer> honest_server_;
  std::unique_ptr<RunningServer> hostile_server_;
  std::shared_ptr<grpc::Channel> honest_channel_;
  std::shared_ptr<grpc::Channel> hostile_channel_;
};

}  // namespace a2sf::cachemgr::testing

#endif  // A2SF_CACHEMGR_SERVICE_TESTING_HOSTILE_CACHE_MANAGER_H_
