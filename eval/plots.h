// The fidelity sweep's plots: gnuplot data files and script (and PNGs, when gnuplot is installed).
// Stateless functions; the files written are the caller's.
#ifndef A2SF_EVAL_PLOTS_H_
#define A2SF_EVAL_PLOTS_H_

#include <string>
#include <vector>

#include "eval/sweep.h"

namespace a2sf::eval {

// The gnuplot style of series i: a colour, a dash pattern and a point shape of its own (11 colours
// and 5 dash patterns, coprime, so colour and dash together stay distinct for 55 series, and a series
// is told apart by its dashes in greyscale too).
std::string SeriesStyle(size_t i);

// Writes into `dir` one data file per plot (a column per series) and plots.gp, then runs gnuplot if it
// is installed: each metric (top1, kl, cosine) against the budget ratio (one series per policy,
// including the best settings, a2sf 0.9 with a recent window), against alpha (one per budget), and
// against the KV bytes held at peak (one per policy, so policies compare at equal memory). KL's axis is
// logarithmic with decades labelled as plain numbers. `source` (model and corpus) goes in every title.
void WritePlots(const std::string& dir, const std::vector<CellResult>& results, const std::vector<double>& ratios,
                const std::string& source);

// Runs gnuplot on `script` if it is installed (plots are optional: the tables are the results); says
// on stderr when it is not, or when it fails.
void RunGnuplot(const std::string& script);

}  // namespace a2sf::eval

#endif  // A2SF_EVAL_PLOTS_H_
