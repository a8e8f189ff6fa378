// Cost of one ForwardPass step against the number of rows (sequences decoded together), on the
// stories110M shape (or --shape/--layers, held in --weights; random weights): the batch's ms per step
// and tokens/s, as ratios to one row,
// from the mean step and from the fastest one (steadier on a shared machine: other processes only
// ever add time). The CPU kernels are the machine's best (worker/engine/matmul.h);
// A2SF_MAX_KERNEL_ISA=avx2 compares the AVX2 ones in the same conditions. --device=cuda: the same rows on CUDA engines, the batched device step (one step for all rows)
// against the rows run one after another (each engine's own one-row step, the serial baseline),
// both measured here; without a GPU it says why and exits 1.
//
//   bazel run -c opt //bench:forward_pass_bench -- --threads=2
//   bazel run -c opt //bench:forward_pass_bench -- --device=cuda
//   bazel run -c opt //bench:forward_pass_bench -- --shape=llama2-7b --layers=2 --weights=q8_0
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "worker/engine/engine.h"
#include "worker/engine/matmul.h"
#include "worker/model/model.h"
#include "worker/model/weights.h"

ABSL_FLAG(int, threads, 2, "threads of the pass");
ABSL_FLAG(int, steps, 8, "steps per row count");
ABSL_FLAG(std::string, device, "cpu", "cpu, or cuda (batched device step against serial one-row steps)");
ABSL_FLAG(bool, panels, true,
          "hold matrices in CPU panels (false: row-major, the layout before panels; cuda: always rows)");
ABSL_FLAG(std::string, shape, "stories110M", "a2sf-make-model's shape name (stories110M, llama2-7b, ...)");
ABSL_FLAG(std::vector<std::string>, rows, std::vector<std::string>({"1", "2", "4", "8", "16"}),
          "row counts to measure (the first is the ratios' base)");
ABSL_FLAG(int, layers, 0, "layers of the shape (0: the shape's own)");
ABSL_FLAG(std::string, weights, "f32", "weight type: f32, f16, bf16, q8_0, q4_0");
ABSL_FLAG(std::string, kv_type, "f32", "KV cache element type: f32, f16 or q8_0 (CPU engines)");
ABSL_FLAG(std::string, model, "", "a model file to measure instead of a synthetic shape (its weights as held)");

namespace a2sf::worker {
namespace {

// --rows as numbers 1..4096; empty when one is not.
std::vector<int> RowCounts() {
  std::vector<int> counts;
  for (const std::string& n : absl::GetFlag(FLAGS_rows)) {
    int rows = 0;
    if (!absl::SimpleAtoi(n, &rows) || rows < 1 || rows > 4096) return {};
    counts.push_back(rows);
  }
  return counts;
}


// `count` engines with room for `steps` tokens, their KV cache in `kv_type`; the first error otherwise.
absl::StatusOr<std::vector<std::unique_ptr<Engine>>> MakeEngines(const ModelWeights* weights, EngineDevice device,
                                                                 WeightType kv_type, int count, int steps) {
  std::vector<std::unique_ptr<Engine>> engines;
  EngineOptions options;
  options.cache_capacity = steps + 2;
  options.device = device;
  options.kv_type = kv_type;
  for (int r = 0; r < count; ++r) {
    absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Create(weights, options);
    if (!engine.ok()) return engine.status();
    engines.push_back(std::move(*engine));
  }
  return engines;
}

// Row r of step s: engine r's token 1 + r at position s.
void StepRows(const std::vector<std::unique_ptr<Engine>>& engines, int s, std::vector<ForwardRow>* rows) {
  rows->clear();
  for (size_t r = 0; r < engines.size(); ++r) rows->push_back({engines[r].get(), 1 + int(r), s});
}

struct StepMs {
  double mean = -1, fastest = -1;  // -1: a step failed
};

// Mean and fastest ms of `step(s)` for s = 1..steps (s = 0 warms up), after an untimed `prepare(s)`.
template <typename Prepare, typename Step>
StepMs MsPerStep(int steps, Prepare prepare, Step step) {
  absl::Duration total, fastest = absl::InfiniteDuration();
  for (int s = 0; s <= steps; ++s) {
    prepare(s);
    const absl::Time start = absl::Now();
    if (!step(s)) return {};
    const absl::Duration took = absl::Now() - start;
    if (s == 0) continue;
    total += took;
    fastest = std::min(fastest, took);
  }
  return {absl::ToDoubleMilliseconds(total) / steps, absl::ToDoubleMilliseconds(fastest)};
}

// Whether matrices go in panels: --panels, and never for the GPU (its kernels read rows).
bool Panels() { return absl::GetFlag(FLAGS_panels) && absl::GetFlag(FLAGS_device) != "cuda"; }

// --shape/--layers held in --weights, random (INVALID_ARGUMENT for a bad flag).
absl::StatusOr<std::unique_ptr<ModelWeights>> SyntheticWeights() {
  const auto shape = NamedShape(absl::GetFlag(FLAGS_shape), absl::GetFlag(FLAGS_layers));
  if (!shape.ok()) return shape.status();
  const auto type = ParseWeightsFlag(absl::GetFlag(FLAGS_weights));
  if (!type.ok()) return type.status();
  if (!type->has_value()) return absl::InvalidArgumentError("--weights: name a type, not auto");
  std::printf("%s, %d layers, %s weights\n", absl::GetFlag(FLAGS_shape).c_str(), shape->n_layers,
              WeightTypeName(**type));
  return MakeSyntheticModel(*shape, 7, **type, Panels());
}

int RunCpu(const ModelWeights* weights, int steps, WeightType kv_type) {
  ForwardPass pass(weights, absl::GetFlag(FLAGS_threads));
  double one = 0, one_fastest = 0;
  std::printf("%s kernels, %d threads, %s KV cache\n", KernelIsaName(DetectedIsa()), absl::GetFlag(FLAGS_threads),
              WeightTypeName(kv_type));
  std::printf("%5s %12s %10s %8s %14s %8s\n", "rows", "ms/step", "tok/s", "vs 1", "fastest ms", "vs 1");
  for (int rows : RowCounts()) {
    auto made = MakeEngines(weights, EngineDevice::kCpu, kv_type, rows, steps);
    if (!made.ok()) {
      std::fprintf(stderr, "forward_pass_bench: %s\n", std::string(made.status().message()).c_str());
      return 2;
    }
    std::vector<std::unique_ptr<Engine>>& engines = *made;
    std::vector<ForwardRow> batch;
    auto prepare = [&](int s) { StepRows(engines, s, &batch); };
    const StepMs ms = MsPerStep(steps, prepare, [&](int) { return pass.Run(batch).ok(); });
    if (ms.mean < 0) return 1;
    const double tps = rows * 1000.0 / ms.mean, fastest_tps = rows * 1000.0 / ms.fastest;
    if (one == 0) one = tps, one_fastest = fastest_tps;
    std::printf("%5d %12.2f %10.1f %7.2fx %14.2f %7.2fx\n", rows, ms.mean, tps, tps / one, ms.fastest,
                fastest_tps / one_fastest);
  }
  return 0;
}

int RunCuda(const ModelWeights* weights, int steps) {
  ForwardPass pass(weights, 1);
  std::printf("%5s %12s %12s %10s %14s\n", "rows", "batched ms", "serial ms", "tok/s", "serial/batched");
  for (int rows : RowCounts()) {
    auto made_batched = MakeEngines(weights, EngineDevice::kCuda, WeightType::kF32, rows, steps);
    auto made_serial = MakeEngines(weights, EngineDevice::kCuda, WeightType::kF32, rows, steps);
    for (const auto* made : {&made_batched, &made_serial}) {
      if (!made->ok()) {
        std::fprintf(stderr, "forward_pass_bench: %s\n", std::string(made->status().message()).c_str());
        return 2;
      }
    }
    std::vector<std::unique_ptr<Engine>>& batched = *made_batched;
    std::vector<std::unique_ptr<Engine>>& serial = *made_serial;
    std::vector<ForwardRow> batch;
    auto prepare = [&](int s) { StepRows(batched, s, &batch); };
    const double batched_ms = MsPerStep(steps, prepare, [&](int) { return pass.Run(batch).ok(); }).mean;
    const double serial_ms = MsPerStep(steps, [](int) {}, [&](int s) {
      for (int r = 0; r < rows; ++r) {
        if (!serial[r]->Forward(1 + r, s).ok()) return false;
      }
      return true;
    }).mean;
    if (batched_ms < 0 || serial_ms < 0) return 1;
    std::printf("%5d %12.3f %12.3f %10.1f %13.2fx\n", rows, batched_ms, serial_ms, rows * 1000.0 / batched_ms,
                serial_ms / batched_ms);
  }
  return 0;
}

}  // namespace
}  // namespace a2sf::worker

int main(int argc, char** argv) {
  using namespace a2sf::worker;
  absl::ParseCommandLine(argc, argv);
  const std::string device = absl::GetFlag(FLAGS_device);
  if (device != "cpu" && device != "cuda") {
    std::fprintf(stderr, "--device: cpu or cuda, got '%s'\n", device.c_str());
    return 2;
  }
  if (device == "cuda") {
    if (absl::Status gpu = CheckEngineDevice(EngineDevice::kCuda); !gpu.ok()) {
      std::printf("cuda: %s\n", std::string(gpu.message()).c_str());
      return 1;
    }
  }
  if (RowCounts().empty()) {
    std::fprintf(stderr, "--rows: a comma-separated list of row counts 1..4096\n");
    return 2;
  }
  const absl::StatusOr<WeightType> kv_type = ParseKvType(absl::GetFlag(FLAGS_kv_type));
  absl::Status kv = kv_type.status();
  if (kv.ok()) kv = CheckKvType(*kv_type, device == "cuda" ? EngineDevice::kCuda : EngineDevice::kCpu);
  if (!kv.ok()) {
    std::fprintf(stderr, "--%s\n", std::string(kv.message()).c_str());
    return 2;
  }
  LoadOptions load;
  load.panels = Panels();
  absl::StatusOr<std::unique_ptr<ModelWeights>> weights = absl::GetFlag(FLAGS_model).empty()
                                                               ? SyntheticWeights()
                                                               : LoadModel(absl::GetFlag(FLAGS_model), load);
  if (!weights.ok()) {
    std::fprintf(stderr, "%s\n", std::string(weights.status().message()).c_str());
    return 2;
  }
  const int steps = absl::GetFlag(FLAGS_steps);
  return device == "cuda" ? RunCuda(weights->get(), steps) : RunCpu(weights->get(), steps, *kv_type);
}
