// The gRPC face of a SessionManager: CacheManager (workers) and PolicyAdmin (operators). Thin: every
// method translates its request, calls the library and translates the answer back.
//
// Streams: one StreamScores stream serves one session. A step that fails ends the stream with the
// step's status and leaves the session as it was (the worker may reconnect and continue, or close
// it). A stream the client cancels or loses frees its session; a stream the client half-closes cleanly
// keeps it until CloseSession or idle expiry.
//
// Credentials (docs/SECURITY.md): every call on a session (CloseSession, GetSession, SubmitStep,
// StreamScores) presents the secret OpenSession returned; NOT_FOUND for an unknown session,
// PERMISSION_DENIED for a missing or wrong secret. PolicyAdmin mutations (SetDefaultPolicy,
// SetSessionPolicy) and ListSessions need "authorization: Bearer <token>" when `admin_token` is
// non-empty: UNAUTHENTICATED without a token, PERMISSION_DENIED with a wrong one.
//
// Limits: sessions per peer (SessionManagerOptions), concurrent score streams (StreamScores and
// StreamScoreBatches) in all (max_streams) and per peer (max_streams_per_peer, the peer as PeerIdentity
// names it), each RESOURCE_EXHAUSTED beyond it, and how long a stream may sit without a message or a
// ring step (stream_idle_timeout: then it is cancelled, which frees its session), so idle streams cannot
// hold every server thread and one peer cannot hold every stream. A stream's place is freed when its
// handler returns, however it ended (finished, cancelled, disconnected, idle).
#ifndef A2SF_CACHEMGR_SERVICE_CACHE_MANAGER_SERVICE_H_
#define A2SF_CACHEMGR_SERVICE_CACHE_MANAGER_SERVICE_H_

#include <atomic>
#include <string>

#include "a2sf/v1/cache_manager.grpc.pb.h"
#include "cachemgr/service/device_scores.h"
#include "cachemgr/session/session_manager.h"
#include "prometheus/counter.h"
#include <map>
#include <set>
#include <memory>

#include "absl/synchronization/mutex.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

#include "common/shm/ring_handoff.h"
#include "common/shm/score_ring.h"
#include <thread>
#include "absl/synchronization/notification.h"

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

struct CacheManagerServiceOptions {
  CacheManagerMetrics* metrics = nullptr;     // may be null
  RingHandoffServer* ring_handoff = nullptr;  // null: shared-memory rings are refused
  size_t max_streams = 256;                   // concurrent score streams (0: unbounded)
  size_t max_streams_per_peer = 128;          // concurrent score streams of one peer (0: only max_streams)
  absl::Duration stream_idle_timeout = absl::Seconds(120);  // 0: never
};

// The identity sessions and streams are counted under for --max_sessions_per_peer and
// --max_streams_per_peer: the authenticated TLS identity if any, else the peer's address without its
// port ("unix:" for every local process).
std::string PeerIdentity(const grpc::ServerContext& context);

class CacheManagerService final : public v1::CacheManager::Service {
 public:
  explicit CacheManagerService(SessionManager* manager, CacheManagerServiceOptions options = {});
  ~CacheManagerService() override;

  grpc::Status OpenSession(grpc::ServerContext* context, const v1::OpenSessionRequest* request,
                           v1::OpenSessionResponse* response) override;
  grpc::Status CloseSession(grpc::ServerContext* context, const v1::CloseSessionRequest* request,
                            v1::CloseSessionResponse* response) override;
  grpc::Status StreamScores(grpc::ServerContext* context,
                            grpc::ServerReaderWriter<v1::EvictionDecision, v1::ScoreStep>* stream) override;
  grpc::Status SubmitStep(grpc::ServerContext* context, const v1::ScoreStep* request,
                          v1::EvictionDecision* response) override;
  grpc::Status StreamScoreBatches(grpc::ServerContext* context,
                                  grpc::ServerReaderWriter<v1::DecisionBatch, v1::ScoreBatch>* stream) override;

  // Decides one batch (StreamScoreBatches' loop body): authorises each step's session, runs the token
  // steps as one store batch, fills one SessionDecision per step (a step that fails fails alone, with
  // its code and message). `served` collects the sessions whose secret a step presented. Fails as a
  // whole (INVALID_ARGUMENT, which ends the stream) only for more than kMaxBatchSteps steps. Public so
  // that a harness can drive batches in-process.
  static constexpr int kMaxBatchSteps = 4096;
  grpc::Status ServeBatch(const v1::ScoreBatch& batch, v1::DecisionBatch* answer, std::set<std::string>* served);
  grpc::Status GetSession(grpc::ServerContext* context, const v1::GetSessionRequest* request,
                          v1::SessionInfo* response) override;

  // Score streams admitted and not yet ended, in all and of one peer (a PeerIdentity).
  size_t open_streams() const;
  size_t open_streams(const std::string& peer) const;

  // One step of `session_id` from slot `seq` of its ring: checks what the slot says, decides, writes
  // the decision (or the error) into the slot and completes it. The stream handler's loop body;
  // public so that the fuzz harness can drive ring slots in-process.
  absl::Status ServeRingStep(const std::string& session_id, ScoreRing* ring, uint64_t seq);

 private:
  // Checks one step of a batch and, when it is a token step that may run, appends it to `tokens`; a
  // bulk prefill runs at once. Returns the step's error (OK: decided now, or queued in `tokens`).
  absl::Status AdmitBatchStep(const v1::ScoreStep& step, v1::SessionDecision* decision,
                              std::vector<SessionManager::BatchedStep>* tokens, std::set<std::string>* served);
  // Runs one step of `session_id`; fills `decision`.
  grpc::Status Step(const std::string& session_id, const v1::ScoreStep& step, v1::EvictionDecision* decision);
  // The step itself, for inline and shared-memory scores alike (prompt_length: bulk prefills only).
  absl::StatusOr<StepResult> RunStep(const std::string& session_id, v1::StepKind kind, uint64_t step,
                                     uint32_t position, uint32_t prompt_length, const ScoreView& scores,
                                     uint64_t bytes);
  // Serves a session's steps from its shared-memory ring until the worker closes the ring, a step
  // fails, or the stream is cancelled.
  grpc::Status ServeRing(grpc::ServerContext* context, const std::string& session_id, ScoreRing* ring,
                         std::atomic<int64_t>* last_active_ns);
  std::shared_ptr<ScoreRing> RingOf(const std::string& session_id);
  std::shared_ptr<const DeviceScores> DeviceScoresOf(const std::string& session_id);
  // Drops a session's ring and device buffer (closed, or its stream cut).
  void ForgetRing(const std::string& session_id);
  // The scores a ring slot names: in the slot, or in the session's device buffer (`in_use` then keeps
  // that buffer open until the caller has read it, even if the session closes meanwhile).
  absl::StatusOr<ScoreView> RingStepScores(const std::string& session_id, const ScoreRing& ring, uint64_t seq,
                                           const RingStep& step, std::shared_ptr<const DeviceScores>* in_use);
  // The messages of an admitted stream; sets `session_id` once the first message authorised it.
  grpc::Status ServeStream(grpc::ServerContext* context,
                           grpc::ServerReaderWriter<v1::EvictionDecision, v1::ScoreStep>* stream,
                           std::atomic<int64_t>* last_active_ns, std::string* session_id);
  // Serves the session's steps from its shared-memory ring (the stream's attach message).
  grpc::Status AttachRing(grpc::ServerContext* context, const std::string& session_id,
                          std::atomic<int64_t>* last_active_ns);

  grpc::Status Error(const grpc::Status& status);
  // Frees a session whose stream was cut (the worker is gone: nobody will close it).
  void FreeCutSession(const std::string& session_id);
  // The ring a request offers, mapped; null when it offers none. On an error, `refusal` says which
  // kind of refusal it is (for OpenSessionRequest.ring_optional).
  absl::StatusOr<std::shared_ptr<ScoreRing>> AttachOfferedRing(const grpc::ServerContext& context,
                                                               const v1::OpenSessionRequest& request,
                                                               v1::RingRefusal::Reason* refusal);
  // Admits a new score stream (RESOURCE_EXHAUSTED past max_streams or its peer's max_streams_per_peer)
  // and tracks its activity. `last_active_ns` lives in the handler's frame until ForgetStream; the
  // handler stores into it (no lock per step), the reaper reads it. Every admitted stream's handler
  // calls ForgetStream before it returns.
  grpc::Status AdmitStream(grpc::ServerContext* context, std::atomic<int64_t>* last_active_ns);
  void ForgetStream(grpc::ServerContext* context);
  void CancelIdleStreams();  // runs on reaper_

  SessionManager* manager_;
  const CacheManagerServiceOptions options_;
  CacheManagerMetrics* metrics_;
  struct OpenStream {
    std::atomic<int64_t>* last_active_ns;
    std::string peer;  // PeerIdentity
  };
  mutable absl::Mutex streams_mutex_;
  std::map<grpc::ServerContext*, OpenStream> streams_ ABSL_GUARDED_BY(streams_mutex_);
  std::map<std::string, size_t> streams_per_peer_ ABSL_GUARDED_BY(streams_mutex_);  // no zero counts
  absl::Notification stop_reaper_;
  std::thread reaper_;
  absl::Mutex rings_mutex_;
  std::map<std::string, std::shared_ptr<ScoreRing>> rings_ ABSL_GUARDED_BY(rings_mutex_);
  std::set<std::string> serving_ ABSL_GUARDED_BY(rings_mutex_);  // sessions whose ring a stream serves
  // Sessions whose worker shares its score buffer on the GPU (OpenSessionRequest.device_scores).
  std::map<std::string, std::shared_ptr<const DeviceScores>> device_scores_ ABSL_GUARDED_BY(rings_mutex_);
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
