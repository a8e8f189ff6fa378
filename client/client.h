// A small C++ client for A2SF-Serve: generation jobs on a worker and policy administration on a
// cache manager. Errors come back as absl::Status with the server's code and message.
// Thread-safe (gRPC stubs are).
#ifndef A2SF_CLIENT_CLIENT_H_
#define A2SF_CLIENT_CLIENT_H_

#include <functional>
#include <memory>
#include <string>

#include "a2sf/v1/cache_manager.grpc.pb.h"
#include "a2sf/v1/generation.grpc.pb.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/generation_result.h"
#include "grpcpp/grpcpp.h"

namespace a2sf::client {

class WorkerClient {
 public:
  // `admin_token`: the worker's --admin_token, sent as a bearer token by Cancel and ListJobs (optional).
  explicit WorkerClient(std::shared_ptr<grpc::Channel> channel, std::string admin_token = "")
      : stub_(v1::Generation::NewStub(channel)), admin_token_(std::move(admin_token)) {}
  // Runs a job to its end; `on_tokens` (optional) sees each chunk as it streams. An idempotent job
  // whose worker is UNAVAILABLE is resent from the start up to `retries` times (round_robin moves it
  // to another worker); `on_tokens` then sees the restarted job's tokens too. `timeout` bounds each
  // attempt (InfiniteDuration: no deadline, as a long generation on a CPU may take hours).
  absl::StatusOr<GenerationResult> Generate(const v1::GenerateRequest& request,
                                            const std::function<void(const v1::GeneratedTokens&)>& on_tokens = nullptr,
                                            int retries = 2, absl::Duration timeout = absl::InfiniteDuration());
  // Needs the job's token (GenerationResult.job_token) or the client's admin token.
  absl::StatusOr<bool> Cancel(const std::string& job_id, const std::string& job_token = "");
  absl::StatusOr<v1::ListJobsResponse> ListJobs();
  // Needs the job's token or the client's admin token, as Cancel.
  absl::StatusOr<v1::JobStatus> GetJob(const std::string& job_id, const std::string& job_token = "");
  absl::StatusOr<v1::ModelInfo> GetModelInfo();

 private:
  void Authorize(grpc::ClientContext* context) const;
  std::unique_ptr<v1::Generation::Stub> stub_;
  std::string admin_token_;
};

class AdminClient {
 public:
  AdminClient(std::shared_ptr<grpc::Channel> channel, std::string token)
      : stub_(v1::PolicyAdmin::NewStub(channel)), token_(std::move(token)) {}
  absl::StatusOr<v1::ListPoliciesResponse> ListPolicies();
  absl::StatusOr<v1::PolicySpec> GetDefault();
  absl::StatusOr<v1::PolicySpec> SetDefault(const v1::PolicySpec& policy);
  absl::StatusOr<v1::SetSessionPolicyResponse> SetSessionPolicy(const std::string& session_id,
                                                                const v1::PolicySpec& policy);
  absl::StatusOr<v1::ListSessionsResponse> ListSessions();

 private:
  void Authorize(grpc::ClientContext* context) const;
  std::unique_ptr<v1::PolicyAdmin::Stub> stub_;
  std::string token_;
};

// grpc.health.v1 Check of the whole server: "SERVING", "NOT_SERVING", ... or the call's error.
absl::StatusOr<std::string> CheckHealth(std::shared_ptr<grpc::Channel> channel, absl::Duration timeout);

absl::Status FromGrpc(const grpc::Status& status);

}  // namespace a2sf::client

#endif  // A2SF_CLIENT_CLIENT_H_
