#include "worker/service/job_plan.h"

#include <algorithm>
#include <limits>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "worker/service/request_validation.h"

namespace a2sf::worker {

namespace {

constexpr int kMaxStopTokenIds = 64;

// The sampler's options from the request; an unset seed is drawn at random.
SamplingOptions SamplingFromProto(const v1::Sampling& sampling) {
  SamplingOptions out;
  out.temperature = float(sampling.temperature());
  out.top_p = sampling.top_p() == 0 ? 1.0f : float(sampling.top_p());
  if (sampling.has_seed()) {
    out.seed = sampling.seed();
  } else {
    absl::BitGen random;
    out.seed = absl::Uniform<uint64_t>(random);
  }
  out.top_k = int(std::min<uint32_t>(sampling.top_k(), uint32_t(std::numeric_limits<int>::max())));
  out.min_p = float(sampling.min_p());
  out.repetition_penalty = sampling.repetition_penalty() == 0 ? 1.0f : float(sampling.repetition_penalty());
  out.presence_penalty = float(sampling.presence_penalty());
  out.frequency_penalty = float(sampling.frequency_penalty());
  return out;
}

absl::StatusOr<std::vector<int>> PromptIds(const v1::GenerateRequest& request, const ModelConfig& c,
                                          const Tokenizer* tokenizer) {
  std::vector<int> ids;
  switch (request.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (tokenizer == nullptr) {
        return absl::FailedPreconditionError("prompt.text: this worker has no tokenizer; send prompt.token_ids");
      }
      if (request.text().size() > MaxPromptTextBytes(c.seq_len)) {
        return absl::InvalidArgumentError("prompt.text: longer than the model's context can hold");
      }
      absl::StatusOr<std::vector<int>> encoded = tokenizer->Encode(request.text(), true);
      if (!encoded.ok()) return encoded.status();
      ids = *encoded;
      break;
    }
    case v1::GenerateRequest::kTokenIds:
      if (request.token_ids().ids_size() == 0) return absl::InvalidArgumentError("prompt.token_ids: empty");
      if (request.token_ids().ids_size() > c.seq_len) {
        return absl::InvalidArgumentError(absl::StrCat("prompt.token_ids: ", request.token_ids().ids_size(),
                                                       " tokens exceed the context of ", c.seq_len));
      }
      for (uint32_t id : request.token_ids().ids()) {
        if (id >= uint32_t(c.vocab_size)) {
          return absl::InvalidArgumentError(absl::StrCat("prompt.token_ids: id ", id, " is outside the vocabulary [0, ",
                                                         c.vocab_size, ")"));
        }
        ids.push_back(int(id));
      }
      break;
    default:
      return absl::InvalidArgumentError("prompt: set prompt.text or prompt.token_ids");
  }
  return ids;
}

}  // namespace

absl::StatusOr<JobPlan> PlanJob(const v1::GenerateRequest& request, const ModelConfig& c, const Tokenizer* tokenizer) {
  JobPlan plan;
  if (absl::Status s = ValidateGenerateRequest(request); !s.ok()) return s;
  absl::StatusOr<std::vector<int>> prompt = PromptIds(request, c, tokenizer);
  if (!prompt.ok()) return prompt.status();
  plan.prompt = std::move(*prompt);
  const int room = ContextRoom(c, int(plan.prompt.size()));
  if (room < 1 || request.max_tokens() > uint32_t(room)) {  // room < 1: the prompt alone is too long
    // The last generated token is never forwarded, so it needs no place: prompt + max_tokens - 1 fit.
    return absl::InvalidArgumentError(absl::StrCat(
        "prompt (", plan.prompt.size(), " tokens) + max_tokens (", request.max_tokens(),
        ") exceeds the model's context of ", c.seq_len,
        room < 1 ? std::string(" (the prompt alone does)") : absl::StrCat(" (max_tokens may be at most ", room, " here)")));
  }
  GenerateOptions& generate = plan.generate;
  generate.max_new_tokens = int(request.max_tokens());
  generate.prompt_only = request.prompt_only();
  generate.sampling = SamplingFromProto(request.sampling());
  const v1::StopConditions& stop = request.stop();
  generate.stop_on_eos = !stop.has_stop_on_eos() || stop.stop_on_eos();
  if (stop.stop_token_ids_size() > kMaxStopTokenIds) {
    return absl::InvalidArgumentError(absl::StrCat("stop.stop_token_ids: at most ", kMaxStopTokenIds, " ids"));
  }
  for (uint32_t id : stop.stop_token_ids()) generate.stop_token_ids.push_back(int(std::min<uint32_t>(id, uint32_t(c.vocab_size))));
  if (stop.min_tokens() > uint32_t(request.max_tokens() == 0 ? room : request.max_tokens())) {
    return absl::InvalidArgumentError(absl::StrCat("stop.min_tokens: ", stop.min_tokens(),
                                                   " is more than the job may generate"));
  }
  generate.min_tokens = int(stop.min_tokens());
  generate.bulk_prefill = request.prefill() == v1::PREFILL_MODE_BULK;
  if (absl::Status s = ValidateGenerateOptions(generate, c); !s.ok()) return s;

  plan.stop.stop_strings.assign(stop.stop_strings().begin(), stop.stop_strings().end());
  plan.stop.include_stop_string = !stop.has_include_stop_string() || stop.include_stop_string();
  plan.stop.min_tokens = generate.min_tokens;
  if (absl::Status s = ValidateStopStrings(plan.stop.stop_strings); !s.ok()) return s;
  if (!plan.stop.stop_strings.empty() && tokenizer == nullptr) {
    return absl::FailedPreconditionError("stop.stop_strings: this worker has no tokenizer to decode text with");
  }
  absl::StatusOr<LogprobsRequest> logprobs = LogprobsFromProto(request.logprobs());
  if (!logprobs.ok()) return logprobs.status();
  plan.logprobs = *logprobs;

  // Budget: unset = the whole sequence; a ratio refers to prompt + max_tokens unless told otherwise
  // (a prompt-only job's sequence is its prompt).
  const uint32_t sequence = uint32_t(plan.prompt.size()) +
                            (generate.prompt_only ? 0 : uint32_t(EffectiveMaxNewTokens(generate, c, int(plan.prompt.size()))));
  plan.budget = request.budget();
  if (plan.budget.kind_case() == v1::Budget::KIND_NOT_SET) {
    plan.budget.set_tokens(std::min<uint32_t>(sequence, uint32_t(c.seq_len)));
  } else if (plan.budget.kind_case() == v1::Budget::kRatio && plan.budget.reference_length() == 0) {
    plan.budget.set_reference_length(sequence);
  }
  return plan;
}

}  // namespace a2sf::worker
