// a2sf: command-line client of A2SF-Serve.
//   a2sf generate --worker=HOST:PORT --prompt="Once upon a time" --max_tokens=200 --policy=a2sf --alpha=0.7
//   a2sf policy list|get --cachemgr=HOST:PORT
//   a2sf policy set --cachemgr=HOST:PORT --policy=h2o [--session=ID | --job=ID --worker=HOST:PORT] --token=...
//   a2sf jobs --worker=HOST:PORT        a2sf cancel JOB_ID --worker=HOST:PORT
//   a2sf model --worker=HOST:PORT       a2sf health --target=HOST:PORT
// Connections use TLS unless --plaintext (or a unix: address); --ca, --cert and --key for (m)TLS.
// Exit codes: 0 success; 1 an error; 2 a bad argument; 3 some --repeat jobs failed; 4 the job was
// cancelled.
#include <atomic>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/client.h"
#include "client/request_flags.h"
#include "common/cli.h"
#include "common/grpc/server.h"

ABSL_FLAG(std::string, worker, "127.0.0.1:50052", "worker address (generate, jobs, cancel)");
ABSL_FLAG(std::string, cachemgr, "127.0.0.1:50051", "cache manager address (policy)");
ABSL_FLAG(std::string, target, "", "address for health");
ABSL_FLAG(bool, plaintext, false, "connect without TLS");
ABSL_FLAG(std::string, ca, "", "PEM roots to verify servers");
ABSL_FLAG(std::string, cert, "", "client certificate (mutual TLS)");
ABSL_FLAG(std::string, key, "", "client key (mutual TLS)");
ABSL_FLAG(std::string, server_name, "", "TLS server name override");
ABSL_FLAG(std::string, token, "",
          "admin bearer token for policy set, and for jobs/cancel on a worker with --admin_token (also $A2SF_ADMIN_TOKEN)");
ABSL_FLAG(std::string, job_token, "", "cancel: the job's token (printed by generate) instead of the admin token");
ABSL_FLAG(bool, round_robin, false, "balance over every address --worker resolves to (dns:/// or ipv4:a,b)");
ABSL_FLAG(std::string, session, "", "policy set: a running session instead of the default");
ABSL_FLAG(std::string, job, "", "policy set: the session of this running job (its JobStats.session_id; needs --worker)");
ABSL_FLAG(std::string, job_id, "", "generate: client-chosen job id");
ABSL_FLAG(bool, idempotent, false, "generate: retry elsewhere if the worker is unavailable");
ABSL_FLAG(bool, json, false, "machine-readable output");
ABSL_FLAG(int, timeout_s, 0, "generate: give up on a job after this many seconds (0: wait as long as it runs)");
ABSL_FLAG(int, repeat, 1, "generate: submit the job this many times through one channel (load test)");
ABSL_FLAG(std::optional<int>, concurrency, std::nullopt, "generate --repeat: jobs in flight at once (default 4)");

namespace a2sf::client {
namespace {

int Fail(const absl::Status& status) {
  std::cerr << "a2sf: " << absl::StatusCodeToString(status.code()) << ": " << status.message() << "\n";
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      std::cerr << "  The server is not reachable: check the address, that it runs, and --plaintext / --ca.\n";
      break;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      std::cerr << "  Give the admin token with --token or $A2SF_ADMIN_TOKEN.\n";
      break;
    case absl::StatusCode::kInvalidArgument:
      std::cerr << "  Fix the field the message names; see 'a2sf --help'.\n";
      break;
    case absl::StatusCode::kResourceExhausted:
      std::cerr << "  The server is at capacity: retry later or elsewhere.\n";
      break;
    default:
      break;
  }
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

std::shared_ptr<grpc::Channel> Channel(const std::string& target, bool balance = false) {
  ChannelOptions options;
  options.plaintext = absl::GetFlag(FLAGS_plaintext);
  options.ca_cert_path = absl::GetFlag(FLAGS_ca);
  options.client_cert_chain_path = absl::GetFlag(FLAGS_cert);
  options.client_private_key_path = absl::GetFlag(FLAGS_key);
  options.tls_server_name_override = absl::GetFlag(FLAGS_server_name);
  if (balance) options.load_balancing_policy = "round_robin";
  auto channel = MakeChannel(target, options);
  if (!channel.ok()) {
    Fail(channel.status());
    std::exit(1);
  }
  return *channel;
}

std::string Json(const google::protobuf::Message& message) { return DumpJson(ProtoToJson(message)); }

// --timeout_s as a deadline per job attempt; 0 (or less): none.
absl::Duration JobTimeout() {
  const int seconds = absl::GetFlag(FLAGS_timeout_s);
  return seconds > 0 ? absl::Seconds(seconds) : absl::InfiniteDuration();
}

// Submits `request` --repeat times, --concurrency at once, over one channel; one line per job and a
// summary of how the jobs spread over the workers.
int Repeat(WorkerClient* worker, const v1::GenerateRequest& request) {
  const int total = absl::GetFlag(FLAGS_repeat);
  std::atomic<int> next{0};
  std::mutex mutex;
  std::map<std::string, int> per_worker;
  std::map<std::string, int> failures;
  std::vector<std::thread> threads;
  for (int t = 0; t < std::max(1, absl::GetFlag(FLAGS_concurrency).value_or(4)); ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < total; i = next++) {
        absl::StatusOr<GenerationResult> result = worker->Generate(request, nullptr, 2, JobTimeout());
        std::lock_guard<std::mutex> lock(mutex);
        if (result.ok()) {
          per_worker[result->finished.worker()]++;
          std::cout << "job " << i << ": ok on " << result->finished.worker() << ", " << result->ids.size()
                    << " tokens, queue position " << result->finished.queue_position() << ", waited "
                    << result->finished.queue_wait_ms() << " ms\n";
        } else {
          failures[absl::StatusCodeToString(result.status().code())]++;
          std::cout << "job " << i << ": " << absl::StatusCodeToString(result.status().code()) << ": "
                    << result.status().message() << "\n";
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0;
  std::cout << "summary: " << total << " jobs;";
  for (const auto& [name, count] : per_worker) std::cout << " " << name << "=" << count, ok += count;
  for (const auto& [code, count] : failures) std::cout << " " << code << "=" << count;
  std::cout << "\n";
  return ok == total ? 0 : 3;
}

std::string AdminToken() {
  std::string token = absl::GetFlag(FLAGS_token);
  if (token.empty() && std::getenv("A2SF_ADMIN_TOKEN") != nullptr) token = std::getenv("A2SF_ADMIN_TOKEN");
  return token;
}

void PrintSummary(const v1::JobStats& s) {
  std::cout << "\n\njob " << s.job_id() << " on " << s.worker() << ": " << s.generated_tokens() << " tokens, "
            << v1::FinishReason_Name(s.finish_reason()).substr(std::string("FINISH_REASON_").size())
            << (s.stop_string().empty() ? "" : " '" + absl::CEscape(s.stop_string()) + "'") << ", seed " << s.seed()
            << ", policy " << s.policy().name() << " ("
            << v1::PolicyLocation_Name(s.policy_location()).substr(std::string("POLICY_LOCATION_").size())
            << (s.session_id().empty() ? "" : ", session " + s.session_id())
            << (s.shared_memory() ? ", scores via shared memory" : "")
            << (s.decision_lag() > 0 ? absl::StrCat(", decisions ", s.decision_lag(), " steps late") : std::string())
            << "), budget " << s.budget_tokens() << " tokens/head, " << s.evictions() << " evictions\n"
            << "KV cache: peak " << s.kv_bytes_peak() << " bytes vs " << s.kv_bytes_full_cache()
            << " for a full cache; first token after " << s.time_to_first_token_ms() << " ms; "
            << int(s.tokens_per_second()) << " tok/s\n";
}

int Generate() {
  if (absl::GetFlag(FLAGS_concurrency).has_value() && absl::GetFlag(FLAGS_repeat) <= 1) {
    return Fail(absl::InvalidArgumentError("--concurrency: applies to --repeat > 1"));
  }
  absl::StatusOr<v1::GenerateRequest> parsed = RequestFromFlags();
  if (!parsed.ok()) return Fail(parsed.status());
  v1::GenerateRequest request = *std::move(parsed);
  request.set_job_id(absl::GetFlag(FLAGS_job_id));
  request.set_idempotent(absl::GetFlag(FLAGS_idempotent));
  const bool json = absl::GetFlag(FLAGS_json);
  WorkerClient worker(Channel(absl::GetFlag(FLAGS_worker), absl::GetFlag(FLAGS_round_robin)));
  if (absl::GetFlag(FLAGS_repeat) > 1) return Repeat(&worker, request);
  if (!json && request.has_text()) std::cout << request.text() << std::flush;
  absl::StatusOr<GenerationResult> result = worker.Generate(
      request, [&](const v1::GeneratedTokens& tokens) { if (!json) std::cout << tokens.text() << std::flush; }, 2,
      JobTimeout());
  if (!result.ok()) {
    if (!json) std::cout << "\n";
    return Fail(result.status());
  }
  if (json) {
    std::cout << DumpJson(GenerationJson(*result)) << "\n";
  } else {
    PrintSummary(result->finished);
  }
  if (result->finished.finish_reason() == v1::FINISH_REASON_CANCELLED) {
    std::cerr << "a2sf: job " << result->finished.job_id() << " was cancelled\n";
    return 4;
  }
  return 0;
}

// The cache-manager session of a running job on --worker.
absl::StatusOr<std::string> SessionOfJob(const std::string& job_id) {
  absl::StatusOr<v1::JobStatus> job = WorkerClient(Channel(absl::GetFlag(FLAGS_worker)), AdminToken()).GetJob(job_id, absl::GetFlag(FLAGS_job_token));
  if (!job.ok()) return job.status();
  if (job->state() != v1::JOB_STATE_RUNNING) {
    return absl::FailedPreconditionError(absl::StrCat("--job: job ", job_id, " is not running (",
                                                      v1::JobState_Name(job->state()), ")"));
  }
  if (job->stats().session_id().empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("--job: job ", job_id, " runs its policy in-process; only cache-manager sessions can be swapped"));
  }
  return job->stats().session_id();
}

// `a2sf policy list`: every policy with its parameters (or the JSON of them).
int ListPolicies(AdminClient& admin) {
  auto policies = admin.ListPolicies();
  if (!policies.ok()) return Fail(policies.status());
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << Json(*policies) << "\n";
    return 0;
  }
  for (const v1::PolicyInfo& p : policies->policies()) {
    std::cout << p.name() << ": " << p.description() << "\n";
    for (const auto& param : p.parameters()) {
      std::cout << "    " << param.name() << " (" << param.type() << ", " << param.valid_range()
                << (param.default_value().empty() ? "" : ", default " + param.default_value()) << "): "
                << param.description() << "\n";
    }
  }
  return 0;
}

// `a2sf policy get`: --session's session, or the default policy.
int GetPolicy(AdminClient& admin) {
  if (!absl::GetFlag(FLAGS_session).empty()) {
    auto sessions = admin.ListSessions();
    if (!sessions.ok()) return Fail(sessions.status());
    for (const auto& s : sessions->sessions()) {
      if (s.session_id() == absl::GetFlag(FLAGS_session)) {
        std::cout << Json(s) << "\n";
        return 0;
      }
    }
    return Fail(absl::NotFoundError("--session: no such session"));
  }
  auto policy = admin.GetDefault();
  if (!policy.ok()) return Fail(policy.status());
  std::cout << Json(*policy) << "\n";
  return 0;
}

// `a2sf policy set`: swaps --session's (or --job's session's) policy, or sets the default.
int SetPolicy(AdminClient& admin) {
  absl::StatusOr<v1::PolicySpec> policy = PolicyFromFlags();
  if (!policy.ok()) return Fail(policy.status());
  std::string session = absl::GetFlag(FLAGS_session);
  if (!absl::GetFlag(FLAGS_job).empty()) {
    if (!session.empty()) return Fail(absl::InvalidArgumentError("--job: conflicts with --session; give one"));
    absl::StatusOr<std::string> found = SessionOfJob(absl::GetFlag(FLAGS_job));
    if (!found.ok()) return Fail(found.status());
    session = *found;
  }
  if (!session.empty()) {
    auto swap = admin.SetSessionPolicy(session, *policy);
    if (!swap.ok()) return Fail(swap.status());
    std::cout << Json(*swap) << "\n";
    return 0;
  }
  auto set = admin.SetDefault(*policy);
  if (!set.ok()) return Fail(set.status());
  std::cout << "default policy: " << Json(*set) << "\n";
  return 0;
}

int Policy(const std::vector<char*>& args) {
  const std::string verb = args.size() > 2 ? args[2] : "list";
  AdminClient admin(Channel(absl::GetFlag(FLAGS_cachemgr)), AdminToken());
  if (verb == "list") return ListPolicies(admin);
  if (verb == "get") return GetPolicy(admin);
  if (verb == "set") return SetPolicy(admin);
  if (verb == "sessions") {
    auto sessions = admin.ListSessions();
    if (!sessions.ok()) return Fail(sessions.status());
    std::cout << Json(*sessions) << "\n";
    return 0;
  }
  return Fail(absl::InvalidArgumentError("policy: list, get, set or sessions"));
}

int Model() {
  auto info = WorkerClient(Channel(absl::GetFlag(FLAGS_worker))).GetModelInfo();
  if (!info.ok()) return Fail(info.status());
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << Json(*info) << "\n";
    return 0;
  }
  std::cout << info->name() << ": " << info->parameters() << " parameters (" << info->weight_format() << "), "
            << info->num_layers() << " layers, dim " << info->dim() << ", " << info->num_heads() << " heads / "
            << info->num_kv_heads() << " KV heads, context " << info->context_length() << ", vocabulary "
            << info->vocab_size() << ", tokenizer " << (info->tokenizer().empty() ? "none" : info->tokenizer())
            << "\nworker " << info->worker() << " on " << info->device() << ", KV cache "
            << (info->kv_type().empty() ? "f32" : info->kv_type()) << ", up to " << info->max_jobs()
            << " jobs, policies " << (info->remote_policies() ? "in the cache manager" : "in-process (default ")
            << (info->remote_policies() ? "" : info->default_policy().name() + ")") << "\n";
  return 0;
}

const std::vector<std::string> kConnectionFlags = {"plaintext", "ca", "cert", "key", "server_name"};

std::vector<std::string> Concat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Each command's usage: its summary and the flags it reads.
CliUsage CommandUsage(const std::string& command) {
  if (command == "generate") {
    return {"a2sf generate", "runs one generation job on a worker and streams its text.\n"
            "  a2sf generate --worker=HOST:PORT --prompt='Once upon a time' --max_tokens=200 --policy=a2sf",
            Concat(Concat({"worker", "round_robin", "job_id", "idempotent", "json", "repeat", "concurrency", "timeout_s"},
                          RequestFlagNames()), kConnectionFlags)};
  }
  if (command == "policy") {
    return {"a2sf policy", "policies of a cache manager.\n  a2sf policy list|get|sessions --cachemgr=HOST:PORT\n"
            "  a2sf policy get --session=ID\n"
            "  a2sf policy set --policy=NAME [params] [--session=ID | --job=ID --worker=HOST:PORT] --token=T\n"
            "  (set without --session or --job changes the default policy)",
            Concat(Concat({"cachemgr", "token", "session", "job", "job_token", "worker", "json"}, PolicyFlagNames()),
                   kConnectionFlags)};
  }
  if (command == "jobs") {
    return {"a2sf jobs", "lists a worker's jobs (JSON; every job with the worker's --token).",
            Concat({"worker", "token"}, kConnectionFlags)};
  }
  if (command == "cancel") {
    return {"a2sf cancel", "cancels a running job.\n  a2sf cancel JOB_ID --worker=HOST:PORT --job_token=T (or --token=ADMIN)",
            Concat({"worker", "job_token", "token"}, kConnectionFlags)};
  }
  if (command == "model") {
    return {"a2sf model", "describes the model a worker serves (GetModelInfo).",
            Concat({"worker", "json"}, kConnectionFlags)};
  }
  if (command == "health") {
    return {"a2sf health", "checks a server's gRPC health.\n  a2sf health --target=HOST:PORT",
            Concat({"target", "worker"}, kConnectionFlags)};
  }
  return {"a2sf", "command-line client of A2SF-Serve.\n  a2sf generate|policy|jobs|cancel|model|health [flags]\n"
          "  a2sf COMMAND --help lists a command's flags. Exit codes: 0 ok, 1 error, 2 bad argument, 3 some\n"
          "  --repeat jobs failed, 4 the job was cancelled.",
          kConnectionFlags};
}

int Main(std::vector<char*> args) {
  if (args.size() < 2) {
    PrintUsage(std::cerr, CommandUsage(""));
    return 2;
  }
  const std::string command = args[1];
  if (command == "generate") return Generate();
  if (command == "policy") return Policy(args);
  if (command == "model") return Model();
  if (command == "jobs") {
    auto jobs = WorkerClient(Channel(absl::GetFlag(FLAGS_worker)), AdminToken()).ListJobs();
    if (!jobs.ok()) return Fail(jobs.status());
    std::cout << Json(*jobs) << "\n";
    return 0;
  }
  if (command == "cancel") {
    if (args.size() < 3) return Fail(absl::InvalidArgumentError("cancel: give the job id"));
    auto cancelled =
        WorkerClient(Channel(absl::GetFlag(FLAGS_worker)), AdminToken()).Cancel(args[2], absl::GetFlag(FLAGS_job_token));
    if (!cancelled.ok()) return Fail(cancelled.status());
    std::cout << (*cancelled ? "cancelled\n" : "already finished\n");
    return 0;
  }
  if (command == "health") {
    const std::string target = absl::GetFlag(FLAGS_target).empty() ? absl::GetFlag(FLAGS_worker) : absl::GetFlag(FLAGS_target);
    auto health = CheckHealth(Channel(target), absl::Seconds(5));
    if (!health.ok()) return Fail(health.status());
    std::cout << target << ": " << *health << "\n";
    return *health == "SERVING" ? 0 : 1;
  }
  return Fail(absl::InvalidArgumentError("unknown command '" + command + "'"));
}

}  // namespace
}  // namespace a2sf::client

int main(int argc, char** argv) {
  const std::string command = argc > 1 && argv[1][0] != '-' ? argv[1] : "";
  return a2sf::client::Main(a2sf::ParseCommandLine(argc, argv, a2sf::client::CommandUsage(command)));
}
