#include "eval/sweep.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cachemgr/policy_library.h"
#include "common/thread_pool.h"

namespace a2sf::eval {
namespace {

std::vector<double> AlphaGrid() {
  std::vector<double> grid;
  for (int i = 0; i <= 10; ++i) grid.push_back(i / 10.0);
  grid.push_back(0.95);
  return grid;
}

Cell Make(const std::string& name, double ratio, std::optional<double> alpha = {}, bool recent = false) {
  Cell cell;
  cell.policy.name = name;
  cell.policy.alpha = alpha;
  cell.budget_ratio = ratio;
  cell.recent_half_budget = recent;
  return cell;
}

}  // namespace

std::vector<Cell> SweepCells(const std::vector<double>& ratios) {
  std::vector<Cell> cells;
  for (double ratio : ratios) {
    for (const char* name : {"local", "streaming_llm", "h2o", "tova"}) cells.push_back(Make(name, ratio));
    for (double alpha : AlphaGrid()) {
      cells.push_back(Make("a2sf", ratio, alpha, false));
      cells.push_back(Make("a2sf", ratio, alpha, true));
    }
  }
  return cells;
}

std::vector<Cell> LagCells(const std::vector<cachemgr::PolicySpec>& policies, double ratio,
                           const std::vector<uint32_t>& lags) {
  std::vector<Cell> cells;
  for (const cachemgr::PolicySpec& policy : policies) {
    for (uint32_t lag : lags) {
      Cell cell;
      cell.policy = policy;
      cell.budget_ratio = ratio;
      cell.decision_lag = lag;
      cells.push_back(cell);
      if (lag > 0) {
        cell.decision_lag = 0;
        cell.extra_budget_tokens = lag;
        cells.push_back(cell);
      }
    }
  }
  return cells;
}

std::string CellLabel(const Cell& cell) {
  std::string label = cell.policy.name;
  if (cell.policy.alpha) label = absl::StrFormat("a2sf(%.2g)", *cell.policy.alpha);
  if (!cell.policy.layer_alphas.empty()) label = "a2sf(per-layer)";
  if (cell.recent_half_budget) label += "+recent";
  if (cell.decision_lag > 0) absl::StrAppend(&label, " lag ", cell.decision_lag);
  if (cell.extra_budget_tokens > 0) absl::StrAppend(&label, " budget+", cell.extra_budget_tokens);
  return label;
}

absl::StatusOr<std::vector<CellResult>> RunSweep(const worker::ModelWeights& weights,
                                                 const std::vector<std::vector<int>>& sequences,
                                                 const std::vector<FullReference>& references,
                                                 const std::vector<Cell>& cells, int threads) {
  std::vector<CellResult> results(cells.size());
  std::vector<absl::Status> statuses(cells.size());
  ThreadPool pool(threads);
  pool.ParallelFor(cells.size(), [&](size_t i) {
    absl::StatusOr<Fidelity> f = EvaluateCell(weights, sequences, references, cells[i]);
    statuses[i] = f.status();
    if (f.ok()) results[i] = {cells[i], CellLabel(cells[i]), *f};
  });
  for (size_t i = 0; i < cells.size(); ++i) {
    if (!statuses[i].ok()) {
      return absl::Status(statuses[i].code(), absl::StrCat(CellLabel(cells[i]), " at ratio ", cells[i].budget_ratio,
                                                           ": ", statuses[i].message()));
    }
  }
  return results;
}

std::string ToCsv(const std::vector<CellResult>& results) {
  std::string csv = "policy,alpha,recent_window,budget_ratio,decision_lag,positions,top1_agreement,mean_kl,perplexity_full,"
                    "perplexity_policy,mean_attention_cosine,kv_bytes_peak";
  const size_t layers = results.empty() ? 0 : results[0].fidelity.layer_cosine.size();
  for (size_t l = 0; l < layers; ++l) absl::StrAppend(&csv, ",cosine_layer", l);
  csv += "\n";
  for (const CellResult& r : results) {
    const Fidelity& f = r.fidelity;
    absl::StrAppend(&csv, r.cell.policy.name, ",",
                    r.cell.policy.alpha ? absl::StrFormat("%.2f", *r.cell.policy.alpha) : std::string(""), ",",
                    r.cell.recent_half_budget ? "half_budget" : (r.cell.policy.name == "h2o" ? "half_budget" : "0"),
                    ",", absl::StrFormat("%.2f", r.cell.budget_ratio), ",", r.cell.decision_lag, ",", f.positions, ",",
                    absl::StrFormat("%.6f,%.6f,%.4f,%.4f,%.6f,%.0f", f.top1_agreement, f.mean_kl, f.perplexity_full,
                                    f.perplexity_policy, f.mean_cosine, f.kv_bytes_peak));
    for (double c : f.layer_cosine) absl::StrAppend(&csv, absl::StrFormat(",%.6f", c));
    csv += "\n";
  }
  return csv;
}

absl::StatusOr<Calibration> CalibrateLayerAlphas(const worker::ModelWeights& weights,
                                                 const std::vector<std::vector<int>>& calibrate,
                                                 const std::vector<FullReference>& calibrate_refs,
                                                 const std::vector<std::vector<int>>& heldout,
                                                 const std::vector<FullReference>& heldout_refs, double ratio,
                                                 int threads) {
  const int layers = weights.config().n_layers;
  const std::vector<double> grid = AlphaGrid();
  auto cell_for = [&](const std::vector<double>& alphas) {
    Cell cell;
    cell.policy.name = "a2sf";
    cell.policy.layer_alphas = alphas;
    cell.budget_ratio = ratio;
    return cell;
  };
  // Evaluates candidate alpha vectors in parallel; returns mean KL on the calibration set.
  auto score = [&](const std::vector<std::vector<double>>& candidates) -> absl::StatusOr<std::vector<double>> {
    std::vector<Cell> cells;
    for (const auto& alphas : candidates) cells.push_back(cell_for(alphas));
    absl::StatusOr<std::vector<CellResult>> results = RunSweep(weights, calibrate, calibrate_refs, cells, threads);
    if (!results.ok()) return results.status();
    std::vector<double> kl;
    for (const CellResult& r : *results) kl.push_back(r.fidelity.mean_kl);
    return kl;
  };
  Calibration out;
  std::vector<std::vector<double>> singles;
  for (double a : grid) singles.push_back(std::vector<double>(layers, a));
  absl::StatusOr<std::vector<double>> single_kl = score(singles);
  if (!single_kl.ok()) return single_kl.status();
  size_t best = 0;
  for (size_t i = 1; i < grid.size(); ++i) {
    if ((*single_kl)[i] < (*single_kl)[best]) best = i;
  }
  out.best_single_alpha = grid[best];
  out.calibration_kl_single = (*single_kl)[best];
  std::vector<double> alphas(layers, grid[best]);
  double current = (*single_kl)[best];
  for (int pass = 0; pass < 2; ++pass) {
    for (int l = 0; l < layers; ++l) {
      std::vector<std::vector<double>> candidates;
      for (double a : grid) {
        std::vector<double> candidate = alphas;
        candidate[l] = a;
        candidates.push_back(candidate);
      }
      absl::StatusOr<std::vector<double>> kl = score(candidates);
      if (!kl.ok()) return kl.status();
      for (size_t i = 0; i < grid.size(); ++i) {
        if ((*kl)[i] < current - 1e-12) {
          current = (*kl)[i];
          alphas = candidates[i];
        }
      }
    }
  }
  out.layer_alphas = alphas;
  out.calibration_kl_layers = current;
  absl::StatusOr<std::vector<CellResult>> held =
      RunSweep(weights, heldout, heldout_refs, {cell_for(std::vector<double>(layers, out.best_single_alpha)), cell_for(alphas)},
               threads);
  if (!held.ok()) return held.status();
  out.heldout_single = (*held)[0].fidelity;
  out.heldout_layers = (*held)[1].fidelity;
  return out;
}

}  // namespace a2sf::eval
