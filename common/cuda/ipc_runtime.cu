// CUDA implementation of ipc_runtime.h (host code only: cudart's IPC and event calls).
#include "common/cuda/ipc_runtime.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

namespace a2sf::cuda_ipc_runtime {
namespace {

int Fail(cudaError_t e, std::string* error) {
  *error = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  cudaGetLastError();  // clear a non-sticky error so the next call starts clean
  return int(e);
}

// cuMemGetAddressRange_v2, without linking the driver library (the bundle never carries it).
using AddressRangeFn = int (*)(unsigned long long* base, size_t* size, unsigned long long pointer);

AddressRangeFn AddressRange() {
  static AddressRangeFn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &p, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();
      p = nullptr;
    }
    return reinterpret_cast<AddressRangeFn>(p);
  }();
  return fn;
}

}  // namespace

int CurrentDevice(std::string* uuid, std::string* pci_bus_id, std::string* error) {
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  cudaDeviceProp prop;
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, device);
  char bus[32] = {};
  if (e == cudaSuccess) e = cudaDeviceGetPCIBusId(bus, sizeof(bus), device);
  if (e != cudaSuccess) return Fail(e, error);
  uuid->clear();
  for (int i = 0; i < 16; ++i) {
    char hex[3];
    std::snprintf(hex, sizeof(hex), "%02x", static_cast<unsigned char>(prop.uuid.bytes[i]));
    uuid->append(hex);
  }
  *pci_bus_id = bus;
  return 0;
}

int Allocate(size_t bytes, void** device_pointer, std::string* error) {
  *device_pointer = nullptr;
  cudaError_t e = cudaMalloc(device_pointer, bytes);
  if (e == cudaSuccess) e = cudaMemset(*device_pointer, 0, bytes);
  if (e != cudaSuccess) {
    cudaFree(*device_pointer);
    *device_pointer = nullptr;
    return Fail(e, error);
  }
  return 0;
}

void Free(void* device_pointer) {
  if (device_pointer != nullptr) cudaFree(device_pointer);
}

int CreateEvent(void** event, std::string* error) {
  cudaEvent_t e = nullptr;
  cudaError_t err = cudaEventCreateWithFlags(&e, cudaEventInterprocess | cudaEventDisableTiming);
  if (err != cudaSuccess) return Fail(err, error);
  *event = e;
  return 0;
}

void DestroyEvent(void* event) {
  if (event != nullptr) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

int CopyToDevice(void* dst, const void* src, size_t bytes, std::string* error) {
  cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
  return e == cudaSuccess ? 0 : Fail(e, error);
}

int CopyToHost(void* dst, const void* src, size_t bytes, std::string* error) {
  cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
  return e == cudaSuccess ? 0 : Fail(e, error);
}

int RecordEvent(void* event, std::string* error) {
  cudaError_t e = cudaEventRecord(static_cast<cudaEvent_t>(event), 0);
  if (e == cudaSuccess) e = cudaEventSynchronize(static_cast<cudaEvent_t>(event));
  return e == cudaSuccess ? 0 : Fail(e, error);
}

int ExportMemory(void* device_pointer, char* handle, std::string* error) {
  cudaIpcMemHandle_t h;
  cudaError_t e = cudaIpcGetMemHandle(&h, device_pointer);
  if (e != cudaSuccess) return Fail(e, error);
  static_assert(sizeof(h) == kHandleBytes, "cudaIpcMemHandle_t size");
  std::memcpy(handle, &h, kHandleBytes);
  return 0;
}

int ExportEvent(void* event, char* handle, std::string* error) {
  cudaIpcEventHandle_t h;
  cudaError_t e = cudaIpcGetEventHandle(&h, static_cast<cudaEvent_t>(event));
  if (e != cudaSuccess) return Fail(e, error);
  static_assert(sizeof(h) == kHandleBytes, "cudaIpcEventHandle_t size");
  std::memcpy(handle, &h, kHandleBytes);
  return 0;
}

int OpenMemory(const char* handle, void** device_pointer, size_t* allocation_bytes, std::string* error) {
  cudaIpcMemHandle_t h;
  std::memcpy(&h, handle, kHandleBytes);
  *device_pointer = nullptr;
  cudaError_t e = cudaIpcOpenMemHandle(device_pointer, h, cudaIpcMemLazyEnablePeerAccess);
  if (e != cudaSuccess) return Fail(e, error);
  AddressRangeFn range = AddressRange();
  unsigned long long base = 0;
  size_t size = 0;
  if (range == nullptr ||
      range(&base, &size, reinterpret_cast<unsigned long long>(*device_pointer)) != 0 ||
      base != reinterpret_cast<unsigned long long>(*device_pointer)) {
    cudaIpcCloseMemHandle(*device_pointer);
    *device_pointer = nullptr;
    *error = "cannot read the size of the opened allocation (cuMemGetAddressRange)";
    return -1;
  }
  *allocation_bytes = size;
  return 0;
}

void CloseMemory(void* device_pointer) {
  if (device_pointer != nullptr) cudaIpcCloseMemHandle(device_pointer);
}

int OpenEvent(const char* handle, void** event, std::string* error) {
  cudaIpcEventHandle_t h;
  std::memcpy(&h, handle, kHandleBytes);
  cudaEvent_t e = nullptr;
  cudaError_t err = cudaIpcOpenEventHandle(&e, h);
  if (err != cudaSuccess) return Fail(err, error);
  *event = e;
  return 0;
}

}  // namespace a2sf::cuda_ipc_runtime
