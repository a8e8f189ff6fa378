// Generation: runs a prompt and then samples new tokens on an Engine, handing every step's attention
// scores to an eviction policy and applying its decisions (per-token mode for prompt tokens too, or
// one bulk decision after the prompt). The policy sits behind EvictionPolicyClient
// (worker/policy/eviction_policy_client.h), so the same loop serves an in-process policy
// (worker/policy/in_process_policy_client.h) and, in the worker service, the remote cache manager; only the
// contract's types (common/kv) cross that seam.
//
// SequenceGeneration is one sequence's generation as a state machine; GenerationBatch steps many of
// them through one ForwardPass (continuous batching: sequences join and leave between steps).
// Generate is a batch of one. A step of a batch submits every sequence's scores first and only then
// awaits the decisions due, so a remote client may send the submits of several sessions together.
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
  // Prompt tokens forwarded together in one step (a chunk; attention causal within it). A chunk of a
  // policy that evicts during the prompt stops where its decisions could start evicting, so every
  // prompt step sees exactly the scores of a token-by-token run. >= 1.
  int prefill_chunk = 1;
  // Forward the prompt and generate nothing (scoring: the caller wants on_prompt_logits). Requires
  // max_new_tokens 0 and min_tokens 0; the job ends kMaxTokens once the prompt is in.
  bool prompt_only = false;
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
  // Once, when the whole prompt is in (every on_prompt_logits call made), before the first token (a
  // prompt-only job has none). Null: not called.
  std::function<void()> on_prompt_done;
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

// The tokens a job sizes its cache and budget for: max_new_tokens, the rest of the context for 0, and
// 1 for a prompt-only job (the same P positions forwarded: a prompt and one token forward P).
int EffectiveMaxNewTokens(const GenerateOptions& options, const ModelConfig& model, int prompt_length);

// Cache slots an engine needs for a policy and a sequence: budget + 1 (the new token), or the whole
// sequence for a policy that never evicts; a bulk prefill holds the whole prompt first. A pipelined
// policy needs K more for its pending victims, and one more so that an in-process fallback can take
// over every entry it holds (FallbackPolicyClient).
int RequiredCacheCapacity(const EvictionPolicyClient* policy, int prompt_length, int max_new_tokens, bool bulk_prefill);

// Hands each step's scores to a policy and applies its decisions to the engine: at once, or
// decision_lag() steps late for a pipelined policy. Decisions with slots are applied by slot (and
// checked against their positions), pipelined ones by position.
class DecisionApplier {
 public:
  DecisionApplier(Engine* engine, EvictionPolicyClient* policy) : engine_(engine), policy_(policy) {}
  // After Engine::Forward of token step `step`: submits its scores, then applies every decision due
  // before the next token (Submit then ApplyDue).
  absl::Status AfterToken(uint64_t step, uint32_t position);
  // Submits the scores of token step `step`, row `row` of the engine's last pass; no decision awaited.
  absl::Status Submit(uint64_t step, uint32_t position, int row);
  // Awaits and applies every decision due before the next token.
  absl::Status ApplyDue();
  // A bulk prefill's decision (step 0), applied as late as a token step's would be.
  absl::Status AfterBulkPrefill(EvictionDecision decision);
  // Entries evicted so far over all layers and heads.
  uint64_t evictions() const { return evictions_; }

 private:
  absl::Status Apply(const EvictionDecision& decision);

  Engine* engine_;
  EvictionPolicyClient* policy_;
  // One element per step whose decision is not applied yet, oldest first; set once it has arrived.
  std::deque<std::optional<EvictionDecision>> in_flight_;
  uint64_t evictions_ = 0;
};

// One sequence's generation, driven step by step by a GenerationBatch. Each step: AddRows (the tokens
// it forwards), the batch's ForwardPass, Submit (their scores to the policy), Advance (decisions due,
// sampling, callbacks). A failed step ends the sequence with that error (status()); the others go on.
// Not thread-safe; the engine, policy and callbacks' captures must outlive it.
class SequenceGeneration {
 public:
  // `policy` may be null (full cache). INVALID_ARGUMENT for an empty prompt, bad ids, bad options, or
  // prompt + max_new_tokens beyond the context; FAILED_PRECONDITION when the engine's cache is too small.
  static absl::StatusOr<std::unique_ptr<SequenceGeneration>> Start(Engine* engine, EvictionPolicyClient* policy,
                                                                   absl::Span<const int> prompt,
                                                                   const GenerateOptions& options,
                                                                   GenerateCallbacks callbacks = {});

  // Appends this step's rows: a prompt chunk, or the last sampled token. REQUIRES: !done().
  void AddRows(std::vector<ForwardRow>* rows);
  // After the pass: hands the rows' scores to the policy.
  void Submit();
  // After every sequence of the step submitted: applies the decisions due, samples, calls back.
  void Advance();
  // Ends the sequence as cancelled (a cancelled job, a client gone) before its next step.
  void Cancel();
  // Ends the sequence with `error` (the batch's pass failed).
  void Fail(absl::Status error);

  bool done() const { return done_; }
  bool prefilling() const { return position_ < int(prompt_.size()); }
  const absl::Status& status() const { return status_; }
  Engine* engine() const { return engine_; }
  // The result so far; final once done() with an OK status.
  GenerateResult result() const;

 private:
  SequenceGeneration(Engine* engine, EvictionPolicyClient* policy, absl::Span<const int> prompt,
                     const GenerateOptions& options, GenerateCallbacks callbacks);
  // Prompt rows this step: up to the chunk, cut where a per-token policy's decisions could evict.
  int PromptRows() const;
  absl::Status SubmitRow(int row, int position, bool last_row);
  absl::Status CollectPromptRow(int row, int position);
  void SampleNext();

  Engine* const engine_;
  EvictionPolicyClient* policy_;  // null: nothing to decide (full cache)
  const std::vector<int> prompt_;
  const GenerateOptions options_;
  const GenerateCallbacks callbacks_;
  const int max_new_tokens_;
  const bool bulk_;
  const std::vector<int> stop_tokens_;
  Sampler sampler_;
  DecisionApplier applier_;
  std::vector<float> prompt_attention_;  // bulk prefill: [heads][P][P]
  GenerateResult result_;
  int position_ = 0;       // of the next row
  int rows_ = 0;           // rows of the current step
  uint64_t step_ = 0;      // the policy's next step
  int next_ = 0;           // the last sampled token
  bool done_ = false;
  absl::Status status_;
  absl::Time start_, first_token_time_, end_;
};

// Steps sequences together through one ForwardPass. Not thread-safe.
class GenerationBatch {
 public:
  // `pass` must outlive this object.
  explicit GenerationBatch(ForwardPass* pass) : pass_(pass) {}
  // One step of every sequence not done: their rows in one pass, then all submits, then all advances.
  void Step(absl::Span<SequenceGeneration* const> sequences);

 private:
  ForwardPass* pass_;
  std::vector<ForwardRow> rows_;
  std::vector<SequenceGeneration*> stepping_;
};

// Runs the prompt and generates: a batch of one on the engine's own pass. `policy` may be null (full
// cache). INVALID_ARGUMENT for an empty prompt, bad ids, bad options, or prompt + max_new_tokens
// beyond the context.
absl::StatusOr<GenerateResult> Generate(Engine* engine, EvictionPolicyClient* policy, absl::Span<const int> prompt,
                                        const GenerateOptions& options, const GenerateCallbacks& callbacks = {});

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_GENERATOR_H_
