// The evaluation's sweeps: the grid of policies x budget ratios x alphas, run in parallel over cells,
// written as CSV and a markdown table; and the per-layer alpha calibration.
#ifndef A2SF_EVAL_SWEEP_H_
#define A2SF_EVAL_SWEEP_H_

#include <string>
#include <vector>

#include "eval/fidelity.h"

namespace a2sf::eval {

struct CellResult {
  Cell cell;
  std::string label;  // e.g. "a2sf(alpha=0.3)" or "a2sf(alpha=0.3)+recent"
  Fidelity fidelity;
};

// Local, StreamingLLM, H2O, TOVA, and A2SF for alpha in {0, 0.1, ..., 1, 0.95} with and without a
// recent window of floor(B/2), at each ratio.
std::vector<Cell> SweepCells(const std::vector<double>& ratios);
// The pipelined-mode study: each of `policies` at `ratio` with every lag K of `lags`, and for K > 0 the
// synchronous run that holds as much memory (budget + K).
std::vector<Cell> LagCells(const std::vector<cachemgr::PolicySpec>& policies, double ratio,
                           const std::vector<uint32_t>& lags);
std::string CellLabel(const Cell& cell);

// Runs every cell on `threads` threads (cells in parallel).
absl::StatusOr<std::vector<CellResult>> RunSweep(const worker::ModelWeights& weights,
                                                 const std::vector<std::vector<int>>& sequences,
                                                 const std::vector<FullReference>& references,
                                                 const std::vector<Cell>& cells, int threads);

std::string ToCsv(const std::vector<CellResult>& results);

struct Calibration {
  double best_single_alpha = 0;
  std::vector<double> layer_alphas;
  double calibration_kl_single = 0, calibration_kl_layers = 0;
  Fidelity heldout_single, heldout_layers;
};

// Picks one alpha per layer by coordinate search (two passes over the layers, alphas on the sweep's
// grid) minimising mean KL on `calibrate`, starting from the best single alpha; reports both on
// `heldout`.
absl::StatusOr<Calibration> CalibrateLayerAlphas(const worker::ModelWeights& weights,
                                                 const std::vector<std::vector<int>>& calibrate,
                                                 const std::vector<FullReference>& calibrate_refs,
                                                 const std::vector<std::vector<int>>& heldout,
                                                 const std::vector<FullReference>& heldout_refs, double ratio,
                                                 int threads);

}  // namespace a2sf::eval

#endif  // A2SF_EVAL_SWEEP_H_
