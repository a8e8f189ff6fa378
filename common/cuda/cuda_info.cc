// Prints the CUDA libraries this build carries and whether a GPU is usable.
#include <iostream>

#include "common/cuda/device.h"

int main() {
  std::cout << "CUDA: " << a2sf::CudaLibraryVersions() << "\n";
  absl::StatusOr<int> count = a2sf::CudaDeviceCount();
  if (count.ok()) {
    std::cout << "GPUs: " << *count << "\n";
  } else {
    std::cout << "GPUs: none (" << count.status().message() << "); the CPU backends are used\n";
  }
  return 0;
}
