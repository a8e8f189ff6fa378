// CUDA implementation of cuda_forward.h. A step's work is queued on its DeviceBatch's stream: the
// rows' descriptors go up in one copy, every kernel and product of the step follows (each over all
// rows), the logits and scores come back in one copy each into pinned staging, and the host waits
// once. Sequences keep only their KV caches (and a stream for evictions).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "common/kv/swap_remove.h"
#include "worker/engine/cuda/cuda_forward.h"

namespace a2sf::worker::cuda {

namespace {

// cuBLAS is opened on first use instead of being linked: libcublasLt carries ~94 KB of static
// thread-local storage, which glibc then reserves in every new thread's stack, and libraries that
// start threads with small fixed stacks (civetweb, behind the Prometheus endpoint) fail to create
// them. Opened with dlopen, its TLS is allocated on demand instead.
struct Blas {
  cublasStatus_t (*create)(cublasHandle_t*);
  cublasStatus_t (*destroy)(cublasHandle_t);
  cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t);
  cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void*,
                            const void*, cudaDataType, int, const void*, cudaDataType, int, const void*, void*,
                            cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
  const char* (*status_string)(cublasStatus_t);
};

#define A2SF_STR2(x) #x
#define A2SF_STR(x) A2SF_STR2(x)

const Blas* LoadBlas(std::string* error) {
  static Blas* blas = nullptr;
  static std::string* load_error = new std::string();
  static std::once_flag once;
  std::call_once(once, [] {
    const char* candidates[] = {"libcublas.so." A2SF_STR(CUBLAS_VER_MAJOR), "libcublas.so",
                                "/usr/local/cuda/lib64/libcublas.so." A2SF_STR(CUBLAS_VER_MAJOR)};
    void* library = nullptr;
    for (const char* name : candidates) {
      if ((library = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
    }
    if (library == nullptr) {
      *load_error = std::string("cannot load cuBLAS (libcublas.so." A2SF_STR(CUBLAS_VER_MAJOR) "): ") + dlerror();
      return;
    }
    auto* b = new Blas();
    b->create = reinterpret_cast<decltype(b->create)>(dlsym(library, "cublasCreate_v2"));
    b->destroy = reinterpret_cast<decltype(b->destroy)>(dlsym(library, "cublasDestroy_v2"));
    b->set_stream = reinterpret_cast<decltype(b->set_stream)>(dlsym(library, "cublasSetStream_v2"));
    b->gemm_ex = reinterpret_cast<decltype(b->gemm_ex)>(dlsym(library, "cublasGemmEx"));
    b->status_string = reinterpret_cast<decltype(b->status_string)>(dlsym(library, "cublasGetStatusString"));
    if (!b->create || !b->destroy || !b->set_stream || !b->gemm_ex || !b->status_string) {
      *load_error = "cuBLAS lacks an expected entry point (cublasCreate_v2, cublasGemmEx, ...)";
      delete b;
      return;
    }
    blas = b;
  });
  if (blas == nullptr) *error = *load_error;
  return blas;
}

}  // namespace

// Weight types as in worker/model/weights.h.
enum : int { kF32 = 0, kF16 = 1, kBF16 = 2, kQ8_0 = 3, kQ4_0 = 4 };

struct DeviceMatrix {
  int type = kF32;
  const uint8_t* data = nullptr;
  int rows = 0, cols = 0;
};

struct DeviceWeights {
  struct Layer {
    const float* rms_att;
    DeviceMatrix wq, wk, wv, wo;
    const float* rms_ffn;
    DeviceMatrix w1, w2, w3;
  };
  Dims dims;
  DeviceMatrix embedding;
  std::vector<Layer> layers;
  const float* rms_final = nullptr;
  DeviceMatrix classifier;
  size_t bytes = 0;
  std::vector<void*> allocations;
};

struct Sequence {
  const DeviceWeights* w = nullptr;
  int capacity = 0;
  bool capture = false;
  cudaStream_t stream = nullptr;             // SwapRemoveEntries' work
  float *keys = nullptr, *values = nullptr;  // [n_layers * n_kv_heads][capacity][head_dim]
  float* attention = nullptr;                // [n_layers][q_dim] of the last captured row, if capture
  uint32_t* victims = nullptr;               // an eviction's victim slots, victim_capacity values
  size_t victim_capacity = 0;
  float* score_target = nullptr;             // SetScoreTarget's buffer, else null
  cudaEvent_t scores_written = nullptr;      // recorded after the target's scores of each step, if set
  std::vector<void*> allocations;
};

namespace {

// A row as the kernels read it: one per row of the step, uploaded at its start.
struct RowDesc {
  int token, position;
  int slot;      // the slot its key and value go to; it attends over slot + 1 entries
  int capacity;  // of its sequence's cache
  float *keys, *values;  // its sequence's cache
  float* att;            // [n_heads][slot + 1], in the batch's workspace
  float* scores;         // [n_layers][n_kv_heads][slot + 1], in the batch's workspace
};

// Device and pinned host allocations that grow together and are freed together.
struct Buffers {
  std::vector<void*> device, pinned;
  void Free() {
    for (void* p : device) cudaFree(p);
    for (void* p : pinned) cudaFreeHost(p);
    device.clear();
    pinned.clear();
  }
};

}  // namespace

struct DeviceBatch {
  const DeviceWeights* w = nullptr;
  const Blas* api = nullptr;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  // For row_capacity rows: activations [rows][...] (xb and xb2 rows of max(dim, q_dim), x16 of the
  // widest product input, in the weights' 16-bit type), the rows' descriptors, the logits and their
  // pinned host staging.
  int row_capacity = 0;
  float *x = nullptr, *xb = nullptr, *xb2 = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *hb = nullptr,
        *hb2 = nullptr, *logits = nullptr, *host_logits = nullptr;
  uint16_t* x16 = nullptr;
  RowDesc* rows = nullptr;
  Buffers row_buffers;
  // For entry_capacity attended entries summed over the rows (row r's at entry_offsets[r]): softmax
  // rows ([n_heads] per entry), scores ([n_layers][n_kv_heads] per entry) and their pinned staging.
  size_t entry_capacity = 0;
  float *att = nullptr, *scores = nullptr, *host_scores = nullptr;
  Buffers entry_buffers;
  std::vector<RowDesc> host_rows;  // the step's descriptors, as uploaded
  std::vector<size_t> entry_offsets;
};

namespace {

int CudaFail(cudaError_t e, std::string* error) {
  *error = std::string("CUDA: ") + cudaGetErrorString(e);
  return int(e);
}

int BlasFail(const Blas* api, cublasStatus_t s, std::string* error) {
  *error = std::string("cuBLAS: ") + api->status_string(s);
  return 1000 + int(s);
}

// The first CUDA or cuBLAS error of a sequence of calls; later ones are ignored.
struct Failure {
  cudaError_t cuda = cudaSuccess;
  cublasStatus_t blas = CUBLAS_STATUS_SUCCESS;
  bool any() const { return cuda != cudaSuccess || blas != CUBLAS_STATUS_SUCCESS; }
  void Note(cudaError_t e) {
    if (!any()) cuda = e;
  }
  void Note(cublasStatus_t s) {
    if (!any()) blas = s;
  }
  int Report(const Blas* api, std::string* error) const {
    return cuda != cudaSuccess ? CudaFail(cuda, error) : BlasFail(api, blas, error);
  }
};

// `count` T from `allocate`: cudaMalloc, or cudaMallocHost for page-locked host memory (so that a
// step's copies back are one DMA each); recorded in `allocations` for freeing.
template <typename T>
cudaError_t Alloc(T** out, size_t count, std::vector<void*>* allocations,
                  cudaError_t (*allocate)(void**, size_t) = cudaMalloc) {
  void* p = nullptr;
  const cudaError_t e = allocate(&p, count * sizeof(T));
  if (e == cudaSuccess) {
    allocations->push_back(p);
    *out = static_cast<T*>(p);
  }
  return e;
}

__device__ float WarpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ float WarpMax(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Block-wide reductions; every thread gets the result. `partial` holds one value per warp.
__device__ float BlockSum(float v, float* partial) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = WarpSum(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = threadIdx.x < warps ? partial[threadIdx.x] : 0.0f;
  if (warp == 0) v = WarpSum(v);
  if (threadIdx.x == 0) partial[0] = v;
  __syncthreads();
  return partial[0];
}

__device__ float BlockMax(float v, float* partial) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = threadIdx.x < warps ? partial[threadIdx.x] : -INFINITY;
  if (warp == 0) v = WarpMax(v);
  if (threadIdx.x == 0) partial[0] = v;
  __syncthreads();
  return partial[0];
}

// One block per row of n values: out = x * weight / sqrt(mean(x^2) + eps); out may be x.
__global__ void RmsNormKernel(float* out, const float* x, const float* weight, int n, float eps) {
  __shared__ float partial[32];
  x += size_t(blockIdx.x) * n;
  out += size_t(blockIdx.x) * n;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += x[i] * x[i];
  ss = BlockSum(ss, partial);
  const float scale = 1.0f / sqrtf(ss / n + eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = weight[i] * (scale * x[i]);
}

// Row blockIdx.y: rotates pairs (2i, 2i+1) of q [rows][q_dim] and k [rows][kv_dim] by
// position * theta^(-2j/head_dim), j the pair within its head.
__global__ void RopeKernel(float* q, float* k, const RowDesc* rows, int q_dim, int kv_dim, int head_dim,
                           float theta) {
  const int r = blockIdx.y, pair = blockIdx.x * blockDim.x + threadIdx.x;
  const int q_pairs = q_dim / 2;
  if (pair >= q_pairs + kv_dim / 2) return;
  float* vec = pair < q_pairs ? q + size_t(r) * q_dim : k + size_t(r) * kv_dim;
  const int i = 2 * (pair < q_pairs ? pair : pair - q_pairs);
  const int j = (i % head_dim) / 2;
  const float freq = 1.0f / powf(theta, float(2 * j) / float(head_dim));
  const float angle = float(rows[r].position) * freq;
  const float c = cosf(angle), s = sinf(angle);
  const float a = vec[i], b = vec[i + 1];
  vec[i] = a * c - b * s;
  vec[i + 1] = a * s + b * c;
}

// Row blockIdx.y: its key and value (of k, v [rows][kv_dim]) into its slot of every KV head.
__global__ void StoreKvKernel(const float* k, const float* v, const RowDesc* rows, int layer, int n_kv_heads,
                              int head_dim) {
  const int r = blockIdx.y, kv_dim = n_kv_heads * head_dim, i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= kv_dim) return;
  const RowDesc& row = rows[r];
  const int g = i / head_dim, d = i % head_dim;
  const size_t offset = ((size_t(layer) * n_kv_heads + g) * row.capacity + row.slot) * head_dim + d;
  row.keys[offset] = k[size_t(r) * kv_dim + i];
  row.values[offset] = v[size_t(r) * kv_dim + i];
}

// Block (query head h, row r): softmax(q . K / sqrt(hd)) over the row's slot + 1 entries of its
// sequence's cache, kept in the row's `att`, and the weighted sum of V into out [rows][q_dim]. The
// rows of a chunk read only slots up to their own, all stored before this launch: causal.
__global__ void AttentionKernel(const float* q, const RowDesc* rows, float* out, int layer, int n_kv_heads, int group,
                                int head_dim, float scale) {
  __shared__ float partial[32];
  const int h = blockIdx.x, g = h / group, r = blockIdx.y;
  const RowDesc& row = rows[r];
  const int n = row.slot + 1;
  const size_t q_dim = size_t(gridDim.x) * head_dim;
  const float* qh = q + size_t(r) * q_dim + size_t(h) * head_dim;
  const size_t base = (size_t(layer) * n_kv_heads + g) * row.capacity * head_dim;
  const float* k = row.keys + base;
  const float* v = row.values + base;
  float* a = row.att + size_t(h) * n;
  float local_max = -INFINITY;
  for (int t = threadIdx.x; t < n; t += blockDim.x) {
    float dot = 0.0f;
    for (int d = 0; d < head_dim; ++d) dot += qh[d] * k[size_t(t) * head_dim + d];
    dot *= scale;
    a[t] = dot;
    local_max = fmaxf(local_max, dot);
  }
  const float max = BlockMax(local_max, partial);
  float local_sum = 0.0f;
  for (int t = threadIdx.x; t < n; t += blockDim.x) {
    const float e = expf(a[t] - max);
    a[t] = e;
    local_sum += e;
  }
  const float sum = BlockSum(local_sum, partial);
  for (int t = threadIdx.x; t < n; t += blockDim.x) a[t] /= sum;
  __syncthreads();
  for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float acc = 0.0f;
    for (int t = 0; t < n; ++t) acc += a[t] * v[size_t(t) * head_dim + d];
    out[size_t(r) * q_dim + size_t(h) * head_dim + d] = acc;
  }
}

// Row blockIdx.y: s_g[t] = sum over the group's heads, in head order (engine.cc's order), of their
// softmax rows, into the row's scores of `layer`.
__global__ void GroupSumKernel(const RowDesc* rows, int layer, int n_kv_heads, int group) {
  const RowDesc& row = rows[blockIdx.y];
  const int n = row.slot + 1, i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_kv_heads * n) return;
  const int g = i / n, t = i % n;
  const float* first = row.att + size_t(g) * group * n;
  float s = first[t];
  for (int j = 1; j < group; ++j) s += first[size_t(j) * n + t];
  row.scores[size_t(layer) * n_kv_heads * n + i] = s;
}

__global__ void AddKernel(float* x, const float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += y[i];
}

__global__ void SwiGluKernel(float* gate, const float* up, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

// One block per head: the contract's swap-remove on the head's keys and values. Each move completes
// before the next (a later move may read the slot an earlier one wrote).
__global__ void SwapRemoveKernel(float* keys, float* values, const uint32_t* slots, uint32_t per_head,
                                 uint32_t entries, int capacity, int head_dim) {
  const size_t head = blockIdx.x;
  kv::SwapRemove(
      slots + head * per_head, per_head, entries, [](uint32_t, uint32_t) {},
      [&](uint32_t to, uint32_t from) {
        const size_t d = (head * capacity + to) * head_dim, s = (head * capacity + from) * head_dim;
        for (int i = threadIdx.x; i < head_dim; i += blockDim.x) {
          keys[d + i] = keys[s + i];
          values[d + i] = values[s + i];
        }
        __syncthreads();
      });
}

__device__ float BlockScale(const uint8_t* block) { return __half2float(*reinterpret_cast<const __half*>(block)); }

// The integer weight j (0..31) of a GGUF block: q8_0 an int8; q4_0 a nibble less 8, low nibbles
// elements 0..15, high nibbles 16..31.
template <int kType>
__device__ int QuantAt(const uint8_t* block, int j) {
  if (kType == kQ8_0) return int8_t(block[2 + j]);
  return int(j < 16 ? (block[2 + j] & 0x0f) : (block[2 + j - 16] >> 4)) - 8;
}

// Weight (row, c) of a matrix of any type, as a float (the embedding lookup).
__device__ float WeightAt(const DeviceMatrix m, int row, int c) {
  const size_t i = size_t(row) * m.cols + c;
  switch (m.type) {
    case kF32:
      return reinterpret_cast<const float*>(m.data)[i];
    case kF16:
      return __half2float(reinterpret_cast<const __half*>(m.data)[i]);
    case kBF16:
      return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(m.data)[i]);
    case kQ8_0: {
      const uint8_t* block = m.data + (i / 32) * 34;
      return BlockScale(block) * float(QuantAt<kQ8_0>(block, c % 32));
    }
    default: {
      const uint8_t* block = m.data + (i / 32) * 18;
      return BlockScale(block) * float(QuantAt<kQ4_0>(block, c % 32));
    }
  }
}

// Row blockIdx.y: its token's embedding into out [rows][cols].
__global__ void EmbeddingKernel(const DeviceMatrix m, const RowDesc* rows, float* out) {
  const int r = blockIdx.y, token = rows[r].token;
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < m.cols; c += gridDim.x * blockDim.x) {
    out[size_t(r) * m.cols + c] = WeightAt(m, token, c);
  }
}

__global__ void ToHalfKernel(const float* x, uint16_t* out, int n, bool bf16) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16(x[i])) : __half_as_ushort(__float2half(x[i]));
}

// Vectors a q8_0/q4_0 product takes per pass over the weights (accumulators in registers).
constexpr int kQuantVectors = 8;

// y[v][row] = W x[v] for GGUF q8_0 / q4_0 blocks, vectors [blockIdx.y * kVectors, + kVectors) of n:
// one warp per row, lanes over the row's blocks; each block is read and unpacked once for all the
// vectors, its integer-weighted sum of each fp32 vector scaled by its fp16 d, the warp sums the lanes.
// A vector gets the same operations in the same order whatever n is.
template <int kType, int kVectors>
__global__ void QuantMatMulKernel(const DeviceMatrix m, const float* x, int n, float* y) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= m.rows) return;  // whole warps: the shuffles below see all 32 lanes
  const int first = blockIdx.y * kVectors, count = min(kVectors, n - first);
  const int blocks = m.cols / 32;
  const size_t block_bytes = kType == kQ8_0 ? 34 : 18;
  const uint8_t* base = m.data + size_t(row) * blocks * block_bytes;
  const float* xs = x + size_t(first) * m.cols;
  float acc[kVectors] = {};
  for (int b = lane; b < blocks; b += 32) {
    const uint8_t* block = base + size_t(b) * block_bytes;
    float sum[kVectors] = {};
    for (int j = 0; j < 32; ++j) {
      const float q = float(QuantAt<kType>(block, j));
#pragma unroll
      for (int v = 0; v < kVectors; ++v) {
        if (v < count) sum[v] += q * xs[size_t(v) * m.cols + b * 32 + j];
      }
    }
    const float d = BlockScale(block);
#pragma unroll
    for (int v = 0; v < kVectors; ++v) acc[v] += d * sum[v];
  }
#pragma unroll
  for (int v = 0; v < kVectors; ++v) {
    const float total = WarpSum(acc[v]);
    if (lane == 0 && v < count) y[size_t(first + v) * m.rows + row] = total;
  }
}

int Blocks(int n, int threads) { return (n + threads - 1) / threads; }

template <int kType>
void LaunchQuantMatMul(cudaStream_t stream, const DeviceMatrix& w, const float* x, int n, float* y) {
  constexpr int kWarps = 8;
  if (n == 1) {
    QuantMatMulKernel<kType, 1><<<dim3(Blocks(w.rows, kWarps), 1), 32 * kWarps, 0, stream>>>(w, x, n, y);
  } else {
    QuantMatMulKernel<kType, kQuantVectors>
        <<<dim3(Blocks(w.rows, kWarps), Blocks(n, kQuantVectors)), 32 * kWarps, 0, stream>>>(w, x, n, y);
  }
}

// y[n][rows] = W x[n][cols] for any weight type, queued on `stream` (the handle's); `x16` holds
// n * cols values of scratch. Row-major W is column-major W^T with leading dimension cols, and the
// row-major [n][cols] vectors are a column-major cols x n matrix: one GEMM, W^T transposed times X,
// for all n vectors (f16/bf16: the vectors rounded to the weights' type, GemmEx taking A and B of
// one type; fp32 accumulation for all three).
cublasStatus_t MatMul(const Blas* api, cublasHandle_t blas, cudaStream_t stream, const DeviceMatrix& w, const float* x,
                      int n, uint16_t* x16, float* y) {
  if (w.type == kQ8_0) {
    LaunchQuantMatMul<kQ8_0>(stream, w, x, n, y);
    return CUBLAS_STATUS_SUCCESS;
  }
  if (w.type == kQ4_0) {
    LaunchQuantMatMul<kQ4_0>(stream, w, x, n, y);
    return CUBLAS_STATUS_SUCCESS;
  }
  const void* b = x;
  cudaDataType t = CUDA_R_32F;
  if (w.type == kF16 || w.type == kBF16) {
    const bool bf16 = w.type == kBF16;
    ToHalfKernel<<<Blocks(n * w.cols, 256), 256, 0, stream>>>(x, x16, n * w.cols, bf16);
    t = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    b = x16;
  }
  const float one = 1.0f, zero = 0.0f;
  return api->gemm_ex(blas, CUBLAS_OP_T, CUBLAS_OP_N, w.rows, n, w.cols, &one, w.data, t, w.cols, b, t, w.cols, &zero,
                      y, CUDA_R_32F, w.rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

}  // namespace

int CountDevices(int* count, std::string* error) {
  *count = 0;
  const cudaError_t e = cudaGetDeviceCount(count);
  if (e != cudaSuccess) return CudaFail(e, error);
  if (*count == 0) return *error = "no CUDA device", -1;
  return 0;
}

int UploadWeights(const Dims& dims, const HostMatrix& token_embedding, const HostLayer* layers, const float* rms_final,
                  const HostMatrix& classifier, DeviceWeights** out, std::string* error) {
  auto* w = new DeviceWeights();
  w->dims = dims;
  const size_t dim = dims.dim;
  auto upload_bytes = [&](const void* host, size_t bytes, const uint8_t** device) -> cudaError_t {
    uint8_t* p = nullptr;
    cudaError_t e = Alloc(&p, bytes, &w->allocations);
    if (e == cudaSuccess) e = cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice);
    w->bytes += bytes;
    *device = p;
    return e;
  };
  auto upload = [&](const float* host, size_t count, const float** device) -> cudaError_t {
    const uint8_t* p = nullptr;
    const cudaError_t e = upload_bytes(host, count * sizeof(float), &p);
    *device = reinterpret_cast<const float*>(p);
    return e;
  };
  auto matrix = [&](const HostMatrix& h, DeviceMatrix* d) -> cudaError_t {
    d->type = h.type;
    d->rows = int(h.rows);
    d->cols = int(h.cols);
    return upload_bytes(h.data, h.bytes, &d->data);
  };
  cudaError_t e = matrix(token_embedding, &w->embedding);
  w->layers.resize(dims.n_layers);
  for (int l = 0; l < dims.n_layers && e == cudaSuccess; ++l) {
    const HostLayer& h = layers[l];
    DeviceWeights::Layer& d = w->layers[l];
    if (e == cudaSuccess) e = upload(h.rms_att, dim, &d.rms_att);
    if (e == cudaSuccess) e = upload(h.rms_ffn, dim, &d.rms_ffn);
    const HostMatrix* from[] = {&h.wq, &h.wk, &h.wv, &h.wo, &h.w1, &h.w2, &h.w3};
    DeviceMatrix* to[] = {&d.wq, &d.wk, &d.wv, &d.wo, &d.w1, &d.w2, &d.w3};
    for (int i = 0; i < 7 && e == cudaSuccess; ++i) e = matrix(*from[i], to[i]);
  }
  if (e == cudaSuccess) e = upload(rms_final, dim, &w->rms_final);
  if (e == cudaSuccess) {
    // A classifier tied to the embedding is the same matrix: upload it once.
    if (classifier.data == token_embedding.data) {
      w->classifier = w->embedding;
    } else {
      e = matrix(classifier, &w->classifier);
    }
  }
  if (e != cudaSuccess) {
    FreeWeights(w);
    return CudaFail(e, error);
  }
  *out = w;
  return 0;
}

void FreeWeights(DeviceWeights* weights) {
  if (weights == nullptr) return;
  for (void* p : weights->allocations) cudaFree(p);
  delete weights;
}

size_t WeightBytes(const DeviceWeights* weights) { return weights->bytes; }

int CreateSequence(const DeviceWeights* weights, int capacity, bool capture_attention_outputs, Sequence** out,
                   std::string* error) {
  // The steps need cuBLAS: a machine without it learns so here, not at the first token.
  if (LoadBlas(error) == nullptr) return -1;
  auto* s = new Sequence();
  s->w = weights;
  s->capacity = capacity;
  s->capture = capture_attention_outputs;
  const Dims& d = weights->dims;
  const size_t q_dim = size_t(d.n_heads) * d.head_dim, heads = size_t(d.n_layers) * d.n_kv_heads;
  cudaError_t e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
  if (e == cudaSuccess && capture_attention_outputs) e = Alloc(&s->attention, d.n_layers * q_dim, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->keys, heads * capacity * d.head_dim, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->values, heads * capacity * d.head_dim, &s->allocations);
  if (e != cudaSuccess) {
    DestroySequence(s);
    return CudaFail(e, error);
  }
  *out = s;
  return 0;
}

void DestroySequence(Sequence* s) {
  if (s == nullptr) return;
  if (s->stream != nullptr) cudaStreamSynchronize(s->stream);
  for (void* p : s->allocations) cudaFree(p);
  if (s->victims != nullptr) cudaFree(s->victims);
  if (s->stream != nullptr) cudaStreamDestroy(s->stream);
  delete s;
}

int CreateBatch(const DeviceWeights* weights, DeviceBatch** out, std::string* error) {
  const Blas* api = LoadBlas(error);
  if (api == nullptr) return -1;
  auto* b = new DeviceBatch();
  b->w = weights;
  b->api = api;
  const cudaError_t e = cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    DestroyBatch(b);
    return CudaFail(e, error);
  }
  cublasStatus_t s = api->create(&b->blas);
  if (s == CUBLAS_STATUS_SUCCESS) s = api->set_stream(b->blas, b->stream);
  if (s != CUBLAS_STATUS_SUCCESS) {
    const int code = BlasFail(api, s, error);
    DestroyBatch(b);
    return code;
  }
  *out = b;
  return 0;
}

void DestroyBatch(DeviceBatch* b) {
  if (b == nullptr) return;
  if (b->stream != nullptr) cudaStreamSynchronize(b->stream);
  if (b->blas != nullptr) b->api->destroy(b->blas);
  b->row_buffers.Free();
  b->entry_buffers.Free();
  if (b->stream != nullptr) cudaStreamDestroy(b->stream);
  delete b;
}

namespace {

bool LastOfSequence(const BatchRow* rows, int n, int r) { return r == n - 1 || rows[r + 1].sequence != rows[r].sequence; }

int BadRow(int r, const std::string& why, std::string* error) {
  *error = "batch row " + std::to_string(r) + ": " + why;
  return -1;
}

// ForwardBatch's preconditions (see cuda_forward.h); -1 with the first broken one.
int CheckRows(const DeviceBatch& b, const BatchRow* rows, int n, std::string* error) {
  if (n < 1 || n > 65535) return *error = "a step takes 1 to 65535 rows, got " + std::to_string(n), -1;
  const int vocab = b.w->dims.vocab_size;
  for (int r = 0; r < n; ++r) {
    const BatchRow& row = rows[r];
    if (row.sequence == nullptr || row.sequence->w != b.w) return BadRow(r, "no sequence, or one of other weights", error);
    if (row.logits == nullptr || row.scores == nullptr) return BadRow(r, "no host logits or scores", error);
    if (row.token < 0 || row.token >= vocab) {
      return BadRow(r, "token " + std::to_string(row.token) + " outside [0, " + std::to_string(vocab) + ")", error);
    }
    if (row.position < 0) return BadRow(r, "negative position " + std::to_string(row.position), error);
    if (row.entries < 0 || row.entries >= row.sequence->capacity) {
      return BadRow(r, "slot " + std::to_string(row.entries) + " outside the cache's " +
                           std::to_string(row.sequence->capacity) + " entries",
                    error);
    }
    if (r > 0 && rows[r - 1].sequence == row.sequence) {
      if (row.entries != rows[r - 1].entries + 1) return BadRow(r, "a sequence's rows take consecutive slots", error);
      continue;
    }
    for (int p = 0; p < r; ++p) {
      if (rows[p].sequence == row.sequence) return BadRow(r, "a sequence's rows must be adjacent", error);
    }
  }
  return 0;
}

// Grows the per-row buffers to `n` rows (contents not kept). The stream is idle between steps.
cudaError_t ReserveRows(DeviceBatch* b, int n) {
  if (n <= b->row_capacity) return cudaSuccess;
  b->row_buffers.Free();
  b->row_capacity = 0;
  const Dims& d = b->w->dims;
  const size_t rows = size_t(n), q_dim = size_t(d.n_heads) * d.head_dim, kv_dim = size_t(d.n_kv_heads) * d.head_dim;
  const size_t wide = std::max<size_t>(d.dim, q_dim), widest = std::max<size_t>(wide, d.hidden_dim);
  std::vector<void*>* device = &b->row_buffers.device;
  cudaError_t e = Alloc(&b->x, rows * d.dim, device);
  if (e == cudaSuccess) e = Alloc(&b->xb, rows * wide, device);
  if (e == cudaSuccess) e = Alloc(&b->xb2, rows * wide, device);
  if (e == cudaSuccess) e = Alloc(&b->q, rows * q_dim, device);
  if (e == cudaSuccess) e = Alloc(&b->k, rows * kv_dim, device);
  if (e == cudaSuccess) e = Alloc(&b->v, rows * kv_dim, device);
  if (e == cudaSuccess) e = Alloc(&b->hb, rows * d.hidden_dim, device);
  if (e == cudaSuccess) e = Alloc(&b->hb2, rows * d.hidden_dim, device);
  if (e == cudaSuccess) e = Alloc(&b->logits, rows * d.vocab_size, device);
  if (e == cudaSuccess) e = Alloc(&b->x16, rows * widest, device);
  if (e == cudaSuccess) e = Alloc(&b->rows, rows, device);
  if (e == cudaSuccess) e = Alloc(&b->host_logits, rows * d.vocab_size, &b->row_buffers.pinned, cudaMallocHost);
  if (e != cudaSuccess) {
    b->row_buffers.Free();
    return e;
  }
  b->row_capacity = n;
  return cudaSuccess;
}

// Grows the per-entry buffers to at least `entries` (a quarter more, as a step's rows grow by one
// entry each step).
cudaError_t ReserveEntries(DeviceBatch* b, size_t entries) {
  if (entries <= b->entry_capacity) return cudaSuccess;
  b->entry_buffers.Free();
  b->entry_capacity = 0;
  const Dims& d = b->w->dims;
  const size_t capacity = std::max<size_t>(entries + entries / 4, 256);
  const size_t heads = size_t(d.n_layers) * d.n_kv_heads;
  cudaError_t e = Alloc(&b->att, size_t(d.n_heads) * capacity, &b->entry_buffers.device);
  if (e == cudaSuccess) e = Alloc(&b->scores, heads * capacity, &b->entry_buffers.device);
  if (e == cudaSuccess) e = Alloc(&b->host_scores, heads * capacity, &b->entry_buffers.pinned, cudaMallocHost);
  if (e != cudaSuccess) {
    b->entry_buffers.Free();
    return e;
  }
  b->entry_capacity = capacity;
  return cudaSuccess;
}

// The rows' descriptors, their entries packed one row after another in att and scores; queues their
// upload. Sets *max_entries to the most entries a row attends over.
cudaError_t UploadRows(DeviceBatch* b, const BatchRow* rows, int n, int* max_entries) {
  const Dims& d = b->w->dims;
  const size_t heads = size_t(d.n_layers) * d.n_kv_heads;
  b->host_rows.resize(n);
  b->entry_offsets.resize(n);
  size_t offset = 0;
  *max_entries = 0;
  for (int r = 0; r < n; ++r) {
    const BatchRow& row = rows[r];
    Sequence* s = row.sequence;
    b->host_rows[r] = {row.token,         row.position, row.entries, s->capacity, s->keys, s->values,
                       b->att + size_t(d.n_heads) * offset, b->scores + heads * offset};
    b->entry_offsets[r] = offset;
    offset += size_t(row.entries) + 1;
    *max_entries = std::max(*max_entries, row.entries + 1);
  }
  return cudaMemcpyAsync(b->rows, b->host_rows.data(), size_t(n) * sizeof(RowDesc), cudaMemcpyHostToDevice, b->stream);
}

// Layer l of the step for all n rows: the products once per matrix for all rows, attention per row.
void QueueLayer(DeviceBatch* b, int l, const BatchRow* rows, int n, int max_entries, Failure* f) {
  const DeviceWeights& w = *b->w;
  const Dims& d = w.dims;
  const DeviceWeights::Layer& L = w.layers[l];
  const int q_dim = d.n_heads * d.head_dim, kv_dim = d.n_kv_heads * d.head_dim, group = d.n_heads / d.n_kv_heads;
  cudaStream_t st = b->stream;
  auto matmul = [&](const DeviceMatrix& m, const float* x, float* y) {
    if (!f->any()) f->Note(MatMul(b->api, b->blas, st, m, x, n, b->x16, y));
  };
  RmsNormKernel<<<n, 1024, 0, st>>>(b->xb, b->x, L.rms_att, d.dim, d.norm_eps);
  matmul(L.wq, b->xb, b->q);
  matmul(L.wk, b->xb, b->k);
  matmul(L.wv, b->xb, b->v);
  RopeKernel<<<dim3(Blocks((q_dim + kv_dim) / 2, 256), n), 256, 0, st>>>(b->q, b->k, b->rows, q_dim, kv_dim,
                                                                         d.head_dim, d.rope_theta);
  StoreKvKernel<<<dim3(Blocks(kv_dim, 256), n), 256, 0, st>>>(b->k, b->v, b->rows, l, d.n_kv_heads, d.head_dim);
  AttentionKernel<<<dim3(d.n_heads, n), 256, 0, st>>>(b->q, b->rows, b->xb2, l, d.n_kv_heads, group, d.head_dim,
                                                      1.0f / sqrtf(float(d.head_dim)));
  GroupSumKernel<<<dim3(Blocks(d.n_kv_heads * max_entries, 256), n), 256, 0, st>>>(b->rows, l, d.n_kv_heads, group);
  for (int r = 0; r < n; ++r) {  // a capturing sequence keeps its last row's attention output
    const Sequence* s = rows[r].sequence;
    if (!s->capture || rows[r].attention_outputs == nullptr || !LastOfSequence(rows, n, r)) continue;
    f->Note(cudaMemcpyAsync(s->attention + size_t(l) * q_dim, b->xb2 + size_t(r) * q_dim, q_dim * sizeof(float),
                            cudaMemcpyDeviceToDevice, st));
  }
  matmul(L.wo, b->xb2, b->xb);
  AddKernel<<<Blocks(n * d.dim, 256), 256, 0, st>>>(b->x, b->xb, n * d.dim);
  RmsNormKernel<<<n, 1024, 0, st>>>(b->xb, b->x, L.rms_ffn, d.dim, d.norm_eps);
  matmul(L.w1, b->xb, b->hb);
  matmul(L.w3, b->xb, b->hb2);
  SwiGluKernel<<<Blocks(n * d.hidden_dim, 256), 256, 0, st>>>(b->hb, b->hb2, n * d.hidden_dim);
  matmul(L.w2, b->hb, b->xb);
  AddKernel<<<Blocks(n * d.dim, 256), 256, 0, st>>>(b->x, b->xb, n * d.dim);
}

// After the layers: each score target's copy and event, the classifier for all rows, and the copies
// back to the host (logits and scores into the pinned staging, captured attention outputs directly).
void QueueOutputs(DeviceBatch* b, const BatchRow* rows, int n, size_t total_entries, Failure* f) {
  const DeviceWeights& w = *b->w;
  const Dims& d = w.dims;
  const size_t heads = size_t(d.n_layers) * d.n_kv_heads, q_dim = size_t(d.n_heads) * d.head_dim;
  cudaStream_t st = b->stream;
  for (int r = 0; r < n; ++r) {
    const Sequence* s = rows[r].sequence;
    if (s->score_target == nullptr || !LastOfSequence(rows, n, r)) continue;
    f->Note(cudaMemcpyAsync(s->score_target, b->host_rows[r].scores, heads * (rows[r].entries + 1) * sizeof(float),
                            cudaMemcpyDeviceToDevice, st));
    if (s->scores_written != nullptr) f->Note(cudaEventRecord(s->scores_written, st));
  }
  RmsNormKernel<<<n, 1024, 0, st>>>(b->x, b->x, w.rms_final, d.dim, d.norm_eps);
  if (!f->any()) f->Note(MatMul(b->api, b->blas, st, w.classifier, b->x, n, b->x16, b->logits));
  f->Note(cudaMemcpyAsync(b->host_logits, b->logits, size_t(n) * d.vocab_size * sizeof(float),
                          cudaMemcpyDeviceToHost, st));
  f->Note(cudaMemcpyAsync(b->host_scores, b->scores, heads * total_entries * sizeof(float), cudaMemcpyDeviceToHost,
                          st));
  for (int r = 0; r < n; ++r) {
    const Sequence* s = rows[r].sequence;
    if (!s->capture || rows[r].attention_outputs == nullptr || !LastOfSequence(rows, n, r)) continue;
    f->Note(cudaMemcpyAsync(rows[r].attention_outputs, s->attention, d.n_layers * q_dim * sizeof(float),
                            cudaMemcpyDeviceToHost, st));
  }
}

// The finished step's logits and scores from the staging to each row's host buffers.
void Scatter(const DeviceBatch& b, const BatchRow* rows, int n) {
  const Dims& d = b.w->dims;
  const size_t heads = size_t(d.n_layers) * d.n_kv_heads;
  for (int r = 0; r < n; ++r) {
    std::memcpy(rows[r].logits, b.host_logits + size_t(r) * d.vocab_size, d.vocab_size * sizeof(float));
    std::memcpy(rows[r].scores, b.host_scores + heads * b.entry_offsets[r],
                heads * (rows[r].entries + 1) * sizeof(float));
  }
}

}  // namespace

int ForwardBatch(DeviceBatch* b, const BatchRow* rows, int n, std::string* error) {
  if (CheckRows(*b, rows, n, error) != 0) return -1;
  size_t total_entries = 0;
  for (int r = 0; r < n; ++r) total_entries += size_t(rows[r].entries) + 1;
  cudaGetLastError();  // clears a launch error of an earlier call, already reported there
  Failure f;
  f.Note(ReserveRows(b, n));
  if (!f.any()) f.Note(ReserveEntries(b, total_entries));
  int max_entries = 0;
  if (!f.any()) f.Note(UploadRows(b, rows, n, &max_entries));
  if (!f.any()) {
    EmbeddingKernel<<<dim3(Blocks(b->w->dims.dim, 256), n), 256, 0, b->stream>>>(b->w->embedding, b->rows, b->x);
  }
  for (int l = 0; l < b->w->dims.n_layers && !f.any(); ++l) QueueLayer(b, l, rows, n, max_entries, &f);
  if (!f.any()) QueueOutputs(b, rows, n, total_entries, &f);
  // Even after a failure: nothing of this step may stay in flight (the next may free the buffers).
  f.Note(cudaStreamSynchronize(b->stream));
  f.Note(cudaGetLastError());
  if (f.any()) return f.Report(b->api, error);
  Scatter(*b, rows, n);
  return 0;
}

int SetScoreTarget(Sequence* s, float* scores, void* written_event, std::string* error) {
  // Steps finish before ForwardBatch returns; an eviction may still run on the sequence's stream.
  const cudaError_t e = cudaStreamSynchronize(s->stream);
  if (e != cudaSuccess) return CudaFail(e, error);
  s->score_target = scores;
  s->scores_written = static_cast<cudaEvent_t>(written_event);
  return 0;
}

int MatMulOnce(const HostMatrix& h, const float* x, int n, float* y, std::string* error) {
  if (n < 1) return *error = "a product needs at least one vector", -1;
  const Blas* api = LoadBlas(error);
  if (api == nullptr) return -1;
  std::vector<void*> allocations;
  auto release = [&](int code) {
    for (void* p : allocations) cudaFree(p);
    return code;
  };
  DeviceMatrix m{h.type, nullptr, int(h.rows), int(h.cols)};
  uint8_t* data = nullptr;
  float *dx = nullptr, *dy = nullptr;
  uint16_t* x16 = nullptr;
  const size_t xs = size_t(n) * h.cols, ys = size_t(n) * h.rows;
  cudaError_t e = Alloc(&data, h.bytes, &allocations);
  if (e == cudaSuccess) e = Alloc(&dx, xs, &allocations);
  if (e == cudaSuccess) e = Alloc(&dy, ys, &allocations);
  if (e == cudaSuccess) e = Alloc(&x16, xs, &allocations);
  if (e == cudaSuccess) e = cudaMemcpy(data, h.data, h.bytes, cudaMemcpyHostToDevice);
  if (e == cudaSuccess) e = cudaMemcpy(dx, x, xs * sizeof(float), cudaMemcpyHostToDevice);
  if (e != cudaSuccess) return release(CudaFail(e, error));
  m.data = data;
  cublasHandle_t blas = nullptr;
  cublasStatus_t b = api->create(&blas);  // on the legacy default stream, like the kernels below
  if (b == CUBLAS_STATUS_SUCCESS) b = MatMul(api, blas, nullptr, m, dx, n, x16, dy);
  e = cudaDeviceSynchronize();
  if (blas != nullptr) api->destroy(blas);
  if (b != CUBLAS_STATUS_SUCCESS) return release(BlasFail(api, b, error));
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaMemcpy(y, dy, ys * sizeof(float), cudaMemcpyDeviceToHost);
  return release(e == cudaSuccess ? 0 : CudaFail(e, error));
}

int SwapRemoveEntries(Sequence* s, const uint32_t* descending_slots, uint32_t per_head, uint32_t entries,
                      std::string* error) {
  if (per_head == 0) return 0;
  const Dims& d = s->w->dims;
  const size_t heads = size_t(d.n_layers) * d.n_kv_heads, count = heads * per_head;
  if (count > s->victim_capacity) {
    if (s->victims != nullptr) cudaFree(s->victims);
    s->victims = nullptr;
    s->victim_capacity = 0;
    cudaError_t e = cudaMalloc(&s->victims, count * sizeof(uint32_t));
    if (e != cudaSuccess) return CudaFail(e, error);
    s->victim_capacity = count;
  }
  cudaError_t e = cudaMemcpyAsync(s->victims, descending_slots, count * sizeof(uint32_t), cudaMemcpyHostToDevice,
                                  s->stream);
  if (e == cudaSuccess) {
    SwapRemoveKernel<<<unsigned(heads), 128, 0, s->stream>>>(s->keys, s->values, s->victims, per_head, entries,
                                                             s->capacity, d.head_dim);
  }
  // The host array is reused by the next eviction: wait until it is copied (and the moves done).
  const cudaError_t done = cudaStreamSynchronize(s->stream);
  if (e == cudaSuccess) e = done;
  if (e == cudaSuccess) e = cudaGetLastError();
  return e == cudaSuccess ? 0 : CudaFail(e, error);
}

}  // namespace a2sf::worker::cuda
