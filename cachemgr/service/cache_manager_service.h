// The gRPC face of a SessionManager: CacheManager (workers) and PolicyAdmin (operators). Thin: every
// method translates its request, calls the library and translates the answer back.
//
// Streams: one StreamScores stream serves one session. A step that fails ends the stream with the
// step's status and leaves the session as it was (the worker may reconnect and continue, or close
// it). A stream the client cancels or loses frees its session; a stream the client half-closes cleanly
// keeps it until CloseSession or idle expiry.
//
// PolicyAdmin mutations (SetDefaultPolicy, SetSessionPolicy) need "authorization: Bearer <token>"
// when `admin_token` is non-empty: UNAUTHENTICATED without a token, PERMISSION_DENIED with a wrong one.
#ifndef A2SF_CACHEMGR_SERVICE_CACHE_MANAGER_SERVICE_H_
#define A2SF_CACHEMGR_SERVICE_CACHE_MANAGER_SERVICE_H_

#include <atomic>
#include <string>

#include "a2sf/v1/cache_manager.grpc.pb.h"
#include "cachemgr/session/session_manager.h"
#include "prometheus/counter.h"
#include <map>
#include <set>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

#include "common/shm/score_ring.h"

namespace a2sf::cachemgr {

// The cache manager's Prometheus metrics (names prefixed a2sf_cachemgr_).
class CacheManagerMetrics {
 public:
  explicit CacheManagerMetrics(prometheus::Registry* registry);
  // Reads the open sessions by policy and the bytes the score store holds (MetricsServer::OnScrape
  // calls it at every scrape, so swaps, expiries and closes all show).
  void Refresh(const SessionManager& manager);
  void RecordStep(double seconds, uint64_t evictions, uint64_t bytes);
  void RecordError(grpc::StatusCode code);

 private:
  prometheus::Family<prometheus::Gauge>& sessions_;
  prometheus::Gauge& store_bytes_;
  prometheus::Counter& steps_;
  prometheus::Counter& evicted_entries_;
  prometheus::Counter& bytes_received_;
  prometheus::Histogram& step_latency_;
  prometheus::Family<prometheus::Counter>& errors_;
};

class CacheManagerService final : public v1::CacheManager::Service {
 public:
  // `metrics` may be null.
  explicit CacheManagerService(SessionManager* manager, CacheManagerMetrics* metrics = nullptr)
      : manager_(manager), metrics_(metrics) {}

  grpc::Status OpenSession(grpc::ServerContext* context, const v1::OpenSessionRequest* request,
                           v1::OpenSessionResponse* response) override;
  grpc::Status CloseSession(grpc::ServerContext* context, const v1::CloseSessionRequest* request,
                            v1::CloseSessionResponse* response) override;
  grpc::Status StreamScores(grpc::ServerContext* context,
                            grpc::ServerReaderWriter<v1::EvictionDecision, v1::ScoreStep>* stream) override;
  grpc::Status SubmitStep(grpc::ServerContext* context, const v1::ScoreStep* request,
                          v1::EvictionDecision* response) override;
  grpc::Status GetSession(grpc::ServerContext* context, const v1::GetSessionRequest* request,
                          v1::SessionInfo* response) override;

 private:
  // Runs one step of `session_id`; fills `decision`.
  grpc::Status Step(const std::string& session_id, const v1::ScoreStep& step, v1::EvictionDecision* decision);
  // The step itself, for inline and shared-memory scores alike (prompt_length: bulk prefills only).
  absl::StatusOr<StepResult> RunStep(const std::string& session_id, v1::StepKind kind, uint64_t step,
                                     uint64_t position, uint32_t prompt_length, const ScoreView& scores,
                                     uint64_t bytes);
  // Serves a session's steps from its shared-memory ring until the worker closes the ring, a step
  // fails, or the stream is cancelled.
  grpc::Status ServeRing(grpc::ServerContext* context, const std::string& session_id, ScoreRing* ring);
  std::shared_ptr<ScoreRing> RingOf(const std::string& session_id);

  grpc::Status Error(const grpc::Status& status);

  SessionManager* manager_;
  CacheManagerMetrics* metrics_;
  absl::Mutex rings_mutex_;
  std::map<std::string, std::shared_ptr<ScoreRing>> rings_ ABSL_GUARDED_BY(rings_mutex_);
  std::set<std::string> serving_ ABSL_GUARDED_BY(rings_mutex_);  // sessions whose ring a stream serves
};

class PolicyAdminService final : public v1::PolicyAdmin::Service {
 public:
  PolicyAdminService(SessionManager* manager, std::string admin_token)
      : manager_(manager), admin_token_(std::move(admin_token)) {}

  grpc::Status ListPolicies(grpc::ServerContext* context, const v1::ListPoliciesRequest* request,
                            v1::ListPoliciesResponse* response) override;
  grpc::Status GetDefaultPolicy(grpc::ServerContext* context, const v1::GetDefaultPolicyRequest* request,
                                v1::PolicySpec* response) override;
  grpc::Status SetDefaultPolicy(grpc::ServerContext* context, const v1::SetDefaultPolicyRequest* request,
                                v1::PolicySpec* response) override;
  grpc::Status SetSessionPolicy(grpc::ServerContext* context, const v1::SetSessionPolicyRequest* request,
                                v1::SetSessionPolicyResponse* response) override;
  grpc::Status ListSessions(grpc::ServerContext* context, const v1::ListSessionsRequest* request,
                            v1::ListSessionsResponse* response) override;

 private:
  grpc::Status Authorize(const grpc::ServerContext* context) const;

  SessionManager* manager_;
  const std::string admin_token_;
};

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_SERVICE_CACHE_MANAGER_SERVICE_H_
