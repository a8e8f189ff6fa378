// Fidelity of an eviction policy to the full cache, teacher-forced over token sequences: at every
// position the next-token distribution with eviction (per-token semantics, docs/POLICIES.md) is
// compared with the full cache's. Metrics: top-1 agreement, mean KL(full || policy), perplexity of
// the sequence under each, and the cosine similarity of each layer's attention output (the analogue
// of the paper's Table 2).
#ifndef A2SF_EVAL_FIDELITY_H_
#define A2SF_EVAL_FIDELITY_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "cachemgr/policy_library.h"
#include "worker/model/model.h"

namespace a2sf::eval {

// Pure metric helpers (tested on hand-computed cases).
void LogSoftmax(absl::Span<const float> logits, std::vector<double>* out);
double KlDivergence(absl::Span<const double> log_p, absl::Span<const double> log_q);  // KL(p || q), nats
double CosineSimilarity(absl::Span<const float> a, absl::Span<const float> b);         // 1 for two zeros

// What the full cache gives for one sequence, computed once and shared by every cell.
struct FullReference {
  std::vector<std::vector<double>> log_probs;  // [t][vocab] after feeding ids[0..t]
  std::vector<int> argmax;                     // [t]
  std::vector<std::vector<float>> attention;   // [t][n_layers * q_dim]
};
absl::StatusOr<FullReference> RunFullCache(const worker::ModelWeights& weights, const std::vector<int>& ids,
                                           worker::WeightType kv_type = worker::WeightType::kF32);

struct Fidelity {
  uint64_t positions = 0;
  double top1_agreement = 0;  // fraction of positions whose argmax matches the full cache
  double mean_kl = 0;         // mean KL(full || policy) in nats
  double perplexity_full = 0;
  double perplexity_policy = 0;
  std::vector<double> layer_cosine;  // mean per layer
  double mean_cosine = 0;            // mean over layers
  uint64_t evictions = 0;
  double kv_bytes_peak = 0;  // most KV bytes held at once (all layers and heads), mean over sequences
};

struct Cell {
  cachemgr::PolicySpec policy;
  double budget_ratio = 1.0;  // of each sequence's length; at least 1 token
  // A2SF with a recent window of floor(B/2) (set per sequence, since B depends on its length).
  bool recent_half_budget = false;
  // Pipelined decisions: each decision applied this many steps late (0: synchronous).
  uint32_t decision_lag = 0;
  // Tokens added to the ratio's budget (the lag study's synchronous runs with a pipelined run's memory).
  uint32_t extra_budget_tokens = 0;
  // How the engine holds keys and values (EngineOptions::kv_type).
  worker::WeightType kv_type = worker::WeightType::kF32;
};

// Runs `cell` over every sequence; `references[i]` must be RunFullCache(sequences[i]), taken with the
// cell's kv_type unless that difference is what is measured (CompareTypes).
absl::StatusOr<Fidelity> EvaluateCell(const worker::ModelWeights& weights, const std::vector<std::vector<int>>& sequences,
                                      const std::vector<FullReference>& references, const Cell& cell);

// A weight type's or KV type's own fidelity: `candidate` with a full cache held in `kv_type` against
// `f32_references` (RunFullCache of the fp32 weights with f32 caches; of the candidate's own weights
// to measure a KV type alone). EvaluateCell with the "full" policy, so the metrics are the same ones
// the policies are judged by.
absl::StatusOr<Fidelity> CompareTypes(const worker::ModelWeights& candidate,
                                      const std::vector<std::vector<int>>& sequences,
                                      const std::vector<FullReference>& f32_references,
                                      worker::WeightType kv_type = worker::WeightType::kF32);

// Reads token-id sequences from JSON lines with an "ids" array (the fixtures' corpus format).
absl::StatusOr<std::vector<std::vector<int>>> ReadCorpus(const std::string& path);

}  // namespace a2sf::eval

#endif  // A2SF_EVAL_FIDELITY_H_
