#include "worker/service/generation_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "cachemgr/policy_library.h"
#include "common/grpc/status.h"
#include "common/log.h"
#include "worker/engine/generator.h"
#include "worker/policy/in_process_policy_client.h"
#include "worker/service/cachemgr_status.h"
#include "worker/service/job_credentials.h"
#include "worker/service/request_validation.h"

namespace a2sf::worker {

struct GenerationService::Job {
  std::string id;
  std::string token = NewJobToken();  // job_credentials.h
  std::atomic<bool> cancel{false};
  absl::Mutex mutex;
  v1::JobStatus status ABSL_GUARDED_BY(mutex);
  // Messages the loop's thread produced, for the handler thread to write.
  absl::Mutex out_mutex;
  std::deque<v1::GenerateResponse> outbox ABSL_GUARDED_BY(out_mutex);
  bool sequence_done ABSL_GUARDED_BY(out_mutex) = false;
};

GenerationService::GenerationService(WorkerOptions options)
    : options_(std::move(options)),
      scheduler_(std::make_unique<BatchScheduler>(
          options_.weights, SchedulerOptions{options_.max_batch, options_.max_waiting, options_.max_kv_bytes,
                                             options_.threads_per_job})) {}

std::shared_ptr<GenerationService::Job> GenerationService::Register(const std::string& requested_id,
                                                                    absl::Status* status) {
  if (requested_id.size() > 128) {
    *status = absl::InvalidArgumentError("job_id: at most 128 characters");
    return nullptr;
  }
  // Ids are logged and listed: printable ASCII only, so no line break, terminal escape or bidi
  // override (ASCII's, or Unicode's C1 and format characters) can forge what an operator reads.
  if (std::any_of(requested_id.begin(), requested_id.end(),
                  [](char c) { return uint8_t(c) < 0x20 || uint8_t(c) > 0x7e; })) {
    *status = absl::InvalidArgumentError("job_id: printable ASCII only (no control characters or other scripts)");
    return nullptr;
  }
  auto job = std::make_shared<Job>();
  absl::MutexLock lock(&mutex_);
  if (requested_id.empty()) {
    // Client-chosen ids share the worker's namespace, and the counter shows in every response: a client
    // that takes the next ids must not make the worker's own jobs (every HTTP request) fail with
    // ALREADY_EXISTS, so taken ids are skipped (jobs_ is bounded: running, queued and the kept finished).
    do {
      job->id = absl::StrCat(options_.worker_name, "-", next_job_++);
    } while (jobs_.count(job->id) != 0);
  } else if (jobs_.count(requested_id) != 0) {
    *status = absl::AlreadyExistsError(absl::StrCat("job_id: '", requested_id, "' is already in use"));
    return nullptr;
  } else {
    job->id = requested_id;
  }
  jobs_[job->id] = job;
  return job;
}

void GenerationService::Retire(const std::shared_ptr<Job>& job) {
  absl::MutexLock lock(&mutex_);
  if (options_.metrics != nullptr) {
    const char* outcome = "failed";
    {
      absl::MutexLock job_lock(&job->mutex);
      if (job->status.state() == v1::JOB_STATE_FINISHED) outcome = "finished";
      if (job->status.state() == v1::JOB_STATE_CANCELLED) outcome = "cancelled";
    }
    options_.metrics->Outcome(outcome);
  }
  finished_.push_back(job->id);
  while (finished_.size() > options_.finished_jobs_kept) {
    jobs_.erase(finished_.front());
    finished_.pop_front();
  }
}

void GenerationService::Refuse(const std::shared_ptr<Job>& job) {
  absl::MutexLock lock(&mutex_);
  jobs_.erase(job->id);
  if (options_.metrics != nullptr) options_.metrics->Rejected();
}

RemotePolicyOptions GenerationService::RemoteOptions(const std::string& job_id) const {
  RemotePolicyOptions remote;
  remote.score_dtype = options_.score_dtype;
  remote.label = absl::StrCat(options_.worker_name, "/", job_id);
  remote.wait_for_cache_manager = options_.cache_manager_wait;
  remote.decision_lag = options_.decision_lag;
  remote.ring_socket = options_.ring_socket;
  remote.decision_timeout = options_.decision_timeout;
  remote.offer_device_scores = options_.offer_device_scores && options_.device == EngineDevice::kCuda;
  if (options_.batch_scores) remote.batcher = SharedBatcher();
  return remote;
}

std::shared_ptr<ScoreBatcher> GenerationService::SharedBatcher() const {
  absl::MutexLock lock(&batcher_mutex_);
  std::shared_ptr<ScoreBatcher> batcher = batcher_.lock();
  if (batcher == nullptr || batcher->broken()) {
    batcher = std::make_shared<ScoreBatcher>(options_.cache_manager, options_.decision_timeout);
    batcher_ = batcher;
  }
  return batcher;
}

absl::StatusOr<std::unique_ptr<EvictionPolicyClient>> GenerationService::OpenPolicy(const v1::GenerateRequest& request,
                                                                                    const v1::Budget& budget,
                                                                                    const std::string& job_id) const {
  const ModelConfig& c = options_.weights->config();
  if (options_.cache_manager != nullptr) {
    absl::StatusOr<std::unique_ptr<RemotePolicyClient>> remote =
        RemotePolicyClient::Open(options_.cache_manager, c, request.has_policy() ? &request.policy() : nullptr, budget,
                           RemoteOptions(job_id));
    if (!remote.ok()) {
      A2SF_LOG(WARNING) << "job " << job_id << ": no cache-manager session: " << remote.status();
      return OpenFailureForClient(remote.status(), options_.cache_manager);
    }
    return std::unique_ptr<EvictionPolicyClient>(std::move(*remote));
  }
  absl::StatusOr<cachemgr::BudgetSpec> spec_budget = cachemgr::FromProto(budget);
  if (!spec_budget.ok()) return spec_budget.status();
  absl::StatusOr<std::unique_ptr<InProcessPolicyClient>> local = InProcessPolicyClient::Create(
      c, cachemgr::FromProto(request.has_policy() ? request.policy() : options_.default_policy), *spec_budget,
      options_.decision_lag);
  if (!local.ok()) return local.status();
  return std::unique_ptr<EvictionPolicyClient>(std::move(*local));
}

v1::JobStats GenerationService::AcceptedStats(const Job& job, const JobPlan& plan, EvictionPolicyClient* policy) const {
  v1::JobStats stats;
  stats.set_job_id(job.id);
  stats.set_prompt_tokens(uint32_t(plan.prompt.size()));
  stats.set_policy_location(options_.cache_manager != nullptr ? v1::POLICY_LOCATION_REMOTE
                                                              : v1::POLICY_LOCATION_IN_PROCESS);
  stats.set_budget_tokens(policy->budget_tokens());
  stats.set_worker(options_.worker_name);
  stats.set_decision_lag(policy->decision_lag());
  stats.set_seed(plan.generate.sampling.seed);
  const RemotePolicyClient* remote = dynamic_cast<RemotePolicyClient*>(policy);
  if (auto* fallback = dynamic_cast<FallbackPolicyClient*>(policy)) remote = fallback->remote();
  if (remote != nullptr) {
    *stats.mutable_policy() = remote->policy();
    stats.set_shared_memory(remote->uses_shared_memory());
    stats.set_session_id(remote->session_id());
  } else if (auto* local = dynamic_cast<InProcessPolicyClient*>(policy)) {
    *stats.mutable_policy() = cachemgr::ToProto(local->session().policy);
  }
  return stats;
}

int GenerationService::CacheCapacity(const JobPlan& plan, const EvictionPolicyClient* policy) const {
  const ModelConfig& c = options_.weights->config();
  const int prompt = int(plan.prompt.size());
  const int max_new_tokens = EffectiveMaxNewTokens(plan.generate, c, prompt);
  return std::min(c.seq_len,
                  std::max(1, RequiredCacheCapacity(policy, prompt, max_new_tokens, plan.generate.bulk_prefill)));
}

absl::StatusOr<std::unique_ptr<BatchScheduler::Place>> GenerationService::Admit(
    const std::shared_ptr<Job>& job, const JobPlan& plan, const v1::GenerateRequest& request,
    std::unique_ptr<EvictionPolicyClient>* policy, v1::JobStats* stats,
    grpc::ServerWriter<v1::GenerateResponse>* writer) {
  // Refused before it starts (policy, budget, cache manager, queue): not a job (see ListJobs).
  absl::StatusOr<std::unique_ptr<EvictionPolicyClient>> opened = OpenPolicy(request, plan.budget, job->id);
  if (!opened.ok()) {
    Refuse(job);
    return opened.status();
  }
  *policy = std::move(*opened);
  const ModelConfig& c = options_.weights->config();
  absl::StatusOr<std::unique_ptr<BatchScheduler::Place>> place = scheduler_->Enqueue(
      KvCacheSlots::BytesFor(c.n_layers, c.n_kv_heads, c.head_dim, CacheCapacity(plan, policy->get()),
                             options_.kv_type));
  if (!place.ok()) {
    Refuse(job);
    return place.status();
  }
  *stats = AcceptedStats(*job, plan, policy->get());
  stats->set_queue_position(uint32_t((*place)->queue_position()));
  {
    absl::MutexLock lock(&job->mutex);
    *job->status.mutable_stats() = *stats;
    job->status.set_state(v1::JOB_STATE_QUEUED);
  }
  v1::GenerateResponse accepted;
  *accepted.mutable_accepted() = *stats;
  accepted.set_job_token(job->token);
  writer->Write(accepted);
  return place;
}

GenerateCallbacks GenerationService::Callbacks(Job* job, JobOutput* output, JobMetrics* job_metrics,
                                               const Engine* engine, grpc::ServerContext* context) {
  GenerateCallbacks callbacks;
  if (output->wants_prompt_logprobs()) {
    callbacks.on_prompt_logits = [output](int position, absl::Span<const float> logits) {
      output->OnPromptLogits(position, logits);
    };
    callbacks.on_prompt_done = [job, output] {  // before the first token; a prompt-only job has none
      v1::GenerateResponse response;
      *response.mutable_prompt_logprobs() = output->prompt_logprobs();
      absl::MutexLock lock(&job->out_mutex);
      job->outbox.push_back(std::move(response));
    };
  }
  callbacks.on_token = [this, job, output, job_metrics, engine, context](const TokenEvent& event) {
    v1::GenerateResponse response;
    absl::MutexLock lock(&job->out_mutex);
    const TokenVerdict verdict = output->OnToken(event, response.mutable_tokens());
    job->outbox.push_back(std::move(response));
    ++tokens_generated_;
    job_metrics->Token(engine->cache().bytes_held());
    if (job->cancel.load() || context->IsCancelled()) return TokenVerdict::kCancel;
    return verdict;
  };
  return callbacks;
}

void GenerationService::Stream(Job* job, grpc::ServerWriter<v1::GenerateResponse>* writer) {
  bool writing = true;
  while (true) {
    std::deque<v1::GenerateResponse> batch;
    bool done;
    {
      absl::MutexLock lock(&job->out_mutex);
      auto ready = [job]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(job->out_mutex) {
        return !job->outbox.empty() || job->sequence_done;
      };
      job->out_mutex.Await(absl::Condition(&ready));
      batch.swap(job->outbox);
      done = job->sequence_done;
    }
    for (const v1::GenerateResponse& response : batch) {
      if (writing && !writer->Write(response)) {
        writing = false;  // the client went away: the loop cancels the job at its next step
        job->cancel.store(true);
      }
    }
    if (done) return;
  }
}

absl::StatusOr<GenerateResult> GenerationService::Run(const std::shared_ptr<Job>& job, const JobPlan& plan,
                                                      BatchScheduler::Place* place, EvictionPolicyClient** policy,
                                                      std::unique_ptr<EvictionPolicyClient>* owned,
                                                      JobOutput* output, JobMetrics* job_metrics,
                                                      grpc::ServerContext* context,
                                                      grpc::ServerWriter<v1::GenerateResponse>* writer) {
  EngineOptions engine_options;
  engine_options.device = options_.device;
  engine_options.kv_type = options_.kv_type;
  engine_options.cache_capacity = CacheCapacity(plan, owned->get());
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options_.weights, engine_options);
  if (!engine.ok()) return engine.status();
  if (auto* remote = dynamic_cast<RemotePolicyClient*>(owned->get())) {
    // CUDA IPC accepted: the engine writes its scores where the cache manager reads them.
    if (absl::Status bound = remote->BindEngine(engine->get()); !bound.ok()) {
      A2SF_LOG(WARNING) << "job " << job->id << ": scores go through the ring: " << bound;
    }
  }
  if (options_.fallback_in_process && options_.cache_manager != nullptr) {
    *owned = std::make_unique<FallbackPolicyClient>(
        std::unique_ptr<RemotePolicyClient>(static_cast<RemotePolicyClient*>(owned->release())), engine->get());
  }
  *policy = owned->get();
  GenerateOptions generate = plan.generate;
  generate.prefill_chunk = std::max(1, options_.prefill_chunk);
  absl::StatusOr<std::unique_ptr<SequenceGeneration>> sequence = SequenceGeneration::Start(
      engine->get(), owned->get(), plan.prompt, generate, Callbacks(job.get(), output, job_metrics, engine->get(), context));
  if (!sequence.ok()) return sequence.status();
  scheduler_->Join(
      place, sequence->get(), [job, context] { return job->cancel.load() || context->IsCancelled(); },
      [job] {
        absl::MutexLock lock(&job->out_mutex);
        job->sequence_done = true;
      });
  Stream(job.get(), writer);
  if (!(*sequence)->status().ok()) return (*sequence)->status();
  return (*sequence)->result();
}

grpc::Status GenerationService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                         grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const ModelConfig& c = options_.weights->config();
  absl::StatusOr<JobPlan> plan = PlanJob(*request, c, options_.tokenizer);
  if (!plan.ok()) return ToGrpc(plan.status());
  absl::Status status;
  std::shared_ptr<Job> job = Register(request->job_id(), &status);
  if (job == nullptr) return ToGrpc(status);
  const absl::Time started = absl::Now();
  JobMetrics job_metrics(options_.metrics);
  std::unique_ptr<EvictionPolicyClient> owned;
  v1::JobStats stats;
  absl::StatusOr<std::unique_ptr<BatchScheduler::Place>> place = Admit(job, *plan, *request, &owned, &stats, writer);
  if (!place.ok()) return ToGrpc(place.status());

  JobOutput output(options_.tokenizer, plan->prompt, plan->stop, plan->logprobs);
  GenerateResult result;
  result.finish_reason = FinishReason::kCancelled;
  const absl::Status admitted = scheduler_->AwaitAdmission(
      place->get(), [&] { return job->cancel.load() || context->IsCancelled(); });
  stats.set_queue_wait_ms(absl::ToDoubleMilliseconds((*place)->waited()));
  if (admitted.ok()) {
    {
      absl::MutexLock lock(&job->mutex);
      job->status.mutable_stats()->set_queue_wait_ms(stats.queue_wait_ms());
      job->status.set_state(v1::JOB_STATE_RUNNING);
    }
    job_metrics.Started(stats.policy().name(), stats.prompt_tokens(), (*place)->waited());
    EvictionPolicyClient* policy = owned.get();
    absl::StatusOr<GenerateResult> ran =
        Run(job, *plan, place->get(), &policy, &owned, &output, &job_metrics, context, writer);
    if (auto* fallback = dynamic_cast<FallbackPolicyClient*>(policy); fallback != nullptr && fallback->fell_back()) {
      stats.set_policy_location(v1::POLICY_LOCATION_FALLBACK_IN_PROCESS);
    }
    owned.reset();  // closes a remote session now rather than at the end of the call
    if (!ran.ok()) return Failed(job, ran.status());
    result = std::move(*ran);
  }
  owned.reset();
  place->reset();
  A2SF_LOG(DEBUG) << "job " << job->id << ": " << result.generated.size() << " tokens in "
                  << absl::ToDoubleMilliseconds(absl::Now() - started) << " ms";
  return Finish(job, *plan, result, &output, std::move(stats), &job_metrics, writer);
}

grpc::Status GenerationService::Finish(const std::shared_ptr<Job>& job, const JobPlan& plan,
                                       const GenerateResult& result, JobOutput* output, v1::JobStats stats,
                                       JobMetrics* job_metrics, grpc::ServerWriter<v1::GenerateResponse>* writer) {
  SetResultStats(options_.weights->config(), options_.kv_type, plan.prompt.size(), result, output->stop_string(),
                 &stats);
  job_metrics->Finished(stats);
  {
    absl::MutexLock lock(&job->mutex);
    *job->status.mutable_stats() = stats;
    job->status.set_state(result.finish_reason == FinishReason::kCancelled ? v1::JOB_STATE_CANCELLED
                                                                         : v1::JOB_STATE_FINISHED);
  }
  Retire(job);
  v1::GenerateResponse finished;
  if (std::string tail = output->Finish(); !tail.empty()) {
    finished.mutable_tokens()->set_text(std::move(tail));
    writer->Write(finished);
    finished.Clear();
  }
  *finished.mutable_finished() = stats;
  writer->Write(finished);
  return grpc::Status::OK;
}

grpc::Status GenerationService::Failed(const std::shared_ptr<Job>& job, const absl::Status& error) {
  {
    absl::MutexLock lock(&job->mutex);
    job->status.set_state(v1::JOB_STATE_FAILED);
    job->status.set_error(std::string(error.message()));
  }
  Retire(job);
  A2SF_LOG(WARNING) << "job " << job->id << " failed: " << error;
  // The cache manager's statuses speak of its internals: the caller gets what it can act on.
  return ToGrpc(options_.cache_manager != nullptr ? MidJobFailureForClient(error) : error);
}

std::shared_ptr<GenerationService::Job> GenerationService::FindJob(const std::string& id) {
  absl::MutexLock lock(&mutex_);
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second;
}

namespace {

// The same answer for an unknown job and a wrong secret: a third party learns nothing of others' jobs.
grpc::Status NoSuchJob() {
  return grpc::Status(grpc::StatusCode::NOT_FOUND, "job_id: no such job, or job_token is not that job's");
}

}  // namespace

std::shared_ptr<GenerationService::Job> GenerationService::FindAuthorizedJob(const grpc::ServerContext* context,
                                                                             const std::string& id,
                                                                             const std::string& presented_token) {
  std::shared_ptr<Job> job = FindJob(id);
  if (job == nullptr || !MayAccessJob(context, options_.admin_token, job->token, presented_token)) return nullptr;
  return job;
}

grpc::Status GenerationService::CancelJob(grpc::ServerContext* context, const v1::CancelJobRequest* request,
                                          v1::CancelJobResponse* response) {
  std::shared_ptr<Job> job = FindAuthorizedJob(context, request->job_id(), request->job_token());
  if (job == nullptr) return NoSuchJob();
  bool running;
  {
    absl::MutexLock lock(&job->mutex);
    const v1::JobState state = job->status.state();
    running = state == v1::JOB_STATE_RUNNING || state == v1::JOB_STATE_QUEUED || state == v1::JOB_STATE_UNSPECIFIED;
    if (running) job->cancel.store(true);
  }
  if (running) scheduler_->Wake();  // a queued job leaves the queue now
  response->set_cancelled(running);
  return grpc::Status::OK;
}

grpc::Status GenerationService::GetJob(grpc::ServerContext* context, const v1::GetJobRequest* request,
                                       v1::JobStatus* response) {
  std::shared_ptr<Job> job = FindAuthorizedJob(context, request->job_id(), request->job_token());
  if (job == nullptr) return NoSuchJob();
  absl::MutexLock lock(&job->mutex);
  *response = job->status;
  return grpc::Status::OK;
}

grpc::Status GenerationService::ListJobs(grpc::ServerContext* context, const v1::ListJobsRequest*,
                                         v1::ListJobsResponse* response) {
  if (!options_.admin_token.empty() && !CallerIsAdmin(context, options_.admin_token)) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "ListJobs needs the worker's admin token ('authorization: Bearer <token>')");
  }
  std::vector<std::shared_ptr<Job>> jobs;
  {
    absl::MutexLock lock(&mutex_);
    for (const auto& [id, job] : jobs_) jobs.push_back(job);
  }
  for (const auto& job : jobs) {
    absl::MutexLock lock(&job->mutex);
    *response->add_jobs() = job->status;
  }
  return grpc::Status::OK;
}

namespace {

// LLaMA-2 chat's prompt format, as Hugging Face's tokenizer_config.json states it (Jinja): a system
// message folded into the first user turn inside <<SYS>>, each user turn in [INST] ... [/INST], each
// answer closed by EOS.
constexpr char kLlama2ChatTemplate[] =
    "{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = false %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}"
    "{% if loop.first and system %}{% set content = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{% endif %}"
    "{% endfor %}";

// Weights of a LLaMA-2 model of this shape: embedding, per layer two norms, q, k, v, o and the three
// FFN matrices, the final norm, and the classifier unless it shares the embedding.
uint64_t ParameterCount(const ModelConfig& c) {
  const uint64_t dim = uint64_t(c.dim);
  const uint64_t per_layer = 2 * dim + dim * c.q_dim() + 2 * dim * c.kv_dim() + uint64_t(c.q_dim()) * dim +
                             3 * dim * c.hidden_dim;
  return uint64_t(c.vocab_size) * dim * (c.shared_classifier ? 1 : 2) + per_layer * c.n_layers + dim;
}

}  // namespace

grpc::Status GenerationService::GetModelInfo(grpc::ServerContext*, const v1::GetModelInfoRequest*,
                                             v1::ModelInfo* response) {
  const ModelConfig& c = options_.weights->config();
  response->set_name(options_.model_name);
  response->set_context_length(uint32_t(c.seq_len));
  response->set_vocab_size(uint32_t(c.vocab_size));
  response->set_dim(uint32_t(c.dim));
  response->set_hidden_dim(uint32_t(c.hidden_dim));
  response->set_num_layers(uint32_t(c.n_layers));
  response->set_num_heads(uint32_t(c.n_heads));
  response->set_num_kv_heads(uint32_t(c.n_kv_heads));
  response->set_head_dim(uint32_t(c.head_dim));
  response->set_rope_theta(c.rope_theta);
  response->set_bos_id(uint32_t(c.bos_id));
  response->set_eos_id(uint32_t(c.eos_id));
  response->set_weight_format(options_.weights->format());
  response->set_parameters(ParameterCount(c));
  if (options_.tokenizer != nullptr) response->set_tokenizer(options_.tokenizer->kind());
  response->set_chat_template(kLlama2ChatTemplate);
  response->set_device(options_.device == EngineDevice::kCuda ? "cuda" : "cpu");
  response->set_kv_type(WeightTypeName(options_.kv_type));
  *response->mutable_default_policy() = options_.default_policy;
  response->set_decision_lag(options_.decision_lag);
  response->set_max_jobs(uint32_t(options_.max_batch));
  response->set_worker(options_.worker_name);
  response->set_remote_policies(options_.cache_manager != nullptr);
  return grpc::Status::OK;
}

}  // namespace a2sf::worker
