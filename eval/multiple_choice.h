// Multiple-choice scoring in the style of lm-eval-harness, under an eviction policy.
//
// Task files are JSON lines (docs/EVALUATION.md, "Task files"):
//   {"context": "Question: ...\nAnswer:", "choices": ["...", "..."], "gold": 1}
// or, for tasks whose choices change the context (WinoGrande):
//   {"choice_contexts": ["... option1", "... option2"], "choices": ["rest", "rest"], "gold": 0}
// plus optional demonstration lines marked "fewshot": true; k-shot prompts prepend the first k of
// them (or, when none are marked, the first k other questions) as "context + gold choice" blocks
// separated by a blank line. Each choice is scored by the summed log-likelihood of its tokens after
// the context (acc), and by that sum divided by the choice's length in bytes (acc_norm, as lm-eval's
// acc_norm). The budget is a ratio of each whole scored sequence (the paper's setting); eviction
// follows the per-token semantics row by row.
#ifndef A2SF_EVAL_MULTIPLE_CHOICE_H_
#define A2SF_EVAL_MULTIPLE_CHOICE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cachemgr/policy/policy.h"
#include "worker/model/model.h"
#include "worker/tokenizer/tokenizer.h"

namespace a2sf::eval {

struct McQuestion {
  std::string context;
  // Optional per-choice contexts (WinoGrande-style partial scoring: the choices share one
  // continuation and differ in their contexts). When set, choice_contexts[c] replaces `context`.
  std::vector<std::string> choice_contexts;
  std::vector<std::string> choices;
  int gold = 0;
  bool fewshot = false;
};

struct McTask {
  std::string name;
  std::vector<McQuestion> questions;  // scored
  std::vector<McQuestion> examples;   // demonstrations
};

absl::StatusOr<McTask> ReadMcTask(const std::string& path);

struct McPolicy {
  cachemgr::PolicySpec spec;
  double budget_ratio = 1.0;
};

struct McResult {
  double accuracy = 0;
  double accuracy_norm = 0;
  size_t questions = 0;
  std::vector<std::vector<double>> log_likelihoods;  // [question][choice]
};

// Sum of log p(continuation | prefix) over the continuation tokens, teacher-forced with `policy`.
absl::StatusOr<double> ContinuationLogLikelihood(const worker::ModelWeights& weights, const std::vector<int>& prefix,
                                                 const std::vector<int>& continuation, const McPolicy& policy);

absl::StatusOr<McResult> ScoreMcTask(const worker::ModelWeights& weights, const worker::Tokenizer& tokenizer,
                                     const McTask& task, int shots, const McPolicy& policy);

}  // namespace a2sf::eval

#endif  // A2SF_EVAL_MULTIPLE_CHOICE_H_
