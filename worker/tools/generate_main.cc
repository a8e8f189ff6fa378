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
ABSL_FLAG(std::string, device, "cpu", "engine backend: cpu or cuda (needs a GPU)");
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

int Main() {
  if (absl::GetFlag(FLAGS_model).empty()) return Fail(absl::InvalidArgumentError("--model is required"));
  absl::StatusOr<v1::GenerateRequest> request = client::RequestFromFlags();
  if (!request.ok()) return Fail(request.status());
  if (!request->has_policy() && request->has_budget()) {
    return Fail(absl::InvalidArgumentError(
        "--budget_tokens / --budget_ratio: without --policy the run keeps the full cache; give --policy too"));
  }
  if (absl::GetFlag(FLAGS_decision_lag) < 0) return Fail(absl::InvalidArgumentError("--decision_lag: must be >= 0"));
  absl::StatusOr<LoadOptions> load = LoadOptionsFromFlags();
  if (!load.ok()) return Fail(load.status());
  absl::StatusOr<EngineDevice> device = ParseEngineDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return Fail(device.status());
  absl::StatusOr<WeightType> kv_type = KvTypeFromFlags();  // checked before the model's load
  if (!kv_type.ok()) return Fail(kv_type.status());
  if (absl::Status s = CheckKvType(*kv_type, *device); !s.ok()) return Fail(s);
  if (*device == EngineDevice::kCuda) load->panels = false;  // the GPU kernels read rows
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = LoadModel(absl::GetFlag(FLAGS_model), *load);
  if (!weights.ok()) return Fail(weights.status());
  std::cerr << "model: " << DescribeLoadedModel(**weights) << "\n";
  const ModelConfig& c = (*weights)->config();
  std::unique_ptr<Tokenizer> tokenizer;
  absl::StatusOr<std::unique_ptr<Tokenizer>> t =
      LoadTokenizerForModel(absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_tokenizer));
  if (!t.ok()) return Fail(t.status());
  if (*t != nullptr) {
    if ((*t)->vocab_size() != c.vocab_size) {
      return Fail(absl::InvalidArgumentError("--tokenizer's vocabulary does not match the model's"));
    }
    tokenizer = std::move(*t);
  }
  absl::StatusOr<JobPlan> plan = PlanJob(*request, c, tokenizer.get());
  if (!plan.ok()) return Fail(plan.status());

  // Without --policy the in-process run keeps the full cache (the reference).
  v1::PolicySpec full;
  full.set_name("full");
  absl::StatusOr<cachemgr::BudgetSpec> budget = cachemgr::FromProto(plan->budget);
  if (!budget.ok()) return Fail(budget.status());
  absl::StatusOr<std::unique_ptr<InProcessPolicyClient>> policy =
      InProcessPolicyClient::Create(c, cachemgr::FromProto(request->has_policy() ? request->policy() : full), *budget,
                              uint32_t(absl::GetFlag(FLAGS_decision_lag)));
  if (!policy.ok()) return Fail(policy.status());

  EngineOptions engine_options;
  engine_options.threads = absl::GetFlag(FLAGS_threads);
  engine_options.device = *device;
  engine_options.kv_type = *kv_type;
  const int P = int(plan->prompt.size());
  const int max_new = plan->generate.max_new_tokens == 0 ? ContextRoom(c, P) : plan->generate.max_new_tokens;
  engine_options.cache_capacity = std::min(
      c.seq_len, std::max(1, RequiredCacheCapacity(policy->get(), P, max_new, plan->generate.bulk_prefill)));
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(weights->get(), engine_options);
  if (!engine.ok()) return Fail(engine.status());

  const bool json = absl::GetFlag(FLAGS_json);
  client::GenerationResult out;
  out.finished = AcceptedStats(*plan, **policy);
  JobOutput output(tokenizer.get(), plan->prompt, plan->stop, plan->logprobs);
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
  if (!json && request->has_text()) std::cout << request->text() << std::flush;
  absl::StatusOr<GenerateResult> result = Generate(engine->get(), policy->get(), plan->prompt, plan->generate, callbacks);
  if (!result.ok()) return Fail(result.status());
  const std::string tail = output.Finish();
  out.text += tail;
  out.prompt_logprobs = output.prompt_logprobs();
  SetResultStats(c, engine_options.kv_type, plan->prompt.size(), *result, output.stop_string(), &out.finished);
  if (json) {
    std::cout << client::DumpJson(client::GenerationJson(out)) << "\n";
    return 0;
  }
  const v1::JobStats& s = out.finished;
  std::cout << tail << "\n\n[" << cachemgr::PolicySpecToString((*policy)->session().policy) << ", budget "
            << s.budget_tokens() << " tokens/head] " << s.generated_tokens() << " tokens, "
            << v1::FinishReason_Name(s.finish_reason()).substr(std::string("FINISH_REASON_").size())
            << (s.stop_string().empty() ? "" : " '" + absl::CEscape(s.stop_string()) + "'") << ", seed " << s.seed()
            << ", " << s.evictions() << " evictions, KV peak " << s.kv_bytes_peak() << " bytes (full cache "
            << s.kv_bytes_full_cache() << "), " << int(s.tokens_per_second()) << " tok/s\n";
  return 0;
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
