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

absl::Status DecisionApplier::Submit(uint64_t step, uint32_t position, int row) {
  if (absl::Status s = policy_->SubmitStep(step, position, engine_->step_scores(row)); !s.ok()) return s;
  in_flight_.emplace_back();
  return absl::OkStatus();
}

absl::Status DecisionApplier::AfterToken(uint64_t step, uint32_t position) {
  if (absl::Status s = Submit(step, position, engine_->rows() - 1); !s.ok()) return s;
  return ApplyDue();
}

absl::Status DecisionApplier::AfterBulkPrefill(EvictionDecision decision) {
  in_flight_.emplace_back(std::move(decision));
  return ApplyDue();
}

int ContextRoom(const ModelConfig& model, int prompt_length) { return model.seq_len - prompt_length + 1; }

int EffectiveMaxNewTokens(const GenerateOptions& options, const ModelConfig& model, int prompt_length) {
  if (options.prompt_only) return 1;
  return options.max_new_tokens == 0 ? ContextRoom(model, prompt_length) : options.max_new_tokens;
}

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
  if (options.prompt_only && (options.max_new_tokens != 0 || options.min_tokens != 0)) {
    return absl::InvalidArgumentError("prompt_only: the job generates nothing; max_tokens and min_tokens must be 0");
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

absl::StatusOr<std::unique_ptr<SequenceGeneration>> SequenceGeneration::Start(
    Engine* engine, EvictionPolicyClient* policy, absl::Span<const int> prompt, const GenerateOptions& options,
    GenerateCallbacks callbacks) {
  const ModelConfig& c = engine->config();
  const int P = int(prompt.size());
  if (absl::Status s = ValidateGenerateOptions(options, c); !s.ok()) return s;
  if (options.prefill_chunk < 1) {
    return absl::InvalidArgumentError(absl::StrCat("prefill_chunk: must be >= 1, got ", options.prefill_chunk));
  }
  if (absl::Status s = ValidatePrompt(c, prompt, options.max_new_tokens); !s.ok()) return s;
  const int max_new_tokens = EffectiveMaxNewTokens(options, c, P);
  const int needed = RequiredCacheCapacity(policy, P, max_new_tokens, options.bulk_prefill);
  if (engine->cache().capacity() < needed) {
    return absl::FailedPreconditionError(absl::StrCat("engine cache holds ", engine->cache().capacity(),
                                                      " entries per head; this job needs ", needed));
  }
  // A policy that never evicts has nothing to decide: its steps are skipped.
  if (policy != nullptr && !policy->evicts()) policy = nullptr;
  return std::unique_ptr<SequenceGeneration>(
      new SequenceGeneration(engine, policy, prompt, options, std::move(callbacks)));
}

SequenceGeneration::SequenceGeneration(Engine* engine, EvictionPolicyClient* policy, absl::Span<const int> prompt,
                                       const GenerateOptions& options, GenerateCallbacks callbacks)
    : engine_(engine),
      policy_(policy),
      prompt_(prompt.begin(), prompt.end()),
      options_(options),
      callbacks_(std::move(callbacks)),
      max_new_tokens_(EffectiveMaxNewTokens(options, engine->config(), int(prompt.size()))),
      bulk_(options.bulk_prefill && policy != nullptr),
      stop_tokens_(StopTokens(options, engine->config())),
      sampler_(options.sampling, engine->config().vocab_size),
      applier_(engine, policy) {
  const ModelConfig& c = engine->config();
  const size_t P = prompt_.size();
  if (bulk_) prompt_attention_.assign(size_t(c.n_layers) * c.n_kv_heads * P * P, 0.0f);
  engine_->Reset();
  sampler_.AddPrompt(prompt_);
  result_.finish_reason =
      options.max_new_tokens == 0 && !options.prompt_only ? FinishReason::kContextFull : FinishReason::kMaxTokens;
  start_ = first_token_time_ = absl::Now();
}

// A per-token policy's decisions are empty while its entries stay within the budget: every row of a
// chunk but the last must end a step at most `budget` entries in, so the decisions applied between
// them (in a token-by-token run) evict nothing and the chunk's scores are those of that run.
int SequenceGeneration::PromptRows() const {
  int rows = std::min(options_.prefill_chunk, int(prompt_.size()) - position_);
  if (policy_ != nullptr && !bulk_) {
    const int room = int(policy_->budget_tokens()) - engine_->cache().entries() + 1;
    rows = std::max(1, std::min(rows, room));
  }
  return rows;
}

void SequenceGeneration::AddRows(std::vector<ForwardRow>* rows) {
  rows_ = prefilling() ? PromptRows() : 1;
  for (int i = 0; i < rows_; ++i) {
    const int position = position_ + i;
    rows->push_back({engine_, position < int(prompt_.size()) ? prompt_[position] : next_, position});
  }
}

// Row `row` of every head's P x P causal attention, for a bulk prefill; entries are in position order.
absl::Status SequenceGeneration::CollectPromptRow(int row, int position) {
  const size_t P = prompt_.size();
  const ModelConfig& c = engine_->config();
  const size_t heads = size_t(c.n_layers) * c.n_kv_heads;
  const absl::Span<const float> scores = engine_->step_scores(row);
  const size_t n = size_t(position) + 1;
  for (size_t h = 0; h < heads; ++h) {
    std::copy(scores.begin() + h * n, scores.begin() + (h + 1) * n, prompt_attention_.begin() + (h * P + position) * P);
  }
  if (position != int(P) - 1) return absl::OkStatus();
  absl::StatusOr<EvictionDecision> decision = policy_->BulkPrefill(0, uint32_t(P), prompt_attention_);
  if (!decision.ok()) return decision.status();
  ++step_;
  return applier_.AfterBulkPrefill(std::move(*decision));
}

// Every row but the last awaits its due decisions at once (the calls a token-by-token run makes); the
// last row's are awaited in Advance, after the other sequences of the batch submitted theirs.
absl::Status SequenceGeneration::SubmitRow(int row, int position, bool last_row) {
  if (bulk_ && position < int(prompt_.size())) return CollectPromptRow(row, position);
  if (absl::Status s = applier_.Submit(step_++, uint32_t(position), row); !s.ok()) return s;
  if (last_row) return absl::OkStatus();
  const uint64_t evicted = applier_.evictions();
  if (absl::Status s = applier_.ApplyDue(); !s.ok()) return s;
  if (applier_.evictions() != evicted) {
    return absl::InternalError("a decision inside a prefill chunk evicted entries (the chunk ran past the budget)");
  }
  return absl::OkStatus();
}

void SequenceGeneration::Submit() {
  if (done_) return;
  result_.kv_bytes_peak = std::max(result_.kv_bytes_peak, engine_->cache().bytes_held());
  for (int i = 0; i < rows_ && policy_ != nullptr; ++i) {
    if (absl::Status s = SubmitRow(i, position_ + i, i == rows_ - 1); !s.ok()) return Fail(s);
  }
}

void SequenceGeneration::Advance() {
  if (done_) return;
  if (policy_ != nullptr && !(bulk_ && prefilling())) {
    if (absl::Status s = applier_.ApplyDue(); !s.ok()) return Fail(s);
  }
  const int P = int(prompt_.size());
  for (int i = 0; i < rows_; ++i) {
    const int position = position_ + i;
    if (position < P - 1 && callbacks_.on_prompt_logits) callbacks_.on_prompt_logits(position, engine_->logits(i));
  }
  const bool prompt_done_now = position_ < P && position_ + rows_ >= P;
  position_ += rows_;
  if (position_ < P) return;
  if (prompt_done_now && callbacks_.on_prompt_done) callbacks_.on_prompt_done();
  if (!options_.prompt_only) return SampleNext();
  done_ = true;  // the prompt is in: a prompt-only job wanted no more
  end_ = absl::Now();
}

void SequenceGeneration::SampleNext() {
  const ModelConfig& c = engine_->config();
  const int index = int(result_.generated.size());
  next_ = sampler_.Sample(engine_->logits(), index < options_.min_tokens ? stop_tokens_ : std::vector<int>{});
  result_.generated.push_back(next_);
  if (index == 0) first_token_time_ = absl::Now();
  const bool eos = options_.stop_on_eos && (next_ == c.eos_id || next_ == c.bos_id);
  const bool stop_token = std::find(options_.stop_token_ids.begin(), options_.stop_token_ids.end(), next_) !=
                          options_.stop_token_ids.end();
  const TokenVerdict verdict = callbacks_.on_token
                                   ? callbacks_.on_token({next_, index, engine_->logits(), eos || stop_token})
                                   : TokenVerdict::kContinue;
  if (verdict == TokenVerdict::kCancel) return Cancel();
  done_ = true;
  end_ = absl::Now();
  if (verdict == TokenVerdict::kStopString) {
    result_.finish_reason = FinishReason::kStopString;
  } else if (eos || stop_token) {
    result_.finish_reason = eos ? FinishReason::kEos : FinishReason::kStopToken;
  } else {
    done_ = int(result_.generated.size()) == max_new_tokens_;
  }
}

void SequenceGeneration::Cancel() {
  if (done_) return;
  result_.finish_reason = FinishReason::kCancelled;
  done_ = true;
  end_ = absl::Now();
}

void SequenceGeneration::Fail(absl::Status error) {
  if (done_) return;
  status_ = std::move(error);
  done_ = true;
  end_ = absl::Now();
}

GenerateResult SequenceGeneration::result() const {
  GenerateResult result = result_;
  const absl::Time end = done_ ? end_ : absl::Now();
  result.evictions = applier_.evictions();
  result.kv_bytes_held = engine_->cache().bytes_held();
  if (!result.generated.empty()) {
    result.time_to_first_token_ms = absl::ToDoubleMilliseconds(first_token_time_ - start_);
  }
  const double decode_seconds = absl::ToDoubleSeconds(end - first_token_time_);
  if (result.generated.size() > 1 && decode_seconds > 0) {
    result.tokens_per_second = double(result.generated.size() - 1) / decode_seconds;
  }
  return result;
}

void GenerationBatch::Step(absl::Span<SequenceGeneration* const> sequences) {
  rows_.clear();
  stepping_.clear();
  for (SequenceGeneration* sequence : sequences) {
    if (sequence->done()) continue;
    sequence->AddRows(&rows_);
    stepping_.push_back(sequence);
  }
  if (stepping_.empty()) return;
  if (absl::Status s = pass_->Run(rows_); !s.ok()) {
    for (SequenceGeneration* sequence : stepping_) sequence->Fail(s);
    return;
  }
  for (SequenceGeneration* sequence : stepping_) sequence->Submit();
  for (SequenceGeneration* sequence : stepping_) sequence->Advance();
}

absl::StatusOr<GenerateResult> Generate(Engine* engine, EvictionPolicyClient* policy, absl::Span<const int> prompt,
                                        const GenerateOptions& options, const GenerateCallbacks& callbacks) {
  absl::StatusOr<std::unique_ptr<SequenceGeneration>> sequence =
      SequenceGeneration::Start(engine, policy, prompt, options, callbacks);
  if (!sequence.ok()) return sequence.status();
  GenerationBatch batch(engine->own_pass());
  SequenceGeneration* one = sequence->get();
  while (!one->done()) batch.Step(absl::MakeConstSpan(&one, 1));
  if (!one->status().ok()) return one->status();
  return one->result();
}

}  // namespace a2sf::worker
