#include "cachemgr/store/victim_selection.h"

#include <algorithm>
#include <functional>
#include <tuple>

#include "cachemgr/store/score_store.h"

namespace a2sf::cachemgr {

uint32_t RecentThreshold(const uint32_t* positions, uint32_t n, uint32_t recent) {
  if (recent == 0) return kv::kMaxPosition + 1;
  if (recent >= n) return 0;
  std::vector<uint32_t> sorted(positions, positions + n);
  std::nth_element(sorted.begin(), sorted.begin() + (recent - 1), sorted.end(), std::greater<uint32_t>());
  return sorted[recent - 1];
}

std::vector<uint32_t> SelectVictims(const EvictionRule& rule, const float* scores,
                                    const uint32_t* positions, uint32_t n, uint32_t k) {
  const uint32_t hi = RecentThreshold(positions, n, rule.protected_recent);
  struct Candidate {
    float score;
    uint32_t position;
    uint32_t slot;
  };
  std::vector<Candidate> candidates;
  candidates.reserve(n);
  const bool by_score = rule.key == EvictionRule::Key::kScore;
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t p = positions[i];
    if (p < rule.protected_sinks || p >= hi) continue;
    candidates.push_back({by_score ? scores[i] : 0.0f, p, i});
  }
  k = std::min<uint32_t>(k, static_cast<uint32_t>(candidates.size()));
  auto order = [](const Candidate& a, const Candidate& b) {
    return std::tie(a.score, a.position) < std::tie(b.score, b.position);
  };
  std::partial_sort(candidates.begin(), candidates.begin() + k, candidates.end(), order);
  std::vector<uint32_t> slots;
  slots.reserve(k);
  for (uint32_t i = 0; i < k; ++i) slots.push_back(candidates[i].slot);
  std::sort(slots.begin(), slots.end(), std::greater<uint32_t>());
  return slots;
}

}  // namespace a2sf::cachemgr
