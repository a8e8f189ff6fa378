#include "worker/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

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
  if (o.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("sampling.top_k: must be >= 0, got ", o.top_k));
  if (!(o.min_p >= 0.0f && o.min_p <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("sampling.min_p: must be in [0, 1], got ", o.min_p));
  }
  if (!(o.repetition_penalty > 0.0f) || !std::isfinite(o.repetition_penalty)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.repetition_penalty: must be > 0 (1: off), got ", o.repetition_penalty));
  }
  if (!(std::fabs(o.presence_penalty) <= 2.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.presence_penalty: must be in [-2, 2], got ", o.presence_penalty));
  }
  if (!(std::fabs(o.frequency_penalty) <= 2.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("sampling.frequency_penalty: must be in [-2, 2], got ", o.frequency_penalty));
  }
  return absl::OkStatus();
}

void TokenHistory::Touch(int token) {
  if (seen_[token] == 0) touched_.push_back(token);
  seen_[token] = 1;
}

void TokenHistory::AddPrompt(absl::Span<const int> tokens) {
  for (int t : tokens) Touch(t);
}

void TokenHistory::AddOutput(int token) {
  Touch(token);
  ++output_counts_[token];
}

void ApplyPenalties(const SamplingOptions& o, const TokenHistory& history, absl::Span<float> logits) {
  for (int t : history.touched()) {
    float& logit = logits[t];
    if (o.repetition_penalty != 1.0f) {
      logit = logit > 0 ? logit / o.repetition_penalty : logit * o.repetition_penalty;
    }
    const uint32_t count = history.output_count(t);
    if (count > 0) logit -= o.frequency_penalty * float(count) + o.presence_penalty;
  }
}

namespace {

bool Truncates(const SamplingOptions& o, int n) { return o.top_p < 1.0f || (o.top_k > 0 && o.top_k < n) || o.min_p > 0; }

// Sorts ids by probability, most likely first; ties: lower id first.
void SortByProbability(const std::vector<float>& probs, std::vector<int>* ids, size_t keep) {
  auto more_likely = [&](int a, int b) { return probs[a] > probs[b] || (probs[a] == probs[b] && a < b); };
  if (keep < ids->size()) {
    std::partial_sort(ids->begin(), ids->begin() + keep, ids->end(), more_likely);
    ids->resize(keep);
  } else {
    std::sort(ids->begin(), ids->end(), more_likely);
  }
}

}  // namespace

void SamplingCandidates(const SamplingOptions& o, absl::Span<const float> logits, Candidates* out) {
  const int n = int(logits.size());
  out->probs.resize(n);
  for (int i = 0; i < n; ++i) out->probs[i] = logits[i] / o.temperature;
  Softmax(out->probs.data(), n);
  const std::vector<float>& p = out->probs;
  out->ids.clear();
  out->mass = 1.0f;
  if (!Truncates(o, n)) {
    for (int i = 0; i < n; ++i) out->ids.push_back(i);
    return;
  }
  const bool top_k = o.top_k > 0 && o.top_k < n;
  // Without top-k, tokens that cannot survive are skipped before sorting: below (1 - top_p) / (n - 1)
  // a token cannot be in the nucleus (run.c's shortcut), below min_p * max it is dropped by min-p.
  // With top-k the nucleus is taken over the top k renormalized, so nothing is skipped.
  float floor = 0.0f;
  if (!top_k) {
    if (o.top_p < 1.0f) floor = (1.0f - o.top_p) / float(n - 1);
    if (o.min_p > 0) floor = std::max(floor, o.min_p * *std::max_element(p.begin(), p.end()));
  }
  for (int i = 0; i < n; ++i) {
    if (p[i] >= floor) out->ids.push_back(i);
  }
  SortByProbability(p, &out->ids, top_k ? size_t(o.top_k) : out->ids.size());
  float reference = 1.0f;  // the mass top-p is a fraction of
  if (top_k) {
    reference = 0.0f;
    for (int id : out->ids) reference += p[id];
  }
  float cumulative = 0.0f;
  size_t keep = out->ids.size();
  for (size_t i = 0; i < out->ids.size(); ++i) {
    cumulative += p[out->ids[i]];
    if (o.top_p < 1.0f && cumulative > o.top_p * reference) {
      keep = i + 1;
      break;
    }
  }
  out->ids.resize(keep);
  if (o.min_p > 0) {
    const float threshold = o.min_p * p[out->ids.front()];
    while (out->ids.size() > 1 && p[out->ids.back()] < threshold) out->ids.pop_back();
  }
  out->mass = 0.0f;
  for (int id : out->ids) out->mass += p[id];
}

Sampler::Sampler(const SamplingOptions& options, int vocab_size)
    : options_(options), state_(options.seed == 0 ? 0x9E3779B97F4A7C15ull : options.seed), history_(vocab_size) {}

float Sampler::RandomFloat() {
  // xorshift*, as run.c's random_u32 / random_f32.
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  const uint32_t bits = uint32_t((state_ * 0x2545F4914F6CDD1Dull) >> 32);
  return float(bits >> 8) / 16777216.0f;
}

bool Sampler::Penalizes() const {
  return options_.repetition_penalty != 1.0f || options_.presence_penalty != 0.0f ||
         options_.frequency_penalty != 0.0f;
}

int Sampler::Sample(absl::Span<const float> raw, absl::Span<const int> banned) {
  absl::Span<const float> logits = raw;
  if (Penalizes() || !banned.empty()) {
    adjusted_.assign(raw.begin(), raw.end());
    if (Penalizes()) ApplyPenalties(options_, history_, absl::MakeSpan(adjusted_));
    for (int t : banned) adjusted_[t] = -std::numeric_limits<float>::infinity();
    logits = adjusted_;
  }
  int token;
  if (options_.temperature == 0.0f) {
    token = int(std::max_element(logits.begin(), logits.end()) - logits.begin());  // first maximum
  } else {
    SamplingCandidates(options_, logits, &candidates_);
    const float coin = RandomFloat();
    // Full distribution: coin against the cdf in id order (run.c's sample_mult); truncated: scaled to
    // the kept mass, walking the candidates most likely first (run.c's sample_topp).
    const float r = Truncates(options_, int(logits.size())) ? coin * candidates_.mass : coin;
    token = candidates_.ids.back();
    float cdf = 0.0f;
    for (int id : candidates_.ids) {
      cdf += candidates_.probs[id];
      if (r < cdf) {
        token = id;
        break;
      }
    }
  }
  history_.AddOutput(token);
  return token;
}

}  // namespace a2sf::worker
