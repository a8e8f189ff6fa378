#include "eval/multiple_choice.h"

#include <cctype>
#include <fstream>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "cachemgr/policy_library.h"
#include "cachemgr/tools/trace_replay.h"
#include "eval/fidelity.h"
#include "nlohmann/json.hpp"
#include "worker/engine/generator.h"
#include "worker/policy/in_process_policy_client.h"

namespace a2sf::eval {

absl::StatusOr<McTask> ReadMcTask(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open task file '", path, "'"));
  McTask task;
  const size_t slash = path.find_last_of('/');
  task.name = path.substr(slash == std::string::npos ? 0 : slash + 1);
  if (task.name.size() > 6 && task.name.substr(task.name.size() - 6) == ".jsonl") task.name.resize(task.name.size() - 6);
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    auto bad = [&](const std::string& why) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": ", why));
    };
    if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
    const bool per_choice = j.contains("choice_contexts");
    if (!per_choice && (!j.contains("context") || !j["context"].is_string())) {
      return bad("needs a string \"context\" (or \"choice_contexts\")");
    }
    if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].size() < 2) {
      return bad("needs \"choices\": an array of at least two strings");
    }
    McQuestion q;
    if (j.contains("context") && j["context"].is_string()) q.context = j["context"].get<std::string>();
    if (per_choice) {
      if (!j["choice_contexts"].is_array() || j["choice_contexts"].size() != j["choices"].size()) {
        return bad("\"choice_contexts\" needs one string per choice");
      }
      for (const auto& c : j["choice_contexts"]) {
        if (!c.is_string()) return bad("\"choice_contexts\" needs strings");
        q.choice_contexts.push_back(c.get<std::string>());
      }
    }
    for (const auto& c : j["choices"]) {
      if (!c.is_string() || c.get<std::string>().empty()) return bad("every choice must be a non-empty string");
      q.choices.push_back(c.get<std::string>());
    }
    if (!j.contains("gold") || !j["gold"].is_number_integer() || j["gold"].get<int>() < 0 ||
        j["gold"].get<size_t>() >= q.choices.size()) {
      return bad("needs \"gold\": the index of the right choice");
    }
    if (j.contains("target_delimiter")) {
      if (!j["target_delimiter"].is_string()) return bad("\"target_delimiter\" must be a string");
      q.target_delimiter = j["target_delimiter"].get<std::string>();
    }
    q.gold = j["gold"].get<int>();
    q.fewshot = j.value("fewshot", false);
    (q.fewshot ? task.examples : task.questions).push_back(std::move(q));
  }
  if (task.questions.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no questions"));
  return task;
}

absl::StatusOr<EncodedPair> EncodePair(const worker::Tokenizer& tokenizer, std::string context,
                                       std::string continuation) {
  // lm-eval: n_spaces = len(context) - len(context.rstrip()); those characters start the continuation.
  size_t keep = context.size();
  while (keep > 0 && std::isspace(static_cast<unsigned char>(context[keep - 1]))) --keep;
  continuation.insert(0, context, keep, std::string::npos);
  context.resize(keep);
  absl::StatusOr<std::vector<int>> whole = tokenizer.Encode(context + continuation, true);
  if (!whole.ok()) return whole.status();
  EncodedPair pair;
  absl::StatusOr<std::vector<int>> context_ids = tokenizer.Encode(context, true);
  if (!context_ids.ok()) return context_ids.status();
  pair.context = std::move(*context_ids);
  if (whole->size() <= pair.context.size()) {
    return absl::InvalidArgumentError(absl::StrCat("continuation '", continuation, "' encodes to no tokens after its context"));
  }
  pair.continuation.assign(whole->begin() + pair.context.size(), whole->end());
  return pair;
}

std::string McPolicyLabel(const McPolicy& policy) {
  std::string label = cachemgr::PolicySpecToString(policy.spec);
  if (policy.recent_half_budget) label += "+recent";
  if (policy.budget_ratio != 1.0) absl::StrAppend(&label, absl::StrFormat(" r%.2g", policy.budget_ratio));
  return label;
}

namespace {

// Splits `text` at commas outside braces and brackets (JSON items keep theirs).
std::vector<std::string> SplitTopLevel(const std::string& text) {
  std::vector<std::string> items(1);
  int depth = 0;
  for (char ch : text) {
    if (ch == '{' || ch == '[') ++depth;
    if (ch == '}' || ch == ']') --depth;
    if (ch == ',' && depth == 0) {
      items.emplace_back();
    } else {
      items.back() += ch;
    }
  }
  return items;
}

absl::StatusOr<McPolicy> ParseMcPolicyItem(const std::string& item) {
  McPolicy policy;
  std::string json = item;
  if (!item.empty() && item[0] == '@') {
    std::ifstream in(item.substr(1));
    if (!in) return absl::NotFoundError(absl::StrCat("--policies: cannot open spec file '", item.substr(1), "'"));
    json.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else if (item.empty() || item[0] != '{') {
    std::string name = item;
    if (absl::EndsWith(name, "+recent")) {
      name.resize(name.size() - 7);
      policy.recent_half_budget = true;
      if (name != "a2sf") return absl::InvalidArgumentError(absl::StrCat("--policies: '", item, "': +recent is a2sf's"));
    }
    policy.spec.name = name;
    return policy;
  }
  absl::StatusOr<cachemgr::PolicySpec> spec = cachemgr::ParsePolicyJson(json);
  if (!spec.ok()) return absl::InvalidArgumentError(absl::StrCat("--policies: '", item, "': ", spec.status().message()));
  policy.spec = *spec;
  return policy;
}

}  // namespace

absl::StatusOr<std::vector<McPolicy>> ParseMcPolicies(const std::string& policies, const std::vector<double>& alphas,
                                                      const std::vector<double>& ratios) {
  if (alphas.empty() || ratios.empty()) return absl::InvalidArgumentError("--alphas and --ratios: need a value each");
  std::vector<McPolicy> out;
  for (const std::string& item : SplitTopLevel(policies)) {
    absl::StatusOr<McPolicy> parsed = ParseMcPolicyItem(std::string(absl::StripAsciiWhitespace(item)));
    if (!parsed.ok()) return parsed.status();
    std::vector<McPolicy> by_alpha = {*parsed};
    if (parsed->spec.name == "a2sf" && !parsed->spec.alpha && parsed->spec.layer_alphas.empty()) {
      by_alpha.clear();
      for (double alpha : alphas) {
        by_alpha.push_back(*parsed);
        by_alpha.back().spec.alpha = alpha;
      }
    }
    for (McPolicy& p : by_alpha) {
      // Unknown names and out-of-range parameters fail here, before any scoring.
      auto made = cachemgr::PolicyRegistry::Builtin().Create(p.spec);
      if (!made.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--policies: '", item, "': ", made.status().message()));
      }
      if (!(*made)->evicts()) {  // one row at the whole sequence (budget_ratio 1)
        out.push_back(p);
        continue;
      }
      for (double ratio : ratios) {
        if (!(ratio > 0 && ratio <= 1)) return absl::InvalidArgumentError("--ratios: values in (0, 1]");
        p.budget_ratio = ratio;
        out.push_back(p);
      }
    }
  }
  return out;
}

absl::StatusOr<double> ContinuationLogLikelihood(const worker::ModelWeights& weights, const std::vector<int>& prefix,
                                                 const std::vector<int>& continuation, const McPolicy& policy) {
  const int total = int(prefix.size() + continuation.size());
  if (prefix.empty() || continuation.empty()) return absl::InvalidArgumentError("empty context or continuation");
  if (total > weights.config().seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("context + choice is ", total, " tokens, over the model's context"));
  }
  cachemgr::BudgetSpec budget;
  budget.tokens = std::max<uint32_t>(1, uint32_t(policy.budget_ratio * total));
  cachemgr::PolicySpec spec = policy.spec;
  if (policy.recent_half_budget) spec.recent_window = *budget.tokens / 2;
  absl::StatusOr<std::unique_ptr<worker::InProcessPolicyClient>> evictor =
      worker::InProcessPolicyClient::Create(weights.config(), spec, budget);
  if (!evictor.ok()) return evictor.status();
  worker::EngineOptions options;
  options.cache_capacity = std::min<int>(int(*budget.tokens) + 1, total);
  absl::StatusOr<std::unique_ptr<worker::Engine>> engine = worker::Engine::Create(&weights, options);
  if (!engine.ok()) return engine.status();
  const bool evicts = (*evictor)->evicts();
  double ll = 0;
  std::vector<double> log_probs;
  for (int t = 0; t + 1 < total; ++t) {
    const int token = t < int(prefix.size()) ? prefix[t] : continuation[t - prefix.size()];
    if (absl::Status s = (*engine)->Forward(token, t); !s.ok()) return s;
    if (t + 1 >= int(prefix.size())) {
      LogSoftmax((*engine)->logits(), &log_probs);
      ll += log_probs[continuation[t + 1 - prefix.size()]];
    }
    if (evicts) {
      absl::StatusOr<kv::EvictionDecision> d = (*evictor)->Step(uint64_t(t), uint32_t(t), (*engine)->step_scores());
      if (!d.ok()) return d.status();
      if (absl::Status s = (*engine)->Evict(d->evictions_per_head, d->evicted_slots); !s.ok()) return s;
    }
  }
  return ll;
}

absl::StatusOr<McResult> ScoreMcTask(const worker::ModelWeights& weights, const worker::Tokenizer& tokenizer,
                                     const McTask& task, int shots, const McPolicy& policy) {
  if (shots < 0) return absl::InvalidArgumentError("shots: must be >= 0");
  McResult result;
  double correct = 0, correct_norm = 0;
  for (size_t qi = 0; qi < task.questions.size(); ++qi) {
    const McQuestion& q = task.questions[qi];
    // Demonstrations: marked examples first, else other questions.
    std::string prompt;
    int added = 0;
    const std::vector<McQuestion>& pool = task.examples.empty() ? task.questions : task.examples;
    for (size_t k = 0; k < pool.size() && added < shots; ++k) {
      if (task.examples.empty() && k == qi) continue;
      const McQuestion& e = pool[k];
      absl::StrAppend(&prompt, e.choice_contexts.empty() ? e.context : e.choice_contexts[e.gold],
                      e.target_delimiter, e.choices[e.gold], "\n\n");
      ++added;
    }
    std::vector<double> lls;
    int best = 0, best_norm = 0;
    double best_ll = -1e300, best_norm_ll = -1e300;
    for (size_t c = 0; c < q.choices.size(); ++c) {
      absl::StatusOr<EncodedPair> pair = EncodePair(
          tokenizer, prompt + (q.choice_contexts.empty() ? q.context : q.choice_contexts[c]),
          q.target_delimiter + q.choices[c]);
      if (!pair.ok()) return pair.status();
      absl::StatusOr<double> ll = ContinuationLogLikelihood(weights, pair->context, pair->continuation, policy);
      if (!ll.ok()) return ll.status();
      lls.push_back(*ll);
      const double norm = *ll / double(q.choices[c].size());
      if (*ll > best_ll) best_ll = *ll, best = int(c);
      if (norm > best_norm_ll) best_norm_ll = norm, best_norm = int(c);
    }
    correct += best == q.gold;
    correct_norm += best_norm == q.gold;
    result.log_likelihoods.push_back(std::move(lls));
  }
  result.questions = task.questions.size();
  result.accuracy = correct / double(result.questions);
  result.accuracy_norm = correct_norm / double(result.questions);
  return result;
}

}  // namespace a2sf::eval
