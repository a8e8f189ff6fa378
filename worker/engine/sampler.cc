#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "worker/engine/math.h"

namespace a2sf::worker {

absl::Status ValidateSampling(const SamplingOptions& o) {
  if (!(o.temperature >= 0.0f) || !std::isfinite(o.temperature)) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.temperature: must be >= 0, got ", o.temperature));
  }
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.top_p: must be in (0, 1], got ", o.top_p));
  }
  return absl::OkStatus();
}

Sampler::Sampler(const SamplingOptions& options, int vocab_size)
    : options_(options), state_(options.seed == 0 ? 0x9E3779B97F4A7C15ull : options.seed), probs_(vocab_size) {
  order_.reserve(vocab_size);
}

float Sampler::RandomFloat() {
  // xorshift*, as run.c's random_u32 / random_f32.
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  const uint32_t bits = uint32_t((state_ * 0x2545F4914F6CDD1Dull) >> 32);
  return float(bits >> 8) / 16777216.0f;
}

int Sampler::Sample(absl::Span<const float> logits) {
  const int n = int(logits.size());
  if (options_.temperature < kGreedyBelowTemperature) {
    return int(std::max_element(logits.begin(), logits.end()) - logits.begin());  // first maximum
  }
  for (int i = 0; i < n; ++i) probs_[i] = logits[i] / options_.temperature;
  Softmax(probs_.data(), n);
  const float coin = RandomFloat();
  if (options_.top_p >= 1.0f) {
    float cdf = 0.0f;
    for (int i = 0; i < n; ++i) {
      cdf += probs_[i];
      if (coin < cdf) return i;
    }
    return n - 1;
  }
  // Nucleus: tokens below (1 - top_p) / (n - 1) cannot be in it; sort the rest by probability
  // (ties: lower id first) and cut where the cumulative mass first exceeds top_p.
  const float cutoff = (1.0f - options_.top_p) / float(n - 1);
  order_.clear();
  for (int i = 0; i < n; ++i) {
    if (probs_[i] >= cutoff) order_.push_back(i);
  }
  std::sort(order_.begin(), order_.end(), [&](int a, int b) { return probs_[a] > probs_[b] || (probs_[a] == probs_[b] && a < b); });
  float cumulative = 0.0f;
  size_t last = order_.size() - 1;
  for (size_t i = 0; i < order_.size(); ++i) {
    cumulative += probs_[order_[i]];
    if (cumulative > options_.top_p) {
      last = i;
      break;
    }
  }
  const float r = coin * cumulative;
  float cdf = 0.0f;
  for (size_t i = 0; i <= last; ++i) {
    cdf += probs_[order_[i]];
    if (r < cdf) return order_[i];
  }
  return order_[last];
}

}  // namespace a2sf::worker
