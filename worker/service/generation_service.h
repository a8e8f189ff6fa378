// GenerationService: the worker's Generation API. Each job gets its own Engine (its KV cache) over the
// shared weights and an eviction policy that runs either in this process or in the cache manager
// (when a channel to one is configured); every running job decodes in the one BatchScheduler loop
// (continuous batching: one forward pass per step for all of them), queued first when the batch or
// the KV memory is full. Tokens stream back as they are produced (the gRPC handler thread writes them,
// so a slow client never stalls the batch), and jobs can be listed, inspected and cancelled.
#ifndef A2SF_WORKER_SERVICE_GENERATION_SERVICE_H_
#define A2SF_WORKER_SERVICE_GENERATION_SERVICE_H_

#include <atomic>
#include <deque>
#include <map>
#include <memory>
#include <string>

#include "a2sf/v1/generation.grpc.pb.h"
#include "absl/synchronization/mutex.h"
#include "worker/model/model.h"
#include "worker/service/batch_scheduler.h"
#include "worker/service/fallback_policy_client.h"
#include "worker/service/job_output.h"
#include "worker/service/job_plan.h"
#include "worker/service/remote_policy_client.h"
#include "worker/service/worker_metrics.h"
#include "worker/tokenizer/tokenizer.h"

namespace a2sf::worker {

struct WorkerOptions {
  const ModelWeights* weights = nullptr;
  const Tokenizer* tokenizer = nullptr;  // may be null: then only token-id prompts are accepted
  std::shared_ptr<grpc::Channel> cache_manager;  // null: policies run in-process
  kv::ScoreDType score_dtype = kv::ScoreDType::kFp16;
  // Pipelined decisions: each job's decision of step t is applied before the token of step t + K + 1
  // (0: synchronous, the policy library's exact semantics). See docs/POLICIES.md.
  uint32_t decision_lag = 0;
  // The cache manager's ring socket (RingSocketPath of its Unix socket, which cache_manager dials):
  // offer it a shared-memory ring for the scores. Empty, or if refused: scores go inline over gRPC.
  std::string ring_socket;
  // With a ring, device == kCuda and decision_lag 0: also offer each job's score buffer on the GPU (CUDA
  // IPC, docs/GPU.md); refused or unavailable, the ring carries the scores as usual.
  bool offer_device_scores = true;
  // Inline scores of all jobs through one shared connection (ScoreBatcher: the steps that coincide
  // travel as one message and are decided as one batch). false: a StreamScores stream per job.
  bool batch_scores = true;
  // When the cache manager becomes unreachable mid-job: false = fail the job with UNAVAILABLE;
  // true = continue it with the same policy in-process (FallbackPolicyClient) and report
  // POLICY_LOCATION_FALLBACK_IN_PROCESS.
  bool fallback_in_process = false;
  // How long a new job waits for an unreachable cache manager to come back before failing.
  absl::Duration cache_manager_wait = absl::Seconds(5);
  // The most a step waits for its decision from the cache manager (RemotePolicyOptions).
  absl::Duration decision_timeout = absl::Seconds(1);
  // Bearer token that may read, list and cancel every job (job_credentials.h); empty: none.
  std::string admin_token;
  v1::PolicySpec default_policy;  // used when a request names none (in-process mode)
  int threads_per_job = 1;  // threads of the batch's forward pass (all jobs share it)
  EngineDevice device = EngineDevice::kCpu;  // kCuda: every job's engine on the GPU
  WeightType kv_type = WeightType::kF32;     // every job's KV cache (EngineOptions::kv_type)
  int max_batch = 16;         // jobs decoding together (sequences per step)
  int max_waiting = 64;       // jobs queued beyond them; RESOURCE_EXHAUSTED beyond
  size_t max_kv_bytes = 0;    // the running jobs' KV reservations together; 0: no limit
  int prefill_chunk = 16;     // prompt tokens a job forwards per step
  std::string worker_name = "worker";
  std::string model_name = "model";  // GetModelInfo's name (and the HTTP API's model id)
  size_t finished_jobs_kept = 256;
  WorkerMetrics* metrics = nullptr;  // optional
};

class GenerationService final : public v1::Generation::Service {
 public:
  explicit GenerationService(WorkerOptions options);

  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                         v1::CancelJobResponse* response) override;
  grpc::Status GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                      v1::JobStatus* response) override;
  grpc::Status ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest* request,
                        v1::ListJobsResponse* response) override;
  grpc::Status GetModelInfo(grpc::ServerContext* context, const v1::GetModelInfoRequest* request,
                            v1::ModelInfo* response) override;

  int running_jobs() const { return scheduler_->running(); }
  int waiting_jobs() const { return scheduler_->waiting(); }
  uint64_t tokens_generated() const { return tokens_generated_.load(); }

 private:
  struct Job;
  // The job's policy: in the cache manager (UNAVAILABLE when unreachable) or in-process.
  RemotePolicyOptions RemoteOptions(const std::string& job_id) const;
  // The batcher the running jobs share; a new one when there is none (all jobs ended) or it broke.
  std::shared_ptr<ScoreBatcher> SharedBatcher() const;
  absl::StatusOr<std::unique_ptr<EvictionPolicyClient>> OpenPolicy(const v1::GenerateRequest& request,
                                                                   const v1::Budget& budget,
                                                                   const std::string& job_id) const;
  v1::JobStats AcceptedStats(const Job& job, const JobPlan& plan, EvictionPolicyClient* policy) const;
  // Engine cache slots the job needs (RequiredCacheCapacity within the context).
  int CacheCapacity(const JobPlan& plan, const EvictionPolicyClient* policy) const;
  // Opens the job's policy and takes its place in the scheduler's queue, then writes `accepted`.
  // Refuses the job (and returns the error) when either fails.
  absl::StatusOr<std::unique_ptr<BatchScheduler::Place>> Admit(const std::shared_ptr<Job>& job, const JobPlan& plan,
                                                               const v1::GenerateRequest& request,
                                                               std::unique_ptr<EvictionPolicyClient>* policy,
                                                               v1::JobStats* stats,
                                                               grpc::ServerWriter<v1::GenerateResponse>* writer);
  // Runs the admitted job in the batch, writing its messages to `writer` as the loop produces them.
  absl::StatusOr<GenerateResult> Run(const std::shared_ptr<Job>& job, const JobPlan& plan, BatchScheduler::Place* place,
                                     EvictionPolicyClient** policy, std::unique_ptr<EvictionPolicyClient>* owned,
                                     JobOutput* output, JobMetrics* job_metrics, grpc::ServerContext* context,
                                     grpc::ServerWriter<v1::GenerateResponse>* writer);
  // The callbacks the loop's thread calls: messages go to the job's outbox.
  GenerateCallbacks Callbacks(Job* job, JobOutput* output, JobMetrics* job_metrics, const Engine* engine,
                              grpc::ServerContext* context);
  // Writes the outbox until the sequence is done; a failed write cancels the job.
  void Stream(Job* job, grpc::ServerWriter<v1::GenerateResponse>* writer);
  // The job's end: its statistics, state and last messages.
  grpc::Status Finish(const std::shared_ptr<Job>& job, const JobPlan& plan, const GenerateResult& result,
                      JobOutput* output, v1::JobStats stats, JobMetrics* job_metrics,
                      grpc::ServerWriter<v1::GenerateResponse>* writer);
  std::shared_ptr<Job> Register(const std::string& requested_id, absl::Status* status);
  // A job that ran to its end (finished, cancelled or failed): kept for GetJob and ListJobs.
  void Retire(const std::shared_ptr<Job>& job);
  // A job refused before it started: forgotten, counted as "rejected".
  void Refuse(const std::shared_ptr<Job>& job);
  grpc::Status Failed(const std::shared_ptr<Job>& job, const absl::Status& error);
  std::shared_ptr<Job> FindJob(const std::string& id);  // null when unknown
  // Null when unknown or when the call may not access it (job_credentials.h).
  std::shared_ptr<Job> FindAuthorizedJob(const grpc::ServerContext* context, const std::string& id,
                                         const std::string& presented_token);

  const WorkerOptions options_;
  std::unique_ptr<BatchScheduler> scheduler_;
  mutable absl::Mutex batcher_mutex_;
  mutable std::weak_ptr<ScoreBatcher> batcher_ ABSL_GUARDED_BY(batcher_mutex_);  // owned by the jobs' clients
  std::atomic<int> running_{0};
  std::atomic<uint64_t> tokens_generated_{0};
  std::atomic<uint64_t> next_job_{1};
  mutable absl::Mutex mutex_;
  std::map<std::string, std::shared_ptr<Job>> jobs_ ABSL_GUARDED_BY(mutex_);
  std::deque<std::string> finished_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_GENERATION_SERVICE_H_
