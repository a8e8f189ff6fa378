// Built instead of cuda_forward.cu when no CUDA toolkit was found (bazel/cuda.bzl).
#include "worker/engine/cuda/cuda_forward.h"

namespace a2sf::worker::cuda {
namespace {
constexpr int kUnavailable = -1;
constexpr char kReason[] = "this binary was built without CUDA";
}  // namespace

struct DeviceWeights {};
struct Sequence {};
struct DeviceBatch {};

int CountDevices(int* count, std::string* error) {
  *count = 0;
  return *error = kReason, kUnavailable;
}
int UploadWeights(const Dims&, const HostMatrix&, const HostLayer*, const float*, const HostMatrix&, DeviceWeights**,
                  std::string* error) {
  return *error = kReason, kUnavailable;
}
void FreeWeights(DeviceWeights*) {}
size_t WeightBytes(const DeviceWeights*) { return 0; }
int MatMulOnce(const HostMatrix&, const float*, int, float*, std::string* error) {
  return *error = kReason, kUnavailable;
}
int CreateSequence(const DeviceWeights*, int, bool, Sequence**, std::string* error) {
  return *error = kReason, kUnavailable;
}
void DestroySequence(Sequence*) {}
int CreateBatch(const DeviceWeights*, DeviceBatch**, std::string* error) { return *error = kReason, kUnavailable; }
void DestroyBatch(DeviceBatch*) {}
int ForwardBatch(DeviceBatch*, const BatchRow*, int, std::string* error) { return *error = kReason, kUnavailable; }
int SetScoreTarget(Sequence*, float*, void*, std::string* error) { return *error = kReason, kUnavailable; }
int SwapRemoveEntries(Sequence*, const uint32_t*, uint32_t, uint32_t, std::string* error) {
  return *error = kReason, kUnavailable;
}

}  // namespace a2sf::worker::cuda
