#include "common/cuda/cuda_probe.h"

#include <cmath>
#include <cstdio>
#include <vector>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

namespace a2sf::cuda_probe {
namespace {

__global__ void SaxpyKernel(int n, float a, const float* x, float* y) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

}  // namespace

bool BuiltWithCuda() { return true; }

int DeviceCount(int* count, const char** error_text) {
  *count = 0;
  cudaError_t err = cudaGetDeviceCount(count);
  if (err != cudaSuccess) {
    *count = 0;
    *error_text = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return static_cast<int>(err);
  }
  *error_text = "";
  return 0;
}

void LibraryVersions(int* runtime, int* cublas, int* nccl) {
  *runtime = 0;
  *cublas = 0;
  *nccl = 0;
  cudaRuntimeGetVersion(runtime);
  // cublasGetProperty needs no handle (and so no GPU).
  int major = 0, minor = 0, patch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &major) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(MINOR_VERSION, &minor) == CUBLAS_STATUS_SUCCESS &&
      cublasGetProperty(PATCH_LEVEL, &patch) == CUBLAS_STATUS_SUCCESS) {
    *cublas = major * 10000 + minor * 100 + patch;
  }
  ncclGetVersion(nccl);
}

int DriverVersion() {
  int version = 0;
  if (cudaDriverGetVersion(&version) != cudaSuccess) version = 0;
  return version;
}

int DeviceProperties(int index, char* name, int name_size, int* major, int* minor, double* memory_gib,
                     const char** error_text) {
  cudaDeviceProp prop;
  const cudaError_t err = cudaGetDeviceProperties(&prop, index);
  if (err != cudaSuccess) {
    *error_text = cudaGetErrorString(err);
    cudaGetLastError();
    return static_cast<int>(err);
  }
  snprintf(name, name_size, "%s", prop.name);
  *major = prop.major;
  *minor = prop.minor;
  *memory_gib = static_cast<double>(prop.totalGlobalMem) / (1u << 30);
  *error_text = "";
  return 0;
}

int SaxpySelfTest(int n, float* max_abs_difference, const char** error_text) {
  *error_text = "";
  std::vector<float> x(n), y(n), expected(n), got(n);
  for (int i = 0; i < n; ++i) {
    x[i] = 0.5f * static_cast<float>(i % 97);
    y[i] = 1.0f - 0.25f * static_cast<float>(i % 13);
    // Two saxpys with a = 2 and a = 3 applied to y.
    expected[i] = y[i] + 5.0f * x[i];
  }
  float* dx = nullptr;
  float* dy = nullptr;
  cudaError_t err = cudaMalloc(&dx, n * sizeof(float));
  if (err == cudaSuccess) err = cudaMalloc(&dy, n * sizeof(float));
  if (err == cudaSuccess) err = cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  if (err == cudaSuccess) err = cudaMemcpy(dy, y.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  if (err == cudaSuccess) {
    SaxpyKernel<<<(n + 255) / 256, 256>>>(n, 2.0f, dx, dy);
    err = cudaGetLastError();
  }
  if (err == cudaSuccess) {
    cublasHandle_t handle;
    if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
      *error_text = "cublasCreate failed";
      cudaFree(dx);
      cudaFree(dy);
      return -1;
    }
    const float a = 3.0f;
    cublasStatus_t status = cublasSaxpy(handle, n, &a, dx, 1, dy, 1);
    cublasDestroy(handle);
    if (status != CUBLAS_STATUS_SUCCESS) {
      *error_text = "cublasSaxpy failed";
      cudaFree(dx);
      cudaFree(dy);
      return -1;
    }
    err = cudaMemcpy(got.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost);
  }
  cudaFree(dx);
  cudaFree(dy);
  if (err != cudaSuccess) {
    *error_text = cudaGetErrorString(err);
    return static_cast<int>(err);
  }
  float worst = 0.0f;
  for (int i = 0; i < n; ++i) worst = std::fmax(worst, std::fabs(got[i] - expected[i]));
  *max_abs_difference = worst;
  return 0;
}

}  // namespace a2sf::cuda_probe
