// a2sf-generate: runs the decoder in-process with an eviction policy and prints the story (or, with
// --json, one JSON object with prompt_ids, generated_ids, text, evictions, kv_bytes_peak and
// tokens_per_second).
//
//   a2sf-generate --model=stories260K.bin --tokenizer=tok512.bin --prompt="Once upon a time"
//     --steps=200 --policy=a2sf --alpha=0.3 --budget_tokens=40
#include <iostream>
#include <sys/stat.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"
#include "worker/engine/generator.h"
#include "worker/model/load_flags.h"
#include "worker/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, model, "", "llama2.c .bin checkpoint, GGUF file or Hugging Face folder");
ABSL_FLAG(std::string, tokenizer, "", "tokenizer.bin (llama2.c) or tokenizer.model (sentencepiece); default: a GGUF model's own");
ABSL_FLAG(std::string, prompt, "", "prompt text (BOS is prepended)");
ABSL_FLAG(std::string, prompt_ids, "", "comma-separated token ids used as given, instead of --prompt");
ABSL_FLAG(int, steps, 256, "tokens to generate");
ABSL_FLAG(double, temperature, 0.0, "0 = greedy");
ABSL_FLAG(double, top_p, 0.9, "nucleus mass in (0, 1]");
ABSL_FLAG(uint64_t, seed, 0, "sampler seed (0: fixed default)");
ABSL_FLAG(std::string, policy, "full", "full, local, streaming_llm, h2o, tova or a2sf");
ABSL_FLAG(double, alpha, -1, "a2sf forgetting factor (default 0.3)");
ABSL_FLAG(std::string, layer_alphas, "", "a2sf per-layer alphas, comma-separated");
ABSL_FLAG(int, sinks, -1, "streaming_llm attention sinks (default 4)");
ABSL_FLAG(int, recent_window, -1, "a2sf protected recent window (default 0)");
ABSL_FLAG(int, decision_lag, 0, "pipelined decisions: apply each decision this many steps late (0: synchronous)");
ABSL_FLAG(int, budget_tokens, 0, "KV entries per layer and KV head (0 with no --budget_ratio: the whole sequence)");
ABSL_FLAG(double, budget_ratio, 0, "budget as a fraction of prompt + steps");
ABSL_FLAG(std::string, prefill, "per_token", "per_token or bulk");
ABSL_FLAG(int, threads, 1, "CPU threads");
ABSL_FLAG(std::string, device, "cpu", "engine backend: cpu or cuda (needs a GPU)");
ABSL_FLAG(bool, json, false, "print one JSON object");

namespace a2sf::worker {
namespace {

int Fail(const absl::Status& status) {
  std::cerr << "a2sf-generate: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

int Main() {
  if (absl::GetFlag(FLAGS_model).empty()) return Fail(absl::InvalidArgumentError("--model is required"));
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = LoadModel(absl::GetFlag(FLAGS_model));
  if (!weights.ok()) return Fail(weights.status());
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
  std::vector<int> prompt;
  if (!absl::GetFlag(FLAGS_prompt_ids).empty()) {
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_prompt_ids), ',')) {
      int id;
      if (!absl::SimpleAtoi(part, &id)) return Fail(absl::InvalidArgumentError("--prompt_ids: not a list of integers"));
      prompt.push_back(id);
    }
  } else {
    if (tokenizer == nullptr) return Fail(absl::InvalidArgumentError("--tokenizer is required with --prompt (the model carries none)"));
    absl::StatusOr<std::vector<int>> ids = tokenizer->Encode(absl::GetFlag(FLAGS_prompt), true);
    if (!ids.ok()) return Fail(ids.status());
    prompt = *ids;
  }

  GenerateOptions options;
  options.max_new_tokens = absl::GetFlag(FLAGS_steps);
  options.sampling = {float(absl::GetFlag(FLAGS_temperature)), float(absl::GetFlag(FLAGS_top_p)),
                      absl::GetFlag(FLAGS_seed)};
  const std::string prefill = absl::GetFlag(FLAGS_prefill);
  if (prefill != "per_token" && prefill != "bulk") return Fail(absl::InvalidArgumentError("--prefill: per_token or bulk"));
  options.bulk_prefill = prefill == "bulk";

  cachemgr::PolicySpec spec;
  spec.name = absl::GetFlag(FLAGS_policy);
  if (absl::GetFlag(FLAGS_alpha) != -1) spec.alpha = absl::GetFlag(FLAGS_alpha);  // -1: unset
  if (absl::GetFlag(FLAGS_sinks) >= 0) spec.sinks = absl::GetFlag(FLAGS_sinks);
  if (absl::GetFlag(FLAGS_recent_window) >= 0) spec.recent_window = absl::GetFlag(FLAGS_recent_window);
  if (!absl::GetFlag(FLAGS_layer_alphas).empty()) {
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_layer_alphas), ',')) {
      double a;
      if (!absl::SimpleAtod(part, &a)) return Fail(absl::InvalidArgumentError("--layer_alphas: not a list of numbers"));
      spec.layer_alphas.push_back(a);
    }
  }
  cachemgr::BudgetSpec budget;
  const uint32_t sequence = uint32_t(prompt.size() + std::max(0, options.max_new_tokens));
  if (absl::GetFlag(FLAGS_budget_ratio) != 0) {
    budget.ratio = absl::GetFlag(FLAGS_budget_ratio);
    budget.reference_length = sequence;
  } else if (absl::GetFlag(FLAGS_budget_tokens) != 0) {
    if (absl::GetFlag(FLAGS_budget_tokens) < 0) return Fail(absl::InvalidArgumentError("--budget_tokens: must be >= 1"));
    budget.tokens = uint32_t(absl::GetFlag(FLAGS_budget_tokens));
  } else {
    budget.tokens = std::max<uint32_t>(1, std::min<uint32_t>(sequence, uint32_t(c.seq_len)));
  }
  if (absl::GetFlag(FLAGS_decision_lag) < 0) return Fail(absl::InvalidArgumentError("--decision_lag: must be >= 0"));
  absl::StatusOr<std::unique_ptr<InProcessPolicy>> policy =
      InProcessPolicy::Create(c, spec, budget, uint32_t(absl::GetFlag(FLAGS_decision_lag)));
  if (!policy.ok()) return Fail(policy.status());

  EngineOptions engine_options;
  engine_options.threads = absl::GetFlag(FLAGS_threads);
  absl::StatusOr<EngineDevice> device = ParseEngineDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return Fail(device.status());
  engine_options.device = *device;
  engine_options.cache_capacity =
      std::min(c.seq_len, std::max(1, RequiredCacheCapacity(policy->get(), int(prompt.size()), options.max_new_tokens,
                                                             options.bulk_prefill)));
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(weights->get(), engine_options);
  if (!engine.ok()) return Fail(engine.status());

  const bool json = absl::GetFlag(FLAGS_json);
  Utf8StreamDecoder stream;
  std::string text;
  int previous = prompt.back();
  auto on_token = [&](int token) {
    if (tokenizer != nullptr && token != c.bos_id && token != c.eos_id) {
      const std::string piece = stream.Push(tokenizer->DecodePiece(previous, token));
      text += piece;
      if (!json) std::cout << piece << std::flush;
    }
    previous = token;
    return true;
  };
  if (!json && tokenizer != nullptr && !absl::GetFlag(FLAGS_prompt).empty()) {
    std::cout << absl::GetFlag(FLAGS_prompt) << std::flush;
  }
  absl::StatusOr<GenerateResult> result = Generate(engine->get(), policy->get(), prompt, options, on_token);
  if (!result.ok()) return Fail(result.status());
  text += stream.Flush();
  const size_t full_bytes = size_t(prompt.size() + result->generated.size() - 1) * c.n_layers * c.kv_dim() * 2 * 4;
  if (json) {
    nlohmann::json out = {{"prompt_ids", prompt},
                          {"generated_ids", result->generated},
                          {"text", text},
                          {"policy", cachemgr::PolicySpecToString((*policy)->session().policy)},
                          {"budget_tokens", (*policy)->budget_tokens()},
                          {"decision_lag", (*policy)->decision_lag()},
                          {"evictions", result->evictions},
                          {"kv_bytes_peak", result->kv_bytes_peak},
                          {"kv_bytes_full_cache", full_bytes},
                          {"time_to_first_token_ms", result->time_to_first_token_ms},
                          {"tokens_per_second", result->tokens_per_second}};
    std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::cout << "\n\n[" << cachemgr::PolicySpecToString((*policy)->session().policy) << ", budget "
              << (*policy)->budget_tokens() << " tokens/head] " << result->generated.size() << " tokens, "
              << result->evictions << " evictions, KV peak " << result->kv_bytes_peak << " bytes (full cache "
              << full_bytes << "), " << int(result->tokens_per_second) << " tok/s\n";
  }
  return 0;
}

}  // namespace
}  // namespace a2sf::worker

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Generates text with a LLaMA-2 model and a bounded, policy-evicted KV cache.");
  absl::ParseCommandLine(argc, argv);
  return a2sf::worker::Main();
}
