// Plain C-style entry points into the CUDA toolkit, compiled by nvcc (cuda_probe.cu) or, on a machine
// without CUDA, by the C++ compiler from cuda_probe_stub.cc. Kept free of Abseil so nvcc sees
// nothing but the CUDA headers; device.h wraps them in absl::Status.
#ifndef A2SF_COMMON_CUDA_CUDA_PROBE_H_
#define A2SF_COMMON_CUDA_CUDA_PROBE_H_

namespace a2sf::cuda_probe {

// True when this binary was built with nvcc (the stub returns false).
bool BuiltWithCuda();
// cudaGetDeviceCount; returns the CUDA error code (0 = success) and writes a description of it.
int DeviceCount(int* count, const char** error_text);
// Versions of the CUDA runtime, cuBLAS and NCCL this binary links (0 if unknown). These work
// without a GPU or driver.
void LibraryVersions(int* runtime, int* cublas, int* nccl);
// The driver's CUDA version (cudaDriverGetVersion, e.g. 13000), or 0 when there is no driver.
int DriverVersion();
// Name, compute capability and memory of device `index`; returns the CUDA error code (0 = success).
int DeviceProperties(int index, char* name, int name_size, int* major, int* minor, double* memory_gib,
                     const char** error_text);
// Runs y = a*x + y on the GPU with a hand-written kernel and cuBLAS's saxpy, and compares both
// with the host result. Returns 0 and the max abs difference on success, else a CUDA error code.
int SaxpySelfTest(int n, float* max_abs_difference, const char** error_text);

}  // namespace a2sf::cuda_probe

#endif  // A2SF_COMMON_CUDA_CUDA_PROBE_H_
