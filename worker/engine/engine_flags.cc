#include "worker/engine/engine_flags.h"

#include "absl/flags/flag.h"
#include "worker/model/load_flags.h"

ABSL_FLAG(std::string, device, "cpu",
          "engine backend: cpu, or cuda (cuBLAS + kernels on the GPU; the weights uploaded once and shared by "
          "every engine)");

namespace a2sf::worker {

absl::StatusOr<EngineFlags> EngineFlagsFromFlags() {
  EngineFlags flags;
  absl::StatusOr<LoadOptions> load = LoadOptionsFromFlags();
  if (!load.ok()) return load.status();
  flags.load = *load;
  absl::StatusOr<EngineDevice> device = ParseEngineDevice(absl::GetFlag(FLAGS_device));
  if (!device.ok()) return absl::InvalidArgumentError("--" + std::string(device.status().message()));
  flags.device = *device;
  absl::StatusOr<WeightType> kv_type = KvTypeFromFlags();
  if (!kv_type.ok()) return kv_type.status();
  if (absl::Status kv = CheckKvType(*kv_type, *device); !kv.ok()) return kv;
  flags.kv_type = *kv_type;
  if (absl::Status gpu = CheckEngineDevice(*device); !gpu.ok()) {
    return absl::Status(gpu.code(), "--" + std::string(gpu.message()));
  }
  if (*device == EngineDevice::kCuda) flags.load.panels = false;
  return flags;
}

}  // namespace a2sf::worker
