// What the score-store tests share: a built-in policy's eviction rule, and one token step run through a
// store. Test-only; stateless.
#ifndef A2SF_CACHEMGR_STORE_TESTING_STORE_STEPS_H_
#define A2SF_CACHEMGR_STORE_TESTING_STORE_STEPS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "cachemgr/policy/eviction_rule.h"
#include "cachemgr/store/score_store.h"

namespace a2sf::cachemgr::testing {

// The rule of built-in policy `name` for `layers` layers and a budget of `budget` tokens; `extra` is
// streaming_llm's sinks or a2sf's recent window. A test failure (and a default rule) when the registry
// refuses.
EvictionRule BuiltinRule(const std::string& name, uint32_t layers, uint32_t budget,
                         std::optional<double> alpha = std::nullopt, std::optional<uint32_t> extra = std::nullopt);

// Runs one token step at `position` with fp32 `scores` ([heads][entries + 1]) on `session`; returns its
// status and, when `decision` is given, its decision.
absl::Status RunTokenStep(ScoreStore* store, SessionHandle session, const EvictionRule& rule, uint32_t position,
                          const std::vector<float>& scores, kv::EvictionDecision* decision = nullptr);

}  // namespace a2sf::cachemgr::testing

#endif  // A2SF_CACHEMGR_STORE_TESTING_STORE_STEPS_H_
