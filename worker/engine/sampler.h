// Sampler: picks the next token from logits, as vLLM and OpenAI define the options, in this order:
//   1. penalties on the logits: repetition (tokens in the prompt or the output so far: a positive
//      logit divided by the penalty, a negative one multiplied), then frequency and presence over the
//      output so far: logit -= frequency * count + presence * (count > 0);
//   2. banned tokens (the stop tokens before min_tokens) get logit -inf;
//   3. temperature 0: argmax (ties go to the lowest id); otherwise p = softmax(logits / temperature),
//      then top-k, then top-p (nucleus, over what top-k kept, renormalized), then min-p (drop tokens
//      below min_p times the most likely one), and one draw from a seeded xorshift generator.
// With only temperature and top_p set, the draw follows llama2.c's run.c exactly, so that the same
// seed gives the same sequence of tokens.
//
// A Sampler is one sequence's state (its random generator and token history); not thread-safe.
#ifndef A2SF_WORKER_ENGINE_SAMPLER_H_
#define A2SF_WORKER_ENGINE_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace a2sf::worker {

struct SamplingOptions {
  float temperature = 0.0f;  // 0: greedy
  float top_p = 1.0f;        // (0, 1]; 1 disables the nucleus cut
  uint64_t seed = 0;
  int top_k = 0;                    // 0: no limit
  float min_p = 0.0f;               // [0, 1]; 0: off
  float repetition_penalty = 1.0f;  // > 0; 1: off
  float presence_penalty = 0.0f;    // [-2, 2]
  float frequency_penalty = 0.0f;   // [-2, 2]
};

// INVALID_ARGUMENT naming the field for a value outside the ranges above (or not finite).
absl::Status ValidateSampling(const SamplingOptions& options);

// Which tokens the penalties look at: every token of the prompt and of the output so far, and how
// often each was generated.
class TokenHistory {
 public:
  explicit TokenHistory(int vocab_size) : seen_(vocab_size, 0), output_counts_(vocab_size, 0) {}
  void AddPrompt(absl::Span<const int> tokens);
  void AddOutput(int token);
  bool seen(int token) const { return seen_[token] != 0; }
  uint32_t output_count(int token) const { return output_counts_[token]; }
  // Tokens seen so far, each once, in the order first seen.
  const std::vector<int>& touched() const { return touched_; }

 private:
  void Touch(int token);
  std::vector<uint8_t> seen_;
  std::vector<uint32_t> output_counts_;
  std::vector<int> touched_;
};

// Step 1 on `logits` in place. Only tokens in `history` change.
void ApplyPenalties(const SamplingOptions& options, const TokenHistory& history, absl::Span<float> logits);

// Step 3's candidates for temperature > 0: the tokens a draw may pick, in the order it walks them,
// with their probabilities (softmax(logits / temperature), not renormalized) and the mass kept.
// With no truncation, every token in id order and mass 1.
struct Candidates {
  std::vector<int> ids;
  std::vector<float> probs;
  float mass = 1.0f;
};
void SamplingCandidates(const SamplingOptions& options, absl::Span<const float> logits, Candidates* out);

class Sampler {
 public:
  Sampler(const SamplingOptions& options, int vocab_size);
  // Records the prompt for the repetition penalty.
  void AddPrompt(absl::Span<const int> prompt) { history_.AddPrompt(prompt); }
  // Picks the next token (never one of `banned`) and records it as output.
  int Sample(absl::Span<const float> logits, absl::Span<const int> banned = {});

 private:
  float RandomFloat();
  bool Penalizes() const;
  SamplingOptions options_;
  uint64_t state_;
  TokenHistory history_;
  std::vector<float> adjusted_;  // the logits after steps 1-2, when they change anything
  Candidates candidates_;
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_SAMPLER_H_
