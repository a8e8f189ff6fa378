// The engine a tool runs, from its flags: --device (defined here) with load_flags.h's --weights,
// --panels and --kv_type. a2sf-generate and a2sf-worker read and check them all before they load a
// model, so that a typo, a KV type the device does not hold or a missing GPU costs no load; defined
// once so the two tools accept and explain them the same way.
#ifndef A2SF_WORKER_ENGINE_ENGINE_FLAGS_H_
#define A2SF_WORKER_ENGINE_ENGINE_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "worker/engine/engine.h"
#include "worker/model/model.h"

ABSL_DECLARE_FLAG(std::string, device);

namespace a2sf::worker {

struct EngineFlags {
  LoadOptions load;  // panels false on the GPU: its kernels read rows
  EngineDevice device = EngineDevice::kCpu;
  WeightType kv_type = WeightType::kF32;
};

// The flags as EngineFlags: INVALID_ARGUMENT naming the flag for a bad --weights, --device or
// --kv_type, or a KV type the device does not hold; UNAVAILABLE for --device=cuda without a usable GPU.
absl::StatusOr<EngineFlags> EngineFlagsFromFlags();

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_ENGINE_FLAGS_H_
