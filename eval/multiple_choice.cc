#include "eval/multiple_choice.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "eval/fidelity.h"
#include "nlohmann/json.hpp"
#include "worker/engine/generator.h"

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
    q.gold = j["gold"].get<int>();
    q.fewshot = j.value("fewshot", false);
    (q.fewshot ? task.examples : task.questions).push_back(std::move(q));
  }
  if (task.questions.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no questions"));
  return task;
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
  absl::StatusOr<std::unique_ptr<worker::InProcessPolicy>> evictor =
      worker::InProcessPolicy::Create(weights.config(), policy.spec, budget);
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
      absl::StatusOr<worker::EvictionDecision> d = (*evictor)->Step(uint64_t(t), uint32_t(t), (*engine)->step_scores());
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
      absl::StrAppend(&prompt, e.choice_contexts.empty() ? e.context : e.choice_contexts[e.gold], " ",
                      e.choices[e.gold], "\n\n");
      ++added;
    }
    std::vector<double> lls;
    int best = 0, best_norm = 0;
    double best_ll = -1e300, best_norm_ll = -1e300;
    for (size_t c = 0; c < q.choices.size(); ++c) {
      // The llama2.c tokenizer's dummy prefix makes Encode(choice) the tokens of " choice".
      absl::StatusOr<std::vector<int>> prefix =
          tokenizer.Encode(prompt + (q.choice_contexts.empty() ? q.context : q.choice_contexts[c]), true);
      if (!prefix.ok()) return prefix.status();
      absl::StatusOr<std::vector<int>> continuation = tokenizer.Encode(q.choices[c], false);
      if (!continuation.ok()) return continuation.status();
      absl::StatusOr<double> ll = ContinuationLogLikelihood(weights, *prefix, *continuation, policy);
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
