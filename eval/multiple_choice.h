// Multiple-choice scoring in the style of lm-eval-harness, under an eviction policy.
//
// Task files are JSON lines (docs/EVALUATION.md, "Task files"):
//   {"context": "Question: ...\nAnswer:", "choices": ["...", "..."], "gold": 1}
// or, for tasks whose choices change the context (WinoGrande):
//   {"choice_contexts": ["... option1", "... option2"], "choices": ["rest", "rest"], "gold": 0}
// plus optional demonstration lines marked "fewshot": true; k-shot prompts prepend the first k of
// them (or, when none are marked, the first k other questions) as "context + gold choice" blocks
// separated by a blank line. A choice's continuation is target_delimiter + choice (lm-eval's
// target_delimiter, " " unless the line sets "target_delimiter", e.g. "" for choices written with
// their leading space), tokenized with the context as one string by lm-eval's _encode_pair rule
// (EncodePair). Each choice is scored by the summed log-likelihood of its continuation tokens (acc),
// and by that sum divided by the choice's length in bytes (acc_norm, as lm-eval's acc_norm). The budget is a ratio of each whole scored sequence (the paper's setting); eviction
// follows the per-token semantics row by row.
#ifndef A2SF_EVAL_MULTIPLE_CHOICE_H_
#define A2SF_EVAL_MULTIPLE_CHOICE_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "cachemgr/policy_library.h"
#include "worker/model/model.h"
#include "worker/tokenizer/tokenizer.h"

namespace a2sf::eval {

struct McQuestion {
  std::string context;
  // Optional per-choice contexts (WinoGrande-style partial scoring: the choices share one
  // continuation and differ in their contexts). When set, choice_contexts[c] replaces `context`.
  std::vector<std::string> choice_contexts;
  std::vector<std::string> choices;
  std::string target_delimiter = " ";  // between context and choice, as lm-eval's task option
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
  // A2SF's recent window set to floor(B/2) for each scored sequence's budget B (the evaluation's best
  // setting; B depends on the sequence, so no fixed recent_window fits every question).
  bool recent_half_budget = false;
};

// e.g. "a2sf(alpha=0.9, recent_window=0)+recent r0.2", "full".
std::string McPolicyLabel(const McPolicy& policy);

// The policies one `a2sf-eval mc` call scores. `policies` is a comma-separated list of items, each
//   a policy name ("h2o"), a name with "+recent" ("a2sf+recent": window floor(B/2)),
//   a JSON spec ({"name": "a2sf", "alpha": 0.9, "recent_window": 8}, commas allowed inside braces), or
//   @FILE: a JSON spec file (what `a2sf-eval calibrate --out` writes);
// every a2sf item without alpha or layer_alphas is repeated for each of `alphas`, and every policy but
// full for each of `ratios` (full runs once, at ratio 1). INVALID_ARGUMENT names the bad item.
absl::StatusOr<std::vector<McPolicy>> ParseMcPolicies(const std::string& policies, const std::vector<double>& alphas,
                                                      const std::vector<double>& ratios);

// lm-eval-harness's _encode_pair: trailing whitespace of `context` moves to the front of
// `continuation`; context + continuation is encoded as one string (with BOS) and split at the length
// of the context's own encoding. INVALID_ARGUMENT when nothing is left for the continuation.
struct EncodedPair {
  std::vector<int> context;
  std::vector<int> continuation;
};
absl::StatusOr<EncodedPair> EncodePair(const worker::Tokenizer& tokenizer, std::string context,
                                       std::string continuation);

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
