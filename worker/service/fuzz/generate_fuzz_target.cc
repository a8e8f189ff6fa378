#include "worker/service/fuzz/generate_fuzz_target.h"

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "cachemgr/service/cache_manager_service.h"
#include "cachemgr/policy_library.h"
#include "common/log.h"
#include "grpcpp/grpcpp.h"
#include "worker/service/generation_service.h"
#include "worker/testing/fixtures.h"

namespace a2sf::worker {

namespace {

// Everything an input runs against, built once per process.
struct Harness {
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<Tokenizer> tokenizer;
  std::unique_ptr<cachemgr::SessionManager> manager;
  std::unique_ptr<cachemgr::CacheManagerService> cache_service;
  std::unique_ptr<grpc::Server> cache_server;
  std::unique_ptr<GenerationService> local, remote;
  std::unique_ptr<grpc::Server> worker_server_local, worker_server_remote;
  std::unique_ptr<v1::Generation::Stub> local_stub, remote_stub;

  Harness() {
    SetMinLogLevel(LogLevel::kError);
    ModelConfig c;
    c.dim = 16;
    c.hidden_dim = 32;
    c.n_layers = 2;
    c.n_heads = 2;
    c.n_kv_heads = 1;
    c.vocab_size = 512;  // the fixture tokenizer's
    c.seq_len = 48;
    c.head_dim = 8;
    c.shared_classifier = true;
    weights = std::move(*MakeSyntheticModel(c, 7));
    absl::StatusOr<std::unique_ptr<Tokenizer>> t =
        LoadLlama2cTokenizer(testing::FixturesDir() + "/tok512.bin", c.vocab_size);
    if (!t.ok()) {
      std::fprintf(stderr, "generate fuzzer: set A2SF_FIXTURES to the fixtures folder (%s)\n",
                   std::string(t.status().message()).c_str());
      std::abort();
    }
    tokenizer = std::move(*t);
    cachemgr::SessionManagerOptions session_options;
    session_options.max_sessions = 8;
    manager = std::make_unique<cachemgr::SessionManager>(std::make_unique<cachemgr::CpuScoreStore>(1),
                                                         &cachemgr::PolicyRegistry::Builtin(), session_options);
    cache_service = std::make_unique<cachemgr::CacheManagerService>(manager.get());
    grpc::ServerBuilder cache_builder;
    cache_builder.RegisterService(cache_service.get());
    cache_server = cache_builder.BuildAndStart();

    WorkerOptions options;
    options.weights = weights.get();
    options.tokenizer = tokenizer.get();
    options.default_policy.set_name("a2sf");
    options.max_batch = 4;
    options.finished_jobs_kept = 4;
    local = std::make_unique<GenerationService>(options);
    options.cache_manager = cache_server->InProcessChannel(grpc::ChannelArguments());
    options.cache_manager_wait = absl::Seconds(2);
    remote = std::make_unique<GenerationService>(options);
    worker_server_local = Serve(local.get());
    worker_server_remote = Serve(remote.get());
    local_stub = v1::Generation::NewStub(worker_server_local->InProcessChannel(grpc::ChannelArguments()));
    remote_stub = v1::Generation::NewStub(worker_server_remote->InProcessChannel(grpc::ChannelArguments()));
  }

  static std::unique_ptr<grpc::Server> Serve(grpc::Service* service) {
    grpc::ServerBuilder builder;
    builder.RegisterService(service);
    return builder.BuildAndStart();
  }
};

Harness& TheHarness() {
  static Harness* harness = new Harness();
  return *harness;
}

void Require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "generate fuzzer: invariant broken: %s\n", what);
    std::abort();
  }
}

bool DocumentedCode(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::ALREADY_EXISTS:
    case grpc::StatusCode::UNAVAILABLE:
      return true;
    default:
      return false;
  }
}

template <typename Call>
grpc::Status WithDeadline(Call call) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  return call(&context);
}

}  // namespace

absl::Status GenerateFuzzInput(const uint8_t* data, size_t size) {
  Harness& h = TheHarness();
  if (size == 0) return absl::InvalidArgumentError("empty input");
  v1::GenerateRequest request;
  if (!request.ParseFromArray(data + 1, int(size - 1))) return absl::InvalidArgumentError("not a GenerateRequest");
  v1::Generation::Stub* stub = (data[0] & 1) ? h.remote_stub.get() : h.local_stub.get();
  std::string job_id;
  grpc::Status status = WithDeadline([&](grpc::ClientContext* context) {
    auto reader = stub->Generate(context, request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (response.has_accepted()) {
        job_id = response.accepted().job_id();
        Require(response.job_token().size() == 32, "accepted carries a 32-digit job token");
      }
    }
    return reader->Finish();
  });
  if (!status.ok()) {
    Require(!status.error_message().empty(), "a refusal has a message");
    Require(DocumentedCode(status.error_code()), "a refusal has a documented code");
  }
  // Another client, without the job's token, can neither read nor cancel the job.
  if (!job_id.empty()) {
    v1::GetJobRequest get;
    get.set_job_id(job_id);
    v1::JobStatus job;
    Require(WithDeadline([&](grpc::ClientContext* c) { return stub->GetJob(c, get, &job); }).error_code() ==
                grpc::StatusCode::NOT_FOUND,
            "GetJob without the token is NOT_FOUND");
    v1::CancelJobRequest cancel;
    cancel.set_job_id(job_id);
    v1::CancelJobResponse cancelled;
    Require(WithDeadline([&](grpc::ClientContext* c) { return stub->CancelJob(c, cancel, &cancelled); })
                    .error_code() == grpc::StatusCode::NOT_FOUND,
            "CancelJob without the token is NOT_FOUND");
  }
  v1::ListJobsResponse jobs;
  Require(WithDeadline([&](grpc::ClientContext* c) { return stub->ListJobs(c, {}, &jobs); }).ok(), "ListJobs answers");
  for (const v1::JobStatus& j : jobs.jobs()) Require(j.state() != v1::JOB_STATE_RUNNING, "no job is left running");
  Require(h.manager->session_count() == 0, "every cache-manager session was closed");
  return status.ok() ? absl::OkStatus() : absl::Status(absl::StatusCode(status.error_code()), status.error_message());
}

}  // namespace a2sf::worker
