// Sampler: picks the next token from logits. Greedy (temperature 0; ties go to the lowest id), or
// temperature + top-p (nucleus) with a seeded xorshift generator, following llama2.c's run.c so that
// the same seed gives the same sequence of random numbers.
#ifndef A2SF_WORKER_ENGINE_SAMPLER_H_
#define A2SF_WORKER_ENGINE_SAMPLER_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace a2sf::worker {

// Temperatures below this sample greedily. Dividing logits by a temperature near 0 overflows float
// (a logit of 10 over 1e-38 is inf, and inf - inf is NaN in the softmax: garbage tokens); below 1e-6
// every token but the largest logits' (within 1e-5 of it) already has probability < e^-10, so argmax
// is the limit the distribution tends to, reached without the overflow.
inline constexpr float kGreedyBelowTemperature = 1e-6f;

struct SamplingOptions {
  float temperature = 0.0f;  // below kGreedyBelowTemperature (0 included): greedy
  float top_p = 1.0f;        // (0, 1]; 1 disables the nucleus cut
  uint64_t seed = 0;
};

// INVALID_ARGUMENT naming the field for a negative or non-finite temperature or top_p outside (0, 1].
absl::Status ValidateSampling(const SamplingOptions& options);

class Sampler {
 public:
  Sampler(const SamplingOptions& options, int vocab_size);
  int Sample(absl::Span<const float> logits);

 private:
  float RandomFloat();
  SamplingOptions options_;
  uint64_t state_;
  std::vector<float> probs_;
  std::vector<int> order_;
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_SAMPLER_H_
