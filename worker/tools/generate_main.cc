// a2sf-generate: runs the decoder in-process with an eviction policy and prints the story (or, with
// --json, the same JSON object `a2sf generate --json` prints: text, ids, stats, logprobs,
// prompt_logprobs). The request flags are a2sf generate's (client/request_flags.h) and the request
// is checked by the worker's own rules (worker/service/job_plan.h).
//
//   a2sf-generate --model=stories260K.bin --tokenizer=tok512.bin --prompt="Once upon a time"
//     --max_tokens=200 --policy=a2sf --alpha=0.7 --budget_tokens=40
#include <iostream>

#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "cachemgr/policy_library.h"
#include "client/generation_result.h"
#include "client/request_flags.h"
#include "common/cli.h"
#include "worker/engine/engine_flags.h"
#include "worker/engine/generator.h"
#include "worker/policy/in_process_policy_client.h"
#include "worker/model/load_flags.h"
#include "worker/service/job_output.h"
#include "worker/service/job_plan.h"
#include "worker/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, model, "", "llama2.c .bin checkpoint, GGUF file or Hugging Face folder");
ABSL_FLAG(std::string, tokenizer, "", "tokenizer.bin (llama2.c) or tokenizer.model (sentencepiece); default: a GGUF model's own");
ABSL_FLAG(int, decision_lag, 0, "pipelined decisions: apply each decision this many steps late (0: synchronous)");
ABSL_FLAG(int, threads, 1, "CPU threads");
ABSL_FLAG(bool, json, false, "print one JSON object (a2sf generate --json's schema)");

namespace a2sf::worker {
namespace {

int Fail(const absl::Status& status) {
  std::cerr << "a2sf-generate: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

// The statistics a worker would report for the same job, in-process.
v1::JobStats AcceptedStats(const JobPlan& plan, const InProcessPolicyClient& policy) {
  v1::JobStats stats;
  stats.set_prompt_tokens(uint32_t(plan.prompt.size()));
  stats.set_policy_location(v1::POLICY_LOCATION_IN_PROCESS);
  *stats.mutable_policy() = cachemgr::ToProto(policy.session().policy);
  stats.set_budget_tokens(policy.budget_tokens());
  stats.set_decision_lag(policy.decision_lag());
  stats.set_seed(plan.generate.sampling.seed);
  stats.set_worker("a2sf-generate");
  return stats;
}

// The request the flags describe, checked as far as it can be without the model.
absl::StatusOr<v1::GenerateRequest> RequestFromFlags() {
  absl::StatusOr<v1::GenerateRequest> request = client::RequestFromFlags();
  if (!request.ok()) return request.status();
  if (!request->has_policy() && request->has_budget()) {
    return absl::InvalidArgumentError(
        "--budget_tokens / --budget_ratio: without --policy the run keeps the full cache; give --policy too");
  }
  if (absl::GetFlag(FLAGS_decision_lag) < 0) return absl::InvalidArgumentError("--decision_lag: must be >= 0");
  return request;
}

// The model, and its tokenizer when there is one (the model's own, or --tokenizer's).
struct LoadedModel {
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<Tokenizer> tokenizer;  // may be null: token-id prompts only
};

absl::StatusOr<LoadedModel> LoadModelAndTokenizer(const LoadOptions& load) {
  LoadedModel model;
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = LoadModel(absl::GetFlag(FLAGS_model), load);
  if (!weights.ok()) return weights.status();
  model.weights = std::move(*weights);
  std::cerr << "model: " << DescribeLoadedModel(*model.weights) << "\n";
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      LoadTokenizerForModel(absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_tokenizer));
  if (!tokenizer.ok()) return tokenizer.status();
  if (*tokenizer != nullptr && (*tokenizer)->vocab_size() != model.weights->config().vocab_size) {
    return absl::InvalidArgumentError("--tokenizer's vocabulary does not match the model's");
  }
  model.tokenizer = std::move(*tokenizer);
  return model;
}

// The request's policy in-process (without --policy: the full cache, the reference).
absl::StatusOr<std::unique_ptr<InProcessPolicyClient>> MakePolicy(const v1::GenerateRequest& request,
                                                                  const JobPlan& plan, const ModelConfig& c) {
  v1::PolicySpec full;
  full.set_name("full");
  absl::StatusOr<cachemgr::BudgetSpec> budget = cachemgr::FromProto(plan.budget);
  if (!budget.ok()) return budget.status();
  return InProcessPolicyClient::Create(c, cachemgr::FromProto(request.has_policy() ? request.policy() : full), *budget,
                                       uint32_t(absl::GetFlag(FLAGS_decision_lag)));
}

// An engine whose cache holds what the job and its policy need (the whole context at most).
absl::StatusOr<std::unique_ptr<Engine>> MakeEngine(const ModelWeights& weights, const EngineFlags& flags,
                                                   const JobPlan& plan, const EvictionPolicyClient* policy) {
  const ModelConfig& c = weights.config();
  EngineOptions options;
  options.threads = absl::GetFlag(FLAGS_threads);
  options.device = flags.device;
  options.kv_type = flags.kv_type;
  const int P = int(plan.prompt.size());
  const int max_new = EffectiveMaxNewTokens(plan.generate, c, P);
  options.cache_capacity =
      std::min(c.seq_len, std::max(1, RequiredCacheCapacity(policy, P, max_new, plan.generate.bulk_prefill)));
  return Engine::Create(&weights, options);
}

// The story as it is generated, then a line of statistics.
void PrintSummary(const client::GenerationResult& out, const InProcessPolicyClient& policy) {
  const v1::JobStats& s = out.finished;
  std::cout << "\n\n[" << cachemgr::PolicySpecToString(policy.session().policy) << ", budget " << s.budget_tokens()
            << " tokens/head] " << s.generated_tokens() << " tokens, "
            << v1::FinishReason_Name(s.finish_reason()).substr(std::string("FINISH_REASON_").size())
            << (s.stop_string().empty() ? "" : " '" + absl::CEscape(s.stop_string()) + "'") << ", seed " << s.seed()
            << ", " << s.evictions() << " evictions, KV peak " << s.kv_bytes_peak() << " bytes (full cache "
            << s.kv_bytes_full_cache() << "), " << int(s.tokens_per_second()) << " tok/s\n";
}

// Runs the job: the text streams to stdout as it comes (or one JSON object at the end).
absl::Status Run(const v1::GenerateRequest& request, const JobPlan& plan, const ModelConfig& c, WeightType kv_type,
                 const Tokenizer* tokenizer, Engine* engine, InProcessPolicyClient* policy) {
  const bool json = absl::GetFlag(FLAGS_json);
  client::GenerationResult out;
  out.finished = AcceptedStats(plan, *policy);
  JobOutput output(tokenizer, plan.prompt, plan.stop, plan.logprobs);
  v1::GeneratedTokens chunk;
  GenerateCallbacks callbacks;
  callbacks.on_prompt_logits = [&](int position, absl::Span<const float> logits) {
    output.OnPromptLogits(position, logits);
  };
  callbacks.on_token = [&](const TokenEvent& event) {
    const TokenVerdict verdict = output.OnToken(event, &chunk);
    out.ids.push_back(uint32_t(event.id));
    out.text += chunk.text();
    out.logprobs.insert(out.logprobs.end(), chunk.logprobs().begin(), chunk.logprobs().end());
    if (!json) std::cout << chunk.text() << std::flush;
    return verdict;
  };
  if (!json && request.has_text()) std::cout << request.text() << std::flush;
  absl::StatusOr<GenerateResult> result = Generate(engine, policy, plan.prompt, plan.generate, callbacks);
  if (!result.ok()) return result.status();
  const std::string tail = output.Finish();
  out.text += tail;
  out.prompt_logprobs = output.prompt_logprobs();
  SetResultStats(c, kv_type, plan.prompt.size(), *result, output.stop_string(), &out.finished);
  if (json) {
    std::cout << client::DumpJson(client::GenerationJson(out)) << "\n";
  } else {
    std::cout << tail;
    PrintSummary(out, *policy);
  }
  return absl::OkStatus();
}

int Main() {
  if (absl::GetFlag(FLAGS_model).empty()) return Fail(absl::InvalidArgumentError("--model is required"));
  absl::StatusOr<v1::GenerateRequest> request = RequestFromFlags();
  if (!request.ok()) return Fail(request.status());
  absl::StatusOr<EngineFlags> flags = EngineFlagsFromFlags();  // checked before the model's load
  if (!flags.ok()) return Fail(flags.status());
  absl::StatusOr<LoadedModel> model = LoadModelAndTokenizer(flags->load);
  if (!model.ok()) return Fail(model.status());
  const ModelConfig& c = model->weights->config();
  absl::StatusOr<JobPlan> plan = PlanJob(*request, c, model->tokenizer.get());
  if (!plan.ok()) return Fail(plan.status());
  absl::StatusOr<std::unique_ptr<InProcessPolicyClient>> policy = MakePolicy(*request, *plan, c);
  if (!policy.ok()) return Fail(policy.status());
  absl::StatusOr<std::unique_ptr<Engine>> engine = MakeEngine(*model->weights, *flags, *plan, policy->get());
  if (!engine.ok()) return Fail(engine.status());
  const absl::Status ran =
      Run(*request, *plan, c, flags->kv_type, model->tokenizer.get(), engine->get(), policy->get());
  return ran.ok() ? 0 : Fail(ran);
}

}  // namespace
}  // namespace a2sf::worker

int main(int argc, char** argv) {
  a2sf::ParseCommandLine(argc, argv,
                         {"a2sf-generate",
                          "generates text in-process with a LLaMA-2 model and a bounded, policy-evicted KV cache "
                          "(without --policy: the full cache).\n"
                          "  a2sf-generate --model=stories260K.bin --tokenizer=tok512.bin --prompt='Once upon a time' "
                          "--policy=a2sf --budget_ratio=0.2",
                          {}});
  return a2sf::worker::Main();
}
