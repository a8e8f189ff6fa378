// Whether a usable CUDA GPU is present, and what CUDA libraries this binary carries.
//
// Any error from cudaGetDeviceCount (no driver: cudaErrorInsufficientDriver; no device:
// cudaErrorNoDevice; a build without CUDA) means "no GPU": callers fall back to the CPU and tests
// skip with the message of the returned status.
#ifndef A2SF_COMMON_CUDA_DEVICE_H_
#define A2SF_COMMON_CUDA_DEVICE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace a2sf {

// True when the binary was compiled with nvcc.
bool BuiltWithCuda();

// Number of CUDA devices (>= 1), or UNAVAILABLE with the reason there is none.
absl::StatusOr<int> CudaDeviceCount();

// e.g. "CUDA runtime 13.0, cuBLAS 13.1.0, NCCL 2.28.9", or "built without CUDA".
std::string CudaLibraryVersions();
// e.g. "CUDA driver 13.0", or "no CUDA driver".
std::string CudaDriverVersion();
// e.g. "NVIDIA H200, sm_90, 139.8 GiB", or the error reading device `index`'s properties.
absl::StatusOr<std::string> CudaDeviceDescription(int index);

}  // namespace a2sf

#endif  // A2SF_COMMON_CUDA_DEVICE_H_
