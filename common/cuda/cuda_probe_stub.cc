// Built instead of cuda_probe.cu when Bazel found no CUDA toolkit (see bazel/cuda.bzl).
#include "common/cuda/cuda_probe.h"

namespace a2sf::cuda_probe {

bool BuiltWithCuda() { return false; }

int DeviceCount(int* count, const char** error_text) {
  *count = 0;
  *error_text = "this binary was built without CUDA";
  return -1;
}

void LibraryVersions(int* runtime, int* cublas, int* nccl) {
  *runtime = 0;
  *cublas = 0;
  *nccl = 0;
}

int DriverVersion() { return 0; }

int DeviceProperties(int, char* name, int name_size, int* major, int* minor, double* memory_gib,
                     const char** error_text) {
  if (name_size > 0) name[0] = '\0';
  *major = *minor = 0;
  *memory_gib = 0;
  *error_text = "this binary was built without CUDA";
  return -1;
}

int SaxpySelfTest(int, float*, const char** error_text) {
  *error_text = "this binary was built without CUDA";
  return -1;
}

}  // namespace a2sf::cuda_probe
