#include "cachemgr/service/cache_manager_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cachemgr/service/proto_convert.h"
#include "common/log.h"

namespace a2sf::cachemgr {

CacheManagerMetrics::CacheManagerMetrics(prometheus::Registry* registry)
    : sessions_(prometheus::BuildGauge().Name("a2sf_cachemgr_sessions").Help("Open sessions").Register(*registry).Add({})),
      steps_(prometheus::BuildCounter().Name("a2sf_cachemgr_steps_total").Help("Steps decided").Register(*registry).Add({})),
      evicted_entries_(prometheus::BuildCounter()
                           .Name("a2sf_cachemgr_evicted_entries_total")
                           .Help("KV entries evicted, over all layers and KV heads")
                           .Register(*registry)
                           .Add({})),
      bytes_received_(prometheus::BuildCounter()
                          .Name("a2sf_cachemgr_score_bytes_received_total")
                          .Help("Bytes of attention scores received")
                          .Register(*registry)
                          .Add({})),
      step_latency_(prometheus::BuildHistogram()
                        .Name("a2sf_cachemgr_step_seconds")
                        .Help("Time to decide one step (accumulate, select, evict)")
                        .Register(*registry)
                        .Add({}, prometheus::Histogram::BucketBoundaries{1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1})),
      errors_(prometheus::BuildCounter().Name("a2sf_cachemgr_errors_total").Help("Failed calls by gRPC code").Register(*registry)) {}

void CacheManagerMetrics::RecordStep(double seconds, uint64_t evictions, uint64_t bytes) {
  steps_.Increment();
  evicted_entries_.Increment(double(evictions));
  bytes_received_.Increment(double(bytes));
  step_latency_.Observe(seconds);
}

void CacheManagerMetrics::RecordError(grpc::StatusCode code) {
  static const char* const kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                       "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
                                       "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  const int index = int(code);
  errors_.Add({{"code", index >= 0 && index < 17 ? kNames[index] : "OTHER"}}).Increment();
}

grpc::Status CacheManagerService::Error(const grpc::Status& status) {
  if (metrics_ != nullptr && !status.ok()) metrics_->RecordError(status.error_code());
  return status;
}

grpc::Status CacheManagerService::OpenSession(grpc::ServerContext*, const v1::OpenSessionRequest* request,
                                              v1::OpenSessionResponse* response) {
  SessionConfig config;
  const v1::ModelShape& shape = request->shape();
  config.geometry = {shape.num_layers(), shape.num_kv_heads()};
  config.query_heads_per_kv_head = shape.query_heads_per_kv_head();
  config.max_context = shape.max_context();
  if (request->has_policy()) config.policy = FromProto(request->policy());
  absl::StatusOr<BudgetSpec> budget = FromProto(request->budget());
  if (!budget.ok()) return ToGrpc(budget.status());
  config.budget = *budget;
  config.label = request->client_label().substr(0, 256);
  config.decision_lag = request->decision_lag();
  if (request->has_shared_memory_ring()) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "shared_memory_ring: not supported yet; send scores inline");
  }
  absl::StatusOr<SessionInfo> info = manager_->Open(config);
  if (!info.ok()) return Error(ToGrpc(info.status()));
  if (metrics_ != nullptr) metrics_->SetSessions(manager_->session_count());
  response->set_session_id(info->id);
  response->set_budget_tokens(info->budget_tokens);
  *response->mutable_policy() = ToProto(info->policy);
  response->set_score_backend(manager_->store().backend());
  response->set_decision_lag(config.decision_lag);
  A2SF_LOG(DEBUG) << "opened " << info->id << " (" << config.label << ") policy "
                  << PolicySpecToString(info->policy) << " budget " << info->budget_tokens << " lag "
                  << config.decision_lag;
  return grpc::Status::OK;
}

grpc::Status CacheManagerService::CloseSession(grpc::ServerContext*, const v1::CloseSessionRequest* request,
                                               v1::CloseSessionResponse* response) {
  absl::StatusOr<SessionInfo> info = manager_->Close(request->session_id());
  if (metrics_ != nullptr) metrics_->SetSessions(manager_->session_count());
  if (!info.ok()) return Error(ToGrpc(info.status()));
  response->set_steps(info->steps);
  response->set_evictions(info->evictions);
  return grpc::Status::OK;
}

grpc::Status CacheManagerService::Step(const std::string& session_id, const v1::ScoreStep& step,
                                       v1::EvictionDecision* decision) {
  const absl::Time start = absl::Now();
  absl::StatusOr<StepResult> result;
  switch (step.kind()) {
    case v1::STEP_KIND_TOKEN:
    case v1::STEP_KIND_UNSPECIFIED: {
      absl::StatusOr<ScoreView> view = ScoreViewOf(step.scores(), 3);
      if (!view.ok()) return Error(ToGrpc(view.status()));
      result = manager_->Step(session_id, step.step(), step.position(), *view);
      break;
    }
    case v1::STEP_KIND_BULK_PREFILL: {
      absl::StatusOr<ScoreView> view = ScoreViewOf(step.scores(), 4);
      if (!view.ok()) return Error(ToGrpc(view.status()));
      if (step.scores().shape(2) != step.scores().shape(3)) {
        return Error(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "scores.shape: a bulk prefill needs [L, H, P, P]"));
      }
      result = manager_->BulkPrefill(session_id, step.step(), step.position(), step.scores().shape(2), *view);
      break;
    }
    default:
      return Error(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "kind: unknown step kind"));
  }
  if (!result.ok()) return Error(ToGrpc(result.status()));
  if (metrics_ != nullptr) {
    metrics_->RecordStep(absl::ToDoubleSeconds(absl::Now() - start), result->decision.evicted_positions.size(),
                         step.scores().data().size());
  }
  ToProto(*result, decision);
  return grpc::Status::OK;
}

grpc::Status CacheManagerService::SubmitStep(grpc::ServerContext*, const v1::ScoreStep* request,
                                             v1::EvictionDecision* response) {
  if (request->session_id().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "session_id: required");
  }
  return Step(request->session_id(), *request, response);
}

grpc::Status CacheManagerService::StreamScores(
    grpc::ServerContext* context, grpc::ServerReaderWriter<v1::EvictionDecision, v1::ScoreStep>* stream) {
  std::string session_id;
  v1::ScoreStep step;
  v1::EvictionDecision decision;
  while (stream->Read(&step)) {
    if (session_id.empty()) {
      if (step.session_id().empty()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            "session_id: required on the first message of a stream");
      }
      session_id = step.session_id();
    } else if (!step.session_id().empty() && step.session_id() != session_id) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("session_id: this stream serves '", session_id, "', got '", step.session_id(), "'"));
    }
    decision.Clear();
    grpc::Status status = Step(session_id, step, &decision);
    if (!status.ok()) return status;
    if (!stream->Write(decision)) break;
  }
  if (context->IsCancelled() && !session_id.empty()) {
    // The worker is gone: nobody will close this session.
    if (manager_->Close(session_id).ok()) A2SF_LOG(INFO) << "freed " << session_id << ": its stream was cut";
    if (metrics_ != nullptr) metrics_->SetSessions(manager_->session_count());
  }
  return grpc::Status::OK;
}

grpc::Status CacheManagerService::GetSession(grpc::ServerContext*, const v1::GetSessionRequest* request,
                                             v1::SessionInfo* response) {
  absl::StatusOr<SessionInfo> info = manager_->Get(request->session_id());
  if (!info.ok()) return ToGrpc(info.status());
  *response = ToProto(*info);
  return grpc::Status::OK;
}

grpc::Status PolicyAdminService::Authorize(const grpc::ServerContext* context) const {
  if (admin_token_.empty()) return grpc::Status::OK;
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "PolicyAdmin changes need 'authorization: Bearer <token>' metadata");
  }
  const std::string value(it->second.data(), it->second.size());
  if (value != "Bearer " + admin_token_) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "the bearer token is not the admin token");
  }
  return grpc::Status::OK;
}

grpc::Status PolicyAdminService::ListPolicies(grpc::ServerContext*, const v1::ListPoliciesRequest*,
                                              v1::ListPoliciesResponse* response) {
  for (const PolicyInfo& info : manager_->registry().Describe()) *response->add_policies() = ToProto(info);
  return grpc::Status::OK;
}

grpc::Status PolicyAdminService::GetDefaultPolicy(grpc::ServerContext*, const v1::GetDefaultPolicyRequest*,
                                                  v1::PolicySpec* response) {
  *response = ToProto(manager_->default_policy());
  return grpc::Status::OK;
}

grpc::Status PolicyAdminService::SetDefaultPolicy(grpc::ServerContext* context,
                                                  const v1::SetDefaultPolicyRequest* request,
                                                  v1::PolicySpec* response) {
  if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
  absl::StatusOr<PolicySpec> resolved = manager_->SetDefaultPolicy(FromProto(request->policy()));
  if (!resolved.ok()) return ToGrpc(resolved.status());
  A2SF_LOG(INFO) << "default policy is now " << PolicySpecToString(*resolved);
  *response = ToProto(*resolved);
  return grpc::Status::OK;
}

grpc::Status PolicyAdminService::SetSessionPolicy(grpc::ServerContext* context,
                                                  const v1::SetSessionPolicyRequest* request,
                                                  v1::SetSessionPolicyResponse* response) {
  if (grpc::Status auth = Authorize(context); !auth.ok()) return auth;
  absl::StatusOr<PolicySwap> swap = manager_->SetPolicy(request->session_id(), FromProto(request->policy()));
  if (!swap.ok()) return ToGrpc(swap.status());
  A2SF_LOG(INFO) << "session " << request->session_id() << ": " << PolicySpecToString(swap->previous) << " -> "
                 << PolicySpecToString(swap->current) << " from step " << swap->effective_from_step;
  *response->mutable_previous_policy() = ToProto(swap->previous);
  *response->mutable_policy() = ToProto(swap->current);
  response->set_effective_from_step(swap->effective_from_step);
  return grpc::Status::OK;
}

grpc::Status PolicyAdminService::ListSessions(grpc::ServerContext*, const v1::ListSessionsRequest*,
                                              v1::ListSessionsResponse* response) {
  for (const SessionInfo& info : manager_->List()) *response->add_sessions() = ToProto(info);
  return grpc::Status::OK;
}

}  // namespace a2sf::cachemgr
