// CUDA kernels of CudaScoreStore. Arithmetic is written with __fmul_rn/__fadd_rn so that no multiply-
// add is contracted: the results are bit-identical to the CPU store (built with -ffp-contract=off).
#include "cachemgr/store/cuda_kernels.h"

#include <cub/device/device_segmented_radix_sort.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <vector>

#include "common/kv/swap_remove.h"

namespace a2sf::cachemgr::cuda {
namespace {

constexpr uint32_t kNoSlot = 0xffffffffu;
constexpr int kThreads = 256;

int Fail(cudaError_t err, std::string* error) {
  *error = cudaGetErrorString(err);
  return static_cast<int>(err);
}

__device__ __forceinline__ float LoadValue(const void* input, kv::ScoreDType dtype, uint64_t index) {
  if (dtype == kv::ScoreDType::kFp32) return static_cast<const float*>(input)[index];
  if (dtype == kv::ScoreDType::kFp16) return __half2float(static_cast<const __half*>(input)[index]);
  return __bfloat162float(static_cast<const __nv_bfloat16*>(input)[index]);
}

// kMaxScoreValue (score_store.h): scores above it would overflow the accumulators.
__device__ __forceinline__ bool Valid(float v) { return v >= 0.0f && v <= 65536.0f; }

struct Best {
  float score;
  uint32_t position;
  uint32_t slot;
};

__device__ __forceinline__ bool Better(const Best& a, const Best& b) {
  if (a.slot == kNoSlot) return false;
  if (b.slot == kNoSlot) return true;
  return a.score < b.score || (a.score == b.score && a.position < b.position);
}

// One block per head: accumulate, validate, and reduce to the smallest (score, position) candidate.
__global__ void TokenStepKernel(const HeadTask* tasks, const void* input, kv::ScoreDType dtype, HeadResult* results) {
  const HeadTask t = tasks[blockIdx.x];
  __shared__ Best shared_best[kThreads];
  __shared__ uint32_t shared_above[kThreads];
  __shared__ uint32_t shared_invalid[kThreads];
  Best best{0.0f, 0, kNoSlot};
  uint32_t above = 0, invalid = 0;
  for (uint32_t i = threadIdx.x; i < t.n; i += blockDim.x) {
    const bool is_new = i == t.n - 1;
    const uint32_t p = is_new ? t.position : t.positions[i];
    if (is_new) t.positions[i] = t.position;
    float key = 0.0f;
    if (t.uses_scores) {
      const float v = LoadValue(t.device_input != nullptr ? t.device_input : input, dtype, t.input_offset + i);
      invalid |= !Valid(v);
      const float old = is_new ? 0.0f : t.a_old[i];
      key = __fadd_rn(__fmul_rn(t.alpha, old), v);
      t.a_new[i] = key;
    } else if (is_new) {
      const_cast<float*>(t.a_old)[i] = 0.0f;
    }
    above += p >= t.candidate_hi;
    if (p >= t.candidate_lo && p < t.candidate_hi) {
      const Best mine{t.uses_scores ? key : 0.0f, p, i};
      if (Better(mine, best)) best = mine;
    }
  }
  shared_best[threadIdx.x] = best;
  shared_above[threadIdx.x] = above;
  shared_invalid[threadIdx.x] = invalid;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      if (Better(shared_best[threadIdx.x + stride], shared_best[threadIdx.x])) {
        shared_best[threadIdx.x] = shared_best[threadIdx.x + stride];
      }
      shared_above[threadIdx.x] += shared_above[threadIdx.x + stride];
      shared_invalid[threadIdx.x] |= shared_invalid[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    HeadResult r;
    r.best_score = shared_best[0].score;
    r.best_position = shared_best[0].position;
    r.best_slot = shared_best[0].slot;
    r.count_at_or_above_hi = shared_above[0];
    r.invalid = shared_invalid[0];
    results[blockIdx.x] = r;
  }
}

// One thread per head: the contract's swap-remove (common/kv/swap_remove.h) in the given order.
__global__ void EvictKernel(const EvictTask* tasks, uint32_t num_tasks, const uint32_t* slots,
                            uint32_t* evicted_positions) {
  const uint32_t h = blockIdx.x * blockDim.x + threadIdx.x;
  if (h >= num_tasks) return;
  const EvictTask t = tasks[h];
  kv::SwapRemoveEntries(slots + t.slot_offset, t.k, t.n, t.positions, t.scores, evicted_positions + t.slot_offset);
}

// One thread per (head, column k): A_k = Horner over rows q >= k. Threads of a warp read consecutive
// columns of the same row, so loads are coalesced.
__global__ void BulkScoreKernel(const BulkHeadTask* tasks, const void* input, kv::ScoreDType dtype, uint32_t P,
                                uint32_t first_position, uint32_t uses_scores, uint32_t sinks,
                                uint32_t recent, unsigned long long* keys, uint32_t* values,
                                uint32_t* invalid) {
  const uint32_t h = blockIdx.y;
  const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
  if (k >= P) return;
  const BulkHeadTask t = tasks[h];
  float a = 0.0f;
  if (uses_scores) {
    for (uint32_t q = k; q < P; ++q) {
      const float v = LoadValue(input, dtype, t.input_offset + uint64_t{q} * P + k);
      if (!Valid(v)) atomicOr(invalid, 1u);
      a = __fadd_rn(__fmul_rn(t.alpha, a), v);
    }
  }
  const uint32_t position = first_position + k;
  t.scores[k] = a;
  t.positions[k] = position;
  const bool is_protected = position < sinks || (recent > 0 && k + recent >= P);
  // Scores are >= 0, so their bit patterns order like the values (+0 for -0 keeps that true).
  const uint32_t bits = uses_scores ? (a == 0.0f ? 0u : __float_as_uint(a)) : 0u;
  keys[uint64_t{h} * P + k] = is_protected ? ~0ull : ((unsigned long long)bits << 32) | position;
  values[uint64_t{h} * P + k] = k;
}

__global__ void SegmentOffsetsKernel(uint32_t num_segments, uint32_t P, int* offsets) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= num_segments) offsets[i] = static_cast<int>(i * P);
}

// Grow-only device buffer.
struct Scratch {
  void* pointer = nullptr;
  size_t bytes = 0;
  cudaError_t Reserve(size_t needed) {
    if (needed <= bytes) return cudaSuccess;
    cudaFree(pointer);
    pointer = nullptr;
    bytes = 0;
    cudaError_t err = cudaMalloc(&pointer, needed);
    if (err == cudaSuccess) bytes = needed;
    return err;
  }
  ~Scratch() { cudaFree(pointer); }
};

}  // namespace

struct Context {
  cudaStream_t stream = nullptr;
  Scratch input, tasks, results, slots, positions, keys, keys_sorted, values, values_sorted, offsets, temp, flag;
};

bool Available(std::string* reason) {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    *reason = cudaGetErrorString(err);
    cudaGetLastError();
    return false;
  }
  if (count == 0) {
    *reason = "no CUDA device";
    return false;
  }
  return true;
}

int Malloc(void** device_pointer, size_t bytes, std::string* error) {
  cudaError_t err = cudaMalloc(device_pointer, bytes);
  if (err != cudaSuccess) return Fail(err, error);
  err = cudaMemset(*device_pointer, 0, bytes);
  return err == cudaSuccess ? 0 : Fail(err, error);
}

void Free(void* device_pointer) { cudaFree(device_pointer); }

int CopyToDevice(void* dst, const void* src, size_t bytes, std::string* error) {
  cudaError_t err = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
  return err == cudaSuccess ? 0 : Fail(err, error);
}

int CopyToHost(void* dst, const void* src, size_t bytes, std::string* error) {
  cudaError_t err = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
  return err == cudaSuccess ? 0 : Fail(err, error);
}

int CopyRows(void* dst, size_t dst_stride, const void* src, size_t src_stride, size_t row_bytes, size_t rows,
             std::string* error) {
  if (rows == 0 || row_bytes == 0) return 0;
  cudaError_t err = cudaMemcpy2D(dst, dst_stride, src, src_stride, row_bytes, rows, cudaMemcpyDeviceToDevice);
  return err == cudaSuccess ? 0 : Fail(err, error);
}

Context* CreateContext() {
  Context* context = new Context();
  if (cudaStreamCreateWithFlags(&context->stream, cudaStreamNonBlocking) != cudaSuccess) {
    cudaGetLastError();
    context->stream = nullptr;
  }
  return context;
}

void DestroyContext(Context* context) {
  if (context == nullptr) return;
  if (context->stream != nullptr) cudaStreamDestroy(context->stream);
  delete context;
}

int RunTokenStep(Context* c, const HeadTask* tasks, uint32_t num_tasks, const void* input, size_t input_bytes,
                 kv::ScoreDType dtype, void* const* wait_events, uint32_t num_wait_events, HeadResult* results,
                 std::string* error) {
  if (num_tasks == 0) return 0;
  cudaError_t err;
  for (uint32_t i = 0; i < num_wait_events; ++i) {
    if ((err = cudaStreamWaitEvent(c->stream, static_cast<cudaEvent_t>(wait_events[i]), 0)) != cudaSuccess) {
      return Fail(err, error);
    }
  }
  if ((err = c->input.Reserve(input_bytes + 16)) != cudaSuccess) return Fail(err, error);
  if ((err = c->tasks.Reserve(num_tasks * sizeof(HeadTask))) != cudaSuccess) return Fail(err, error);
  if ((err = c->results.Reserve(num_tasks * sizeof(HeadResult))) != cudaSuccess) return Fail(err, error);
  if (input_bytes > 0) cudaMemcpyAsync(c->input.pointer, input, input_bytes, cudaMemcpyHostToDevice, c->stream);
  cudaMemcpyAsync(c->tasks.pointer, tasks, num_tasks * sizeof(HeadTask), cudaMemcpyHostToDevice, c->stream);
  TokenStepKernel<<<num_tasks, kThreads, 0, c->stream>>>(static_cast<const HeadTask*>(c->tasks.pointer),
                                                         c->input.pointer, dtype,
                                                         static_cast<HeadResult*>(c->results.pointer));
  cudaMemcpyAsync(results, c->results.pointer, num_tasks * sizeof(HeadResult), cudaMemcpyDeviceToHost, c->stream);
  err = cudaStreamSynchronize(c->stream);
  if (err == cudaSuccess) err = cudaGetLastError();
  return err == cudaSuccess ? 0 : Fail(err, error);
}

int ApplyEvictions(Context* c, const EvictTask* tasks, uint32_t num_tasks, const uint32_t* slots,
                   uint32_t total_slots, uint32_t* evicted_positions, std::string* error) {
  if (num_tasks == 0 || total_slots == 0) return 0;
  cudaError_t err;
  if ((err = c->tasks.Reserve(num_tasks * sizeof(EvictTask))) != cudaSuccess) return Fail(err, error);
  if ((err = c->slots.Reserve(total_slots * sizeof(uint32_t))) != cudaSuccess) return Fail(err, error);
  if ((err = c->positions.Reserve(total_slots * sizeof(uint32_t))) != cudaSuccess) return Fail(err, error);
  cudaMemcpyAsync(c->tasks.pointer, tasks, num_tasks * sizeof(EvictTask), cudaMemcpyHostToDevice, c->stream);
  cudaMemcpyAsync(c->slots.pointer, slots, total_slots * sizeof(uint32_t), cudaMemcpyHostToDevice, c->stream);
  EvictKernel<<<(num_tasks + 127) / 128, 128, 0, c->stream>>>(static_cast<const EvictTask*>(c->tasks.pointer),
                                                              num_tasks, static_cast<const uint32_t*>(c->slots.pointer),
                                                              static_cast<uint32_t*>(c->positions.pointer));
  cudaMemcpyAsync(evicted_positions, c->positions.pointer, total_slots * sizeof(uint32_t), cudaMemcpyDeviceToHost,
                  c->stream);
  err = cudaStreamSynchronize(c->stream);
  if (err == cudaSuccess) err = cudaGetLastError();
  return err == cudaSuccess ? 0 : Fail(err, error);
}

int RunBulkPrefill(Context* c, const BulkHeadTask* tasks, uint32_t num_tasks, const void* input, size_t input_bytes,
                   kv::ScoreDType dtype, uint32_t P, uint32_t first_position, uint32_t uses_scores, uint32_t sinks,
                   uint32_t recent, uint32_t k, uint32_t* victim_slots, uint32_t* invalid, std::string* error) {
  const size_t items = size_t{num_tasks} * P;
  cudaError_t err;
  if ((err = c->input.Reserve(input_bytes + 16)) != cudaSuccess) return Fail(err, error);
  if ((err = c->tasks.Reserve(num_tasks * sizeof(BulkHeadTask))) != cudaSuccess) return Fail(err, error);
  if ((err = c->keys.Reserve(items * 8)) != cudaSuccess) return Fail(err, error);
  if ((err = c->keys_sorted.Reserve(items * 8)) != cudaSuccess) return Fail(err, error);
  if ((err = c->values.Reserve(items * 4)) != cudaSuccess) return Fail(err, error);
  if ((err = c->values_sorted.Reserve(items * 4)) != cudaSuccess) return Fail(err, error);
  if ((err = c->offsets.Reserve((num_tasks + 1) * sizeof(int))) != cudaSuccess) return Fail(err, error);
  if ((err = c->flag.Reserve(sizeof(uint32_t))) != cudaSuccess) return Fail(err, error);
  cudaMemcpyAsync(c->input.pointer, input, input_bytes, cudaMemcpyHostToDevice, c->stream);
  cudaMemcpyAsync(c->tasks.pointer, tasks, num_tasks * sizeof(BulkHeadTask), cudaMemcpyHostToDevice, c->stream);
  cudaMemsetAsync(c->flag.pointer, 0, sizeof(uint32_t), c->stream);
  auto* keys = static_cast<unsigned long long*>(c->keys.pointer);
  auto* keys_sorted = static_cast<unsigned long long*>(c->keys_sorted.pointer);
  auto* values = static_cast<uint32_t*>(c->values.pointer);
  auto* values_sorted = static_cast<uint32_t*>(c->values_sorted.pointer);
  auto* offsets = static_cast<int*>(c->offsets.pointer);
  dim3 grid((P + kThreads - 1) / kThreads, num_tasks);
  BulkScoreKernel<<<grid, kThreads, 0, c->stream>>>(static_cast<const BulkHeadTask*>(c->tasks.pointer),
                                                    c->input.pointer, dtype, P, first_position, uses_scores, sinks,
                                                    recent, keys, values, static_cast<uint32_t*>(c->flag.pointer));
  SegmentOffsetsKernel<<<(num_tasks + 1 + 255) / 256, 256, 0, c->stream>>>(num_tasks, P, offsets);
  cudaMemcpyAsync(invalid, c->flag.pointer, sizeof(uint32_t), cudaMemcpyDeviceToHost, c->stream);
  if (k > 0) {
    size_t temp_bytes = 0;
    cub::DeviceSegmentedRadixSort::SortPairs(nullptr, temp_bytes, keys, keys_sorted, values, values_sorted,
                                             static_cast<int>(items), static_cast<int>(num_tasks), offsets,
                                             offsets + 1, 0, 64, c->stream);
    if ((err = c->temp.Reserve(temp_bytes)) != cudaSuccess) return Fail(err, error);
    cub::DeviceSegmentedRadixSort::SortPairs(c->temp.pointer, temp_bytes, keys, keys_sorted, values,
                                             values_sorted, static_cast<int>(items), static_cast<int>(num_tasks),
                                             offsets, offsets + 1, 0, 64, c->stream);
    // The first k of every segment are the victims.
    err = cudaMemcpy2DAsync(victim_slots, k * sizeof(uint32_t), values_sorted, size_t{P} * sizeof(uint32_t),
                            k * sizeof(uint32_t), num_tasks, cudaMemcpyDeviceToHost, c->stream);
    if (err != cudaSuccess) return Fail(err, error);
  }
  err = cudaStreamSynchronize(c->stream);
  if (err == cudaSuccess) err = cudaGetLastError();
  return err == cudaSuccess ? 0 : Fail(err, error);
}

}  // namespace a2sf::cachemgr::cuda
