// CUDA implementation of cuda_forward.h. One stream and one cuBLAS handle per sequence; every kernel
// of a token is queued on that stream and the host waits once, for the logits and scores.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
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
  cublasStatus_t (*sgemv)(cublasHandle_t, cublasOperation_t, int, int, const float*, const float*, int, const float*,
                          int, const float*, float*, int);
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
    b->sgemv = reinterpret_cast<decltype(b->sgemv)>(dlsym(library, "cublasSgemv_v2"));
    b->gemm_ex = reinterpret_cast<decltype(b->gemm_ex)>(dlsym(library, "cublasGemmEx"));
    b->status_string = reinterpret_cast<decltype(b->status_string)>(dlsym(library, "cublasGetStatusString"));
    if (!b->create || !b->destroy || !b->set_stream || !b->sgemv || !b->gemm_ex || !b->status_string) {
      *load_error = "cuBLAS lacks an expected entry point (cublasCreate_v2, cublasSgemv_v2, ...)";
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
  const Blas* api = nullptr;
  int capacity = 0;
  bool capture = false;
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  float *x = nullptr, *xb = nullptr, *xb2 = nullptr, *q = nullptr, *k = nullptr, *v = nullptr, *hb = nullptr,
        *hb2 = nullptr, *att = nullptr, *logits = nullptr, *scores = nullptr, *attention = nullptr;
  float *keys = nullptr, *values = nullptr;  // [n_layers * n_kv_heads][capacity][head_dim]
  uint16_t* x16 = nullptr;                   // the input of an f16/bf16 product, in that type
  uint32_t* victims = nullptr;  // an eviction's victim slots, victim_capacity values
  size_t victim_capacity = 0;
  float* score_target = nullptr;             // SetScoreTarget's buffer, else null (scores above)
  cudaEvent_t scores_written = nullptr;      // recorded after the scores of each Forward, if set
  std::vector<void*> allocations;
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

template <typename T>
cudaError_t Alloc(T** out, size_t count, std::vector<void*>* allocations) {
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, count * sizeof(T));
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

// out = x * weight / sqrt(mean(x^2) + eps); out may be x.
__global__ void RmsNormKernel(float* out, const float* x, const float* weight, int n, float eps) {
  __shared__ float partial[32];
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += x[i] * x[i];
  ss = BlockSum(ss, partial);
  const float scale = 1.0f / sqrtf(ss / n + eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = weight[i] * (scale * x[i]);
}

// Rotates pairs (2i, 2i+1) of q and k by position * theta^(-2j/head_dim), j the pair within its head.
__global__ void RopeKernel(float* q, float* k, int q_dim, int kv_dim, int head_dim, int position, float theta) {
  const int pair = blockIdx.x * blockDim.x + threadIdx.x;
  const int q_pairs = q_dim / 2;
  if (pair >= q_pairs + kv_dim / 2) return;
  float* vec = pair < q_pairs ? q : k;
  const int i = 2 * (pair < q_pairs ? pair : pair - q_pairs);
  const int j = (i % head_dim) / 2;
  const float freq = 1.0f / powf(theta, float(2 * j) / float(head_dim));
  const float angle = float(position) * freq;
  const float c = cosf(angle), s = sinf(angle);
  const float a = vec[i], b = vec[i + 1];
  vec[i] = a * c - b * s;
  vec[i + 1] = a * s + b * c;
}

__global__ void StoreKvKernel(float* keys, float* values, const float* k, const float* v, int layer, int n_kv_heads,
                              int head_dim, int capacity, int slot) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_kv_heads * head_dim) return;
  const int g = i / head_dim, d = i % head_dim;
  const size_t offset = ((size_t(layer) * n_kv_heads + g) * capacity + slot) * head_dim + d;
  keys[offset] = k[i];
  values[offset] = v[i];
}

// One block per query head: softmax(q . K / sqrt(hd)) over the head's n entries, kept in `att`, and
// the weighted sum of V into out.
__global__ void AttentionKernel(const float* q, const float* keys, const float* values, float* att, float* out,
                                int layer, int n_kv_heads, int group, int head_dim, int capacity, int n, float scale) {
  __shared__ float partial[32];
  const int h = blockIdx.x, g = h / group;
  const float* qh = q + size_t(h) * head_dim;
  const size_t base = (size_t(layer) * n_kv_heads + g) * capacity * head_dim;
  const float* k = keys + base;
  const float* v = values + base;
  float* a = att + size_t(h) * capacity;
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
    out[size_t(h) * head_dim + d] = acc;
  }
}

// s_g[t] = sum over the group's heads, in head order (engine.cc's order), of their softmax rows.
__global__ void GroupSumKernel(const float* att, float* scores, int n_kv_heads, int group, int capacity, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n_kv_heads * n) return;
  const int g = i / n, t = i % n;
  const float* first = att + size_t(g) * group * capacity;
  float s = first[t];
  for (int j = 1; j < group; ++j) s += first[size_t(j) * capacity + t];
  scores[i] = s;
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

// Weight (row, c) of a matrix of any type, as a float (the embedding lookup).
__device__ float WeightAt(const DeviceMatrix m, int row, int c) {
  switch (m.type) {
    case kF32:
      return reinterpret_cast<const float*>(m.data)[size_t(row) * m.cols + c];
    case kF16:
      return __half2float(reinterpret_cast<const __half*>(m.data)[size_t(row) * m.cols + c]);
    case kBF16:
      return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(m.data)[size_t(row) * m.cols + c]);
    case kQ8_0: {
      const uint8_t* block = m.data + (size_t(row) * (m.cols / 32) + c / 32) * 34;
      return __half2float(*reinterpret_cast<const __half*>(block)) * float(int8_t(block[2 + c % 32]));
    }
    default: {  // q4_0: low nibbles elements 0..15, high nibbles 16..31
      const uint8_t* block = m.data + (size_t(row) * (m.cols / 32) + c / 32) * 18;
      const int j = c % 32;
      const int q = j < 16 ? (block[2 + j] & 0x0f) : (block[2 + j - 16] >> 4);
      return __half2float(*reinterpret_cast<const __half*>(block)) * float(q - 8);
    }
  }
}

__global__ void EmbeddingKernel(const DeviceMatrix m, int token, float* out) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < m.cols; c += gridDim.x * blockDim.x) {
    out[c] = WeightAt(m, token, c);
  }
}

__global__ void ToHalfKernel(const float* x, uint16_t* out, int n, bool bf16) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16(x[i])) : __half_as_ushort(__float2half(x[i]));
}

// y = W x for GGUF q8_0 / q4_0 blocks: one warp per row, lanes over the row's blocks; each block's
// integer-weighted sum of fp32 x is scaled by its fp16 d, the warp sums the lanes.
template <int kType>
__global__ void QuantMatVecKernel(const DeviceMatrix m, const float* x, float* y) {
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= m.rows) return;
  const int blocks = m.cols / 32;
  const size_t block_bytes = kType == kQ8_0 ? 34 : 18;
  const uint8_t* base = m.data + size_t(row) * blocks * block_bytes;
  float acc = 0.0f;
  for (int b = lane; b < blocks; b += 32) {
    const uint8_t* block = base + b * block_bytes;
    const float* xb = x + b * 32;
    float sum = 0.0f;
    if (kType == kQ8_0) {
      for (int j = 0; j < 32; ++j) sum += float(int8_t(block[2 + j])) * xb[j];
    } else {
      for (int j = 0; j < 16; ++j) {
        sum += float(int(block[2 + j] & 0x0f) - 8) * xb[j];
        sum += float(int(block[2 + j] >> 4) - 8) * xb[j + 16];
      }
    }
    acc += __half2float(*reinterpret_cast<const __half*>(block)) * sum;
  }
  acc = WarpSum(acc);
  if (lane == 0) y[row] = acc;
}

int Blocks(int n, int threads) { return (n + threads - 1) / threads; }

// y[rows] = W[rows][cols] x for any weight type, queued on `stream`; `x16` holds cols values of scratch.
// W row-major is W^T column-major with leading dimension cols.
cublasStatus_t Gemv(const Blas* api, cublasHandle_t blas, cudaStream_t stream, const DeviceMatrix& w, const float* x,
                    uint16_t* x16, float* y) {
  const float one = 1.0f, zero = 0.0f;
  switch (w.type) {
    case kF32:
      return api->sgemv(blas, CUBLAS_OP_T, w.cols, w.rows, &one, reinterpret_cast<const float*>(w.data), w.cols, x, 1,
                        &zero, y, 1);
    case kF16:
    case kBF16: {
      // GemmEx needs A and B of one type: x is rounded to the weights' type, products accumulate in fp32.
      const bool bf16 = w.type == kBF16;
      ToHalfKernel<<<Blocks(w.cols, 256), 256, 0, stream>>>(x, x16, w.cols, bf16);
      const cudaDataType t = bf16 ? CUDA_R_16BF : CUDA_R_16F;
      return api->gemm_ex(blas, CUBLAS_OP_T, CUBLAS_OP_N, w.rows, 1, w.cols, &one, w.data, t, w.cols, x16, t, w.cols,
                          &zero, y, CUDA_R_32F, w.rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    case kQ8_0:
      QuantMatVecKernel<kQ8_0><<<Blocks(w.rows, 8), 256, 0, stream>>>(w, x, y);
      return CUBLAS_STATUS_SUCCESS;
    default:
      QuantMatVecKernel<kQ4_0><<<Blocks(w.rows, 8), 256, 0, stream>>>(w, x, y);
      return CUBLAS_STATUS_SUCCESS;
  }
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
  const Blas* api = LoadBlas(error);
  if (api == nullptr) return -1;
  auto* s = new Sequence();
  s->w = weights;
  s->api = api;
  s->capacity = capacity;
  s->capture = capture_attention_outputs;
  const Dims& d = weights->dims;
  const size_t q_dim = size_t(d.n_heads) * d.head_dim, kv_dim = size_t(d.n_kv_heads) * d.head_dim;
  const size_t heads = size_t(d.n_layers) * d.n_kv_heads;
  cudaError_t e = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking);
  const size_t wide = std::max<size_t>(d.dim, q_dim);
  if (e == cudaSuccess) e = Alloc(&s->x, d.dim, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->xb, wide, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->xb2, wide, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->q, q_dim, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->k, kv_dim, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->v, kv_dim, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->hb, d.hidden_dim, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->hb2, d.hidden_dim, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->att, size_t(d.n_heads) * capacity, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->logits, d.vocab_size, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->scores, heads * capacity, &s->allocations);
  if (e == cudaSuccess && capture_attention_outputs) e = Alloc(&s->attention, d.n_layers * q_dim, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->keys, heads * capacity * d.head_dim, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->values, heads * capacity * d.head_dim, &s->allocations);
  if (e == cudaSuccess) e = Alloc(&s->x16, std::max<size_t>(wide, d.hidden_dim), &s->allocations);
  if (e != cudaSuccess) {
    DestroySequence(s);
    return CudaFail(e, error);
  }
  cublasStatus_t b = api->create(&s->blas);
  if (b == CUBLAS_STATUS_SUCCESS) b = api->set_stream(s->blas, s->stream);
  if (b != CUBLAS_STATUS_SUCCESS) {
    const int code = BlasFail(api, b, error);
    DestroySequence(s);
    return code;
  }
  *out = s;
  return 0;
}

void DestroySequence(Sequence* s) {
  if (s == nullptr) return;
  if (s->stream != nullptr) cudaStreamSynchronize(s->stream);
  if (s->blas != nullptr) s->api->destroy(s->blas);
  for (void* p : s->allocations) cudaFree(p);
  if (s->victims != nullptr) cudaFree(s->victims);
  if (s->stream != nullptr) cudaStreamDestroy(s->stream);
  delete s;
}

int Forward(Sequence* s, int token, int position, int entries, float* logits, float* scores,
            float* attention_outputs, std::string* error) {
  const DeviceWeights& w = *s->w;
  const Dims& d = w.dims;
  const int q_dim = d.n_heads * d.head_dim, kv_dim = d.n_kv_heads * d.head_dim, group = d.n_heads / d.n_kv_heads;
  const int n = entries + 1;
  const float scale = 1.0f / sqrtf(float(d.head_dim));
  cudaStream_t st = s->stream;
  float* step_scores = s->score_target != nullptr ? s->score_target : s->scores;
  cublasStatus_t b = CUBLAS_STATUS_SUCCESS;
  auto gemv = [&](const DeviceMatrix& m, const float* x, float* y) {
    if (b == CUBLAS_STATUS_SUCCESS) b = Gemv(s->api, s->blas, st, m, x, s->x16, y);
  };
  EmbeddingKernel<<<Blocks(d.dim, 256), 256, 0, st>>>(w.embedding, token, s->x);
  for (int l = 0; l < d.n_layers; ++l) {
    const DeviceWeights::Layer& L = w.layers[l];
    RmsNormKernel<<<1, 1024, 0, st>>>(s->xb, s->x, L.rms_att, d.dim, d.norm_eps);
    gemv(L.wq, s->xb, s->q);
    gemv(L.wk, s->xb, s->k);
    gemv(L.wv, s->xb, s->v);
    RopeKernel<<<Blocks((q_dim + kv_dim) / 2, 256), 256, 0, st>>>(s->q, s->k, q_dim, kv_dim, d.head_dim, position,
                                                                     d.rope_theta);
    StoreKvKernel<<<Blocks(kv_dim, 256), 256, 0, st>>>(s->keys, s->values, s->k, s->v, l, d.n_kv_heads, d.head_dim,
                                                        s->capacity, entries);
    AttentionKernel<<<d.n_heads, 256, 0, st>>>(s->q, s->keys, s->values, s->att, s->xb2, l, d.n_kv_heads, group,
                                               d.head_dim, s->capacity, n, scale);
    GroupSumKernel<<<Blocks(d.n_kv_heads * n, 256), 256, 0, st>>>(s->att, step_scores + size_t(l) * d.n_kv_heads * n,
                                                                   d.n_kv_heads, group, s->capacity, n);
    if (s->capture) {
      cudaMemcpyAsync(s->attention + size_t(l) * q_dim, s->xb2, q_dim * sizeof(float), cudaMemcpyDeviceToDevice, st);
    }
    gemv(L.wo, s->xb2, s->xb);
    AddKernel<<<Blocks(d.dim, 256), 256, 0, st>>>(s->x, s->xb, d.dim);
    RmsNormKernel<<<1, 1024, 0, st>>>(s->xb, s->x, L.rms_ffn, d.dim, d.norm_eps);
    gemv(L.w1, s->xb, s->hb);
    gemv(L.w3, s->xb, s->hb2);
    SwiGluKernel<<<Blocks(d.hidden_dim, 256), 256, 0, st>>>(s->hb, s->hb2, d.hidden_dim);
    gemv(L.w2, s->hb, s->xb);
    AddKernel<<<Blocks(d.dim, 256), 256, 0, st>>>(s->x, s->xb, d.dim);
  }
  if (s->scores_written != nullptr) cudaEventRecord(s->scores_written, st);
  RmsNormKernel<<<1, 1024, 0, st>>>(s->x, s->x, w.rms_final, d.dim, d.norm_eps);
  gemv(w.classifier, s->x, s->logits);
  if (b != CUBLAS_STATUS_SUCCESS) return BlasFail(s->api, b, error);
  cudaMemcpyAsync(logits, s->logits, d.vocab_size * sizeof(float), cudaMemcpyDeviceToHost, st);
  cudaMemcpyAsync(scores, step_scores, size_t(d.n_layers) * d.n_kv_heads * n * sizeof(float), cudaMemcpyDeviceToHost,
                  st);
  if (s->capture && attention_outputs != nullptr) {
    cudaMemcpyAsync(attention_outputs, s->attention, size_t(d.n_layers) * q_dim * sizeof(float),
                    cudaMemcpyDeviceToHost, st);
  }
  cudaError_t e = cudaStreamSynchronize(st);
  if (e == cudaSuccess) e = cudaGetLastError();
  return e == cudaSuccess ? 0 : CudaFail(e, error);
}

int SetScoreTarget(Sequence* s, float* scores, void* written_event, std::string*) {
  cudaStreamSynchronize(s->stream);  // no Forward in flight writes to the old target
  s->score_target = scores;
  s->scores_written = static_cast<cudaEvent_t>(written_event);
  return 0;
}

int MatVecOnce(const HostMatrix& h, const float* x, float* y, std::string* error) {
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
  cudaError_t e = Alloc(&data, h.bytes, &allocations);
  if (e == cudaSuccess) e = Alloc(&dx, size_t(h.cols), &allocations);
  if (e == cudaSuccess) e = Alloc(&dy, size_t(h.rows), &allocations);
  if (e == cudaSuccess) e = Alloc(&x16, size_t(h.cols), &allocations);
  if (e == cudaSuccess) e = cudaMemcpy(data, h.data, h.bytes, cudaMemcpyHostToDevice);
  if (e == cudaSuccess) e = cudaMemcpy(dx, x, size_t(h.cols) * sizeof(float), cudaMemcpyHostToDevice);
  if (e != cudaSuccess) return release(CudaFail(e, error));
  m.data = data;
  cublasHandle_t blas = nullptr;
  cublasStatus_t b = api->create(&blas);
  if (b == CUBLAS_STATUS_SUCCESS) b = Gemv(api, blas, nullptr, m, dx, x16, dy);
  if (blas != nullptr) api->destroy(blas);
  if (b != CUBLAS_STATUS_SUCCESS) return release(BlasFail(api, b, error));
  e = cudaDeviceSynchronize();
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaMemcpy(y, dy, size_t(h.rows) * sizeof(float), cudaMemcpyDeviceToHost);
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
  cudaMemcpyAsync(s->victims, descending_slots, count * sizeof(uint32_t), cudaMemcpyHostToDevice, s->stream);
  SwapRemoveKernel<<<unsigned(heads), 128, 0, s->stream>>>(s->keys, s->values, s->victims, per_head, entries,
                                                           s->capacity, d.head_dim);
  // The host array is reused by the next eviction: wait until it is copied (and the moves done).
  cudaError_t e = cudaStreamSynchronize(s->stream);
  if (e == cudaSuccess) e = cudaGetLastError();
  return e == cudaSuccess ? 0 : CudaFail(e, error);
}

}  // namespace a2sf::worker::cuda
