// a2sf: command-line client of A2SF-Serve.
//   a2sf generate --worker=HOST:PORT --prompt="Once upon a time" --max_tokens=200 --policy=a2sf --alpha=0.3
//   a2sf policy list|get --cachemgr=HOST:PORT
//   a2sf policy set --cachemgr=HOST:PORT --policy=h2o [--session=ID] --token=...
//   a2sf jobs --worker=HOST:PORT        a2sf cancel JOB_ID --worker=HOST:PORT
//   a2sf health --target=HOST:PORT
// Connections use TLS unless --plaintext (or a unix: address); --ca, --cert and --key for (m)TLS.
#include <atomic>
#include <iostream>
#include <map>
#include <mutex>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/client.h"
#include "common/grpc/server.h"
#include "google/protobuf/util/json_util.h"
#include "nlohmann/json.hpp"

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
ABSL_FLAG(std::string, prompt, "", "prompt text");
ABSL_FLAG(std::string, prompt_ids, "", "comma-separated token ids instead of --prompt");
ABSL_FLAG(int, max_tokens, 200, "tokens to generate");
ABSL_FLAG(double, temperature, 0.0, "0 = greedy");
ABSL_FLAG(double, top_p, 0.0, "nucleus mass (0 = none)");
ABSL_FLAG(uint64_t, seed, 0, "sampler seed");
ABSL_FLAG(std::string, policy, "", "policy name (generate: empty = the server's default)");
ABSL_FLAG(double, alpha, -1, "a2sf alpha");
ABSL_FLAG(std::string, layer_alphas, "", "a2sf per-layer alphas, comma-separated");
ABSL_FLAG(int, sinks, -1, "streaming_llm sinks");
ABSL_FLAG(int, recent_window, -1, "a2sf recent window");
ABSL_FLAG(int, budget_tokens, 0, "KV budget per head in tokens");
ABSL_FLAG(double, budget_ratio, 0, "KV budget as a ratio of prompt + max_tokens");
ABSL_FLAG(std::string, prefill, "per_token", "per_token or bulk");
ABSL_FLAG(std::string, session, "", "policy set: a running session instead of the default");
ABSL_FLAG(std::string, job_id, "", "generate: client-chosen job id");
ABSL_FLAG(bool, idempotent, false, "generate: retry elsewhere if the worker is unavailable");
ABSL_FLAG(bool, json, false, "machine-readable output");
ABSL_FLAG(int, repeat, 1, "generate: submit the job this many times through one channel (load test)");
ABSL_FLAG(int, concurrency, 4, "generate --repeat: jobs in flight at once");

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

std::string Json(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

absl::StatusOr<v1::PolicySpec> PolicyFromFlags() {
  v1::PolicySpec policy;
  policy.set_name(absl::GetFlag(FLAGS_policy));
  if (absl::GetFlag(FLAGS_alpha) != -1) policy.set_alpha(absl::GetFlag(FLAGS_alpha));
  if (absl::GetFlag(FLAGS_sinks) >= 0) policy.set_sinks(uint32_t(absl::GetFlag(FLAGS_sinks)));
  if (absl::GetFlag(FLAGS_recent_window) >= 0) policy.set_recent_window(uint32_t(absl::GetFlag(FLAGS_recent_window)));
  if (!absl::GetFlag(FLAGS_layer_alphas).empty()) {
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_layer_alphas), ',')) {
      double a;
      if (!absl::SimpleAtod(part, &a)) return absl::InvalidArgumentError("--layer_alphas: not a list of numbers");
      policy.add_layer_alphas(a);
    }
  }
  return policy;
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
  for (int t = 0; t < std::max(1, absl::GetFlag(FLAGS_concurrency)); ++t) {
    threads.emplace_back([&] {
      for (int i = next++; i < total; i = next++) {
        absl::StatusOr<GenerationResult> result = worker->Generate(request);
        std::lock_guard<std::mutex> lock(mutex);
        if (result.ok()) {
          per_worker[result->finished.worker()]++;
          std::cout << "job " << i << ": ok on " << result->finished.worker() << ", " << result->ids.size()
                    << " tokens\n";
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

int Generate() {
  v1::GenerateRequest request;
  request.set_job_id(absl::GetFlag(FLAGS_job_id));
  if (!absl::GetFlag(FLAGS_prompt_ids).empty()) {
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_prompt_ids), ',')) {
      uint32_t id;
      if (!absl::SimpleAtoi(part, &id)) return Fail(absl::InvalidArgumentError("--prompt_ids: not a list of ids"));
      request.mutable_token_ids()->add_ids(id);
    }
  } else {
    request.set_text(absl::GetFlag(FLAGS_prompt));
  }
  if (absl::GetFlag(FLAGS_max_tokens) < 1) return Fail(absl::InvalidArgumentError("--max_tokens: must be >= 1"));
  request.set_max_tokens(uint32_t(absl::GetFlag(FLAGS_max_tokens)));
  request.mutable_sampling()->set_temperature(absl::GetFlag(FLAGS_temperature));
  request.mutable_sampling()->set_top_p(absl::GetFlag(FLAGS_top_p));
  request.mutable_sampling()->set_seed(absl::GetFlag(FLAGS_seed));
  if (!absl::GetFlag(FLAGS_policy).empty()) {
    absl::StatusOr<v1::PolicySpec> policy = PolicyFromFlags();
    if (!policy.ok()) return Fail(policy.status());
    *request.mutable_policy() = *policy;
  }
  if (absl::GetFlag(FLAGS_budget_tokens) > 0) request.mutable_budget()->set_tokens(uint32_t(absl::GetFlag(FLAGS_budget_tokens)));
  if (absl::GetFlag(FLAGS_budget_ratio) != 0) request.mutable_budget()->set_ratio(absl::GetFlag(FLAGS_budget_ratio));
  request.set_prefill(absl::GetFlag(FLAGS_prefill) == "bulk" ? v1::PREFILL_MODE_BULK : v1::PREFILL_MODE_PER_TOKEN);
  request.set_idempotent(absl::GetFlag(FLAGS_idempotent));
  const bool json = absl::GetFlag(FLAGS_json);
  WorkerClient worker(Channel(absl::GetFlag(FLAGS_worker), absl::GetFlag(FLAGS_round_robin)));
  if (absl::GetFlag(FLAGS_repeat) > 1) return Repeat(&worker, request);
  if (!json && request.has_text()) std::cout << request.text() << std::flush;
  absl::StatusOr<GenerationResult> result = worker.Generate(request, [&](const v1::GeneratedTokens& tokens) {
    if (!json) std::cout << tokens.text() << std::flush;
  });
  if (!result.ok()) {
    if (!json) std::cout << "\n";
    return Fail(result.status());
  }
  const v1::JobStats& s = result->finished;
  if (json) {
    nlohmann::json out = {{"ids", result->ids}, {"text", result->text}, {"stats", nlohmann::json::parse(Json(s))}};
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return 0;
  }
  std::cout << "\n\njob " << s.job_id() << " on " << s.worker() << ": " << s.generated_tokens() << " tokens, policy "
            << s.policy().name() << " ("
            << v1::PolicyLocation_Name(s.policy_location()).substr(std::string("POLICY_LOCATION_").size())
            << (s.shared_memory() ? ", scores via shared memory" : "")
            << (s.decision_lag() > 0 ? absl::StrCat(", decisions ", s.decision_lag(), " steps late") : std::string())
            << "), budget " << s.budget_tokens() << " tokens/head, " << s.evictions() << " evictions\n"
            << "KV cache: peak " << s.kv_bytes_peak() << " bytes vs " << s.kv_bytes_full_cache()
            << " for a full cache; first token after " << s.time_to_first_token_ms() << " ms; "
            << int(s.tokens_per_second()) << " tok/s\n";
  return 0;
}

int Policy(const std::vector<char*>& args) {
  const std::string verb = args.size() > 2 ? args[2] : "list";
  AdminClient admin(Channel(absl::GetFlag(FLAGS_cachemgr)), AdminToken());
  const bool json = absl::GetFlag(FLAGS_json);
  if (verb == "list") {
    auto policies = admin.ListPolicies();
    if (!policies.ok()) return Fail(policies.status());
    if (json) {
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
  if (verb == "get") {
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
  if (verb == "set") {
    if (absl::GetFlag(FLAGS_policy).empty()) return Fail(absl::InvalidArgumentError("--policy: required for set"));
    absl::StatusOr<v1::PolicySpec> policy = PolicyFromFlags();
    if (!policy.ok()) return Fail(policy.status());
    if (!absl::GetFlag(FLAGS_session).empty()) {
      auto swap = admin.SetSessionPolicy(absl::GetFlag(FLAGS_session), *policy);
      if (!swap.ok()) return Fail(swap.status());
      std::cout << Json(*swap) << "\n";
      return 0;
    }
    auto set = admin.SetDefault(*policy);
    if (!set.ok()) return Fail(set.status());
    std::cout << "default policy: " << Json(*set) << "\n";
    return 0;
  }
  if (verb == "sessions") {
    auto sessions = admin.ListSessions();
    if (!sessions.ok()) return Fail(sessions.status());
    std::cout << Json(*sessions) << "\n";
    return 0;
  }
  return Fail(absl::InvalidArgumentError("policy: list, get, set or sessions"));
}

int Main(std::vector<char*> args) {
  if (args.size() < 2) {
    std::cerr << "usage: a2sf generate|policy|jobs|cancel|health [flags]; a2sf --help\n";
    return 2;
  }
  const std::string command = args[1];
  if (command == "generate") return Generate();
  if (command == "policy") return Policy(args);
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
  absl::SetProgramUsageMessage("a2sf generate|policy list|get|set|sessions|jobs|cancel JOB|health [flags]");
  return a2sf::client::Main(absl::ParseCommandLine(argc, argv));
}
