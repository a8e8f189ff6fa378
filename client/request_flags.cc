#include "client/request_flags.h"

#include <optional>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

ABSL_FLAG(std::string, prompt, "", "prompt text (BOS is prepended)");
ABSL_FLAG(std::string, prompt_ids, "", "comma-separated token ids used as given, instead of --prompt");
ABSL_FLAG(int, max_tokens, 200, "tokens to generate (0: until a stop condition or the context is full)");
ABSL_FLAG(double, temperature, 0.0, "0 = greedy (argmax); > 0 samples");
ABSL_FLAG(std::optional<double>, top_p, std::nullopt, "nucleus mass in (0, 1] (sampling only; default 1)");
ABSL_FLAG(std::optional<int>, top_k, std::nullopt, "keep the k most likely tokens (sampling only; default: all)");
ABSL_FLAG(std::optional<double>, min_p, std::nullopt,
          "drop tokens below min_p x the most likely one's probability, in [0, 1] (sampling only)");
ABSL_FLAG(std::optional<uint64_t>, seed, std::nullopt,
          "sampler seed (sampling only); unset: random, and the seed used is reported to repeat the run");
ABSL_FLAG(double, repetition_penalty, 1.0, "> 0; > 1 discourages tokens of the prompt and the output (1: off)");
ABSL_FLAG(double, presence_penalty, 0.0, "in [-2, 2]: subtracted from tokens already generated");
ABSL_FLAG(double, frequency_penalty, 0.0, "in [-2, 2]: subtracted per earlier occurrence in the output");
ABSL_FLAG(std::vector<std::string>, stop, {},
          "stop strings, comma-separated, C escapes allowed (e.g. '\\n,The end'; \\x2c for a comma)");
ABSL_FLAG(bool, exclude_stop, false, "remove the matched stop string from the text (OpenAI's rule)");
ABSL_FLAG(std::vector<std::string>, stop_token_ids, {}, "comma-separated token ids that end generation");
ABSL_FLAG(int, min_tokens, 0, "generate at least this many tokens before any stop condition applies");
ABSL_FLAG(bool, ignore_eos, false, "keep generating past the end-of-sequence token");
ABSL_FLAG(std::optional<int>, logprobs, std::nullopt,
          "report each generated token's logprob with this many alternatives (0..20)");
ABSL_FLAG(std::optional<int>, prompt_logprobs, std::nullopt,
          "report each prompt token's logprob with this many alternatives (0..20)");
ABSL_FLAG(bool, score, false,
          "score the prompt and generate nothing: its tokens' logprobs (--prompt_logprobs, default 0 "
          "alternatives); not with --max_tokens or --min_tokens");
ABSL_FLAG(std::string, policy, "", "eviction policy: full, local, streaming_llm, h2o, tova or a2sf");
ABSL_FLAG(std::optional<double>, alpha, std::nullopt, "a2sf forgetting factor in [0, 1]");
ABSL_FLAG(std::string, layer_alphas, "", "a2sf per-layer alphas, comma-separated (instead of --alpha)");
ABSL_FLAG(std::optional<int>, sinks, std::nullopt, "streaming_llm attention sinks");
ABSL_FLAG(std::optional<int>, recent_window, std::nullopt, "a2sf protected recent window in tokens");
ABSL_FLAG(std::optional<int>, budget_tokens, std::nullopt, "KV budget per layer and KV head, in tokens");
ABSL_FLAG(std::optional<double>, budget_ratio, std::nullopt, "KV budget as a fraction of prompt + max_tokens");
ABSL_FLAG(std::string, prefill, "per_token", "per_token or bulk");

namespace a2sf::client {

namespace {

absl::Status Invalid(absl::string_view flag, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", why));
}

absl::Status CheckSamplingFlags() {
  if (absl::GetFlag(FLAGS_temperature) != 0) return absl::OkStatus();
  const char* unused = absl::GetFlag(FLAGS_top_p).has_value()   ? "top_p"
                       : absl::GetFlag(FLAGS_top_k).has_value() ? "top_k"
                       : absl::GetFlag(FLAGS_min_p).has_value() ? "min_p"
                       : absl::GetFlag(FLAGS_seed).has_value()  ? "seed"
                                                                : nullptr;
  if (unused == nullptr) return absl::OkStatus();
  return Invalid(unused, "has no effect with --temperature=0 (greedy decoding); give --temperature > 0 to sample");
}

absl::Status FillSampling(v1::Sampling* s) {
  if (absl::Status status = CheckSamplingFlags(); !status.ok()) return status;
  s->set_temperature(absl::GetFlag(FLAGS_temperature));
  if (auto v = absl::GetFlag(FLAGS_top_p)) s->set_top_p(*v);
  if (auto v = absl::GetFlag(FLAGS_top_k)) {
    if (*v < 0) return Invalid("top_k", "must be >= 0");
    s->set_top_k(uint32_t(*v));
  }
  if (auto v = absl::GetFlag(FLAGS_min_p)) s->set_min_p(*v);
  if (auto v = absl::GetFlag(FLAGS_seed)) s->set_seed(*v);
  // On the wire 0 means unset (1, off): the flag's 0 would pass for off, so it is refused as the help says.
  if (!(absl::GetFlag(FLAGS_repetition_penalty) > 0)) return Invalid("repetition_penalty", "must be > 0 (1: off)");
  s->set_repetition_penalty(absl::GetFlag(FLAGS_repetition_penalty));
  s->set_presence_penalty(absl::GetFlag(FLAGS_presence_penalty));
  s->set_frequency_penalty(absl::GetFlag(FLAGS_frequency_penalty));
  return absl::OkStatus();
}

absl::Status FillStop(v1::StopConditions* stop) {
  for (const std::string& escaped : absl::GetFlag(FLAGS_stop)) {
    std::string s;
    std::string error;
    if (!absl::CUnescape(escaped, &s, &error)) return Invalid("stop", error);
    stop->add_stop_strings(s);
  }
  if (absl::GetFlag(FLAGS_exclude_stop)) {
    if (stop->stop_strings().empty() && absl::GetFlag(FLAGS_stop_token_ids).empty()) {
      return Invalid("exclude_stop", "applies to --stop or --stop_token_ids; give one");
    }
    stop->set_include_stop_string(false);
  }
  for (const std::string& text : absl::GetFlag(FLAGS_stop_token_ids)) {
    uint32_t id;
    if (!absl::SimpleAtoi(text, &id)) return Invalid("stop_token_ids", absl::StrCat("'", text, "' is not a token id"));
    stop->add_stop_token_ids(id);
  }
  if (absl::GetFlag(FLAGS_min_tokens) < 0) return Invalid("min_tokens", "must be >= 0");
  stop->set_min_tokens(uint32_t(absl::GetFlag(FLAGS_min_tokens)));
  if (absl::GetFlag(FLAGS_ignore_eos)) stop->set_stop_on_eos(false);
  return absl::OkStatus();
}

absl::Status FillLogprobs(v1::LogprobsOptions* logprobs) {
  if (auto v = absl::GetFlag(FLAGS_logprobs)) {
    if (*v < 0) return Invalid("logprobs", "must be >= 0");
    logprobs->set_generated(uint32_t(*v));
  }
  if (auto v = absl::GetFlag(FLAGS_prompt_logprobs)) {
    if (*v < 0) return Invalid("prompt_logprobs", "must be >= 0");
    logprobs->set_prompt(uint32_t(*v));
  }
  return absl::OkStatus();
}

// Policy parameters given without --policy would be dropped: refuse them.
absl::Status CheckPolicyParameters() {
  if (!absl::GetFlag(FLAGS_policy).empty()) {
    if (absl::GetFlag(FLAGS_alpha).has_value() && !absl::GetFlag(FLAGS_layer_alphas).empty()) {
      return Invalid("alpha", "--layer_alphas overrides it; give one of them");
    }
    return absl::OkStatus();
  }
  const char* orphan = absl::GetFlag(FLAGS_alpha).has_value()         ? "alpha"
                       : !absl::GetFlag(FLAGS_layer_alphas).empty()   ? "layer_alphas"
                       : absl::GetFlag(FLAGS_sinks).has_value()       ? "sinks"
                       : absl::GetFlag(FLAGS_recent_window).has_value() ? "recent_window"
                                                                      : nullptr;
  if (orphan == nullptr) return absl::OkStatus();
  return Invalid(orphan, "is a policy parameter: give --policy too (e.g. --policy=a2sf)");
}

absl::Status FillBudget(v1::GenerateRequest* request) {
  const auto tokens = absl::GetFlag(FLAGS_budget_tokens);
  const auto ratio = absl::GetFlag(FLAGS_budget_ratio);
  if (tokens.has_value() && ratio.has_value()) {
    return Invalid("budget_tokens", "conflicts with --budget_ratio; give one of them");
  }
  if (tokens.has_value()) {
    if (*tokens < 1) return Invalid("budget_tokens", "must be >= 1");
    request->mutable_budget()->set_tokens(uint32_t(*tokens));
  }
  if (ratio.has_value()) request->mutable_budget()->set_ratio(*ratio);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::PolicySpec> PolicyFromFlags() {
  if (absl::GetFlag(FLAGS_policy).empty()) return Invalid("policy", "required here");
  if (absl::Status s = CheckPolicyParameters(); !s.ok()) return s;
  v1::PolicySpec policy;
  policy.set_name(absl::GetFlag(FLAGS_policy));
  if (auto v = absl::GetFlag(FLAGS_alpha)) policy.set_alpha(*v);
  if (auto v = absl::GetFlag(FLAGS_sinks)) {
    if (*v < 0) return Invalid("sinks", "must be >= 0");
    policy.set_sinks(uint32_t(*v));
  }
  if (auto v = absl::GetFlag(FLAGS_recent_window)) {
    if (*v < 0) return Invalid("recent_window", "must be >= 0");
    policy.set_recent_window(uint32_t(*v));
  }
  if (!absl::GetFlag(FLAGS_layer_alphas).empty()) {
    for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_layer_alphas), ',')) {
      double a;
      if (!absl::SimpleAtod(part, &a)) return Invalid("layer_alphas", "not a list of numbers");
      policy.add_layer_alphas(a);
    }
  }
  return policy;
}

absl::StatusOr<v1::GenerateRequest> RequestFromFlags() {
  v1::GenerateRequest request;
  const std::string prompt_ids = absl::GetFlag(FLAGS_prompt_ids);
  if (!prompt_ids.empty() && !absl::GetFlag(FLAGS_prompt).empty()) {
    return Invalid("prompt_ids", "conflicts with --prompt; give one of them");
  }
  if (!prompt_ids.empty()) {
    for (absl::string_view part : absl::StrSplit(prompt_ids, ',')) {
      uint32_t id;
      if (!absl::SimpleAtoi(part, &id)) return Invalid("prompt_ids", "not a list of token ids");
      request.mutable_token_ids()->add_ids(id);
    }
  } else {
    request.set_text(absl::GetFlag(FLAGS_prompt));
  }
  if (absl::GetFlag(FLAGS_max_tokens) < 0) return Invalid("max_tokens", "must be >= 0");
  request.set_max_tokens(uint32_t(absl::GetFlag(FLAGS_max_tokens)));
  if (absl::GetFlag(FLAGS_score)) {  // a prompt-only job: nothing generated, so nothing to bound
    for (const char* flag : {"max_tokens", "min_tokens"}) {
      const absl::CommandLineFlag& handle = *absl::FindCommandLineFlag(flag);
      if (handle.CurrentValue() == handle.DefaultValue()) continue;
      return Invalid(flag, "does not apply to --score (nothing is generated)");
    }
    request.set_max_tokens(0);
    request.set_prompt_only(true);
  }
  if (absl::Status s = FillSampling(request.mutable_sampling()); !s.ok()) return s;
  if (absl::Status s = FillStop(request.mutable_stop()); !s.ok()) return s;
  if (absl::Status s = FillLogprobs(request.mutable_logprobs()); !s.ok()) return s;
  if (request.prompt_only() && !request.logprobs().has_prompt()) request.mutable_logprobs()->set_prompt(0);
  if (absl::Status s = CheckPolicyParameters(); !s.ok()) return s;
  if (!absl::GetFlag(FLAGS_policy).empty()) {
    absl::StatusOr<v1::PolicySpec> policy = PolicyFromFlags();
    if (!policy.ok()) return policy.status();
    *request.mutable_policy() = *policy;
  }
  if (absl::Status s = FillBudget(&request); !s.ok()) return s;
  const std::string prefill = absl::GetFlag(FLAGS_prefill);
  if (prefill != "per_token" && prefill != "bulk") return Invalid("prefill", "per_token or bulk");
  request.set_prefill(prefill == "bulk" ? v1::PREFILL_MODE_BULK : v1::PREFILL_MODE_PER_TOKEN);
  return request;
}

std::vector<std::string> PolicyFlagNames() {
  return {"policy", "alpha", "layer_alphas", "sinks", "recent_window"};
}

std::vector<std::string> RequestFlagNames() {
  std::vector<std::string> names = {"prompt", "prompt_ids", "max_tokens", "temperature", "top_p", "top_k",
                                    "min_p", "seed", "repetition_penalty", "presence_penalty",
                                    "frequency_penalty", "stop", "exclude_stop", "stop_token_ids", "min_tokens",
                                    "ignore_eos", "logprobs", "prompt_logprobs", "score"};
  for (const std::string& name : PolicyFlagNames()) names.push_back(name);
  for (const char* name : {"budget_tokens", "budget_ratio", "prefill"}) names.push_back(name);
  return names;
}

}  // namespace a2sf::client
