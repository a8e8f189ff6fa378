// Built instead of cuda_kernels.cu when no CUDA toolkit was found (bazel/cuda.bzl).
#include "cachemgr/store/cuda_kernels.h"

namespace a2sf::cachemgr::cuda {
namespace {
constexpr int kUnavailable = -1;
constexpr char kReason[] = "this binary was built without CUDA";
}  // namespace

bool Available(std::string* reason) {
  *reason = kReason;
  return false;
}
int Malloc(void**, size_t, std::string* error) { return *error = kReason, kUnavailable; }
void Free(void*) {}
int CopyToDevice(void*, const void*, size_t, std::string* error) { return *error = kReason, kUnavailable; }
int CopyToHost(void*, const void*, size_t, std::string* error) { return *error = kReason, kUnavailable; }
int CopyRows(void*, size_t, const void*, size_t, size_t, size_t, std::string* error) {
  return *error = kReason, kUnavailable;
}
Context* CreateContext() { return nullptr; }
void DestroyContext(Context*) {}
int RunTokenStep(Context*, const HeadTask*, uint32_t, const void*, size_t, kv::ScoreDType, void* const*, uint32_t,
                 HeadResult*, std::string* error) {
  return *error = kReason, kUnavailable;
}
int ApplyEvictions(Context*, const EvictTask*, uint32_t, const uint32_t*, uint32_t, uint32_t*, std::string* error) {
  return *error = kReason, kUnavailable;
}
int RunBulkPrefill(Context*, const BulkHeadTask*, uint32_t, const void*, size_t, kv::ScoreDType, uint32_t, uint32_t, uint32_t,
                   uint32_t, uint32_t, uint32_t, uint32_t*, uint32_t*, std::string* error) {
  return *error = kReason, kUnavailable;
}

}  // namespace a2sf::cachemgr::cuda
