// The CUDA side of the engine's GPU backend: weights in device memory in their own type (f32 through
// cuBLAS Sgemv, f16/bf16 through cuBLAS GemmEx with fp32 accumulation, q8_0/q4_0 through a kernel of
// their own that reads the GGUF blocks as they are), and kernels for RMSNorm, RoPE, attention with score export, SwiGLU and KV-entry moves. The math is
// engine.cc's, step for step (same slot layout [layer][kv_head][slot][head_dim], same score layout,
// same group-sum order), so the policy sees the same scores from either backend.
//
// A plain interface (no Abseil, no CUDA types) so that engine.cc builds with or without a CUDA
// toolkit; cuda_forward_stub.cc stands in when there is none. Functions return 0 on success or a
// CUDA/cuBLAS error code with `error` set.
#ifndef A2SF_WORKER_ENGINE_CUDA_CUDA_FORWARD_H_
#define A2SF_WORKER_ENGINE_CUDA_CUDA_FORWARD_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace a2sf::worker::cuda {

struct Dims {
  int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, vocab_size = 0;
  float rope_theta = 10000.0f, norm_eps = 1e-5f;
};

// A weight matrix in host memory: `type` is worker/model/weights.h's WeightType as an int (0 f32,
// 1 f16, 2 bf16, 3 q8_0, 4 q4_0); row-major [rows][cols], `bytes` in all (uploaded as they are).
struct HostMatrix {
  int type = 0;
  const void* data = nullptr;
  int64_t rows = 0, cols = 0;
  size_t bytes = 0;
};

struct HostLayer {
  const float* rms_att;
  HostMatrix wq, wk, wv, wo;
  const float* rms_ffn;
  HostMatrix w1, w2, w3;
};

// cudaGetDeviceCount; non-zero (with the reason) when there is no usable GPU. Needs only the CUDA
// runtime: cuBLAS is loaded (dlopen) when the first sequence is created.
int CountDevices(int* count, std::string* error);

// A model's weights in device memory, shared by every sequence on the device.
struct DeviceWeights;
// Uploads the weights in their types (`layers` has dims.n_layers elements). A classifier with the
// embedding's data is uploaded once.
int UploadWeights(const Dims& dims, const HostMatrix& token_embedding, const HostLayer* layers, const float* rms_final,
                  const HostMatrix& classifier, DeviceWeights** out, std::string* error);

// y[rows] = W x on the device for one matrix of any type (tests of the per-type products): uploads
// W and x, runs the product the forward pass uses, copies y back. Non-zero on CUDA/cuBLAS errors.
int MatVecOnce(const HostMatrix& w, const float* x, float* y, std::string* error);
void FreeWeights(DeviceWeights* weights);
size_t WeightBytes(const DeviceWeights* weights);

// One sequence: its KV cache (`capacity` entries per head), activations, stream and cuBLAS handle.
struct Sequence;
int CreateSequence(const DeviceWeights* weights, int capacity, bool capture_attention_outputs, Sequence** out,
                   std::string* error);
void DestroySequence(Sequence* sequence);

// Runs one token at `position`, writing its key and value into slot `entries` of every head and
// attending over entries + 1 slots. Copies to the host: logits [vocab], scores
// [n_layers][n_kv_heads][entries + 1], and, if captured, attention outputs [n_layers][q_dim].
int Forward(Sequence* sequence, int token, int position, int entries, float* logits, float* scores,
            float* attention_outputs, std::string* error);

// Makes Forward write its scores into `scores` (device memory of at least n_layers * n_kv_heads *
// capacity floats, e.g. a buffer exported to a co-located cache manager: common/cuda/ipc.h) instead of
// the sequence's own buffer, and record `written_event` (a cudaEvent_t) on the sequence's stream once
// they are written. Nulls: back to the sequence's own buffer, no event.
int SetScoreTarget(Sequence* sequence, float* scores, void* written_event, std::string* error);

// Applies an eviction to the device cache's keys and values by the contract's swap-remove
// (common/kv/swap_remove.h): every head h (layer-major, n_layers * n_kv_heads of them) held `entries`
// entries and loses the slots descending_slots[h * per_head ...], strictly descending.
int SwapRemoveEntries(Sequence* sequence, const uint32_t* descending_slots, uint32_t per_head, uint32_t entries,
                      std::string* error);

}  // namespace a2sf::worker::cuda

#endif  // A2SF_WORKER_ENGINE_CUDA_CUDA_FORWARD_H_
