#include "worker/engine/generator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace a2sf::worker {

int RequiredCacheCapacity(const EvictionPolicyClient* policy, int prompt_length, int max_new_tokens,
                          bool bulk_prefill) {
  const int sequence = prompt_length + max_new_tokens - 1;  // positions that are forwarded
  if (policy == nullptr || !policy->evicts()) return sequence;
  int capacity = std::min<int>(int(policy->budget_tokens()) + 1, sequence);
  if (bulk_prefill) capacity = std::max(capacity, prompt_length);
  if (policy->decision_lag() > 0) capacity = std::min<int>(capacity + int(policy->decision_lag()) + 1, sequence);
  return capacity;
}

absl::Status DecisionApplier::Apply(const EvictionDecision& decision) {
  if (decision.evictions_per_head == 0) return absl::OkStatus();
  absl::Status applied = decision.evicted_slots.empty()
                             ? engine_->EvictPositions(decision.evictions_per_head, decision.evicted_positions)
                             : engine_->Evict(decision.evictions_per_head, decision.evicted_slots,
                                              decision.evicted_positions);
  if (applied.ok()) evictions_ += decision.evicted_positions.size();
  return applied;
}

// Before the token of step s + 1, every decision of a step <= s - K must be in; the lag is read each
// time because a fallback may turn a pipelined policy into a synchronous one mid-job.
absl::Status DecisionApplier::ApplyDue() {
  while (in_flight_.size() > policy_->decision_lag()) {
    std::optional<EvictionDecision> decision = std::move(in_flight_.front());
    in_flight_.pop_front();
    if (!decision.has_value()) {
      absl::StatusOr<EvictionDecision> awaited = policy_->AwaitDecision();
      if (!awaited.ok()) return awaited.status();
      decision = std::move(*awaited);
    }
    if (absl::Status s = Apply(*decision); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status DecisionApplier::AfterToken(uint64_t step, uint32_t position) {
  if (absl::Status s = policy_->SubmitStep(step, position, engine_->step_scores()); !s.ok()) return s;
  in_flight_.emplace_back();
  return ApplyDue();
}

absl::Status DecisionApplier::AfterBulkPrefill(EvictionDecision decision) {
  in_flight_.emplace_back(std::move(decision));
  return ApplyDue();
}

int ContextRoom(const ModelConfig& model, int prompt_length) { return model.seq_len - prompt_length + 1; }

absl::Status ValidateGenerateOptions(const GenerateOptions& options, const ModelConfig& c) {
  if (absl::Status s = ValidateSampling(options.sampling); !s.ok()) return s;
  if (options.max_new_tokens < 0) {
    return absl::InvalidArgumentError(absl::StrCat("max_tokens: must be >= 0, got ", options.max_new_tokens));
  }
  for (int id : options.stop_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("stop.stop_token_ids: id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (options.min_tokens < 0 || (options.max_new_tokens > 0 && options.min_tokens > options.max_new_tokens)) {
    return absl::InvalidArgumentError(absl::StrCat("stop.min_tokens: must be in [0, max_tokens], got ",
                                                   options.min_tokens));
  }
  return absl::OkStatus();
}

namespace {

absl::Status ValidatePrompt(const ModelConfig& c, absl::Span<const int> prompt, int max_new_tokens) {
  const int P = int(prompt.size());
  if (P == 0) return absl::InvalidArgumentError("prompt: empty (it needs at least the BOS token)");
  for (int i = 0; i < P; ++i) {
    if (prompt[i] < 0 || prompt[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt: token id ", prompt[i], " at index ", i,
                                                     " is outside the vocabulary [0, ", c.vocab_size, ")"));
    }
  }
  if (P > c.seq_len || max_new_tokens > ContextRoom(c, P)) {
    return absl::InvalidArgumentError(absl::StrCat("prompt (", P, " tokens) + max_tokens (", max_new_tokens,
                                                   ") exceeds the model's context of ", c.seq_len, " positions"));
  }
  return absl::OkStatus();
}

// The tokens that end a job (EOS, BOS, stop_token_ids): banned from sampling before min_tokens.
std::vector<int> StopTokens(const GenerateOptions& options, const ModelConfig& c) {
  std::vector<int> stops = options.stop_token_ids;
  if (options.stop_on_eos) {
    stops.push_back(c.eos_id);
    stops.push_back(c.bos_id);
  }
  std::sort(stops.begin(), stops.end());
  stops.erase(std::unique(stops.begin(), stops.end()), stops.end());
  return stops;
}

}  // namespace

absl::StatusOr<GenerateResult> Generate(Engine* engine, EvictionPolicyClient* policy, absl::Span<const int> prompt,
                                        const GenerateOptions& options, const GenerateCallbacks& callbacks) {
  const ModelConfig& c = engine->config();
  const int P = int(prompt.size());
  if (absl::Status s = ValidateGenerateOptions(options, c); !s.ok()) return s;
  if (absl::Status s = ValidatePrompt(c, prompt, options.max_new_tokens); !s.ok()) return s;
  const bool until_full = options.max_new_tokens == 0;
  const int max_new_tokens = until_full ? ContextRoom(c, P) : options.max_new_tokens;
  const int needed = RequiredCacheCapacity(policy, P, max_new_tokens, options.bulk_prefill);
  if (engine->cache().capacity() < needed) {
    return absl::FailedPreconditionError(absl::StrCat("engine cache holds ", engine->cache().capacity(),
                                                      " entries per head; this job needs ", needed));
  }
  // A policy that never evicts has nothing to decide: its steps are skipped.
  if (policy != nullptr && !policy->evicts()) policy = nullptr;
  const bool bulk = options.bulk_prefill && policy != nullptr;
  const size_t heads = size_t(c.n_layers) * c.n_kv_heads;
  std::vector<float> prompt_attention(bulk ? heads * P * P : 0, 0.0f);
  const std::vector<int> stop_tokens = StopTokens(options, c);
  const std::vector<int> no_tokens;

  engine->Reset();
  Sampler sampler(options.sampling, c.vocab_size);
  sampler.AddPrompt(prompt);
  GenerateResult result;
  result.finish_reason = until_full ? FinishReason::kContextFull : FinishReason::kMaxTokens;
  DecisionApplier applier(engine, policy);
  const absl::Time start = absl::Now();
  absl::Time first_token_time = start;
  uint64_t step = 0;
  int next = prompt[0];
  for (int position = 0;; ++position) {
    const int token = position < P ? prompt[position] : next;
    if (absl::Status s = engine->Forward(token, position); !s.ok()) return s;
    result.kv_bytes_peak = std::max(result.kv_bytes_peak, engine->cache().bytes_held());
    if (policy != nullptr) {
      const absl::Span<const float> scores = engine->step_scores();
      if (bulk && position < P) {
        // Row `position` of every head's P x P causal attention; entries are in position order.
        const size_t n = size_t(position) + 1;
        for (size_t h = 0; h < heads; ++h) {
          std::copy(scores.begin() + h * n, scores.begin() + (h + 1) * n,
                    prompt_attention.begin() + (h * P + position) * P);
        }
        if (position == P - 1) {
          absl::StatusOr<EvictionDecision> decision = policy->BulkPrefill(0, uint32_t(P), prompt_attention);
          if (!decision.ok()) return decision.status();
          if (absl::Status s = applier.AfterBulkPrefill(std::move(*decision)); !s.ok()) return s;
          ++step;
        }
      } else {
        if (absl::Status s = applier.AfterToken(step, uint32_t(position)); !s.ok()) return s;
        ++step;
      }
    }
    if (position < P - 1) {
      if (callbacks.on_prompt_logits) callbacks.on_prompt_logits(position, engine->logits());
      continue;
    }
    const int index = int(result.generated.size());
    next = sampler.Sample(engine->logits(), index < options.min_tokens ? stop_tokens : no_tokens);
    result.generated.push_back(next);
    if (index == 0) first_token_time = absl::Now();
    const bool eos = options.stop_on_eos && (next == c.eos_id || next == c.bos_id);
    const bool stop_token = std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), next) !=
                            options.stop_token_ids.end();
    const TokenVerdict verdict = callbacks.on_token ? callbacks.on_token({next, index, engine->logits(), eos || stop_token})
                                                    : TokenVerdict::kContinue;
    if (verdict == TokenVerdict::kCancel) {
      result.finish_reason = FinishReason::kCancelled;
      break;
    }
    if (verdict == TokenVerdict::kStopString) {
      result.finish_reason = FinishReason::kStopString;
      break;
    }
    if (eos || stop_token) {
      result.finish_reason = eos ? FinishReason::kEos : FinishReason::kStopToken;
      break;
    }
    if (int(result.generated.size()) == max_new_tokens) break;
  }
  const absl::Time end = absl::Now();
  result.evictions = applier.evictions();
  result.kv_bytes_held = engine->cache().bytes_held();
  result.time_to_first_token_ms = absl::ToDoubleMilliseconds(first_token_time - start);
  const double decode_seconds = absl::ToDoubleSeconds(end - first_token_time);
  if (result.generated.size() > 1 && decode_seconds > 0) {
    result.tokens_per_second = double(result.generated.size() - 1) / decode_seconds;
  }
  return result;
}

}  // namespace a2sf::worker
