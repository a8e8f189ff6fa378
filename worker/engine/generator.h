// Generate: runs a prompt and then samples new tokens on an Engine, handing every step's attention
// scores to an eviction policy and applying its decisions (per-token mode for prompt tokens too, or
// one bulk decision after the prompt). The policy sits behind EvictionPolicyClient
// (worker/policy/eviction_policy_client.h), so the same loop serves an in-process policy
// (worker/policy/in_process_policy.h) and, in the worker service, the remote cache manager; only the
// contract's types (common/kv) cross that seam.
#ifndef A2SF_WORKER_ENGINE_GENERATOR_H_
#define A2SF_WORKER_ENGINE_GENERATOR_H_

#include <deque>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/engine/engine.h"
#include "worker/engine/sampler.h"
#include "worker/policy/eviction_policy_client.h"

namespace a2sf::worker {

struct GenerateOptions {
  int max_new_tokens = 256;  // 0: until a stop condition or until the context is full
  SamplingOptions sampling;
  bool stop_on_eos = true;  // stop when the model produces EOS or BOS (as run.c does for BOS)
  std::vector<int> stop_token_ids;  // stop after generating any of these
  // Before this many tokens, the stop tokens (EOS and BOS when stop_on_eos, stop_token_ids) cannot
  // be sampled; a caller's stop strings should not match either (TokenEvent::index says when).
  int min_tokens = 0;
  bool bulk_prefill = false;
};

// INVALID_ARGUMENT naming the field for bad sampling options, stop token ids or min_tokens.
absl::Status ValidateGenerateOptions(const GenerateOptions& options, const ModelConfig& model);

enum class FinishReason { kMaxTokens, kEos, kStopToken, kStopString, kCancelled, kContextFull };

// One generated token, as Generate hands it to its caller.
struct TokenEvent {
  int id = 0;
  int index = 0;                     // 0 for the first generated token
  absl::Span<const float> logits;    // the raw logits it was sampled from (valid during the call)
  bool ends_job = false;             // an EOS or stop token: the job ends after it
};

// What the caller says after each generated token.
enum class TokenVerdict { kContinue, kStopString, kCancel };

struct GenerateCallbacks {
  // Each generated token; kStopString ends the job with FinishReason::kStopString, kCancel with
  // kCancelled. Null: always continue.
  std::function<TokenVerdict(const TokenEvent&)> on_token;
  // The logits at prompt position i (predicting prompt[i + 1]), for i in [0, P - 1), as the prompt
  // runs through the engine (under the policy's evictions in per-token mode). Null: not called.
  std::function<void(int position, absl::Span<const float> logits)> on_prompt_logits;
};

struct GenerateResult {
  std::vector<int> generated;  // sampled ids (the stop token included, as run.c prints up to it)
  uint64_t evictions = 0;      // entries evicted over all layers and heads
  size_t kv_bytes_peak = 0;
  size_t kv_bytes_held = 0;
  double time_to_first_token_ms = 0;
  double tokens_per_second = 0;  // generated tokens / time after the first token
  FinishReason finish_reason = FinishReason::kMaxTokens;
};

// The most tokens a prompt of `prompt_length` leaves room for: prompt + generated - 1 positions
// (the last token is never forwarded) fit the context.
int ContextRoom(const ModelConfig& model, int prompt_length);

// Cache slots an engine needs for a policy and a sequence: budget + 1 (the new token), or the whole
// sequence for a policy that never evicts; a bulk prefill holds the whole prompt first. A pipelined
// policy needs K more for its pending victims, and one more so that an in-process fallback can take
// over every entry it holds (FallbackPolicy).
int RequiredCacheCapacity(const EvictionPolicyClient* policy, int prompt_length, int max_new_tokens, bool bulk_prefill);

// Hands each step's scores to a policy and applies its decisions to the engine: at once, or
// decision_lag() steps late for a pipelined policy. Decisions with slots are applied by slot (and
// checked against their positions), pipelined ones by position.
class DecisionApplier {
 public:
  DecisionApplier(Engine* engine, EvictionPolicyClient* policy) : engine_(engine), policy_(policy) {}
  // After Engine::Forward of token step `step`: submits its scores, then applies every decision due
  // before the next token.
  absl::Status AfterToken(uint64_t step, uint32_t position);
  // A bulk prefill's decision (step 0), applied as late as a token step's would be.
  absl::Status AfterBulkPrefill(EvictionDecision decision);
  // Entries evicted so far over all layers and heads.
  uint64_t evictions() const { return evictions_; }

 private:
  absl::Status ApplyDue();
  absl::Status Apply(const EvictionDecision& decision);

  Engine* engine_;
  EvictionPolicyClient* policy_;
  // One element per step whose decision is not applied yet, oldest first; set once it has arrived.
  std::deque<std::optional<EvictionDecision>> in_flight_;
  uint64_t evictions_ = 0;
};

// Runs the prompt and generates; `policy` may be null (full cache). INVALID_ARGUMENT for an empty
// prompt, bad ids, bad options, or prompt + max_new_tokens beyond the context.
absl::StatusOr<GenerateResult> Generate(Engine* engine, EvictionPolicyClient* policy, absl::Span<const int> prompt,
                                        const GenerateOptions& options, const GenerateCallbacks& callbacks = {});

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_GENERATOR_H_
