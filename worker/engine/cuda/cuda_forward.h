// The CUDA side of the engine's GPU backend: weights in device memory in their own type, and the
// forward step of a batch of sequences on them. Each weight product runs once per layer for all rows
// of the step (a matrix x N vectors product: cuBLAS GemmEx with fp32 accumulation for f32/f16/bf16,
// a kernel of its own for q8_0/q4_0 that reads the GGUF blocks as they are, each block once for up to
// eight vectors); RMSNorm, RoPE and SwiGLU run over all rows in one launch each; attention runs per
// row over its own sequence's KV cache (one launch for all rows). The math is engine.cc's, step for
// step (same slot layout [layer][kv_head][slot][head_dim], same score layout, same group-sum order),
// so the policy sees the same scores from either backend.
//
// A plain interface (no Abseil, no CUDA types) so that engine.cc builds with or without a CUDA
// toolkit; cuda_forward_stub.cc stands in when there is none. Functions return 0 on success or a
// non-zero code (a CUDA/cuBLAS error, or -1 for a bad argument) with `error` set.
//
// Ownership and threads: DeviceWeights are shared, read-only, by every Sequence and DeviceBatch made
// from them and must outlive them. A Sequence (one sequence's KV cache) and a DeviceBatch (a step's
// stream, cuBLAS handle and activations) are each used by one thread at a time. ForwardBatch queues
// all of a step's work on its batch's stream and returns once it is done, and SwapRemoveEntries does
// the same on the sequence's stream, so no two streams' work on a sequence is ever in flight together.
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
// runtime: cuBLAS is loaded (dlopen) when the first sequence or batch is created.
int CountDevices(int* count, std::string* error);

// A model's weights in device memory, shared by every sequence and batch on the device.
struct DeviceWeights;
// Uploads the weights in their types (`layers` has dims.n_layers elements). A classifier with the
// embedding's data is uploaded once.
int UploadWeights(const Dims& dims, const HostMatrix& token_embedding, const HostLayer* layers, const float* rms_final,
                  const HostMatrix& classifier, DeviceWeights** out, std::string* error);
void FreeWeights(DeviceWeights* weights);
size_t WeightBytes(const DeviceWeights* weights);

// y[n][rows] = W x[n][cols] on the device for one matrix of any type (tests of the per-type
// products): uploads W and x, runs the product the forward step uses, copies y back.
int MatMulOnce(const HostMatrix& w, const float* x, int n, float* y, std::string* error);

// One sequence: its KV cache (`capacity` entries per head), its scores' device target and the
// capture buffer of its attention outputs.
struct Sequence;
int CreateSequence(const DeviceWeights* weights, int capacity, bool capture_attention_outputs, Sequence** out,
                   std::string* error);
void DestroySequence(Sequence* sequence);

// A forward step's resources: a stream, a cuBLAS handle, and activations for the rows of a step
// ([rows][...]), grown on demand to the largest step seen and kept.
struct DeviceBatch;
int CreateBatch(const DeviceWeights* weights, DeviceBatch** out, std::string* error);
void DestroyBatch(DeviceBatch* batch);

// One row of a step: `sequence`'s token at `position`, whose key and value go to slot `entries` of
// every head and which attends over entries + 1 slots. Host outputs: `logits` [vocab], `scores`
// [n_layers][n_kv_heads][entries + 1] and, when the sequence captures them and the pointer is not
// null, `attention_outputs` [n_layers][q_dim] (taken from the sequence's last row of the step).
struct BatchRow {
  Sequence* sequence = nullptr;
  int token = 0, position = 0, entries = 0;
  float* logits = nullptr;
  float* scores = nullptr;
  float* attention_outputs = nullptr;
};

// Runs `n` rows as one step on `batch`'s stream. The rows of one sequence must be adjacent with
// consecutive `entries` (a prefill chunk: attention is causal within it), every sequence of the
// batch's weights, tokens in the vocabulary, entries below the sequence's capacity; -1 with the reason
// otherwise, before any work is queued. A sequence with a score target (SetScoreTarget) gets its last
// row's scores written there and its event recorded after them. Returns once the step is done.
int ForwardBatch(DeviceBatch* batch, const BatchRow* rows, int n, std::string* error);

// Makes ForwardBatch write this sequence's scores (of its last row of each step) into `scores`
// (device memory of at least n_layers * n_kv_heads * capacity floats, e.g. a buffer exported to a
// co-located cache manager: common/cuda/ipc.h) as well as to the host, and record `written_event` (a
// cudaEvent_t) on the step's stream once they are written. Nulls: no device target, no event.
int SetScoreTarget(Sequence* sequence, float* scores, void* written_event, std::string* error);

// Applies an eviction to the device cache's keys and values by the contract's swap-remove
// (common/kv/swap_remove.h): every head h (layer-major, n_layers * n_kv_heads of them) held `entries`
// entries and loses the slots descending_slots[h * per_head ...], strictly descending.
int SwapRemoveEntries(Sequence* sequence, const uint32_t* descending_slots, uint32_t per_head, uint32_t entries,
                      std::string* error);

}  // namespace a2sf::worker::cuda

#endif  // A2SF_WORKER_ENGINE_CUDA_CUDA_FORWARD_H_
