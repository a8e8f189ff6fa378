// The --weights, --panels and --kv_type flags, shared by every tool that loads a model (a2sf-generate,
// a2sf-worker, a2sf-eval). --weights: "auto" (what the file holds) or f32, f16, bf16, q8_0, q4_0
// (converted on load, tensor by tensor). --panels: hold matrices (every type) in panels for the
// CPU kernels (LoadOptions::panels). --kv_type: how engines hold keys and values, f32, f16 or q8_0
// (EngineOptions::kv_type). Defined once here so the three tools accept and explain them the
// same way.
#ifndef A2SF_WORKER_MODEL_LOAD_FLAGS_H_
#define A2SF_WORKER_MODEL_LOAD_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "worker/model/model.h"

ABSL_DECLARE_FLAG(std::string, weights);
ABSL_DECLARE_FLAG(bool, panels);
ABSL_DECLARE_FLAG(std::string, kv_type);

namespace a2sf::worker {

// LoadOptions from --weights and --panels; INVALID_ARGUMENT naming the accepted values for a bad
// --weights. (A tool whose engine runs on the GPU sets panels false: the GPU kernels read rows.)
absl::StatusOr<LoadOptions> LoadOptionsFromFlags();

// --kv_type as a WeightType (kF32, kF16 or kQ8_0); INVALID_ARGUMENT naming the accepted values otherwise.
absl::StatusOr<WeightType> KvTypeFromFlags();

// One line per fact worth logging after a load: the format and types, owned bytes, fallbacks.
std::string DescribeLoadedModel(const ModelWeights& weights);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_MODEL_LOAD_FLAGS_H_
