#include "worker/service/generation_service.h"

#include "absl/strings/str_cat.h"
#include "cachemgr/service/proto_convert.h"
#include "common/log.h"
#include "worker/engine/generator.h"

namespace a2sf::worker {

struct GenerationService::Job {
  std::string id;
  std::atomic<bool> cancel{false};
  absl::Mutex mutex;
  v1::JobStatus status ABSL_GUARDED_BY(mutex);
};

GenerationService::GenerationService(WorkerOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::vector<int>> GenerationService::PromptIds(const v1::GenerateRequest& request) const {
  const ModelConfig& c = options_.weights->config();
  std::vector<int> ids;
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (options_.tokenizer == nullptr) {
        return absl::FailedPreconditionError("prompt.text: this worker has no tokenizer; send prompt.token_ids");
      }
      if (request.text().size() > size_t(c.seq_len) * 64) {
        return absl::InvalidArgumentError("prompt.text: longer than the model's context can hold");
      }
      absl::StatusOr<std::vector<int>> encoded = options_.tokenizer->Encode(request.text(), true);
      if (!encoded.ok()) return encoded.status();
      ids = *encoded;
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      if (request.token_ids().ids_size() == 0) return absl::InvalidArgumentError("prompt.token_ids: empty");
      if (request.token_ids().ids_size() > c.seq_len) {
        return absl::InvalidArgumentError(absl::StrCat("prompt.token_ids: ", request.token_ids().ids_size(),
                                                       " tokens exceed the context of ", c.seq_len));
      }
      for (uint32_t id : request.token_ids().ids()) {
        if (id >= uint32_t(c.vocab_size)) {
          return absl::InvalidArgumentError(absl::StrCat("prompt.token_ids: id ", id, " is outside the vocabulary [0, ",
                                                         c.vocab_size, ")"));
        }
        ids.push_back(int(id));
      }
      break;
    default:
      return absl::InvalidArgumentError("prompt: set prompt.text or prompt.token_ids");
  }
  return ids;
}

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

namespace {

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kMaxTokens:
      return v1::FINISH_REASON_MAX_TOKENS;
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace

grpc::Status GenerationService::Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                                         grpc::ServerWriter<v1::GenerateResponse>* writer) {
  const ModelConfig& c = options_.weights->config();
  absl::StatusOr<std::vector<int>> prompt = PromptIds(*request);
  if (!prompt.ok()) return cachemgr::ToGrpc(prompt.status());
  if (request->max_tokens() == 0) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "max_tokens: must be >= 1");
  if (uint64_t{prompt->size()} + request->max_tokens() - 1 > uint64_t(c.seq_len)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("prompt (", prompt->size(), " tokens) + max_tokens (", request->max_tokens(),
                                     ") exceeds the model's context of ", c.seq_len));
  }
  GenerateOptions generate;
  generate.max_new_tokens = int(request->max_tokens());
  generate.sampling.temperature = float(request->sampling().temperature());
  generate.sampling.top_p = request->sampling().top_p() == 0 ? 1.0f : float(request->sampling().top_p());
  generate.sampling.seed = request->sampling().seed();
  generate.stop_on_eos = !request->stop().has_stop_on_eos() || request->stop().stop_on_eos();
  generate.bulk_prefill = request->prefill() == v1::PREFILL_MODE_BULK;
  if (absl::Status s = ValidateSampling(generate.sampling); !s.ok()) return cachemgr::ToGrpc(s);

  // Budget: unset = the whole sequence; a ratio refers to prompt + max_tokens unless told otherwise.
  const uint32_t sequence = uint32_t(prompt->size() + request->max_tokens());
  v1::Budget budget = request->budget();
  if (budget.kind_case() == v1::Budget::KIND_NOT_SET) {
    budget.set_tokens(std::min<uint32_t>(sequence, uint32_t(c.seq_len)));
  } else if (budget.kind_case() == v1::Budget::kRatio && budget.reference_length() == 0) {
    budget.set_reference_length(sequence);
  }
  absl::Status status;
  std::shared_ptr<Job> job = Register(request->job_id(), &status);
  if (job == nullptr) return cachemgr::ToGrpc(status);
  const absl::Time started = absl::Now();
  JobMetrics job_metrics(options_.metrics);

  std::unique_ptr<EvictionPolicyClient> policy;
  v1::PolicyLocation location = v1::POLICY_LOCATION_IN_PROCESS;
  if (options_.cache_manager != nullptr) {
    absl::StatusOr<std::unique_ptr<RemotePolicy>> remote =
        RemotePolicy::Open(options_.cache_manager, c, request->has_policy() ? &request->policy() : nullptr, budget,
                           {options_.score_encoding, absl::StrCat(options_.worker_name, "/", job->id),
                            options_.cache_manager_wait, options_.decision_lag, options_.shared_memory});
    if (!remote.ok()) {
      Retire(job);
      if (remote.status().code() == absl::StatusCode::kUnavailable ||
          remote.status().code() == absl::StatusCode::kDeadlineExceeded) {
        return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                            absl::StrCat("cache manager unreachable: ", remote.status().message()));
      }
      return cachemgr::ToGrpc(remote.status());
    }
    policy = std::move(*remote);
    location = v1::POLICY_LOCATION_REMOTE;
  } else {
    absl::StatusOr<cachemgr::BudgetSpec> spec_budget = cachemgr::FromProto(budget);
    absl::StatusOr<std::unique_ptr<InProcessPolicy>> local =
        spec_budget.ok() ? InProcessPolicy::Create(c, cachemgr::FromProto(request->has_policy() ? request->policy()
                                                                                              : options_.default_policy),
                                                   *spec_budget, options_.decision_lag)
                         : absl::StatusOr<std::unique_ptr<InProcessPolicy>>(spec_budget.status());
    if (!local.ok()) {
      Retire(job);
      return cachemgr::ToGrpc(local.status());
    }
    policy = std::move(*local);
  }

  EngineOptions engine_options;
  engine_options.threads = options_.threads_per_job;
  engine_options.device = options_.device;
  engine_options.cache_capacity = std::min(
      c.seq_len, std::max(1, RequiredCacheCapacity(policy.get(), int(prompt->size()), generate.max_new_tokens,
                                                   generate.bulk_prefill)));
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(options_.weights, engine_options);
  if (!engine.ok()) {
    Retire(job);
    return cachemgr::ToGrpc(engine.status());
  }
  FallbackPolicy* fallback = nullptr;
  if (options_.fallback_in_process && location == v1::POLICY_LOCATION_REMOTE) {
    auto wrapped = std::make_unique<FallbackPolicy>(
        std::unique_ptr<RemotePolicy>(static_cast<RemotePolicy*>(policy.release())), engine->get());
    fallback = wrapped.get();
    policy = std::move(wrapped);
  }

  v1::JobStats stats;
  stats.set_job_id(job->id);
  stats.set_prompt_tokens(uint32_t(prompt->size()));
  stats.set_policy_location(location);
  stats.set_budget_tokens(policy->budget_tokens());
  stats.set_worker(options_.worker_name);
  stats.set_decision_lag(policy->decision_lag());
  if (fallback != nullptr) {
    *stats.mutable_policy() = fallback->remote()->policy();
    stats.set_shared_memory(fallback->remote()->uses_shared_memory());
  } else if (auto* remote = dynamic_cast<RemotePolicy*>(policy.get())) {
    *stats.mutable_policy() = remote->policy();
    stats.set_shared_memory(remote->uses_shared_memory());
  } else if (auto* local = dynamic_cast<InProcessPolicy*>(policy.get())) {
    *stats.mutable_policy() = cachemgr::ToProto(local->session().policy);
  }
  {
    absl::MutexLock lock(&job->mutex);
    *job->status.mutable_stats() = stats;
    job->status.set_state(v1::JOB_STATE_RUNNING);
  }
  job_metrics.Started(stats.policy().name(), stats.prompt_tokens());
  v1::GenerateResponse accepted;
  *accepted.mutable_accepted() = stats;
  writer->Write(accepted);

  Utf8StreamDecoder utf8;
  int previous = prompt->back();
  v1::GenerateResponse chunk;
  auto on_token = [&](int token) {
    chunk.Clear();
    chunk.mutable_tokens()->add_ids(uint32_t(token));
    if (options_.tokenizer != nullptr && token != c.bos_id && token != c.eos_id) {
      chunk.mutable_tokens()->set_text(utf8.Push(options_.tokenizer->DecodePiece(previous, token)));
    }
    previous = token;
    ++tokens_generated_;
    job_metrics.Token((*engine)->cache().bytes_held());
    if (!writer->Write(chunk)) return false;  // the client went away
    return !job->cancel.load() && !context->IsCancelled();
  };
  absl::StatusOr<GenerateResult> result = worker::Generate(engine->get(), policy.get(), *prompt, generate, on_token);
  if (fallback != nullptr && fallback->fell_back()) stats.set_policy_location(v1::POLICY_LOCATION_FALLBACK_IN_PROCESS);
  policy.reset();  // closes a remote session now rather than at the end of the call
  if (!result.ok()) {
    {
      absl::MutexLock lock(&job->mutex);
      job->status.set_state(v1::JOB_STATE_FAILED);
      job->status.set_error(std::string(result.status().message()));
    }
    Retire(job);
    A2SF_LOG(WARNING) << "job " << job->id << " failed: " << result.status();
    if (location == v1::POLICY_LOCATION_REMOTE && IsTransportFailure(result.status())) {
      // However the connection broke (reset, shutdown, deadline), the job failed for one reason.
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          absl::StrCat("cache manager lost mid-job: ", result.status().message()));
    }
    return cachemgr::ToGrpc(result.status());
  }
  stats.set_generated_tokens(uint32_t(result->generated.size()));
  stats.set_evictions(result->evictions);
  stats.set_kv_bytes_held(result->kv_bytes_held);
  stats.set_kv_bytes_peak(result->kv_bytes_peak);
  stats.set_kv_bytes_full_cache(uint64_t(prompt->size() + result->generated.size() - 1) * c.n_layers * c.kv_dim() * 2 * 4);
  stats.set_time_to_first_token_ms(result->time_to_first_token_ms);
  stats.set_tokens_per_second(result->tokens_per_second);
  stats.set_finish_reason(ToProto(result->finish_reason));
  job_metrics.Finished(stats);
  {
    absl::MutexLock lock(&job->mutex);
    *job->status.mutable_stats() = stats;
    job->status.set_state(result->finish_reason == FinishReason::kCancelled ? v1::JOB_STATE_CANCELLED
                                                                          : v1::JOB_STATE_FINISHED);
  }
  Retire(job);
  const std::string tail = utf8.Flush();
  v1::GenerateResponse finished;
  if (!tail.empty()) {
    finished.mutable_tokens()->set_text(tail);
    writer->Write(finished);
    finished.Clear();
  }
  *finished.mutable_finished() = stats;
  writer->Write(finished);
  A2SF_LOG(DEBUG) << "job " << job->id << ": " << result->generated.size() << " tokens in "
                  << absl::ToDoubleMilliseconds(absl::Now() - started) << " ms";
  return grpc::Status::OK;
}

std::shared_ptr<GenerationService::Job> GenerationService::FindJob(const std::string& id) {
  absl::MutexLock lock(&mutex_);
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second;
}

grpc::Status GenerationService::CancelJob(grpc::ServerContext*, const v1::CancelJobRequest* request,
                                          v1::CancelJobResponse* response) {
  std::shared_ptr<Job> job = FindJob(request->job_id());
  if (job == nullptr) return grpc::Status(grpc::StatusCode::NOT_FOUND, "job_id: no such job");
  absl::MutexLock lock(&job->mutex);
  const bool running = job->status.state() == v1::JOB_STATE_RUNNING || job->status.state() == v1::JOB_STATE_UNSPECIFIED;
  if (running) job->cancel.store(true);
  response->set_cancelled(running);
  return grpc::Status::OK;
}

grpc::Status GenerationService::GetJob(grpc::ServerContext*, const v1::GetJobRequest* request, v1::JobStatus* response) {
  std::shared_ptr<Job> job = FindJob(request->job_id());
  if (job == nullptr) return grpc::Status(grpc::StatusCode::NOT_FOUND, "job_id: no such job");
  absl::MutexLock lock(&job->mutex);
  *response = job->status;
  return grpc::Status::OK;
}

grpc::Status GenerationService::ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*, v1::ListJobsResponse* response) {
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

}  // namespace a2sf::worker
