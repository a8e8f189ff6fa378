// Prints the CUDA libraries this build carries, the driver, and each usable GPU (scripts/gpu_check.sh
// reads the "GPUs:" line).
#include <iostream>

#include "common/cuda/device.h"

int main() {
  std::cout << "CUDA: " << a2sf::CudaLibraryVersions() << "; " << a2sf::CudaDriverVersion() << "\n";
  absl::StatusOr<int> count = a2sf::CudaDeviceCount();
  if (count.ok()) {
    std::cout << "GPUs: " << *count << "\n";
    for (int i = 0; i < *count; ++i) {
      absl::StatusOr<std::string> description = a2sf::CudaDeviceDescription(i);
      std::cout << "  " << i << ": " << (description.ok() ? *description : description.status().ToString()) << "\n";
    }
  } else {
    std::cout << "GPUs: none (" << count.status().message() << "); the CPU backends are used\n";
  }
  return 0;
}
