// a2sf-eval: the evaluation harness.
//   a2sf-eval fidelity  --model=M --corpus=C --out_dir=D [--ratios=0.1,0.2,0.3,0.5,0.8] [--threads=2] [--kv_type=f16|q8_0]
//   a2sf-eval lag       --model=M --corpus=C --out_dir=D [--ratio=0.2] [--lags=...] [--kv_type=f16|q8_0]
//   a2sf-eval calibrate --model=M --corpus=C --ratio=0.2 --calibrate=1-10 --heldout=11-20 --out=policy.json
//   a2sf-eval mc        --model=M --tokenizer=T --tasks=F.jsonl [--shots=0] [--ratio=0.2 | --ratios=0.1,0.2]
//                       [--policies=full,h2o,a2sf,a2sf+recent,{"name":"a2sf","alpha":0.9},@spec.json] [--alphas=0.5,0.9]
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
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cachemgr/policy_library.h"
#include "eval/multiple_choice.h"
#include "eval/plots.h"
#include "eval/sweep.h"
#include "nlohmann/json.hpp"
#include "worker/model/load_flags.h"
#include "worker/tokenizer/tokenizer.h"

ABSL_FLAG(std::string, model, "", "llama2.c .bin or Hugging Face folder");
ABSL_FLAG(std::string, tokenizer, "", "tokenizer (mc; default: a GGUF model's own)");
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
ABSL_FLAG(std::string, policies, "full,local,h2o,a2sf",
          "mc: policies to compare: names, name+recent (a2sf, window floor(B/2)), JSON specs, @spec.json files");
ABSL_FLAG(double, alpha, a2sf::cachemgr::kDefaultA2sfAlpha, "lag, mc: a2sf alpha (default: the policy's own)");
ABSL_FLAG(std::string, alphas, "", "mc: a2sf alphas, each scored (default: --alpha)");
ABSL_FLAG(std::string, lags, "0,1,2,4,8", "lag: decision lags to compare");

namespace a2sf::eval {
namespace {

// Exit 2 for a bad flag or input (INVALID_ARGUMENT), 1 for anything else, as a2sf-generate does.
int Fail(const absl::Status& status) {
  std::cerr << "a2sf-eval: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
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

// A comma-separated list of numbers; INVALID_ARGUMENT naming `flag` otherwise.
absl::StatusOr<std::vector<double>> Numbers(const std::string& flag, const std::string& text) {
  std::vector<double> values;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    double v;
    if (!absl::SimpleAtod(part, &v)) return absl::InvalidArgumentError(absl::StrCat(flag, ": '", part, "' is not a number"));
    values.push_back(v);
  }
  return values;
}

absl::StatusOr<std::vector<FullReference>> References(const worker::ModelWeights& w,
                                                      const std::vector<std::vector<int>>& sequences,
                                                      worker::WeightType kv_type = worker::WeightType::kF32) {
  std::vector<FullReference> refs;
  for (const auto& ids : sequences) {
    absl::StatusOr<FullReference> ref = RunFullCache(w, ids, kv_type);
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

absl::StatusOr<std::unique_ptr<worker::ModelWeights>> LoadAs(worker::WeightType type) {
  worker::LoadOptions options;
  options.weights = type;
  options.panels = absl::GetFlag(FLAGS_panels);
  return worker::LoadModel(absl::GetFlag(FLAGS_model), options);
}

// How far `candidate` (its weights, with `kv_type` caches) is from `baseline` with f32 caches, both
// full, as the report's opening line: "<held>: top-1 agreement and mean KL against <against> (full
// caches); the tables below compare policies with <tables>."
absl::StatusOr<std::string> DistanceLine(const worker::ModelWeights& candidate, worker::WeightType kv_type,
                                         const worker::ModelWeights& baseline,
                                         const std::vector<std::vector<int>>& sequences, const std::string& held,
                                         const std::string& against, const std::string& tables) {
  absl::StatusOr<std::vector<FullReference>> refs = References(baseline, sequences);
  if (!refs.ok()) return refs.status();
  absl::StatusOr<eval::Fidelity> f = CompareTypes(candidate, sequences, *refs, kv_type);
  if (!f.ok()) return f.status();
  return absl::StrFormat("%s: top-1 agreement %.4f and mean KL %.6f nats against %s (full caches); the tables "
                         "below compare policies with %s.\n\n",
                         held, f->top1_agreement, f->mean_kl, against, tables);
}

int Fidelity(const worker::ModelWeights& w, const std::vector<std::vector<int>>& corpus,
             worker::WeightType kv_type) {
  absl::StatusOr<std::vector<std::vector<int>>> sequences = Select(corpus, absl::GetFlag(FLAGS_stories));
  if (!sequences.ok()) return Fail(sequences.status());
  absl::StatusOr<std::vector<double>> parsed = Numbers("--ratios", absl::GetFlag(FLAGS_ratios));
  if (!parsed.ok()) return Fail(parsed.status());
  const std::vector<double> ratios = *parsed;
  for (double r : ratios) {
    if (!(r > 0 && r <= 1)) return Fail(absl::InvalidArgumentError("--ratios: values in (0, 1]"));
  }
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::vector<FullReference>> refs = References(w, *sequences, kv_type);
  if (!refs.ok()) return Fail(refs.status());
  std::vector<Cell> cells = SweepCells(ratios);
  for (Cell& cell : cells) cell.kv_type = kv_type;
  absl::StatusOr<std::vector<CellResult>> results = RunSweep(w, *sequences, *refs, cells, absl::GetFlag(FLAGS_threads));
  if (!results.ok()) return Fail(results.status());
  // Under --weights=TYPE and --kv_type=f16, each type's own distance from f32 heads the report.
  std::string weights_line;
  if (w.weight_types() != "f32") {
    absl::StatusOr<std::unique_ptr<worker::ModelWeights>> f32 = LoadAs(worker::WeightType::kF32);
    if (!f32.ok()) return Fail(f32.status());
    absl::StatusOr<std::string> line = DistanceLine(w, worker::WeightType::kF32, **f32, *sequences,
                                                    "Weights held as " + w.weight_types(), "f32 weights",
                                                    "this model's full cache");
    if (!line.ok()) return Fail(line.status());
    weights_line += *line;
  }
  if (kv_type != worker::WeightType::kF32) {
    const std::string name = worker::WeightTypeName(kv_type);
    absl::StatusOr<std::string> line = DistanceLine(w, kv_type, w, *sequences, "KV cache held as " + name,
                                                    "an f32 KV cache", name + " KV caches");
    if (!line.ok()) return Fail(line.status());
    weights_line += *line;
  }
  std::cout << weights_line;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string dir = absl::GetFlag(FLAGS_out_dir);
  std::ofstream(dir + "/fidelity.csv") << ToCsv(*results);
  uint64_t positions = results->empty() ? 0 : (*results)[0].fidelity.positions;
  std::ofstream md(dir + "/fidelity.md");
  md << weights_line << "Sweep of " << cells.size() << " cells over " << sequences->size() << " sequences (" << positions
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
  const auto base = [](const std::string& path) { return path.substr(path.find_last_of('/') + 1); };
  WritePlots(dir, *results, ratios,
             absl::StrCat(base(absl::GetFlag(FLAGS_model)), ", ", base(absl::GetFlag(FLAGS_corpus)), " (",
                          sequences->size(), " sequences)"));
  std::cout << "fidelity: " << cells.size() << " cells x " << sequences->size() << " sequences in "
            << absl::StrFormat("%.1f", seconds) << " s; wrote " << dir << "/fidelity.csv and fidelity.md\n";
  return 0;
}

// Each weight type against f32 (both with the full cache), and whether quantization changes which
// policy wins: A2SF and H2O at --ratio, each against its own type's full cache, under f32 and q8_0.
int WeightTypes(const std::vector<std::vector<int>>& corpus) {
  absl::StatusOr<std::vector<std::vector<int>>> sequences = Select(corpus, absl::GetFlag(FLAGS_stories));
  if (!sequences.ok()) return Fail(sequences.status());
  absl::StatusOr<std::unique_ptr<worker::ModelWeights>> f32 = LoadAs(worker::WeightType::kF32);
  if (!f32.ok()) return Fail(f32.status());
  absl::StatusOr<std::vector<FullReference>> f32_refs = References(**f32, *sequences);
  if (!f32_refs.ok()) return Fail(f32_refs.status());
  const std::string dir = absl::GetFlag(FLAGS_out_dir);
  std::ofstream md(dir + "/weights.md"), dat(dir + "/weights.dat");
  md << "Teacher-forced over " << sequences->size() << " sequences, full cache, each weight type against f32.\n\n"
     << "| --weights | held as | weight bytes/token | top-1 agreement | mean KL (nats) | perplexity |\n"
     << "| --- | --- | ---: | ---: | ---: | ---: |\n";
  std::vector<std::pair<std::string, std::vector<eval::Fidelity>>> policies;  // per type: a2sf, h2o
  const double ratio = absl::GetFlag(FLAGS_ratio);
  for (worker::WeightType type : {worker::WeightType::kF32, worker::WeightType::kF16, worker::WeightType::kBF16,
                                  worker::WeightType::kQ8_0, worker::WeightType::kQ4_0}) {
    absl::StatusOr<std::unique_ptr<worker::ModelWeights>> w = LoadAs(type);
    if (!w.ok()) return Fail(w.status());
    absl::StatusOr<eval::Fidelity> f = CompareTypes(**w, *sequences, *f32_refs);
    if (!f.ok()) return Fail(f.status());
    md << absl::StrFormat("| %s | %s | %d | %.4f | %.2e | %.4f |\n", worker::WeightTypeName(type), (*w)->weight_types(),
                          (*w)->bytes_per_token(), f->top1_agreement, f->mean_kl, f->perplexity_policy);
    dat << worker::WeightTypeName(type) << " " << f->top1_agreement << " " << f->mean_kl << "\n";
    if (type != worker::WeightType::kF32 && type != worker::WeightType::kQ8_0) continue;
    absl::StatusOr<std::vector<FullReference>> own = References(**w, *sequences);
    if (!own.ok()) return Fail(own.status());
    std::vector<eval::Fidelity> row;
    for (const char* name : {"a2sf", "h2o"}) {
      Cell cell;
      cell.policy.name = name;
      cell.budget_ratio = ratio;
      absl::StatusOr<eval::Fidelity> p = EvaluateCell(**w, *sequences, *own, cell);
      if (!p.ok()) return Fail(p.status());
      row.push_back(*p);
    }
    policies.emplace_back(worker::WeightTypeName(type), row);
  }
  md << "\nA2SF (default alpha) and H2O at a budget of " << ratio
     << " of each sequence, against the full cache of the same weight type:\n\n"
     << "| weights | A2SF top-1 | H2O top-1 | A2SF KL | H2O KL | higher top-1 | lower KL |\n"
     << "| --- | ---: | ---: | ---: | ---: | --- | --- |\n";
  for (const auto& [name, row] : policies) {
    md << absl::StrFormat("| %s | %.4f | %.4f | %.4f | %.4f | %s | %s |\n", name, row[0].top1_agreement,
                          row[1].top1_agreement, row[0].mean_kl, row[1].mean_kl,
                          row[0].top1_agreement > row[1].top1_agreement ? "A2SF" : "H2O",
                          row[0].mean_kl < row[1].mean_kl ? "A2SF" : "H2O");
  }
  md.close();
  dat.close();
  std::ofstream gp(dir + "/weights.gp");
  gp << "set terminal pngcairo size 800,480 noenhanced\nset output '" << dir << "/weights.png'\nset grid\n"
     << "set key bottom left\nset ylabel 'top-1 agreement with f32'\nset y2label 'mean KL vs f32 (nats)'\n"
     << "set logscale y2\nset y2tics\nset xlabel 'weights'\nset offsets 0.3, 0.3, 0, 0\n"
     << "plot '" << dir << "/weights.dat' using 0:2:xtic(1) with linespoints title 'top-1 agreement', '" << dir
     << "/weights.dat' using 0:($3 > 0 ? $3 : 1e-9) axes x1y2 with linespoints title 'mean KL'\n";
  gp.close();
  RunGnuplot(dir + "/weights.gp");
  std::cout << "weights: wrote " << dir << "/weights.md and weights.png\n";
  return 0;
}

// The pipelined mode's cost in fidelity: each policy at --ratio with every lag of --lags.
int Lag(const worker::ModelWeights& w, const std::vector<std::vector<int>>& corpus, worker::WeightType kv_type) {
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
  absl::StatusOr<std::vector<FullReference>> refs = References(w, *sequences, kv_type);
  if (!refs.ok()) return Fail(refs.status());
  std::vector<Cell> cells = LagCells(policies, ratio, lags);
  for (Cell& cell : cells) cell.kv_type = kv_type;
  absl::StatusOr<std::vector<CellResult>> results =
      RunSweep(w, *sequences, *refs, cells, absl::GetFlag(FLAGS_threads));
  if (!results.ok()) return Fail(results.status());
  const std::string dir = absl::GetFlag(FLAGS_out_dir);
  std::ofstream(dir + "/lag.csv") << ToCsv(*results);
  std::string md = absl::StrFormat("Budget ratio %.2f, %d sequences, %d positions per cell, %s KV caches.\n\n",
                                   ratio, int(sequences->size()),
                                   int(results->empty() ? 0 : (*results)[0].fidelity.positions),
                                   worker::WeightTypeName(kv_type));
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
  auto tokenizer = worker::LoadTokenizerForModel(absl::GetFlag(FLAGS_model), absl::GetFlag(FLAGS_tokenizer));
  if (!tokenizer.ok()) return Fail(tokenizer.status());
  if (*tokenizer == nullptr) return Fail(absl::InvalidArgumentError("mc needs --tokenizer (or a GGUF model with one)"));
  absl::StatusOr<std::vector<double>> alphas =
      absl::GetFlag(FLAGS_alphas).empty() ? std::vector<double>{absl::GetFlag(FLAGS_alpha)}
                                          : Numbers("--alphas", absl::GetFlag(FLAGS_alphas));
  // --ratios when set to other than its default (the fidelity sweep's), else --ratio.
  const absl::CommandLineFlag* ratios_flag = absl::FindCommandLineFlag("ratios");
  absl::StatusOr<std::vector<double>> ratios =
      ratios_flag->CurrentValue() != ratios_flag->DefaultValue()
          ? Numbers("--ratios", absl::GetFlag(FLAGS_ratios))
          : std::vector<double>{absl::GetFlag(FLAGS_ratio)};
  if (!alphas.ok()) return Fail(alphas.status());
  if (!ratios.ok()) return Fail(ratios.status());
  absl::StatusOr<std::vector<McPolicy>> policies = ParseMcPolicies(absl::GetFlag(FLAGS_policies), *alphas, *ratios);
  if (!policies.ok()) return Fail(policies.status());
  std::vector<std::string> names;
  std::vector<std::vector<McResult>> rows;
  for (absl::string_view path : absl::StrSplit(absl::GetFlag(FLAGS_tasks), ',')) {
    auto task = ReadMcTask(std::string(path));
    if (!task.ok()) return Fail(task.status());
    names.push_back(task->name);
    rows.emplace_back();
    for (const McPolicy& p : *policies) {
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
  for (size_t p = 0; p < policies->size(); ++p) {
    std::cout << "| " << absl::GetFlag(FLAGS_shots) << " | " << McPolicyLabel((*policies)[p]) << " |";
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
  const std::string command = args[1];
  // --kv_type: fidelity and lag run their engines with it; the other commands refuse it.
  absl::StatusOr<worker::WeightType> kv_type = worker::KvTypeFromFlags();
  if (!kv_type.ok()) return Fail(kv_type.status());
  if (*kv_type != worker::WeightType::kF32 && command != "fidelity" && command != "lag") {
    return Fail(absl::InvalidArgumentError(absl::StrCat("--kv_type: only fidelity and lag take it, not ", command)));
  }
  if (command == "weights") {
    auto corpus = ReadCorpus(absl::GetFlag(FLAGS_corpus));
    if (!corpus.ok()) return Fail(corpus.status());
    return WeightTypes(*corpus);
  }
  absl::StatusOr<worker::LoadOptions> load = worker::LoadOptionsFromFlags();
  if (!load.ok()) return Fail(load.status());
  auto weights = worker::LoadModel(absl::GetFlag(FLAGS_model), *load);
  if (!weights.ok()) return Fail(weights.status());
  std::cerr << "model: " << worker::DescribeLoadedModel(**weights) << "\n";
  if (command == "mc") return MultipleChoice(**weights);
  auto corpus = ReadCorpus(absl::GetFlag(FLAGS_corpus));
  if (!corpus.ok()) return Fail(corpus.status());
  if (command == "fidelity") return Fidelity(**weights, *corpus, *kv_type);
  if (command == "calibrate") return Calibrate(**weights, *corpus);
  if (command == "lag") return Lag(**weights, *corpus, *kv_type);
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
