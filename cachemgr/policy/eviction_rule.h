// EvictionRule: the executable form of an eviction policy, applied by the score stores.
//
// Every policy of the library reduces to one rule: how scores are updated each step and which key
// orders the eviction candidates. A Policy (policy.h) is stateless: it only produces a rule; the
// accumulators and entry positions live in a ScoreStore. That is what makes a run-time swap a matter
// of handing the store another rule, and lets the CPU and CUDA stores share one definition.
#ifndef A2SF_CACHEMGR_POLICY_EVICTION_RULE_H_
#define A2SF_CACHEMGR_POLICY_EVICTION_RULE_H_

#include <cstdint>
#include <vector>

namespace a2sf::cachemgr {

struct EvictionRule {
  enum class Key {
    kNeverEvict,  // Full: the cache grows without bound.
    kPosition,    // Local, StreamingLLM: evict the smallest position among the candidates.
    kScore,       // A2SF, H2O, TOVA: evict the smallest score (ties: the smallest position).
  };
  Key key = Key::kNeverEvict;

  // With Key::kScore, each step computes A <- alpha[layer] * A + s (A2SF, Jo & Shin 2024, eq. 4);
  // a new entry starts at A = 0, so it gets A = s. One value per layer.
  std::vector<float> layer_alpha;

  // Entries at positions < protected_sinks are never candidates (StreamingLLM's attention sinks).
  uint32_t protected_sinks = 0;
  // The protected_recent entries with the largest positions are never candidates (H2O's recent
  // window; A2SF's optional `recent_window`).
  uint32_t protected_recent = 0;

  // Budget in entries per (layer, KV head).
  uint32_t budget = 0;

  bool uses_scores() const { return key == Key::kScore; }
  bool evicts() const { return key != Key::kNeverEvict; }
};

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_POLICY_EVICTION_RULE_H_
