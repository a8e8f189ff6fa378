#include "eval/plots.h"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace a2sf::eval {

std::string SeriesStyle(size_t i) {
  static const char* const kColours[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                         "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000"};
  return absl::StrFormat("linecolor rgb '%s' dashtype %d pointtype %d linewidth 2", kColours[i % 11], 1 + i % 5,
                         1 + i % 13);
}

namespace {

// One gnuplot plot command: column `first + i` of `data` against column `x` for each title.
std::string PlotCommand(const std::string& data, int x, int first, const std::vector<std::string>& titles) {
  std::string out = "plot ";
  for (size_t i = 0; i < titles.size(); ++i) {
    absl::StrAppend(&out, i ? ", " : "", "'", data, "' using ", x, ":", first + int(i), " with linespoints ",
                    SeriesStyle(i), " title '", titles[i], "'");
  }
  return out + "\n";
}

// The cells by (policy label, budget ratio).
using CellIndex = std::map<std::pair<std::string, double>, const eval::Fidelity*>;

// A metric the plots draw, and how to read it from a cell.
struct Metric {
  const char* name;
  const char* title;
  double (*get)(const eval::Fidelity&);
};

const std::vector<std::string>& BudgetSeries() {
  static const std::vector<std::string> series = {"local",     "streaming_llm", "h2o",       "tova",
                                                  "a2sf(0.1)", "a2sf(0.3)",     "a2sf(0.5)", "a2sf(0.7)",
                                                  "a2sf(0.9)", "a2sf(0.3)+recent", "a2sf(0.9)+recent"};
  return series;
}

// <metric>_vs_budget.dat (per ratio: the ratio, then the metric per series) and _vs_kv_bytes.dat (per
// ratio: the ratio, then (KV KiB, metric) pairs per series).
void WriteBudgetData(const std::string& prefix, const Metric& m, const CellIndex& by, const std::vector<double>& ratios) {
  std::ofstream budget(prefix + "_vs_budget.dat");
  std::ofstream kv(prefix + "_vs_kv_bytes.dat");
  for (double ratio : ratios) {
    budget << ratio;
    kv << ratio;
    for (const std::string& label : BudgetSeries()) {
      auto it = by.find({label, ratio});
      budget << " " << (it == by.end() ? NAN : m.get(*it->second));
      kv << " " << (it == by.end() ? NAN : it->second->kv_bytes_peak / 1024) << " "
         << (it == by.end() ? NAN : m.get(*it->second));
    }
    budget << "\n";
    kv << "\n";
  }
}

// <metric>_vs_alpha.dat: per alpha, a2sf's metric at each budget ratio.
void WriteAlphaData(const std::string& prefix, const Metric& m, const CellIndex& by, const std::vector<double>& ratios) {
  const std::vector<double> alphas = {0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1};
  std::ofstream alpha(prefix + "_vs_alpha.dat");
  for (double a : alphas) {
    alpha << a;
    for (double ratio : ratios) {
      auto it = by.find({absl::StrFormat("a2sf(%.2g)", a), ratio});
      alpha << " " << (it == by.end() ? NAN : m.get(*it->second));
    }
    alpha << "\n";
  }
}

// The gnuplot commands of one metric's three plots.
void WriteMetricPlots(std::ofstream& gp, const std::string& prefix, const Metric& m, const std::vector<double>& ratios,
                      const std::string& source) {
  std::vector<std::string> budget_titles;
  for (double ratio : ratios) budget_titles.push_back(absl::StrFormat("budget %g", ratio));
  // Log axes label their decades as plain numbers (0.00001 ... 1), with unlabelled minor ticks.
  const std::string log = std::string(m.name) == "kl"
                              ? "set logscale y\nset mytics 10\nset ytics ('0.000001' 1e-6, '0.00001' 1e-5, "
                                "'0.0001' 1e-4, '0.001' 1e-3, '0.01' 0.01, '0.1' 0.1, '1' 1, '10' 10)\n"
                              : "unset logscale y\nset ytics autofreq\n";
  gp << log << "set ylabel '" << m.title << "'\n"
     << "set output '" << prefix << "_vs_budget.png'\nset title \"" << m.title << " vs budget\\n" << source
     << "\"\nset xlabel 'budget ratio (KV entries kept per head / sequence length)'\n"
     << PlotCommand(prefix + "_vs_budget.dat", 1, 2, BudgetSeries())
     << "set output '" << prefix << "_vs_alpha.png'\nset title \"" << m.title << " vs alpha\\n" << source
     << "\"\nset xlabel 'alpha (a2sf, no recent window)'\n"
     << PlotCommand(prefix + "_vs_alpha.dat", 1, 2, budget_titles)
     << "set output '" << prefix << "_vs_kv_bytes.png'\nset title \"" << m.title << " vs KV memory\\n" << source
     << "\"\nset xlabel 'KV cache held at peak, KiB per sequence (mean; one point per budget ratio)'\nplot ";
  for (size_t i = 0; i < BudgetSeries().size(); ++i) {
    gp << (i ? ", " : "") << "'" << prefix << "_vs_kv_bytes.dat' using " << 2 + 2 * i << ":" << 3 + 2 * i
       << " with linespoints " << SeriesStyle(i) << " title '" << BudgetSeries()[i] << "'";
  }
  gp << "\n";
}

}  // namespace

void WritePlots(const std::string& dir, const std::vector<CellResult>& results, const std::vector<double>& ratios,
                const std::string& source) {
  CellIndex by;
  for (const CellResult& r : results) by[{r.label, r.cell.budget_ratio}] = &r.fidelity;
  const Metric metrics[] = {{"top1", "top-1 agreement with the full cache", [](const eval::Fidelity& f) { return f.top1_agreement; }},
                            {"kl", "mean KL(full || policy), nats", [](const eval::Fidelity& f) { return f.mean_kl; }},
                            {"cosine", "mean cosine of attention outputs", [](const eval::Fidelity& f) { return f.mean_cosine; }}};
  std::ofstream gp(dir + "/plots.gp");
  gp << "set terminal pngcairo size 1000,600 noenhanced\nset key outside right\nset grid xtics ytics mytics\n";
  for (const Metric& m : metrics) {
    const std::string prefix = dir + "/" + m.name;
    WriteBudgetData(prefix, m, by, ratios);
    WriteAlphaData(prefix, m, by, ratios);
    WriteMetricPlots(gp, prefix, m, ratios, source);
  }
  gp.close();
  RunGnuplot(dir + "/plots.gp");
}

void RunGnuplot(const std::string& script) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    std::cerr << "a2sf-eval: gnuplot not found (Debian: gnuplot-nox); wrote " << script << ", no PNGs\n";
  } else if (std::system(("gnuplot " + script).c_str()) != 0) {
    std::cerr << "a2sf-eval: gnuplot failed on " << script << "\n";
  }
}

}  // namespace a2sf::eval
