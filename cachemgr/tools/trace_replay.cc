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

// One replay: the session manager the trace drives, its session, and what the steps decided. Each
// kind of trace line has its method; their errors do not name the line (ReplayTrace adds it).
class TraceReplayer {
 public:
  TraceReplayer(std::ostream& out, const ReplayOptions& options)
      : out_(out),
        options_(options),
        manager_(std::make_unique<CpuScoreStore>(1), &PolicyRegistry::Builtin(), ManagerOptions()) {}

  // Replays one line that is neither blank nor a comment.
  absl::Status ReplayLine(const std::string& text);
  // Whether the header line opened the session.
  bool opened() const { return !session_id_.empty(); }
  const ReplaySummary& summary() const { return summary_; }

 private:
  // The session never expires, however slowly the trace is read (idle timeout 0).
  static SessionManagerOptions ManagerOptions() {
    SessionManagerOptions manager_options;
    manager_options.idle_timeout = absl::ZeroDuration();
    return manager_options;
  }
  absl::Status OpenSession(const json& j);
  absl::Status SetPolicy(const json& policy);
  absl::Status Step(const json& j);
  void PrintStepJson(const StepResult& result, uint64_t position) const;
  void PrintStepText(const StepResult& result, uint64_t position) const;

  std::ostream& out_;
  const ReplayOptions& options_;
  SessionManager manager_;
  std::string session_id_;
  SessionGeometry geometry_;
  ReplaySummary summary_;
};

absl::Status TraceReplayer::ReplayLine(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("not a JSON object");
  }
  if (session_id_.empty()) return OpenSession(j);
  if (j.contains("set_policy")) return SetPolicy(j["set_policy"]);
  return Step(j);
}

// The header line: opens the session with the header's geometry, budget and policy (or the override).
absl::Status TraceReplayer::OpenSession(const json& j) {
  if (!j.contains("a2sf_trace")) {
    return absl::InvalidArgumentError("the first line must be the header with \"a2sf_trace\"");
  }
  SessionConfig config;
  if (!j.value("num_layers", json()).is_number_unsigned() ||
      !j.value("num_kv_heads", json()).is_number_unsigned() ||
      !j.value("budget_tokens", json()).is_number_unsigned()) {
    return absl::InvalidArgumentError("header needs unsigned num_layers, num_kv_heads and budget_tokens");
  }
  config.geometry = {j["num_layers"].get<uint32_t>(), j["num_kv_heads"].get<uint32_t>()};
  config.budget.tokens = j["budget_tokens"].get<uint32_t>();
  if (options_.policy_override) {
    config.policy = *options_.policy_override;
  } else if (j.contains("policy")) {
    absl::StatusOr<PolicySpec> spec = PolicyFromJson(j["policy"]);
    if (!spec.ok()) return spec.status();
    config.policy = *spec;
  }
  absl::StatusOr<SessionInfo> info = manager_.Open(config);
  if (!info.ok()) return info.status();
  session_id_ = info->id;
  geometry_ = config.geometry;
  if (!options_.json) {
    out_ << "session: " << geometry_.num_layers << " layers x " << geometry_.num_kv_heads
         << " KV heads, budget " << info->budget_tokens << " tokens, policy "
         << PolicySpecToString(info->policy) << "\n";
  }
  return absl::OkStatus();
}

// A "set_policy" line: swaps the session's policy from the next step.
absl::Status TraceReplayer::SetPolicy(const json& policy) {
  absl::StatusOr<PolicySpec> spec = PolicyFromJson(policy);
  if (!spec.ok()) return spec.status();
  absl::StatusOr<PolicySwap> swap = manager_.SetPolicy(session_id_, *spec);
  if (!swap.ok()) return swap.status();
  if (options_.json) {
    out_ << json{{"set_policy", PolicySpecToString(swap->current)},
                 {"effective_from_step", swap->effective_from_step}}
                .dump()
         << "\n";
  } else {
    out_ << "policy " << PolicySpecToString(swap->previous) << " -> " << PolicySpecToString(swap->current)
         << " from step " << swap->effective_from_step << "\n";
  }
  return absl::OkStatus();
}

// A step line: a token step, or with "bulk": true a prefill of the whole prompt; counts and prints
// its decision.
absl::Status TraceReplayer::Step(const json& j) {
  if (!j.contains("position") || !j["position"].is_number_unsigned() || !j.contains("scores")) {
    return absl::InvalidArgumentError("a step needs an unsigned \"position\" and \"scores\"");
  }
  const uint64_t position = j["position"].get<uint64_t>();
  const bool bulk = j.value("bulk", false);
  std::vector<float> values;
  std::vector<size_t> shape;
  if (absl::Status s = Flatten(j["scores"], bulk ? 4 : 3, &values, &shape); !s.ok()) return s;
  if (shape.size() < 2 || shape[0] != geometry_.num_layers || shape[1] != geometry_.num_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat("scores: outer dimensions must be [", geometry_.num_layers,
                                                   "][", geometry_.num_kv_heads, "]"));
  }
  const ScoreView view{kv::ScoreDType::kFp32, values.data(), values.size()};
  absl::StatusOr<StepResult> result =
      bulk ? manager_.BulkPrefill(session_id_, summary_.steps, position,
                                  static_cast<uint32_t>(shape.size() > 2 ? shape[2] : 0), view)
           : manager_.Step(session_id_, summary_.steps, position, view);
  if (!result.ok()) return result.status();
  const kv::EvictionDecision& d = result->decision;
  summary_.steps++;
  summary_.evictions += uint64_t{d.evictions_per_head} * geometry_.heads();
  if (options_.json) {
    PrintStepJson(*result, position);
  } else {
    PrintStepText(*result, position);
  }
  return absl::OkStatus();
}

// One JSON object: the step, its policy, the entries left and every eviction by layer and KV head.
void TraceReplayer::PrintStepJson(const StepResult& result, uint64_t position) const {
  const kv::EvictionDecision& d = result.decision;
  json evicted = json::array();
  for (uint32_t h = 0; h < geometry_.heads(); ++h) {
    for (uint32_t e = 0; e < d.evictions_per_head; ++e) {
      const size_t i = size_t{h} * d.evictions_per_head + e;
      evicted.push_back({{"layer", h / geometry_.num_kv_heads},
                         {"kv_head", h % geometry_.num_kv_heads},
                         {"slot", d.evicted_slots[i]},
                         {"position", d.evicted_positions[i]}});
    }
  }
  out_ << json{{"step", result.step},
               {"position", position},
               {"policy", result.policy_name},
               {"entries_after", d.entries_after},
               {"evicted", evicted}}
              .dump()
       << "\n";
}

// One text line: the step and its evictions as "L<layer>H<head> slot <s> (pos <p>)".
void TraceReplayer::PrintStepText(const StepResult& result, uint64_t position) const {
  const kv::EvictionDecision& d = result.decision;
  out_ << "step " << result.step << " position " << position << " [" << result.policy_name << "]: ";
  if (d.evictions_per_head == 0) out_ << "no eviction";
  for (uint32_t h = 0; h < geometry_.heads(); ++h) {
    for (uint32_t e = 0; e < d.evictions_per_head; ++e) {
      const size_t i = size_t{h} * d.evictions_per_head + e;
      out_ << (h == 0 && e == 0 ? "" : ", ") << "L" << h / geometry_.num_kv_heads << "H"
           << h % geometry_.num_kv_heads << " slot " << d.evicted_slots[i] << " (pos "
           << d.evicted_positions[i] << ")";
    }
  }
  out_ << "\n";
}

}  // namespace

absl::StatusOr<PolicySpec> ParsePolicyJson(const std::string& text) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError("policy: not valid JSON");
  return PolicyFromJson(j);
}

absl::StatusOr<ReplaySummary> ReplayTrace(std::istream& in, std::ostream& out, const ReplayOptions& options) {
  TraceReplayer replayer(out, options);
  std::string text;
  int line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (text.empty() || text[0] == '#') continue;
    if (absl::Status s = replayer.ReplayLine(text); !s.ok()) return AtLine(line, s);
  }
  if (!replayer.opened()) return absl::InvalidArgumentError("trace is empty: no header line");
  return replayer.summary();
}

}  // namespace a2sf::cachemgr
