// Log-probabilities of tokens under the model: log_softmax of the raw logits (before penalties,
// temperature and truncation), the chosen token's rank, and the n most likely alternatives. What a
// user compares between a full cache and an evicting policy. Pure functions; thread-safe.
#ifndef A2SF_WORKER_ENGINE_LOGPROBS_H_
#define A2SF_WORKER_ENGINE_LOGPROBS_H_

#include <vector>

#include "absl/types/span.h"

namespace a2sf::worker {

struct TokenLogprob {
  int id = 0;
  float logprob = 0;
};

struct LogprobReport {
  TokenLogprob token;
  int rank = 1;  // 1 = most likely; ties go to the lower id
  std::vector<TokenLogprob> top;  // the `top_n` most likely, most likely first (ties: lower id)
};

// Most alternatives a request may ask for (as OpenAI's top_logprobs).
inline constexpr int kMaxTopLogprobs = 20;

// REQUIRES: 0 <= token < logits.size(), 0 <= top_n; logits finite.
LogprobReport ReportLogprobs(absl::Span<const float> logits, int token, int top_n);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_LOGPROBS_H_
