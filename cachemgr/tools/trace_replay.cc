#include "cachemgr/tools/trace_replay.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "cachemgr/session/session_manager.h"
#include "cachemgr/store/cpu_score_store.h"
#include "nlohmann/json.hpp"

namespace a2sf::cachemgr {
namespace {

using nlohmann::json;

absl::StatusOr<PolicySpec> PolicyFromJson(const json& j) {
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) {
    return absl::InvalidArgumentError("policy: must be an object with a string \"name\"");
  }
  PolicySpec spec;
  spec.name = j["name"].get<std::string>();
  for (const auto& [key, value] : j.items()) {
    if (key == "name") continue;
    if (key == "alpha" && value.is_number()) {
      spec.alpha = value.get<double>();
    } else if (key == "sinks" && value.is_number_unsigned()) {
      spec.sinks = value.get<uint32_t>();
    } else if (key == "recent_window" && value.is_number_unsigned()) {
      spec.recent_window = value.get<uint32_t>();
    } else if (key == "layer_alphas" && value.is_array()) {
      for (const json& a : value) {
        if (!a.is_number()) return absl::InvalidArgumentError("policy.layer_alphas: must hold numbers");
        spec.layer_alphas.push_back(a.get<double>());
      }
    } else {
      return absl::InvalidArgumentError(absl::StrCat("policy.", key, ": unknown field or wrong type"));
    }
  }
  return spec;
}

// Flattens nested arrays of numbers with the expected depth into `out`.
absl::Status Flatten(const json& j, int depth, std::vector<float>* out, std::vector<size_t>* shape, int level = 0) {
  if (depth == 0) {
    if (!j.is_number()) return absl::InvalidArgumentError("scores: expected a number");
    out->push_back(j.get<float>());
    return absl::OkStatus();
  }
  if (!j.is_array()) return absl::InvalidArgumentError("scores: expected a nested array");
  if (shape->size() <= static_cast<size_t>(level)) shape->push_back(j.size());
  if ((*shape)[level] != j.size()) {
    return absl::InvalidArgumentError(absl::StrCat("scores: ragged array at depth ", level));
  }
  for (const json& e : j) {
    if (absl::Status s = Flatten(e, depth - 1, out, shape, level + 1); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status AtLine(int line, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat("trace line ", line, ": ", status.message()));
}

}  // namespace

absl::StatusOr<PolicySpec> ParsePolicyJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("policy: not valid JSON");
  return PolicyFromJson(j);
}

absl::StatusOr<ReplaySummary> ReplayTrace(std::istream& in, std::ostream& out, const ReplayOptions& options) {
  SessionManagerOptions manager_options;
  manager_options.idle_timeout = absl::ZeroDuration();
  SessionManager manager(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(), manager_options);
  std::string session_id;
  SessionGeometry geometry;
  ReplaySummary summary;
  std::string text;
  int line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (text.empty() || text[0] == '#') continue;
    json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return AtLine(line, absl::InvalidArgumentError("not a JSON object"));
    }
    if (session_id.empty()) {
      if (!j.contains("a2sf_trace")) {
        return AtLine(line, absl::InvalidArgumentError("the first line must be the header with \"a2sf_trace\""));
      }
      SessionConfig config;
      if (!j.value("num_layers", json()).is_number_unsigned() ||
          !j.value("num_kv_heads", json()).is_number_unsigned() ||
          !j.value("budget_tokens", json()).is_number_unsigned()) {
        return AtLine(line, absl::InvalidArgumentError(
                                "header needs unsigned num_layers, num_kv_heads and budget_tokens"));
      }
      config.geometry = {j["num_layers"].get<uint32_t>(), j["num_kv_heads"].get<uint32_t>()};
      config.budget.tokens = j["budget_tokens"].get<uint32_t>();
      if (options.policy_override) {
        config.policy = *options.policy_override;
      } else if (j.contains("policy")) {
        absl::StatusOr<PolicySpec> spec = PolicyFromJson(j["policy"]);
        if (!spec.ok()) return AtLine(line, spec.status());
        config.policy = *spec;
      }
      absl::StatusOr<SessionInfo> info = manager.Open(config);
      if (!info.ok()) return AtLine(line, info.status());
      session_id = info->id;
      geometry = config.geometry;
      if (!options.json) {
        out << "session: " << geometry.num_layers << " layers x " << geometry.num_kv_heads
            << " KV heads, budget " << info->budget_tokens << " tokens, policy "
            << PolicySpecToString(info->policy) << "\n";
      }
      continue;
    }
    if (j.contains("set_policy")) {
      absl::StatusOr<PolicySpec> spec = PolicyFromJson(j["set_policy"]);
      if (!spec.ok()) return AtLine(line, spec.status());
      absl::StatusOr<PolicySwap> swap = manager.SetPolicy(session_id, *spec);
      if (!swap.ok()) return AtLine(line, swap.status());
      if (options.json) {
        out << json{{"set_policy", PolicySpecToString(swap->current)},
                    {"effective_from_step", swap->effective_from_step}}
                   .dump()
            << "\n";
      } else {
        out << "policy " << PolicySpecToString(swap->previous) << " -> " << PolicySpecToString(swap->current)
            << " from step " << swap->effective_from_step << "\n";
      }
      continue;
    }
    if (!j.contains("position") || !j["position"].is_number_unsigned() || !j.contains("scores")) {
      return AtLine(line, absl::InvalidArgumentError("a step needs an unsigned \"position\" and \"scores\""));
    }
    const uint64_t position = j["position"].get<uint64_t>();
    const bool bulk = j.value("bulk", false);
    std::vector<float> values;
    std::vector<size_t> shape;
    if (absl::Status s = Flatten(j["scores"], bulk ? 4 : 3, &values, &shape); !s.ok()) return AtLine(line, s);
    if (shape.size() < 2 || shape[0] != geometry.num_layers || shape[1] != geometry.num_kv_heads) {
      return AtLine(line, absl::InvalidArgumentError(absl::StrCat(
                              "scores: outer dimensions must be [", geometry.num_layers, "][",
                              geometry.num_kv_heads, "]")));
    }
    const ScoreView view{kv::ScoreDType::kFp32, values.data(), values.size()};
    absl::StatusOr<StepResult> result =
        bulk ? manager.BulkPrefill(session_id, summary.steps, position,
                                   static_cast<uint32_t>(shape.size() > 2 ? shape[2] : 0), view)
             : manager.Step(session_id, summary.steps, position, view);
    if (!result.ok()) return AtLine(line, result.status());
    const kv::EvictionDecision& d = result->decision;
    summary.steps++;
    summary.evictions += uint64_t{d.evictions_per_head} * geometry.heads();
    if (options.json) {
      json evicted = json::array();
      for (uint32_t h = 0; h < geometry.heads(); ++h) {
        for (uint32_t e = 0; e < d.evictions_per_head; ++e) {
          const size_t i = size_t{h} * d.evictions_per_head + e;
          evicted.push_back({{"layer", h / geometry.num_kv_heads},
                             {"kv_head", h % geometry.num_kv_heads},
                             {"slot", d.evicted_slots[i]},
                             {"position", d.evicted_positions[i]}});
        }
      }
      out << json{{"step", result->step},
                  {"position", position},
                  {"policy", result->policy_name},
                  {"entries_after", d.entries_after},
                  {"evicted", evicted}}
                 .dump()
          << "\n";
    } else {
      out << "step " << result->step << " position " << position << " [" << result->policy_name << "]: ";
      if (d.evictions_per_head == 0) out << "no eviction";
      for (uint32_t h = 0; h < geometry.heads(); ++h) {
        for (uint32_t e = 0; e < d.evictions_per_head; ++e) {
          const size_t i = size_t{h} * d.evictions_per_head + e;
          out << (h == 0 && e == 0 ? "" : ", ") << "L" << h / geometry.num_kv_heads << "H"
              << h % geometry.num_kv_heads << " slot " << d.evicted_slots[i] << " (pos "
              << d.evicted_positions[i] << ")";
        }
      }
      out << "\n";
    }
  }
  if (session_id.empty()) return absl::InvalidArgumentError("trace is empty: no header line");
  return summary;
}

}  // namespace a2sf::cachemgr
