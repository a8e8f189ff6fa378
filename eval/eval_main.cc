// a2sf-eval: the evaluation harness.
//   a2sf-eval fidelity  --model=M --corpus=C --out_dir=D [--ratios=0.1,0.2,0.3,0.5,0.8] [--threads=2]
//   a2sf-eval calibrate --model=M --corpus=C --ratio=0.2 --calibrate=1-10 --heldout=11-20 --out=policy.json
//   a2sf-eval mc        --model=M --tokenizer=T --tasks=F.jsonl [--shots=0] [--ratio=0.2]
// fidelity writes fidelity.csv (every cell), fidelity.md (tables) and, with gnuplot installed, PNG plots.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <set>

#include "common/cli.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cachemgr/session/lagged_layout.h"
#include "eval/multiple_choice.h"
#include "eval/sweep.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, model, "", "llama2.c .bin or Hugging Face folder");
ABSL_FLAG(std::string, tokenizer, "", "tokenizer (mc)");
ABSL_FLAG(std::string, corpus, "", "JSON lines with an \"ids\" array per sequence");
ABSL_FLAG(std::string, out_dir, ".", "where fidelity writes its files");
ABSL_FLAG(std::string, ratios, "0.1,0.2,0.3,0.5,0.8", "budget ratios");
ABSL_FLAG(std::string, stories, "", "1-based range of corpus lines to use, e.g. 1-20 (default: all)");
ABSL_FLAG(int, threads, 2, "cells evaluated in parallel");
ABSL_FLAG(double, ratio, 0.2, "budget ratio (calibrate, mc)");
ABSL_FLAG(std::string, calibrate, "1-10", "calibration stories");
ABSL_FLAG(std::string, heldout, "11-20", "held-out stories");
ABSL_FLAG(std::string, out, "", "calibrate: write the per-layer policy spec (JSON) here");
ABSL_FLAG(std::string, tasks, "", "mc: task file(s), comma-separated");
ABSL_FLAG(int, shots, 0, "mc: few-shot examples per question");
ABSL_FLAG(std::string, policies, "full,local,h2o,a2sf", "mc: policies to compare");
ABSL_FLAG(double, alpha, 0.3, "mc: a2sf alpha");
ABSL_FLAG(std::string, lags, "0,1,2,4,8", "lag: decision lags to compare");

namespace a2sf::eval {
namespace {

int Fail(const absl::Status& status) {
  std::cerr << "a2sf-eval: " << status.message() << "\n";
  return 1;
}

absl::StatusOr<std::vector<std::vector<int>>> Select(const std::vector<std::vector<int>>& all, const std::string& range) {
  if (range.empty()) return all;
  std::vector<std::string> parts = absl::StrSplit(range, '-');
  int from, to;
  if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &from) || !absl::SimpleAtoi(parts[1], &to) || from < 1 ||
      to < from || size_t(to) > all.size()) {
    return absl::InvalidArgumentError(absl::StrCat("range '", range, "': expected FROM-TO within 1-", all.size()));
  }
  return std::vector<std::vector<int>>(all.begin() + (from - 1), all.begin() + to);
}

absl::StatusOr<std::vector<FullReference>> References(const worker::ModelWeights& w,
                                                      const std::vector<std::vector<int>>& sequences) {
  std::vector<FullReference> refs;
  for (const auto& ids : sequences) {
    absl::StatusOr<FullReference> ref = RunFullCache(w, ids);
    if (!ref.ok()) return ref.status();
    refs.push_back(std::move(*ref));
  }
  return refs;
}

std::string Table(const std::vector<CellResult>& results, const std::vector<double>& ratios,
                  double (*metric)(const Fidelity&), const char* format) {
  std::vector<std::string> labels;
  std::map<std::pair<std::string, double>, double> values;
  for (const CellResult& r : results) {
    if (std::find(labels.begin(), labels.end(), r.label) == labels.end()) labels.push_back(r.label);
    values[{r.label, r.cell.budget_ratio}] = metric(r.fidelity);
  }
  std::string out = "| policy |";
  for (double ratio : ratios) absl::StrAppend(&out, absl::StrFormat(" %.1f |", ratio));
  out += "\n| --- |";
  for (size_t i = 0; i < ratios.size(); ++i) out += " ---: |";
  out += "\n";
  for (const std::string& label : labels) {
    absl::StrAppend(&out, "| ", label, " |");
    for (double ratio : ratios) absl::StrAppend(&out, " ", absl::StrFormat(format, values[{label, ratio}]), " |");
    out += "\n";
  }
  return out;
}

// Writes one data file per plot (a column per series) and a gnuplot script, and runs gnuplot.
void WritePlots(const std::string& dir, const std::vector<CellResult>& results, const std::vector<double>& ratios) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) {
    std::cerr << "a2sf-eval: gnuplot not found; skipping plots\n";
    return;
  }
  std::map<std::pair<std::string, double>, const eval::Fidelity*> by;
  for (const CellResult& r : results) by[{r.label, r.cell.budget_ratio}] = &r.fidelity;
  const std::vector<std::string> budget_series = {"local", "streaming_llm", "h2o", "tova", "a2sf(0.1)", "a2sf(0.3)",
                                                  "a2sf(0.5)", "a2sf(0.9)", "a2sf(0.3)+recent"};
  const std::vector<double> alphas = {0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1};
  struct Metric {
    const char* name;
    const char* title;
    double (*get)(const eval::Fidelity&);
  };
  const Metric metrics[] = {{"top1", "top-1 agreement with the full cache", [](const eval::Fidelity& f) { return f.top1_agreement; }},
                            {"kl", "mean KL(full || policy), nats", [](const eval::Fidelity& f) { return f.mean_kl; }},
                            {"cosine", "mean cosine of attention outputs", [](const eval::Fidelity& f) { return f.mean_cosine; }}};
  std::ofstream gp(dir + "/plots.gp");
  gp << "set terminal pngcairo size 900,560 noenhanced\nset key outside right\nset grid\n";
  for (const Metric& m : metrics) {
    std::ofstream budget(dir + "/" + m.name + "_vs_budget.dat");
    for (double ratio : ratios) {
      budget << ratio;
      for (const std::string& label : budget_series) {
        auto it = by.find({label, ratio});
        budget << " " << (it == by.end() ? NAN : m.get(*it->second));
      }
      budget << "\n";
    }
    std::ofstream alpha(dir + "/" + m.name + "_vs_alpha.dat");
    for (double a : alphas) {
      alpha << a;
      for (double ratio : ratios) {
        auto it = by.find({absl::StrFormat("a2sf(%.2g)", a), ratio});
        alpha << " " << (it == by.end() ? NAN : m.get(*it->second));
      }
      alpha << "\n";
    }
    const std::string log = std::string(m.name) == "kl" ? "set logscale y\n" : "unset logscale y\n";
    gp << "set output '" << dir << "/" << m.name << "_vs_budget.png'\nset xlabel 'budget ratio'\nset ylabel '" << m.title
       << "'\n" << log << "plot ";
    for (size_t i = 0; i < budget_series.size(); ++i) {
      gp << (i ? ", " : "") << "'" << dir << "/" << m.name << "_vs_budget.dat' using 1:" << i + 2
         << " with linespoints title '" << budget_series[i] << "'";
    }
    gp << "\nset output '" << dir << "/" << m.name << "_vs_alpha.png'\nset xlabel 'alpha (a2sf, no recent window)'\nplot ";
    for (size_t i = 0; i < ratios.size(); ++i) {
      gp << (i ? ", " : "") << "'" << dir << "/" << m.name << "_vs_alpha.dat' using 1:" << i + 2
         << " with linespoints title 'budget " << ratios[i] << "'";
    }
    gp << "\n";
  }
  gp.close();
  if (std::system(("gnuplot " + dir + "/plots.gp").c_str()) != 0) std::cerr << "a2sf-eval: gnuplot failed\n";
}

int Fidelity(const worker::ModelWeights& w, const std::vector<std::vector<int>>& corpus) {
  absl::StatusOr<std::vector<std::vector<int>>> sequences = Select(corpus, absl::GetFlag(FLAGS_stories));
  if (!sequences.ok()) return Fail(sequences.status());
  std::vector<double> ratios;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_ratios), ',')) {
    double r;
    if (!absl::SimpleAtod(part, &r) || !(r > 0 && r <= 1)) return Fail(absl::InvalidArgumentError("--ratios: values in (0, 1]"));
    ratios.push_back(r);
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<FullReference>> refs = References(w, *sequences);
  if (!refs.ok()) return Fail(refs.status());
  const std::vector<Cell> cells = SweepCells(ratios);
  absl::StatusOr<std::vector<CellResult>> results = RunSweep(w, *sequences, *refs, cells, absl::GetFlag(FLAGS_threads));
  if (!results.ok()) return Fail(results.status());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string dir = absl::GetFlag(FLAGS_out_dir);
  std::ofstream(dir + "/fidelity.csv") << ToCsv(*results);
  uint64_t positions = results->empty() ? 0 : (*results)[0].fidelity.positions;
  std::ofstream md(dir + "/fidelity.md");
  md << "Sweep of " << cells.size() << " cells over " << sequences->size() << " sequences (" << positions
     << " teacher-forced positions per cell) in " << absl::StrFormat("%.1f", seconds) << " s on "
     << absl::GetFlag(FLAGS_threads) << " threads. Full-cache perplexity: "
     << absl::StrFormat("%.4f", results->empty() ? 0.0 : (*results)[0].fidelity.perplexity_full) << ".\n\n"
     << "### Top-1 agreement with the full cache\n\n"
     << Table(*results, ratios, [](const eval::Fidelity& f) { return f.top1_agreement; }, "%.3f")
     << "\n### Mean KL(full || policy), nats\n\n"
     << Table(*results, ratios, [](const eval::Fidelity& f) { return f.mean_kl; }, "%.4f")
     << "\n### Perplexity under the policy\n\n"
     << Table(*results, ratios, [](const eval::Fidelity& f) { return f.perplexity_policy; }, "%.3f")
     << "\n### Mean cosine similarity of attention outputs (over layers)\n\n"
     << Table(*results, ratios, [](const eval::Fidelity& f) { return f.mean_cosine; }, "%.4f");
  md.close();
  WritePlots(dir, *results, ratios);
  std::cout << "fidelity: " << cells.size() << " cells x " << sequences->size() << " sequences in "
            << absl::StrFormat("%.1f", seconds) << " s; wrote " << dir << "/fidelity.csv and fidelity.md\n";
  return 0;
}

// The pipelined mode's cost in fidelity: each policy at --ratio with every lag of --lags.
int Lag(const worker::ModelWeights& w, const std::vector<std::vector<int>>& corpus) {
  absl::StatusOr<std::vector<std::vector<int>>> sequences = Select(corpus, absl::GetFlag(FLAGS_stories));
  if (!sequences.ok()) return Fail(sequences.status());
  std::vector<uint32_t> lags;
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_lags), ',')) {
    uint32_t lag;
    if (!absl::SimpleAtoi(part, &lag) || lag > cachemgr::kMaxDecisionLag) {
      return Fail(absl::InvalidArgumentError(absl::StrCat("--lags: integers in [0, ", cachemgr::kMaxDecisionLag, "]")));
    }
    lags.push_back(lag);
  }
  const double ratio = absl::GetFlag(FLAGS_ratio);
  if (!(ratio > 0 && ratio <= 1)) return Fail(absl::InvalidArgumentError("--ratio: in (0, 1]"));
  std::vector<cachemgr::PolicySpec> policies(4);
  policies[0].name = "local";
  policies[1].name = "h2o";
  policies[2].name = "tova";
  policies[3].name = "a2sf";
  policies[3].alpha = absl::GetFlag(FLAGS_alpha);
  absl::StatusOr<std::vector<FullReference>> refs = References(w, *sequences);
  if (!refs.ok()) return Fail(refs.status());
  absl::StatusOr<std::vector<CellResult>> results =
      RunSweep(w, *sequences, *refs, LagCells(policies, ratio, lags), absl::GetFlag(FLAGS_threads));
  if (!results.ok()) return Fail(results.status());
  const std::string dir = absl::GetFlag(FLAGS_out_dir);
  std::ofstream(dir + "/lag.csv") << ToCsv(*results);
  std::string md = absl::StrFormat("Budget ratio %.2f, %d sequences, %d positions per cell.\n\n", ratio,
                                   int(sequences->size()), int(results->empty() ? 0 : (*results)[0].fidelity.positions));
  md += "Each pipelined run (lag K) next to the synchronous run that holds the same memory (budget + K "
        "tokens per head).\n\n| policy | lag K | top-1 agreement | mean KL (nats) | perplexity | "
        "synchronous, budget + K: top-1 | KL | perplexity |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
  for (size_t i = 0; i < results->size(); ++i) {
    const CellResult& r = (*results)[i];
    if (r.cell.extra_budget_tokens > 0) continue;
    absl::StrAppend(&md, absl::StrFormat("| %s | %d | %.3f | %.4f | %.3f |", r.cell.policy.name, r.cell.decision_lag,
                                         r.fidelity.top1_agreement, r.fidelity.mean_kl, r.fidelity.perplexity_policy));
    if (r.cell.decision_lag > 0 && i + 1 < results->size()) {
      const eval::Fidelity& same = (*results)[i + 1].fidelity;
      absl::StrAppend(&md, absl::StrFormat(" %.3f | %.4f | %.3f |\n", same.top1_agreement, same.mean_kl,
                                           same.perplexity_policy));
    } else {
      md += " - | - | - |\n";
    }
  }
  std::ofstream(dir + "/lag.md") << md;
  std::cout << md;
  return 0;
}

int Calibrate(const worker::ModelWeights& w, const std::vector<std::vector<int>>& corpus) {
  auto calibrate = Select(corpus, absl::GetFlag(FLAGS_calibrate));
  auto heldout = Select(corpus, absl::GetFlag(FLAGS_heldout));
  if (!calibrate.ok()) return Fail(calibrate.status());
  if (!heldout.ok()) return Fail(heldout.status());
  auto calibrate_refs = References(w, *calibrate);
  auto heldout_refs = References(w, *heldout);
  if (!calibrate_refs.ok()) return Fail(calibrate_refs.status());
  if (!heldout_refs.ok()) return Fail(heldout_refs.status());
  auto result = CalibrateLayerAlphas(w, *calibrate, *calibrate_refs, *heldout, *heldout_refs,
                                     absl::GetFlag(FLAGS_ratio), absl::GetFlag(FLAGS_threads));
  if (!result.ok()) return Fail(result.status());
  nlohmann::json spec = {{"name", "a2sf"}, {"layer_alphas", result->layer_alphas}};
  std::cout << "ratio " << absl::GetFlag(FLAGS_ratio) << "\n"
            << "best single alpha " << result->best_single_alpha << ": calibration KL "
            << result->calibration_kl_single << "\nper-layer alphas " << spec["layer_alphas"].dump()
            << ": calibration KL " << result->calibration_kl_layers << "\n"
            << absl::StrFormat("held-out: single alpha KL %.5f top-1 %.4f ppl %.4f | per-layer KL %.5f top-1 %.4f ppl %.4f\n",
                               result->heldout_single.mean_kl, result->heldout_single.top1_agreement,
                               result->heldout_single.perplexity_policy, result->heldout_layers.mean_kl,
                               result->heldout_layers.top1_agreement, result->heldout_layers.perplexity_policy)
            << "policy spec: " << spec.dump() << "\n";
  if (!absl::GetFlag(FLAGS_out).empty()) std::ofstream(absl::GetFlag(FLAGS_out)) << spec.dump() << "\n";
  return 0;
}

int MultipleChoice(const worker::ModelWeights& w) {
  auto tokenizer = worker::LoadTokenizer(absl::GetFlag(FLAGS_tokenizer));
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  std::vector<McPolicy> policies;
  for (absl::string_view name : absl::StrSplit(absl::GetFlag(FLAGS_policies), ',')) {
    McPolicy p;
    p.spec.name = std::string(name);
    if (p.spec.name == "a2sf") p.spec.alpha = absl::GetFlag(FLAGS_alpha);
    p.budget_ratio = p.spec.name == "full" ? 1.0 : absl::GetFlag(FLAGS_ratio);
    policies.push_back(p);
  }
  std::vector<std::string> names;
  std::vector<std::vector<McResult>> rows;
  for (absl::string_view path : absl::StrSplit(absl::GetFlag(FLAGS_tasks), ',')) {
    auto task = ReadMcTask(std::string(path));
    if (!task.ok()) return Fail(task.status());
    names.push_back(task->name);
    rows.emplace_back();
    for (const McPolicy& p : policies) {
      auto result = ScoreMcTask(w, **tokenizer, *task, absl::GetFlag(FLAGS_shots), p);
      if (!result.ok()) return Fail(result.status());
      rows.back().push_back(*result);
    }
  }
  std::cout << "| shots | method |";
  for (const auto& n : names) std::cout << " " << n << " acc / acc_norm |";
  std::cout << "\n| --- | --- |";
  for (size_t i = 0; i < names.size(); ++i) std::cout << " --- |";
  std::cout << "\n";
  for (size_t p = 0; p < policies.size(); ++p) {
    std::cout << "| " << absl::GetFlag(FLAGS_shots) << " | " << policies[p].spec.name << " |";
    for (size_t t = 0; t < names.size(); ++t) {
      std::cout << absl::StrFormat(" %.3f / %.3f |", rows[t][p].accuracy, rows[t][p].accuracy_norm);
    }
    std::cout << "\n";
  }
  return 0;
}

int Main(const std::vector<char*>& args) {
  if (args.size() < 2) {
    std::cerr << "usage: a2sf-eval fidelity|calibrate|lag|mc [flags]\n";
    return 2;
  }
  auto weights = worker::LoadModel(absl::GetFlag(FLAGS_model));
  if (!weights.ok()) return Fail(weights.status());
  const std::string command = args[1];
  if (command == "mc") return MultipleChoice(**weights);
  auto corpus = ReadCorpus(absl::GetFlag(FLAGS_corpus));
  if (!corpus.ok()) return Fail(corpus.status());
  if (command == "fidelity") return Fidelity(**weights, *corpus);
  if (command == "calibrate") return Calibrate(**weights, *corpus);
  if (command == "lag") return Lag(**weights, *corpus);
  std::cerr << "a2sf-eval: unknown command '" << command << "'\n";
  return 2;
}

}  // namespace
}  // namespace a2sf::eval

int main(int argc, char** argv) {
  return a2sf::eval::Main(a2sf::ParseCommandLine(
      argc, argv,
      {"a2sf-eval", "quality of eviction policies against the full cache.\n  a2sf-eval fidelity|calibrate|lag|mc [flags]",
       {}}));
}
