#include "worker/service/job_output.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "worker/engine/kv_cache.h"
#include "worker/engine/logprobs.h"

namespace a2sf::worker {

absl::StatusOr<LogprobsRequest> LogprobsFromProto(const v1::LogprobsOptions& options) {
  LogprobsRequest out;
  if (options.has_generated()) {
    if (options.generated() > uint32_t(kMaxTopLogprobs)) {
      return absl::InvalidArgumentError(
          absl::StrCat("logprobs.generated: at most ", kMaxTopLogprobs, " alternatives, got ", options.generated()));
    }
    out.generated = int(options.generated());
  }
  if (options.has_prompt()) {
    if (options.prompt() > uint32_t(kMaxTopLogprobs)) {
      return absl::InvalidArgumentError(
          absl::StrCat("logprobs.prompt: at most ", kMaxTopLogprobs, " alternatives, got ", options.prompt()));
    }
    out.prompt = int(options.prompt());
  }
  return out;
}

JobOutput::JobOutput(const Tokenizer* tokenizer, absl::Span<const int> prompt, StopStringOptions stop,
                     LogprobsRequest logprobs)
    : tokenizer_(tokenizer),
      prompt_(prompt.begin(), prompt.end()),
      logprobs_(logprobs),
      text_(tokenizer, prompt.back(), std::move(stop)),
      previous_(prompt.back()) {}

v1::TokenLogprobs JobOutput::Logprobs(absl::Span<const float> logits, int previous, int token, int top_n) const {
  const LogprobReport report = ReportLogprobs(logits, token, top_n);
  auto fill = [&](const TokenLogprob& from, v1::TokenLogprob* to) {
    to->set_id(uint32_t(from.id));
    to->set_logprob(from.logprob);
    if (tokenizer_ != nullptr && from.id != tokenizer_->bos_id() && from.id != tokenizer_->eos_id()) {
      to->set_piece(tokenizer_->DecodePiece(previous, from.id));
    }
  };
  v1::TokenLogprobs out;
  fill(report.token, out.mutable_token());
  out.set_rank(uint32_t(report.rank));
  for (const TokenLogprob& alternative : report.top) fill(alternative, out.add_top());
  return out;
}

void JobOutput::OnPromptLogits(int position, absl::Span<const float> logits) {
  if (!logprobs_.prompt.has_value()) return;
  *prompt_logprobs_.add_tokens() = Logprobs(logits, prompt_[position], prompt_[position + 1], *logprobs_.prompt);
}

TokenVerdict JobOutput::OnToken(const TokenEvent& event, v1::GeneratedTokens* chunk) {
  chunk->Clear();
  chunk->add_ids(uint32_t(event.id));
  if (logprobs_.generated.has_value()) {
    *chunk->add_logprobs() = Logprobs(event.logits, previous_, event.id, *logprobs_.generated);
  }
  previous_ = event.id;
  OutputText::Update update = text_.Push(event.id, event.index, event.ends_job);
  chunk->set_text(std::move(update.text));
  return update.stopped ? TokenVerdict::kStopString : TokenVerdict::kContinue;
}

v1::FinishReason FinishReasonToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kMaxTokens:
      return v1::FINISH_REASON_MAX_TOKENS;
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kStopToken:
      return v1::FINISH_REASON_STOP_TOKEN;
    case FinishReason::kStopString:
      return v1::FINISH_REASON_STOP_STRING;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    case FinishReason::kContextFull:
      return v1::FINISH_REASON_CONTEXT_FULL;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void SetResultStats(const ModelConfig& c, WeightType kv_type, size_t prompt_tokens, const GenerateResult& result,
                    const std::string& stop_string, v1::JobStats* stats) {
  stats->set_generated_tokens(uint32_t(result.generated.size()));
  stats->set_evictions(result.evictions);
  stats->set_kv_bytes_held(result.kv_bytes_held);
  stats->set_kv_bytes_peak(result.kv_bytes_peak);
  // Every position forwarded: the prompt and each generated token but the last (which is never
  // forwarded); a job that generated nothing (a prompt-only one) forwarded its whole prompt.
  const size_t forwarded = prompt_tokens + std::max<size_t>(result.generated.size(), 1) - 1;
  stats->set_kv_bytes_full_cache(
      KvCacheSlots::BytesFor(c.n_layers, c.n_kv_heads, c.head_dim, int(forwarded), kv_type));
  stats->set_time_to_first_token_ms(result.time_to_first_token_ms);
  stats->set_tokens_per_second(result.tokens_per_second);
  stats->set_finish_reason(FinishReasonToProto(result.finish_reason));
  if (result.finish_reason == FinishReason::kStopString) stats->set_stop_string(stop_string);
}

}  // namespace a2sf::worker
