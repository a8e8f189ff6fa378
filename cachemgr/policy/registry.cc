#include "cachemgr/policy/registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cachemgr/policy/builtin_policies.h"

namespace a2sf::cachemgr {

std::string PolicySpecToString(const PolicySpec& spec) {
  std::vector<std::string> parts;
  if (spec.alpha) parts.push_back(absl::StrCat("alpha=", *spec.alpha));
  if (!spec.layer_alphas.empty()) {
    parts.push_back(absl::StrCat("layer_alphas=[", absl::StrJoin(spec.layer_alphas, ","), "]"));
  }
  if (spec.sinks) parts.push_back(absl::StrCat("sinks=", *spec.sinks));
  if (spec.recent_window) parts.push_back(absl::StrCat("recent_window=", *spec.recent_window));
  return absl::StrCat(spec.name, "(", absl::StrJoin(parts, ", "), ")");
}

namespace {

PolicyParameterInfo AlphaInfo() {
  return {"alpha", "double", absl::StrCat(kDefaultA2sfAlpha), "[0, 1]",
          "forgetting factor: each step A <- alpha * A + s"};
}

PolicyRegistry MakeBuiltinRegistry() {
  PolicyRegistry registry;
  // One line per policy: its description and factory.
  auto must = [](absl::Status status) {
    if (!status.ok()) abort();  // duplicate built-in names are a programming error
  };
  must(registry.Register({"full", "never evicts (the reference)", {}, false}, MakeFullPolicy));
  must(registry.Register({"local", "keeps the most recent budget tokens (sliding window)", {}, false},
                         MakeLocalPolicy));
  must(registry.Register(
      {"streaming_llm",
       "keeps the first `sinks` positions and the most recent budget - sinks tokens",
       {{"sinks", "uint32", absl::StrCat(kDefaultStreamingLlmSinks), "[0, budget)",
         "attention-sink positions never evicted"}},
       false},
      MakeStreamingLlmPolicy));
  must(registry.Register({"h2o",
                          "heavy hitters: recent window of floor(budget/2) plus the largest accumulated "
                          "attention (a2sf with alpha = 1)",
                          {},
                          true},
                         MakeH2oPolicy));
  must(registry.Register({"tova", "keeps the tokens the latest attention row favours (a2sf with alpha = 0)",
                          {},
                          true},
                         MakeTovaPolicy));
  must(registry.Register(
      {"a2sf",
       "accumulated attention with forgetting factor alpha over the whole budget",
       {AlphaInfo(),
        {"layer_alphas", "repeated double", "", "[0, 1] each, one per layer",
         "per-layer forgetting factors (calibrated); override alpha"},
        {"recent_window", "uint32", "0", "[0, budget)", "most recent entries never evicted"}},
       true},
      MakeA2sfPolicy));
  return registry;
}

}  // namespace

const PolicyRegistry& PolicyRegistry::Builtin() {
  static const PolicyRegistry* const registry = new PolicyRegistry(MakeBuiltinRegistry());
  return *registry;
}

absl::Status PolicyRegistry::Register(PolicyInfo info, PolicyFactory factory) {
  const std::string name = info.name;
  if (entries_.count(name) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("policy '", name, "' is already registered"));
  }
  entries_.emplace(name, Entry{std::move(info), std::move(factory)});
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<const Policy>> PolicyRegistry::Create(const PolicySpec& spec) const {
  auto it = entries_.find(spec.name);
  if (it == entries_.end()) {
    return absl::InvalidArgumentError(absl::StrCat("policy.name: unknown policy '", spec.name,
                                                   "'; known: ", absl::StrJoin(Names(), ", ")));
  }
  absl::StatusOr<std::unique_ptr<const Policy>> policy = it->second.factory(spec);
  if (!policy.ok()) return policy.status();
  return std::shared_ptr<const Policy>(std::move(*policy));
}

std::vector<PolicyInfo> PolicyRegistry::Describe() const {
  std::vector<PolicyInfo> out;
  for (const auto& [name, entry] : entries_) out.push_back(entry.info);
  return out;
}

std::vector<std::string> PolicyRegistry::Names() const {
  std::vector<std::string> out;
  for (const auto& [name, entry] : entries_) out.push_back(name);
  return out;
}

}  // namespace a2sf::cachemgr
