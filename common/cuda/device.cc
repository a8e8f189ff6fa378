#include "common/cuda/device.h"

#include "absl/strings/str_cat.h"
#include "common/cuda/cuda_probe.h"

namespace a2sf {

bool BuiltWithCuda() { return cuda_probe::BuiltWithCuda(); }

absl::StatusOr<int> CudaDeviceCount() {
  int count = 0;
  const char* error_text = "";
  const int code = cuda_probe::DeviceCount(&count, &error_text);
  if (code != 0) {
    return absl::UnavailableError(
        absl::StrCat("no usable CUDA GPU: cudaGetDeviceCount failed (", code, ": ", error_text, ")"));
  }
  if (count < 1) return absl::UnavailableError("no usable CUDA GPU: cudaGetDeviceCount found 0 devices");
  return count;
}

std::string CudaLibraryVersions() {
  if (!cuda_probe::BuiltWithCuda()) return "built without CUDA";
  int runtime = 0, cublas = 0, nccl = 0;
  cuda_probe::LibraryVersions(&runtime, &cublas, &nccl);
  return absl::StrCat("CUDA runtime ", runtime / 1000, ".", (runtime % 1000) / 10, ", cuBLAS ",
                      cublas / 10000, ".", (cublas / 100) % 100, ".", cublas % 100, ", NCCL ",
                      nccl / 10000, ".", (nccl / 100) % 100, ".", nccl % 100);
}

}  // namespace a2sf
