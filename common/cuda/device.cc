#include "common/cuda/device.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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

std::string CudaDriverVersion() {
  const int version = cuda_probe::DriverVersion();
  if (version == 0) return "no CUDA driver";
  return absl::StrCat("CUDA driver ", version / 1000, ".", (version % 1000) / 10);
}

absl::StatusOr<std::string> CudaDeviceDescription(int index) {
  char name[256];
  int major = 0, minor = 0;
  double memory_gib = 0;
  const char* error_text = "";
  if (int code = cuda_probe::DeviceProperties(index, name, sizeof(name), &major, &minor, &memory_gib, &error_text);
      code != 0) {
    return absl::UnavailableError(absl::StrCat("device ", index, ": cudaGetDeviceProperties failed (", code, ": ",
                                               error_text, ")"));
  }
  return absl::StrFormat("%s, sm_%d%d, %.1f GiB", name, major, minor, memory_gib);
}

}  // namespace a2sf
