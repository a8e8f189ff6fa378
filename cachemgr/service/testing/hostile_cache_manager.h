// HostileCacheManager: a CacheManager service for tests of the worker's side of the score streams. It
// serves every call through a real CacheManagerService, but answers the steps it is told to target in
// a way that breaks the protocol (one decision per step, in order, each for its step's session and
// step): on StreamScoreBatches a decision for another session, one for a session the batch never
// named, one missing, one extra, one for another step, or the stream ended after the batch was read;
// on a session's StreamScores (served step by step through the real SubmitStep; no rings) one extra
// decision, one for another step, or the stream ended after the step was read (the other breaches
// do not apply there and are served honestly).
//
// Thread-safety: thread-safe (gRPC calls its handlers on any threads; Target may be called meanwhile).
// Ownership: `honest` is not owned and outlives the service.
#ifndef A2SF_CACHEMGR_SERVICE_TESTING_HOSTILE_CACHE_MANAGER_H_
#define A2SF_CACHEMGR_SERVICE_TESTING_HOSTILE_CACHE_MANAGER_H_

#include <functional>
#include <string>

#include "a2sf/v1/cache_manager.grpc.pb.h"
#include "absl/synchronization/mutex.h"
#include "cachemgr/service/cache_manager_service.h"
#include "common/grpc/server.h"

namespace a2sf::cachemgr::testing {

enum class Breach {
  kNone,
  kWrongSession,     // the first two decisions swapped (one step alone: renamed to kUnknownSession's id)
  kUnknownSession,   // the first decision names a session the batch does not carry
  kMissingDecision,  // the last decision left out
  kExtraDecision,    // the first decision sent twice
  kWrongStep,        // the first decision answers another step of its session
  kCutStream,        // the batch is read and the stream ends (OK) without an answer
  kMalformed,        // the first decision claims evictions it does not list
};
const char* BreachName(Breach breach);

class HostileCacheManager final : public v1::CacheManager::Service {
 public:
  explicit HostileCacheManager(CacheManagerService* honest) : honest_(honest) {}

  // From now on a batch holding a step for which `targets` is true is answered with `breach`.
  void Target(std::function<bool(const v1::ScoreStep&)> targets, Breach breach);
  // Batches answered with a breach so far.
  int breaches() const;

  grpc::Status OpenSession(grpc::ServerContext* context, const v1::OpenSessionRequest* request,
                           v1::OpenSessionResponse* response) override {
    return honest_->OpenSession(context, request, response);
  }
  grpc::Status CloseSession(grpc::ServerContext* context, const v1::CloseSessionRequest* request,
                            v1::CloseSessionResponse* response) override {
    return honest_->CloseSession(context, request, response);
  }
  grpc::Status StreamScores(grpc::ServerContext* context,
                            grpc::ServerReaderWriter<v1::EvictionDecision, v1::ScoreStep>* stream) override;
  grpc::Status SubmitStep(grpc::ServerContext* context, const v1::ScoreStep* request,
                          v1::EvictionDecision* response) override {
    return honest_->SubmitStep(context, request, response);
  }
  grpc::Status GetSession(grpc::ServerContext* context, const v1::GetSessionRequest* request,
                          v1::SessionInfo* response) override {
    return honest_->GetSession(context, request, response);
  }
  grpc::Status StreamScoreBatches(grpc::ServerContext* context,
                                  grpc::ServerReaderWriter<v1::DecisionBatch, v1::ScoreBatch>* stream) override;

 private:
  // The breach to answer `batch` with (kNone when none of its steps is targeted); counts it.
  Breach BreachFor(const v1::ScoreBatch& batch);

  CacheManagerService* const honest_;
  mutable absl::Mutex mutex_;
  std::function<bool(const v1::ScoreStep&)> targets_ ABSL_GUARDED_BY(mutex_);
  Breach breach_ ABSL_GUARDED_BY(mutex_) = Breach::kNone;
  int breaches_ ABSL_GUARDED_BY(mutex_) = 0;
};

// What the worker's tests of a hostile cache manager run against: a SessionManager (a one-thread CPU
// store, the built-in policies), its CacheManagerService on 127.0.0.1:<free port>, and a
// HostileCacheManager over that same service (the same sessions) on another free port; plaintext.
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

 private:
  std::unique_ptr<SessionManager> manager_;
  std::unique_ptr<CacheManagerService> service_;
  std::unique_ptr<HostileCacheManager> hostile_;
  std::unique_ptr<RunningServer> honest_server_;
  std::unique_ptr<RunningServer> hostile_server_;
  std::shared_ptr<grpc::Channel> honest_channel_;
  std::shared_ptr<grpc::Channel> hostile_channel_;
};

}  // namespace a2sf::cachemgr::testing

#endif  // A2SF_CACHEMGR_SERVICE_TESTING_HOSTILE_CACHE_MANAGER_H_
