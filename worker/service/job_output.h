// JobOutput: turns one job's token events (worker/engine/generator.h) into the Generation API's
// messages -- text chunks with stop strings applied (OutputText), per-token logprobs with their
// pieces, prompt logprobs -- and the finished job's statistics. The worker service streams them; the
// in-process tool a2sf-generate prints the same messages, so both report one schema.
// One per job; not thread-safe.
#ifndef A2SF_WORKER_SERVICE_JOB_OUTPUT_H_
#define A2SF_WORKER_SERVICE_JOB_OUTPUT_H_

#include <optional>
#include <string>
#include <vector>

#include "a2sf/v1/generation.pb.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/engine/generator.h"
#include "worker/model/model.h"
#include "worker/tokenizer/output_text.h"

namespace a2sf::worker {

// Alternatives per token, for generated and prompt tokens; nullopt: not reported.
struct LogprobsRequest {
  std::optional<int> generated;
  std::optional<int> prompt;
};
// INVALID_ARGUMENT naming the field for more than kMaxTopLogprobs alternatives.
absl::StatusOr<LogprobsRequest> LogprobsFromProto(const v1::LogprobsOptions& options);

class JobOutput {
 public:
  // `tokenizer` may be null (no text, no pieces). REQUIRES: `prompt` non-empty.
  JobOutput(const Tokenizer* tokenizer, absl::Span<const int> prompt, StopStringOptions stop,
            LogprobsRequest logprobs);

  // Generate's on_prompt_logits.
  void OnPromptLogits(int position, absl::Span<const float> logits);
  // Generate's on_token: fills `chunk` (cleared first) with the token, its released text and its
  // logprobs; kStopString when a stop string matched.
  TokenVerdict OnToken(const TokenEvent& event, v1::GeneratedTokens* chunk);
  // The text still held back when the job ends.
  std::string Finish() { return text_.Finish(); }

  bool wants_prompt_logprobs() const { return logprobs_.prompt.has_value(); }
  const v1::PromptLogprobs& prompt_logprobs() const { return prompt_logprobs_; }
  const std::string& stop_string() const { return text_.matched(); }

 private:
  v1::TokenLogprobs Logprobs(absl::Span<const float> logits, int previous, int token, int top_n) const;

  const Tokenizer* tokenizer_;
  std::vector<int> prompt_;
  LogprobsRequest logprobs_;
  OutputText text_;
  int previous_;
  v1::PromptLogprobs prompt_logprobs_;
};

v1::FinishReason FinishReasonToProto(FinishReason reason);

// The result fields of a finished job's statistics (token counts, evictions, KV bytes -- the full
// cache's in the engine's kv_type too --, timings, finish reason, stop string).
void SetResultStats(const ModelConfig& model, WeightType kv_type, size_t prompt_tokens, const GenerateResult& result,
                    const std::string& stop_string, v1::JobStats* stats);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_JOB_OUTPUT_H_
