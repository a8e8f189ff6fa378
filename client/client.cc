#include "client/client.h"

#include <chrono>

#include "grpc/health/v1/health.grpc.pb.h"

namespace a2sf::client {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

namespace {
void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  if (timeout == absl::InfiniteDuration()) return;
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
}
}  // namespace

absl::StatusOr<GenerationResult> WorkerClient::Generate(const v1::GenerateRequest& request,
                                                        const std::function<void(const v1::GeneratedTokens&)>& on_tokens,
                                                        int retries, absl::Duration timeout) {
  for (int attempt = 0;; ++attempt) {
    GenerationResult result;
    grpc::ClientContext context;
    SetDeadline(&context, timeout);
    auto reader = stub_->Generate(&context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      switch (response.event_case()) {
        case v1::GenerateResponse::kAccepted:
          result.accepted = response.accepted();
          result.job_token = response.job_token();
          break;
        case v1::GenerateResponse::kTokens:
          result.ids.insert(result.ids.end(), response.tokens().ids().begin(), response.tokens().ids().end());
          result.text += response.tokens().text();
          result.logprobs.insert(result.logprobs.end(), response.tokens().logprobs().begin(),
                                 response.tokens().logprobs().end());
          if (on_tokens) on_tokens(response.tokens());
          break;
        case v1::GenerateResponse::kFinished:
          result.finished = response.finished();
          break;
        case v1::GenerateResponse::kPromptLogprobs:
          result.prompt_logprobs = response.prompt_logprobs();
          break;
        default:
          break;
      }
    }
    grpc::Status status = reader->Finish();
    if (status.ok()) return result;
    // A job marked idempotent is resent from the start (tokens streamed before the failure are
    // dropped from the result; `on_tokens` sees the new attempt's tokens again).
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE && request.idempotent() && attempt < retries) {
      continue;
    }
    return FromGrpc(status);
  }
}

void WorkerClient::Authorize(grpc::ClientContext* context) const {
  SetDeadline(context, absl::Seconds(10));
  if (!admin_token_.empty()) context->AddMetadata("authorization", "Bearer " + admin_token_);
}

absl::StatusOr<bool> WorkerClient::Cancel(const std::string& job_id, const std::string& job_token) {
  grpc::ClientContext context;
  Authorize(&context);
  v1::CancelJobRequest request;
  request.set_job_id(job_id);
  request.set_job_token(job_token);
  v1::CancelJobResponse response;
  grpc::Status status = stub_->CancelJob(&context, request, &response);
  if (!status.ok()) return FromGrpc(status);
  return response.cancelled();
}

absl::StatusOr<v1::ListJobsResponse> WorkerClient::ListJobs() {
  grpc::ClientContext context;
  Authorize(&context);
  v1::ListJobsResponse response;
  grpc::Status status = stub_->ListJobs(&context, {}, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

absl::StatusOr<v1::JobStatus> WorkerClient::GetJob(const std::string& job_id, const std::string& job_token) {
  grpc::ClientContext context;
  Authorize(&context);
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  request.set_job_token(job_token);
  v1::JobStatus response;
  grpc::Status status = stub_->GetJob(&context, request, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

absl::StatusOr<v1::ModelInfo> WorkerClient::GetModelInfo() {
  grpc::ClientContext context;
  SetDeadline(&context, absl::Seconds(10));
  v1::ModelInfo response;
  grpc::Status status = stub_->GetModelInfo(&context, {}, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

void AdminClient::Authorize(grpc::ClientContext* context) const {
  SetDeadline(context, absl::Seconds(10));
  if (!token_.empty()) context->AddMetadata("authorization", "Bearer " + token_);
}

absl::StatusOr<v1::ListPoliciesResponse> AdminClient::ListPolicies() {
  grpc::ClientContext context;
  Authorize(&context);
  v1::ListPoliciesResponse response;
  grpc::Status status = stub_->ListPolicies(&context, {}, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

absl::StatusOr<v1::PolicySpec> AdminClient::GetDefault() {
  grpc::ClientContext context;
  Authorize(&context);
  v1::PolicySpec response;
  grpc::Status status = stub_->GetDefaultPolicy(&context, {}, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

absl::StatusOr<v1::PolicySpec> AdminClient::SetDefault(const v1::PolicySpec& policy) {
  grpc::ClientContext context;
  Authorize(&context);
  v1::SetDefaultPolicyRequest request;
  *request.mutable_policy() = policy;
  v1::PolicySpec response;
  grpc::Status status = stub_->SetDefaultPolicy(&context, request, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

absl::StatusOr<v1::SetSessionPolicyResponse> AdminClient::SetSessionPolicy(const std::string& session_id,
                                                                           const v1::PolicySpec& policy) {
  grpc::ClientContext context;
  Authorize(&context);
  v1::SetSessionPolicyRequest request;
  request.set_session_id(session_id);
  *request.mutable_policy() = policy;
  v1::SetSessionPolicyResponse response;
  grpc::Status status = stub_->SetSessionPolicy(&context, request, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

absl::StatusOr<v1::ListSessionsResponse> AdminClient::ListSessions() {
  grpc::ClientContext context;
  Authorize(&context);
  v1::ListSessionsResponse response;
  grpc::Status status = stub_->ListSessions(&context, {}, &response);
  if (!status.ok()) return FromGrpc(status);
  return response;
}

absl::StatusOr<std::string> CheckHealth(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, {}, &response);
  if (!status.ok()) return FromGrpc(status);
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status());
}

}  // namespace a2sf::client
