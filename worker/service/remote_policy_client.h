// RemotePolicyClient: an EvictionPolicyClient whose policy runs in the cache manager. It opens a session,
// keeps one StreamScores stream for it, sends each step's scores (fp16 by default, fp32 on request)
// and waits for the decision before the next token (synchronous mode: the exact semantics of the
// policy library), or, opened with a decision lag K, lets up to K + 1 decisions travel while the engine
// computes (pipelined mode; the session runs the same rules in the cache manager, so the tokens equal
// an in-process pipelined run's). Co-located with the cache manager, it can hand the scores over in a
// shared-memory ring instead of gRPC messages (ScoreRing); the stream then only attaches the ring and
// tells when the cache manager is gone. If the cache manager goes away, steps fail with UNAVAILABLE;
// if it stays connected but does not answer a step within the decision deadline (stopped, overloaded),
// the stream is cancelled and the step fails with DEADLINE_EXCEEDED.
// How the steps travel is a ScoreTransport (score_transport.h), chosen once when the session opens:
// CUDA IPC (the scores stay on the GPU, the ring carries headers) when it was offered and the cache
// manager took it, else the ring when the cache manager took that, else inline gRPC. The transport
// (and with it a stream to the cache manager) is made at the first step, so a job waiting in the
// worker's queue holds its session but no stream. RemotePolicyClient keeps the session (open,
// credentials, close) and the step bookkeeping.
// Not thread-safe: one generation job uses it.
#ifndef A2SF_WORKER_SERVICE_REMOTE_POLICY_CLIENT_H_
#define A2SF_WORKER_SERVICE_REMOTE_POLICY_CLIENT_H_

#include <memory>
#include <string>

#include "a2sf/v1/cache_manager.grpc.pb.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "worker/engine/generator.h"
#include "worker/service/score_batcher.h"
#include "worker/service/score_transport.h"

namespace a2sf::worker {

struct RemotePolicyOptions {
  kv::ScoreDType score_dtype = kv::ScoreDType::kFp16;  // how the scores travel
  std::string label;  // for the cache manager's logs
  // How long opening waits for an unreachable cache manager (gRPC reconnects with backoff).
  absl::Duration wait_for_cache_manager = absl::Seconds(5);
  uint32_t decision_lag = 0;
  // The cache manager's ring socket (RingSocketPath of its Unix socket; empty: no ring). When set, a
  // shared-memory ring is offered for the scores: its sealed segment is handed over on this socket and
  // the session opened over the Unix socket. If it cannot be created or handed over, or the cache
  // manager refuses it (OpenSessionResponse.ring_refusal), scores go inline over gRPC.
  std::string ring_socket;
  // The most one step may wait for its decision (and one score message for the stream to take it);
  // InfiniteDuration: no deadline. See --decision_timeout_ms in worker_main.cc for the default.
  absl::Duration decision_timeout = absl::Seconds(1);
  // With a ring and decision_lag 0: also offer a score buffer on the GPU (CUDA IPC; the job's engine
  // must run there and be bound with BindEngine). Without a GPU nothing is offered; refused (another
  // GPU, a CPU store, ...), the reason is logged and the ring carries the scores.
  bool offer_device_scores = false;
  // The worker's shared connection for inline scores: the steps of all its sessions travel together,
  // one message per worker step (score_batcher.h). Null: a StreamScores stream of this session's own.
  std::shared_ptr<ScoreBatcher> batcher;
};

class RemotePolicyClient final : public EvictionPolicyClient {
 public:
  // Opens the session (the cache manager validates policy and budget). `policy` unset: its default.
  // While the cache manager is unreachable the call waits, up to `wait_for_cache_manager`, for the
  // channel to reconnect (gRPC reconnects with exponential backoff), then fails with UNAVAILABLE or
  // DEADLINE_EXCEEDED.
  static absl::StatusOr<std::unique_ptr<RemotePolicyClient>> Open(std::shared_ptr<grpc::Channel> channel,
                                                            const ModelConfig& model,
                                                            const v1::PolicySpec* policy, const v1::Budget& budget,
                                                            const RemotePolicyOptions& options);
  ~RemotePolicyClient() override;  // half-closes the stream and closes the session

  absl::StatusOr<EvictionDecision> Step(uint64_t step, uint32_t position, absl::Span<const float> scores) override;
  absl::Status SubmitStep(uint64_t step, uint32_t position, absl::Span<const float> scores) override;
  absl::StatusOr<EvictionDecision> AwaitDecision() override;
  uint32_t decision_lag() const override { return decision_lag_; }
  absl::StatusOr<EvictionDecision> BulkPrefill(uint32_t first_position, uint32_t prompt_length,
                                               absl::Span<const float> scores) override;
  uint32_t budget_tokens() const override { return budget_tokens_; }
  bool evicts() const override { return policy_evicts_; }
  const v1::PolicySpec& policy() const { return policy_; }
  const std::string& session_id() const { return session_id_; }
  // True when scores travel through a shared-memory ring.
  bool uses_shared_memory() const { return route_ == Route::kDevice || route_ == Route::kRing; }
  // True when the cache manager took the GPU score buffer (CUDA IPC): token steps' scores stay there.
  bool uses_device_scores() const;
  // Makes `engine` (on the GPU) write its scores into the accepted device buffer; until then, or if
  // this fails (a CPU engine: FAILED_PRECONDITION), steps go through the ring as usual. OK and a no-op
  // when no device buffer was accepted.
  absl::Status BindEngine(Engine* engine);
  // Steps submitted whose decision has not been read (including one whose read just failed).
  size_t steps_in_flight() const { return steps_in_flight_; }

 private:
  RemotePolicyClient() = default;
  // Opens the session and picks the transport: the ring when one was offered and not refused.
  absl::Status OpenSession(const v1::OpenSessionRequest& request, std::unique_ptr<ScoreRing> ring,
                           const RemotePolicyOptions& options);
  // The route the answer allows: CUDA IPC, else the ring, else inline gRPC (through the worker's
  // shared `batcher` when there is one); refusals logged. Transport() makes it at the first step.
  void ChooseTransport(const v1::OpenSessionResponse& response, const TransportSession& session,
                       std::unique_ptr<ScoreRing> ring, std::shared_ptr<ScoreBatcher> batcher);
  // Creates the GPU score buffer and describes it in `request` (offer_device_scores with a ring and
  // lag 0); logs why not otherwise.
  void OfferDeviceScores(const RemotePolicyOptions& options, v1::OpenSessionRequest* request);
  absl::Status Send(uint64_t step, v1::StepKind kind, uint32_t position, absl::Span<const float> scores,
                    std::vector<uint32_t> shape);
  // The chosen route's transport, made at the first call.
  ScoreTransport* Transport();

  std::unique_ptr<v1::CacheManager::Stub> stub_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<DeviceScoreExport> device_export_;  // offered; kept only when accepted
  enum class Route { kDevice, kRing, kBatched, kGrpc };
  Route route_ = Route::kGrpc;
  TransportSession transport_session_;       // what Transport() makes the transport with
  std::unique_ptr<ScoreRing> ring_;           // until the ring or CUDA IPC transport takes it
  std::shared_ptr<ScoreBatcher> batcher_;     // until the batched transport takes it
  std::unique_ptr<ScoreTransport> transport_;  // null until the first step
  ModelConfig model_;
  std::string session_id_;
  std::string session_secret_;  // presented with every call on the session
  bool policy_evicts_ = true;   // from the cache manager's policy itself (OpenSessionResponse)
  v1::PolicySpec policy_;
  uint32_t budget_tokens_ = 0;
  uint32_t decision_lag_ = 0;
  size_t steps_in_flight_ = 0;  // steps sent whose decision has not been read (the transport knows which)
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_REMOTE_POLICY_CLIENT_H_
