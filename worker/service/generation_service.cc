#include "worker/service/generation_service.h"

#include "absl/strings/str_cat.h"
#include "cachemgr/service/proto_convert.h"
#include "common/log.h"
#include "worker/engine/generator.h"
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
};

GenerationService::GenerationService(WorkerOptions options) : options_(std::move(options)) {}

std::shared_ptr<GenerationService::Job> GenerationService::Register(const std::string& requested_id,
                                                                    absl::Status* status) {
  auto job = std::make_shared<Job>();
  job->id = requested_id.empty() ? absl::StrCat(options_.worker_name, "-", next_job_++) : requested_id;
  if (job->id.size() > 128) {
    *status = absl::InvalidArgumentError("job_id: at most 128 characters");
    return nullptr;
  }
  absl::MutexLock lock(&mutex_);
  if (jobs_.count(job->id) != 0) {
    *status = absl::AlreadyExistsError(absl::StrCat("job_id: '", job->id, "' is already in use"));
    return nullptr;
  }
  if (running_.load() >= options_.max_jobs) {
    if (options_.metrics != nullptr) options_.metrics->Rejected();
    *status = absl::ResourceExhaustedError(absl::StrCat("this worker runs at most ", options_.max_jobs,
                                                        " jobs at once; retry later or on another worker"));
    return nullptr;
  }
  ++running_;
  jobs_[job->id] = job;
  return job;
}

void GenerationService::Retire(const std::shared_ptr<Job>& job) {
  absl::MutexLock lock(&mutex_);
  --running_;
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
  --running_;
  jobs_.erase(job->id);
  if (options_.metrics != nullptr) options_.metrics->Rejected();
}

RemotePolicyOptions GenerationService::RemoteOptions(const std::string& job_id) const {
  RemotePolicyOptions remote;
  remote.encoding = options_.score_encoding;
  remote.label = absl::StrCat(options_.worker_name, "/", job_id);
  remote.wait_for_cache_manager = options_.cache_manager_wait;
  remote.decision_lag = options_.decision_lag;
  remote.ring_socket = options_.ring_socket;
  remote.decision_timeout = options_.decision_timeout;
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
    absl::StatusOr<std::unique_ptr<RemotePolicy>> remote =
        RemotePolicy::Open(options_.cache_manager, c, request.has_policy() ? &request.policy() : nullptr, budget,
                           RemoteOptions(job_id));
    if (!remote.ok()) {
      A2SF_LOG(WARNING) << "job " << job_id << ": no cache-manager session: " << remote.status();
      return OpenFailureForClient(remote.status(), options_.cache_manager);
    }
    return std::unique_ptr<EvictionPolicyClient>(std::move(*remote));
  }
  absl::StatusOr<cachemgr::BudgetSpec> spec_budget = cachemgr::FromProto(budget);
  if (!spec_budget.ok()) return spec_budget.status();
  absl::StatusOr<std::unique_ptr<InProcessPolicy>> local = InProcessPolicy::Create(
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
  const RemotePolicy* remote = dynamic_cast<RemotePolicy*>(policy);
  if (auto* fallback = dynamic_cast<FallbackPolicy*>(policy)) remote = fallback->remote();
  if (remote != nullptr) {
    *stats.mutable_policy() = remote->policy();
    stats.set_shared_memory(remote->uses_shared_memory());
    stats.set_session_id(remote->session_id());
  } else if (auto* local = dynamic_cast<InProcessPolicy*>(policy)) {
    *stats.mutable_policy() = cachemgr::ToProto(local->session().policy);
  }
  return stats;
}

absl::StatusOr<GenerateResult> GenerationService::Run(Job* job, const JobPlan& plan, Engine* engine,
                                                      EvictionPolicyClient* policy, JobOutput* output,
                                                      JobMetrics* job_metrics, grpc::ServerContext* context,
                                                      grpc::ServerWriter<v1::GenerateResponse>* writer) {
  v1::GenerateResponse response;
  GenerateCallbacks callbacks;
  if (output->wants_prompt_logprobs()) {
    callbacks.on_prompt_logits = [&](int position, absl::Span<const float> logits) {
      output->OnPromptLogits(position, logits);
    };
  }
  callbacks.on_token = [&](const TokenEvent& event) {
    if (event.index == 0 && output->wants_prompt_logprobs()) {
      response.Clear();
      *response.mutable_prompt_logprobs() = output->prompt_logprobs();
      if (!writer->Write(response)) return TokenVerdict::kCancel;
    }
    response.Clear();
    const TokenVerdict verdict = output->OnToken(event, response.mutable_tokens());
    ++tokens_generated_;
    job_metrics->Token(engine->cache().bytes_held());
    if (!writer->Write(response)) return TokenVerdict::kCancel;  // the client went away
    if (job->cancel.load() || context->IsCancelled()) return TokenVerdict::kCancel;
    return verdict;
  };
  return worker::Generate(engine, policy, plan.prompt, plan.generate, callbacks);
}

grpc::Status GenerationService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                         grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const ModelConfig& c = options_.weights->config();
  absl::StatusOr<JobPlan> plan = PlanJob(*request, c, options_.tokenizer);
  if (!plan.ok()) return cachemgr::ToGrpc(plan.status());
  absl::Status status;
  std::shared_ptr<Job> job = Register(request->job_id(), &status);
  if (job == nullptr) return cachemgr::ToGrpc(status);
  const absl::Time started = absl::Now();
  JobMetrics job_metrics(options_.metrics);

  // Refused before it starts (policy, budget, cache manager, engine): not a job (see ListJobs).
  absl::StatusOr<std::unique_ptr<EvictionPolicyClient>> policy = OpenPolicy(*request, plan->budget, job->id);
  if (!policy.ok()) {
    Refuse(job);
    return cachemgr::ToGrpc(policy.status());
  }
  EngineOptions engine_options;
  engine_options.threads = options_.threads_per_job;
  engine_options.device = options_.device;
  const int max_new_tokens = plan->generate.max_new_tokens == 0 ? ContextRoom(c, int(plan->prompt.size()))
                                                                 : plan->generate.max_new_tokens;
  engine_options.cache_capacity = std::min(
      c.seq_len, std::max(1, RequiredCacheCapacity(policy->get(), int(plan->prompt.size()), max_new_tokens,
                                                   plan->generate.bulk_prefill)));
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options_.weights, engine_options);
  if (!engine.ok()) {
    Refuse(job);
    return cachemgr::ToGrpc(engine.status());
  }
  FallbackPolicy* fallback = nullptr;
  if (options_.fallback_in_process && options_.cache_manager != nullptr) {
    auto wrapped = std::make_unique<FallbackPolicy>(
        std::unique_ptr<RemotePolicy>(static_cast<RemotePolicy*>(policy->release())), engine->get());
    fallback = wrapped.get();
    *policy = std::move(wrapped);
  }

  v1::JobStats stats = AcceptedStats(*job, *plan, policy->get());
  {
    absl::MutexLock lock(&job->mutex);
    *job->status.mutable_stats() = stats;
    job->status.set_state(v1::JOB_STATE_RUNNING);
  }
  job_metrics.Started(stats.policy().name(), stats.prompt_tokens());
  v1::GenerateResponse accepted;
  *accepted.mutable_accepted() = stats;
  accepted.set_job_token(job->token);
  writer->Write(accepted);

  JobOutput output(options_.tokenizer, plan->prompt, plan->stop, plan->logprobs);
  absl::StatusOr<GenerateResult> result =
      Run(job.get(), *plan, engine->get(), policy->get(), &output, &job_metrics, context, writer);
  if (fallback != nullptr && fallback->fell_back()) stats.set_policy_location(v1::POLICY_LOCATION_FALLBACK_IN_PROCESS);
  policy->reset();  // closes a remote session now rather than at the end of the call
  if (!result.ok()) return Failed(job, result.status());
  SetResultStats(c, plan->prompt.size(), *result, output.stop_string(), &stats);
  job_metrics.Finished(stats);
  {
    absl::MutexLock lock(&job->mutex);
    *job->status.mutable_stats() = stats;
    job->status.set_state(result->finish_reason == FinishReason::kCancelled ? v1::JOB_STATE_CANCELLED
                                                                          : v1::JOB_STATE_FINISHED);
  }
  Retire(job);
  v1::GenerateResponse finished;
  if (std::string tail = output.Finish(); !tail.empty()) {
    finished.mutable_tokens()->set_text(std::move(tail));
    writer->Write(finished);
    finished.Clear();
  }
  *finished.mutable_finished() = stats;
  writer->Write(finished);
  A2SF_LOG(DEBUG) << "job " << job->id << ": " << result->generated.size() << " tokens in "
                  << absl::ToDoubleMilliseconds(absl::Now() - started) << " ms";
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
  return cachemgr::ToGrpc(options_.cache_manager != nullptr ? MidJobFailureForClient(error) : error);
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
  absl::MutexLock lock(&job->mutex);
  const bool running = job->status.state() == v1::JOB_STATE_RUNNING || job->status.state() == v1::JOB_STATE_UNSPECIFIED;
  if (running) job->cancel.store(true);
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
  *response->mutable_default_policy() = options_.default_policy;
  response->set_decision_lag(options_.decision_lag);
  response->set_max_jobs(uint32_t(options_.max_jobs));
  response->set_worker(options_.worker_name);
  response->set_remote_policies(options_.cache_manager != nullptr);
  return grpc::Status::OK;
}

}  // namespace a2sf::worker
