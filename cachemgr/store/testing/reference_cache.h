// ReferenceCache: a slow, obviously-correct model of the eviction semantics (docs/POLICIES.md),
// written straight from the rules with no shared code beyond the parameter struct. Tests compare the
// score stores (CPU and CUDA) against it.
#ifndef A2SF_CACHEMGR_STORE_TESTING_REFERENCE_CACHE_H_
#define A2SF_CACHEMGR_STORE_TESTING_REFERENCE_CACHE_H_

#include <algorithm>
#include <cstdint>
#include <vector>

#include "cachemgr/policy/eviction_rule.h"

namespace a2sf::cachemgr::testing {

struct ReferenceEntry {
  uint32_t position;
  float score;
};

class ReferenceCache {
 public:
  ReferenceCache(uint32_t layers, uint32_t kv_heads) : kv_heads_(kv_heads), heads_(layers * kv_heads) {}

  // One token step. `scores` is [heads][entries + 1]. Returns evicted slots per head (descending).
  std::vector<std::vector<uint32_t>> Step(const EvictionRule& rule, uint32_t position,
                                          const std::vector<float>& scores) {
    std::vector<std::vector<uint32_t>> evicted(heads_.size());
    const size_t n = heads_[0].size() + 1;
    for (size_t h = 0; h < heads_.size(); ++h) {
      std::vector<ReferenceEntry>& entries = heads_[h];
      entries.push_back({position, 0.0f});
      if (rule.key == EvictionRule::Key::kScore) {
        const float alpha = rule.layer_alpha[h / kv_heads_];
        for (size_t i = 0; i < n; ++i) {
          const float decayed = alpha * entries[i].score;
          entries[i].score = decayed + scores[h * n + i];
        }
      }
      evicted[h] = Trim(rule, &entries);
    }
    return evicted;
  }

  // Bulk prefill of P entries: scores [heads][P][P].
  std::vector<std::vector<uint32_t>> Bulk(const EvictionRule& rule, uint32_t first_position, uint32_t P,
                                          const std::vector<float>& scores) {
    std::vector<std::vector<uint32_t>> evicted(heads_.size());
    for (size_t h = 0; h < heads_.size(); ++h) {
      std::vector<ReferenceEntry>& entries = heads_[h];
      for (uint32_t k = 0; k < P; ++k) {
        float a = 0.0f;
        if (rule.key == EvictionRule::Key::kScore) {
          const float alpha = rule.layer_alpha[h / kv_heads_];
          for (uint32_t q = k; q < P; ++q) a = alpha * a + scores[(h * P + q) * P + k];
        }
        entries.push_back({first_position + k, a});
      }
      evicted[h] = Trim(rule, &entries);
    }
    return evicted;
  }

  const std::vector<ReferenceEntry>& head(size_t h) const { return heads_[h]; }

 private:
  static std::vector<uint32_t> Trim(const EvictionRule& rule, std::vector<ReferenceEntry>* entries) {
    std::vector<uint32_t> slots;
    if (rule.key == EvictionRule::Key::kNeverEvict || entries->size() <= rule.budget) return slots;
    const size_t k = entries->size() - rule.budget;
    // Protected: positions < sinks, and the protected_recent largest positions.
    std::vector<uint32_t> by_position;
    for (const ReferenceEntry& e : *entries) by_position.push_back(e.position);
    std::sort(by_position.rbegin(), by_position.rend());
    std::vector<size_t> candidates;
    for (size_t i = 0; i < entries->size(); ++i) {
      const uint32_t p = (*entries)[i].position;
      bool recent = false;
      for (uint32_t r = 0; r < rule.protected_recent && r < by_position.size(); ++r) {
        recent |= by_position[r] == p;
      }
      if (p >= rule.protected_sinks && !recent) candidates.push_back(i);
    }
    std::sort(candidates.begin(), candidates.end(), [&](size_t a, size_t b) {
      const ReferenceEntry& x = (*entries)[a];
      const ReferenceEntry& y = (*entries)[b];
      if (rule.key == EvictionRule::Key::kScore && x.score != y.score) return x.score < y.score;
      return x.position < y.position;
    });
    for (size_t j = 0; j < k; ++j) slots.push_back(static_cast<uint32_t>(candidates[j]));
    std::sort(slots.rbegin(), slots.rend());
    for (uint32_t slot : slots) {
      (*entries)[slot] = entries->back();
      entries->pop_back();
    }
    return slots;
  }

  uint32_t kv_heads_;
  std::vector<std::vector<ReferenceEntry>> heads_;
};

}  // namespace a2sf::cachemgr::testing

#endif  // A2SF_CACHEMGR_STORE_TESTING_REFERENCE_CACHE_H_
