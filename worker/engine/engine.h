// Engine: one sequence's state for the LLaMA-2 forward pass -- its evictable KV cache, scores and
// logits -- and ForwardPass, the pass itself, which runs the next tokens of many engines at once.
//
// Batching: ForwardPass::Run takes rows (engine, token, position); every weight product runs once per
// layer for all rows (MatMul's matrix x N vectors form), and attention runs per row over its own
// engine's cache. Several rows of one engine are a prefill chunk: consecutive positions, attention
// causal within the chunk. MatMul's rows are bit-identical whatever N, and every other operation is
// per row in a fixed order, so a row's logits and scores are bit for bit what it gets alone: a
// sequence's tokens never depend on what else is in the batch (docs/ARCHITECTURE.md, "Batch
// invariance"). Engine::Forward is the one-row case of the same code.
//
// After a forward pass the engine holds, per row, the token's logits and, per layer and KV head, the
// score vector s_g -- the sum of the group's softmax attention rows over the cached entries, in slot
// order -- laid out [layer][kv_head][entries], ready to send to a policy. Evict() then applies the
// policy's decision before the next token. RMSNorm, RoPE (interleaved pairs), SwiGLU and grouped-query
// attention are exactly llama2.c's; the loop allocates nothing.
//
// Weights may be held in any of the five weight types (worker/model/weights.h); every product with
// them goes through MatMul (worker/engine/matmul.h), so the forward pass below is type-agnostic.
// Two backends behind this one class: the CPU (AVX-512 or AVX2 kernels, a thread pool) and CUDA
// (cuBLAS products for f32/f16/bf16, kernels for q8_0/q4_0 and the rest in worker/engine/cuda, weights
// uploaded once per model and device and shared by every engine). On CUDA the rows of a pass are one
// batched device step (cuda::ForwardBatch): each weight matrix is read once for all rows there too
// (q8_0/q4_0: once per tile of up to eight rows), attention per row over its engine's device cache. Both export the same scores and apply decisions the same
// way; the positions and slot bookkeeping stay on the host either way. The device step is not bitwise
// batch-invariant (cuBLAS may pick another algorithm for another N); it equals a row alone within
// float rounding (cuda_engine_test).
//
// Not thread-safe: one sequence per Engine (the weights may be shared by many engines); a ForwardPass
// is used by one thread at a time, and the engines of a Run must not be used by others meanwhile.
#ifndef A2SF_WORKER_ENGINE_ENGINE_H_
#define A2SF_WORKER_ENGINE_ENGINE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/aligned_vector.h"
#include "common/thread_pool.h"
#include "worker/engine/kv_cache.h"
#include "worker/model/model.h"

namespace a2sf::worker {

enum class EngineDevice { kCpu, kCuda };

// "cpu" or "cuda"; INVALID_ARGUMENT otherwise.
absl::StatusOr<EngineDevice> ParseEngineDevice(const std::string& name);
// OK when engines can run on `device`; UNAVAILABLE with the reason otherwise (kCuda without a GPU).
absl::Status CheckEngineDevice(EngineDevice device);
// INVALID_ARGUMENT unless `kv_type` is a KV type (IsKvType) the engine on `device` holds: f32, f16 or
// q8_0 on the CPU, f32 on CUDA (its device cache is fp32). Engine::Create checks it; tools check it before
// loading a model.
absl::Status CheckKvType(WeightType kv_type, EngineDevice device);

struct EngineOptions {
  int threads = 1;
  // KV entries per head the cache can hold: a policy's budget + 1, or the sequence length for a full
  // cache. 0 means the model's context length.
  int cache_capacity = 0;
  // Keep each layer's attention output (before the output projection) of the last token, for the
  // evaluation's fidelity metrics.
  bool capture_attention_outputs = false;
  // kCuda needs a GPU: Create answers UNAVAILABLE (with the reason) without one.
  EngineDevice device = EngineDevice::kCpu;
  // How the KV cache holds keys and values (KvCacheSlots): kF32, kF16 (half the bytes) or kQ8_0
  // (about a quarter); CPU only, the CUDA engine keeps fp32.
  WeightType kv_type = WeightType::kF32;
};

// Device memory a CUDA engine writes each step's scores into, in place of its own buffer, so that a
// co-located cache manager can read them where they are (worker/service's CUDA IPC transport): at
// least [n_layers][n_kv_heads][cache capacity] fp32 values, laid out as step_scores(); `written_event`
// (a cudaEvent_t) is recorded on the engine's stream after each Forward wrote them. `keep_alive` owns
// both for as long as the engine may write (the engine holds it).
struct DeviceScoreTarget {
  void* scores = nullptr;
  size_t bytes = 0;
  void* written_event = nullptr;
  std::shared_ptr<const void> keep_alive;
};

namespace cuda {
struct BatchRow;
struct DeviceBatch;
struct Sequence;
}  // namespace cuda
class DeviceModel;
class Engine;

// One row of a forward pass: `engine`'s token at `position`.
struct ForwardRow {
  Engine* engine = nullptr;
  int token = 0;
  int position = 0;
};

// The forward pass over the shared weights, with its thread pool and the batch's activations
// ([rows][...], grown to the largest batch seen and kept), on the host and, once a CUDA engine's row
// came, on the device (a cuda::DeviceBatch of that engine's device model, kept with the model).
class ForwardPass {
 public:
  // REQUIRES: threads in [1, 256].
  ForwardPass(const ModelWeights* weights, int threads);
  ~ForwardPass();

  // Appends every row's token to its engine's cache and computes the rows' logits and scores. The rows
  // of one engine must be adjacent, with increasing positions; each engine at most once per group.
  // INVALID_ARGUMENT for a bad row (token outside the vocabulary, position outside the context, rows
  // of an engine split up, an engine of another model); FAILED_PRECONDITION when an engine's cache
  // cannot take its rows (evict first). Nothing changes on error.
  absl::Status Run(absl::Span<const ForwardRow> rows);

  int threads() const { return pool_.num_threads(); }

  // Below this much attention work in a layer (slots attended x head_dim x query heads, summed over
  // the rows) one thread runs it; from it on, the rows' KV heads are shared out.
  static constexpr size_t kParallelAttentionWork = size_t(1) << 14;

 private:
  struct Group {  // the rows of one engine: [begin, end)
    Engine* engine;
    int begin, end;
  };
  struct DeviceBatchDeleter {
    void operator()(cuda::DeviceBatch* batch) const;
  };
  absl::Status Check(absl::Span<const ForwardRow> rows);
  void Reserve(int rows);
  // The rows of CUDA engines (groups_ tells which), as one device step; their caches advance only if
  // it succeeds.
  absl::Status RunOnDevice(absl::Span<const ForwardRow> rows);
  // All rows, every one a CPU engine's, grouped in groups_.
  void RunOnHost(absl::Span<const ForwardRow> rows);
  void Layer(int layer, absl::Span<const ForwardRow> rows);
  // Every row's attention in layer `layer` (their keys and values stored), into xb2_.
  void Attention(int layer);
  // Row r's RoPE angles ([rows][head_dim / 2]), computed once per pass and shared by every layer.
  float* rope_cos(int r) { return rope_cos_.data() + size_t(r) * (config_.head_dim / 2); }
  float* rope_sin(int r) { return rope_sin_.data() + size_t(r) * (config_.head_dim / 2); }
  // Creates the device batch on the first CUDA engine's device model; later engines must share it.
  absl::Status BindDevice(const Engine& engine);

  const ModelWeights* weights_;
  const ModelConfig config_;
  ThreadPool pool_;
  std::vector<Group> groups_;
  int reserved_rows_ = 0;
  AlignedVector<float> x_, xb_, xb2_, q_, k_, v_, hb_, hb2_, logits_;  // 64-byte aligned for the kernels
  std::vector<float> rope_cos_, rope_sin_;  // rope_cos(r), rope_sin(r)
  std::vector<const Group*> row_groups_;    // each host row's group
  size_t attended_slots_ = 0;               // summed over the host rows: the slots each attends to
  std::vector<ForwardRow> host_rows_;
  std::shared_ptr<const DeviceModel> device_model_;  // before device_batch_: outlives it
  std::unique_ptr<cuda::DeviceBatch, DeviceBatchDeleter> device_batch_;
  std::vector<cuda::BatchRow> device_rows_;
};

class Engine {
 public:
  // INVALID_ARGUMENT for a non-positive thread count or a capacity above the context length.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const ModelWeights* weights, EngineOptions options);

  // Appends `token` at `position` to every head and computes logits and scores: a forward pass of one
  // row on this engine's own pool. INVALID_ARGUMENT for a token outside the vocabulary or a position
  // outside the context; FAILED_PRECONDITION when the cache is full (evict first).
  absl::Status Forward(int token, int position);

  // Rows of the last forward pass that ran this engine (1 after Forward, a chunk's length after a
  // ForwardPass::Run with several rows of it).
  int rows() const { return rows_; }
  // The logits of row `row` of the last pass; logits() is the last row's.
  absl::Span<const float> logits(int row) const {
    return absl::MakeConstSpan(logits_.data() + size_t(row) * config_.vocab_size, config_.vocab_size);
  }
  absl::Span<const float> logits() const { return logits(rows_ - 1); }
  // [n_layers][n_kv_heads][entries] of row `row` of the last pass, its entries counted as they were
  // after that row (the row's own included); step_scores() is the last row's.
  absl::Span<const float> step_scores(int row) const {
    return absl::MakeConstSpan(scores_.data() + size_t(row) * score_stride(),
                               size_t(config_.n_layers) * config_.n_kv_heads * (first_entries_ + row + 1));
  }
  absl::Span<const float> step_scores() const { return step_scores(rows_ - 1); }
  // Applies a decision (see KvCacheSlots::Evict).
  absl::Status Evict(uint32_t evictions_per_head, absl::Span<const uint32_t> slots,
                     absl::Span<const uint32_t> expected_positions = {});
  // Applies a decision given by positions (a pipelined session's; see KvCacheSlots::EvictPositions).
  absl::Status EvictPositions(uint32_t evictions_per_head, absl::Span<const uint32_t> positions);
  void Reset() { cache_.Clear(); }
  // [n_layers][q_dim] of the last Forward; empty unless capture_attention_outputs.
  absl::Span<const float> attention_outputs() const { return attention_outputs_; }

  // Redirects the device scores (see DeviceScoreTarget); step_scores() still has them on the host.
  // FAILED_PRECONDITION on the CPU backend; INVALID_ARGUMENT when `target` is too small.
  absl::Status WriteDeviceScoresTo(DeviceScoreTarget target);
  bool writes_device_scores() const { return device_score_target_.scores != nullptr; }

  const ModelConfig& config() const { return config_; }
  const KvCacheSlots& cache() const { return cache_; }
  int threads() const { return threads_; }
  // The engine's own one-sequence pass (its threads), for a batch of one; made at the first call (an
  // engine that a scheduler's pass runs never needs its own activations and threads).
  ForwardPass* own_pass();
  EngineDevice device() const { return device_sequence_ != nullptr ? EngineDevice::kCuda : EngineDevice::kCpu; }
  ~Engine();

 private:
  friend class ForwardPass;
  Engine(const ModelWeights* weights, const EngineOptions& options, int capacity);
  size_t score_stride() const { return size_t(config_.n_layers) * config_.n_kv_heads * cache_.capacity(); }
  // Sizes the per-row outputs for `rows` rows (kept for later passes).
  void BeginRows(int rows);
  // Row `row` (its slot entries() + row), KV head `kv_head`: attention of the head's query heads over
  // the slots up to the row, into their parts of `out` ([q_dim]), and their sum into the row's scores.
  // Rows and KV heads may run at once on different threads (each writes its own parts).
  void AttendGroup(int layer, int row, int kv_head, const float* q_row, float* out);
  // After a device step: the next slot of every head holds `position`.
  void CommitDeviceRow(int position);
  absl::Status ReplayMovesOnDevice(uint32_t evictions_per_head);

  const ModelWeights* weights_;
  const ModelConfig config_;
  KvCacheSlots cache_;
  const int threads_;
  std::unique_ptr<ForwardPass> solo_;  // own_pass(): this engine's threads, one row
  int rows_ = 1;
  int first_entries_ = 0;  // entries before the last pass
  // [rows][...] of the last pass.
  std::vector<float> logits_, scores_;
  std::vector<float> attention_outputs_;
  std::shared_ptr<const DeviceModel> device_model_;  // kCuda only
  cuda::Sequence* device_sequence_ = nullptr;
  DeviceScoreTarget device_score_target_;  // kCuda only, when redirected
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_ENGINE_H_
