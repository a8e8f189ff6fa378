#include "cachemgr/store/testing/store_steps.h"

#include "cachemgr/policy/registry.h"
#include "gtest/gtest.h"

namespace a2sf::cachemgr::testing {

EvictionRule BuiltinRule(const std::string& name, uint32_t layers, uint32_t budget, std::optional<double> alpha,
                         std::optional<uint32_t> extra) {
  PolicySpec spec;
  spec.name = name;
  spec.alpha = alpha;
  if (name == "streaming_llm") spec.sinks = extra;
  if (name == "a2sf") spec.recent_window = extra;
  auto policy = PolicyRegistry::Builtin().Create(spec);
  EXPECT_TRUE(policy.ok()) << policy.status();
  if (!policy.ok()) return EvictionRule();
  auto rule = (*policy)->RuleFor(layers, budget);
  EXPECT_TRUE(rule.ok()) << rule.status();
  return rule.ok() ? *rule : EvictionRule();
}

absl::Status RunTokenStep(ScoreStore* store, SessionHandle session, const EvictionRule& rule, uint32_t position,
                          const std::vector<float>& scores, kv::EvictionDecision* decision) {
  TokenStep step;
  step.session = session;
  step.rule = &rule;
  step.position = position;
  step.scores = {kv::ScoreDType::kFp32, scores.data(), scores.size()};
  absl::Status status;
  kv::EvictionDecision unused;
  store->ProcessTokenSteps({&step, 1}, {&status, 1}, {decision != nullptr ? decision : &unused, 1});
  return status;
}

}  // namespace a2sf::cachemgr::testing
