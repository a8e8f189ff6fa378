// The CUDA runtime calls behind common/cuda/ipc.h: device allocations and interprocess events that
// another process can open (cudaIpcGetMemHandle / cudaIpcGetEventHandle), and the opening side. A
// plain interface (no Abseil, no CUDA types) so that nvcc compiles ipc_runtime.cu and, without a CUDA
// toolkit, ipc_runtime_stub.cc stands in. Functions return 0 on success or a CUDA error code (-1 for
// "built without CUDA" and for checks of this file's own) with `error` set to its text.
#ifndef A2SF_COMMON_CUDA_IPC_RUNTIME_H_
#define A2SF_COMMON_CUDA_IPC_RUNTIME_H_

#include <cstddef>
#include <string>

namespace a2sf::cuda_ipc_runtime {

// Bytes of a cudaIpcMemHandle_t and of a cudaIpcEventHandle_t (CUDA_IPC_HANDLE_SIZE).
inline constexpr size_t kHandleBytes = 64;

// The current device's UUID (32 lowercase hex digits) and PCI bus id ("0000:3b:00.0").
int CurrentDevice(std::string* uuid, std::string* pci_bus_id, std::string* error);

// A zeroed device allocation of its own (so that its IPC handle covers exactly it).
int Allocate(size_t bytes, void** device_pointer, std::string* error);
void Free(void* device_pointer);
// An event created with cudaEventInterprocess | cudaEventDisableTiming.
int CreateEvent(void** event, std::string* error);
void DestroyEvent(void* event);
// Host <-> device copies and an event record on the legacy default stream, synchronous (tests, bench).
int CopyToDevice(void* dst, const void* src, size_t bytes, std::string* error);
int CopyToHost(void* dst, const void* src, size_t bytes, std::string* error);
int RecordEvent(void* event, std::string* error);

// Writes kHandleBytes into `handle`.
int ExportMemory(void* device_pointer, char* handle, std::string* error);
int ExportEvent(void* event, char* handle, std::string* error);

// Opens another process's allocation (cudaIpcMemLazyEnablePeerAccess) and reports the size of the
// allocation it maps (cuMemGetAddressRange, through the runtime's driver entry point), so a caller can
// check an offer's claimed size against the memory really there.
int OpenMemory(const char* handle, void** device_pointer, size_t* allocation_bytes, std::string* error);
void CloseMemory(void* device_pointer);
int OpenEvent(const char* handle, void** event, std::string* error);

}  // namespace a2sf::cuda_ipc_runtime

#endif  // A2SF_COMMON_CUDA_IPC_RUNTIME_H_
