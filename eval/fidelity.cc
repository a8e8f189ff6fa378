#include "eval/fidelity.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/engine/generator.h"
#include "worker/policy/in_process_policy_client.h"

namespace a2sf::eval {

void LogSoftmax(absl::Span<const float> logits, std::vector<double>* out) {
  double max = logits[0];
  for (float v : logits) max = std::max(max, double(v));
  double sum = 0;
  for (float v : logits) sum += std::exp(double(v) - max);
  const double log_sum = max + std::log(sum);
  out->resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) (*out)[i] = double(logits[i]) - log_sum;
}

double KlDivergence(absl::Span<const double> log_p, absl::Span<const double> log_q) {
  double kl = 0;
  for (size_t i = 0; i < log_p.size(); ++i) kl += std::exp(log_p[i]) * (log_p[i] - log_q[i]);
  return std::max(0.0, kl);
}

double CosineSimilarity(absl::Span<const float> a, absl::Span<const float> b) {
  double dot = 0, na = 0, nb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    dot += double(a[i]) * b[i];
    na += double(a[i]) * a[i];
    nb += double(b[i]) * b[i];
  }
  if (na == 0 && nb == 0) return 1.0;
  if (na == 0 || nb == 0) return 0.0;
  return dot / std::sqrt(na * nb);
}

absl::StatusOr<FullReference> RunFullCache(const worker::ModelWeights& weights, const std::vector<int>& ids,
                                           worker::WeightType kv_type) {
  if (ids.size() < 2) return absl::InvalidArgumentError("a sequence needs at least two tokens");
  worker::EngineOptions options;
  options.kv_type = kv_type;
  options.capture_attention_outputs = true;
  options.cache_capacity = std::min<int>(int(ids.size()), weights.config().seq_len);
  absl::StatusOr<std::unique_ptr<worker::Engine>> engine = worker::Engine::Create(&weights, options);
  if (!engine.ok()) return engine.status();
  FullReference ref;
  for (size_t t = 0; t + 1 < ids.size(); ++t) {
    if (absl::Status s = (*engine)->Forward(ids[t], int(t)); !s.ok()) return s;
    ref.log_probs.emplace_back();
    LogSoftmax((*engine)->logits(), &ref.log_probs.back());
    const auto& logits = (*engine)->logits();
    ref.argmax.push_back(int(std::max_element(logits.begin(), logits.end()) - logits.begin()));
    const auto att = (*engine)->attention_outputs();
    ref.attention.emplace_back(att.begin(), att.end());
  }
  return ref;
}

absl::StatusOr<Fidelity> EvaluateCell(const worker::ModelWeights& weights, const std::vector<std::vector<int>>& sequences,
                                      const std::vector<FullReference>& references, const Cell& cell) {
  const worker::ModelConfig& c = weights.config();
  Fidelity out;
  out.layer_cosine.assign(c.n_layers, 0.0);
  double kl_sum = 0, nll_full = 0, nll_policy = 0, agree = 0;
  std::vector<double> log_probs;
  for (size_t i = 0; i < sequences.size(); ++i) {
    const std::vector<int>& ids = sequences[i];
    const FullReference& ref = references[i];
    const uint32_t budget =
        std::max<uint32_t>(1, uint32_t(std::floor(cell.budget_ratio * ids.size()))) + cell.extra_budget_tokens;
    cachemgr::PolicySpec spec = cell.policy;
    if (cell.recent_half_budget) spec.recent_window = budget / 2;
    cachemgr::BudgetSpec budget_spec;
    budget_spec.tokens = budget;
    absl::StatusOr<std::unique_ptr<worker::InProcessPolicyClient>> policy =
        worker::InProcessPolicyClient::Create(c, spec, budget_spec, cell.decision_lag);
    if (!policy.ok()) return policy.status();
    worker::EngineOptions options;
    options.kv_type = cell.kv_type;
    options.capture_attention_outputs = true;
    options.cache_capacity = worker::RequiredCacheCapacity(policy->get(), 1, int(ids.size()) - 1, false);
    absl::StatusOr<std::unique_ptr<worker::Engine>> engine = worker::Engine::Create(&weights, options);
    if (!engine.ok()) return engine.status();
    worker::DecisionApplier applier(engine->get(), policy->get());
    size_t peak_bytes = 0;
    for (size_t t = 0; t + 1 < ids.size(); ++t) {
      if (absl::Status s = (*engine)->Forward(ids[t], int(t)); !s.ok()) return s;
      LogSoftmax((*engine)->logits(), &log_probs);
      const auto& logits = (*engine)->logits();
      const int top = int(std::max_element(logits.begin(), logits.end()) - logits.begin());
      agree += top == ref.argmax[t];
      kl_sum += KlDivergence(ref.log_probs[t], log_probs);
      nll_full -= ref.log_probs[t][ids[t + 1]];
      nll_policy -= log_probs[ids[t + 1]];
      const auto att = (*engine)->attention_outputs();
      for (int l = 0; l < c.n_layers; ++l) {
        out.layer_cosine[l] += CosineSimilarity(att.subspan(size_t(l) * c.q_dim(), c.q_dim()),
                                                absl::MakeConstSpan(ref.attention[t]).subspan(size_t(l) * c.q_dim(), c.q_dim()));
      }
      ++out.positions;
      peak_bytes = std::max(peak_bytes, (*engine)->cache().bytes_held());
      if (absl::Status s = applier.AfterToken(t, uint32_t(t)); !s.ok()) return s;
    }
    out.evictions += applier.evictions();
    out.kv_bytes_peak += double(peak_bytes) / double(sequences.size());
  }
  if (out.positions == 0) return absl::InvalidArgumentError("no positions to evaluate");
  const double n = double(out.positions);
  out.top1_agreement = agree / n;
  out.mean_kl = kl_sum / n;
  out.perplexity_full = std::exp(nll_full / n);
  out.perplexity_policy = std::exp(nll_policy / n);
  for (double& v : out.layer_cosine) {
    v /= n;
    out.mean_cosine += v / c.n_layers;
  }
  return out;
}

absl::StatusOr<Fidelity> CompareTypes(const worker::ModelWeights& candidate,
                                      const std::vector<std::vector<int>>& sequences,
                                      const std::vector<FullReference>& f32_references,
                                      worker::WeightType kv_type) {
  Cell full;
  full.policy.name = "full";
  full.budget_ratio = 1.0;
  full.kv_type = kv_type;
  return EvaluateCell(candidate, sequences, f32_references, full);
}

absl::StatusOr<std::vector<std::vector<int>>> ReadCorpus(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open corpus '", path, "'"));
  std::vector<std::vector<int>> sequences;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("ids") || !j["ids"].is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": expected a JSON object with an \"ids\" array"));
    }
    std::vector<int> ids;
    for (const auto& id : j["ids"]) {
      if (!id.is_number_integer()) return absl::InvalidArgumentError(absl::StrCat(path, ":", number, ": non-integer id"));
      ids.push_back(id.get<int>());
    }
    // A terminating BOS (the story ended) is not part of the text to predict beyond its own position.
    sequences.push_back(std::move(ids));
  }
  return sequences;
}

}  // namespace a2sf::eval
