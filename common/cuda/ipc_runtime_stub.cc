// Built instead of ipc_runtime.cu when no CUDA toolkit was found (bazel/cuda.bzl).
#include "common/cuda/ipc_runtime.h"

namespace a2sf::cuda_ipc_runtime {
namespace {
constexpr int kUnavailable = -1;
constexpr char kReason[] = "this binary was built without CUDA";
}  // namespace

int CurrentDevice(std::string*, std::string*, std::string* error) { return *error = kReason, kUnavailable; }
int Allocate(size_t, void**, std::string* error) { return *error = kReason, kUnavailable; }
void Free(void*) {}
int CreateEvent(void**, std::string* error) { return *error = kReason, kUnavailable; }
void DestroyEvent(void*) {}
int CopyToDevice(void*, const void*, size_t, std::string* error) { return *error = kReason, kUnavailable; }
int CopyToHost(void*, const void*, size_t, std::string* error) { return *error = kReason, kUnavailable; }
int RecordEvent(void*, std::string* error) { return *error = kReason, kUnavailable; }
int ExportMemory(void*, char*, std::string* error) { return *error = kReason, kUnavailable; }
int ExportEvent(void*, char*, std::string* error) { return *error = kReason, kUnavailable; }
int OpenMemory(const char*, void**, size_t*, std::string* error) { return *error = kReason, kUnavailable; }
void CloseMemory(void*) {}
int OpenEvent(const char*, void**, std::string* error) { return *error = kReason, kUnavailable; }

}  // namespace a2sf::cuda_ipc_runtime
