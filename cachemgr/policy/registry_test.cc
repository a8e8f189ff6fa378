#include "cachemgr/policy/registry.h"

#include <cmath>

#include "cachemgr/policy/builtin_policies.h"

#include "gtest/gtest.h"

namespace a2sf::cachemgr {
namespace {

absl::StatusOr<EvictionRule> RuleOf(const PolicySpec& spec, uint32_t layers, uint32_t budget) {
  auto policy = PolicyRegistry::Builtin().Create(spec);
  if (!policy.ok()) return policy.status();
  return (*policy)->RuleFor(layers, budget);
}

PolicySpec Named(const std::string& name) {
  PolicySpec spec;
  spec.name = name;
  return spec;
}

TEST(PolicyRegistry, KnowsTheSixBuiltinPolicies) {
  EXPECT_EQ(PolicyRegistry::Builtin().Names(),
            (std::vector<std::string>{"a2sf", "full", "h2o", "local", "streaming_llm", "tova"}));
}

TEST(PolicyRegistry, UnknownNameIsRejectedAndTheKnownOnesListed) {
  auto policy = PolicyRegistry::Builtin().Create(Named("lru"));
  ASSERT_FALSE(policy.ok());
  EXPECT_EQ(policy.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(policy.status().message().find("policy.name"), std::string::npos);
  EXPECT_NE(policy.status().message().find("streaming_llm"), std::string::npos);
}

TEST(PolicyRegistry, H2oIsA2sfWithAlphaOneAndHalfBudgetRecentWindow) {
  auto rule = RuleOf(Named("h2o"), 3, 9);
  ASSERT_TRUE(rule.ok()) << rule.status();
  EXPECT_EQ(rule->key, EvictionRule::Key::kScore);
  EXPECT_EQ(rule->layer_alpha, std::vector<float>({1.f, 1.f, 1.f}));
  EXPECT_EQ(rule->protected_recent, 4u);  // floor(9 / 2)
  EXPECT_EQ(rule->budget, 9u);
}

TEST(PolicyRegistry, TovaIsA2sfWithAlphaZero) {
  auto rule = RuleOf(Named("tova"), 2, 8);
  ASSERT_TRUE(rule.ok());
  EXPECT_EQ(rule->layer_alpha, std::vector<float>({0.f, 0.f}));
  EXPECT_EQ(rule->protected_recent, 0u);
}

TEST(PolicyRegistry, A2sfDefaultsAndPerLayerAlphas) {
  auto rule = RuleOf(Named("a2sf"), 2, 8);
  ASSERT_TRUE(rule.ok());
  EXPECT_EQ(rule->layer_alpha, std::vector<float>({float(kDefaultA2sfAlpha), float(kDefaultA2sfAlpha)}));
  PolicySpec spec = Named("a2sf");
  spec.layer_alphas = {0.1, 0.9};
  spec.recent_window = 3;
  rule = RuleOf(spec, 2, 8);
  ASSERT_TRUE(rule.ok());
  EXPECT_EQ(rule->layer_alpha, std::vector<float>({0.1f, 0.9f}));
  EXPECT_EQ(rule->protected_recent, 3u);
}

TEST(PolicyRegistry, BadParametersNameTheField) {
  struct Case {
    PolicySpec spec;
    uint32_t layers, budget;
    const char* field;
  };
  PolicySpec alpha_high = Named("a2sf");
  alpha_high.alpha = 1.5;
  PolicySpec alpha_nan = Named("a2sf");
  alpha_nan.alpha = std::nan("");
  PolicySpec alpha_negative = Named("a2sf");
  alpha_negative.alpha = -0.1;
  PolicySpec wrong_layers = Named("a2sf");
  wrong_layers.layer_alphas = {0.5, 0.5, 0.5};
  PolicySpec bad_layer_alpha = Named("a2sf");
  bad_layer_alpha.layer_alphas = {0.5, 2.0};
  PolicySpec recent_too_big = Named("a2sf");
  recent_too_big.recent_window = 8;
  PolicySpec sinks_too_big = Named("streaming_llm");
  sinks_too_big.sinks = 8;
  PolicySpec local_with_alpha = Named("local");
  local_with_alpha.alpha = 0.5;
  PolicySpec h2o_with_recent = Named("h2o");
  h2o_with_recent.recent_window = 2;
  const Case cases[] = {
      {alpha_high, 2, 8, "policy.alpha"},
      {alpha_nan, 2, 8, "policy.alpha"},
      {alpha_negative, 2, 8, "policy.alpha"},
      {wrong_layers, 2, 8, "policy.layer_alphas"},
      {bad_layer_alpha, 2, 8, "policy.layer_alphas[1]"},
      {recent_too_big, 2, 8, "policy.recent_window"},
      {sinks_too_big, 2, 8, "policy.sinks"},
      {local_with_alpha, 2, 8, "policy.alpha"},
      {h2o_with_recent, 2, 8, "policy.recent_window"},
  };
  for (const Case& c : cases) {
    auto rule = RuleOf(c.spec, c.layers, c.budget);
    ASSERT_FALSE(rule.ok()) << PolicySpecToString(c.spec);
    EXPECT_EQ(rule.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(rule.status().message().find(c.field), std::string::npos)
        << rule.status() << " should name " << c.field;
  }
}

// The cache manager echoes a policy's resolved spec; a worker that takes the session over in-process
// creates the policy again from that echo (h2o came back as h2o(alpha=1) and was refused).
TEST(PolicyRegistry, EveryPolicysReportedSpecMakesTheSamePolicyAgain) {
  for (const std::string& name : PolicyRegistry::Builtin().Names()) {
    auto first = PolicyRegistry::Builtin().Create(Named(name));
    ASSERT_TRUE(first.ok()) << name << ": " << first.status();
    auto again = PolicyRegistry::Builtin().Create((*first)->spec());
    ASSERT_TRUE(again.ok()) << PolicySpecToString((*first)->spec()) << ": " << again.status();
    EXPECT_EQ(PolicySpecToString((*again)->spec()), PolicySpecToString((*first)->spec()));
    EXPECT_EQ((*again)->evicts(), (*first)->evicts()) << name;
  }
}

TEST(PolicyRegistry, FixedParametersAreAcceptedOnlyWithTheirFixedValues) {
  PolicySpec h2o = Named("h2o");
  h2o.alpha = 1.0;
  EXPECT_TRUE(PolicyRegistry::Builtin().Create(h2o).ok());
  h2o.alpha = 0.5;
  auto refused = PolicyRegistry::Builtin().Create(h2o);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("policy.alpha"), std::string::npos) << refused.status();
  PolicySpec tova = Named("tova");
  tova.alpha = 0.0;
  tova.recent_window = 0;
  EXPECT_TRUE(PolicyRegistry::Builtin().Create(tova).ok());
  tova.recent_window = 3;
  EXPECT_FALSE(PolicyRegistry::Builtin().Create(tova).ok());
}

TEST(PolicyRegistry, StreamingLlmDefaultsToFourSinks) {
  auto policy = PolicyRegistry::Builtin().Create(Named("streaming_llm"));
  ASSERT_TRUE(policy.ok());
  EXPECT_EQ((*policy)->spec().sinks, 4u);
  auto rule = (*policy)->RuleFor(1, 5);
  ASSERT_TRUE(rule.ok());
  EXPECT_EQ(rule->key, EvictionRule::Key::kPosition);
  EXPECT_EQ(rule->protected_sinks, 4u);
  EXPECT_FALSE((*policy)->RuleFor(1, 4).ok());  // 4 sinks need a budget of at least 5
}

TEST(PolicyRegistry, DuplicateRegistrationIsRefused) {
  PolicyRegistry registry;
  ASSERT_TRUE(registry.Register({"x", "", {}, false}, MakeFullPolicy).ok());
  EXPECT_EQ(registry.Register({"x", "", {}, false}, MakeFullPolicy).code(),
            absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace a2sf::cachemgr
