// Engine: the LLaMA-2 forward pass over an evictable KV cache, one token at a time.
//
// After Forward(token, position) the engine holds the token's logits and, per layer and KV head, the
// score vector s_g -- the sum of the group's softmax attention rows over the cached entries, in slot
// order -- laid out [layer][kv_head][entries], ready to send to a policy. Evict() then applies the
// policy's decision before the next token. RMSNorm, RoPE (interleaved pairs), SwiGLU and grouped-query
// attention are exactly llama2.c's; the loop allocates nothing.
//
// Weights may be held in any of the five weight types (worker/model/weights.h); every product with
// them goes through MatMul (worker/engine/matmul.h), so the forward pass below is type-agnostic.
// Two backends behind this one class: the CPU (AVX2/FMA/F16C kernels, a thread pool) and CUDA (cuBLAS
// products for f32/f16/bf16, kernels for q8_0/q4_0 and the rest in worker/engine/cuda, weights uploaded once per model and device
// and shared by every engine). Both export the same scores and apply decisions the same way; the
// positions and slot bookkeeping stay on the host either way.
//
// Not thread-safe: one sequence per Engine (the weights may be shared by many engines).
#ifndef A2SF_WORKER_ENGINE_ENGINE_H_
#define A2SF_WORKER_ENGINE_ENGINE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/thread_pool.h"
#include "worker/engine/kv_cache.h"
#include "worker/model/model.h"

namespace a2sf::worker {

enum class EngineDevice { kCpu, kCuda };

// "cpu" or "cuda"; INVALID_ARGUMENT otherwise.
absl::StatusOr<EngineDevice> ParseEngineDevice(const std::string& name);
// OK when engines can run on `device`; UNAVAILABLE with the reason otherwise (kCuda without a GPU).
absl::Status CheckEngineDevice(EngineDevice device);

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
struct Sequence;
}
class DeviceModel;

class Engine {
 public:
  // INVALID_ARGUMENT for a non-positive thread count or a capacity above the context length.
  static absl::StatusOr<std::unique_ptr<Engine>> Create(const ModelWeights* weights, EngineOptions options);

  // Appends `token` at `position` to every head and computes logits and scores. INVALID_ARGUMENT for
  // a token outside the vocabulary or a position outside the context; FAILED_PRECONDITION when the
  // cache is full (evict first).
  absl::Status Forward(int token, int position);

  absl::Span<const float> logits() const { return logits_; }
  // [n_layers][n_kv_heads][entries()] of the last Forward.
  absl::Span<const float> step_scores() const {
    return absl::MakeConstSpan(scores_.data(), size_t(config_.n_layers) * config_.n_kv_heads * cache_.entries());
  }
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
  int threads() const { return pool_.num_threads(); }
  EngineDevice device() const { return device_sequence_ != nullptr ? EngineDevice::kCuda : EngineDevice::kCpu; }
  ~Engine();

 private:
  Engine(const ModelWeights* weights, const EngineOptions& options, int capacity);
  void Attention(int layer);
  absl::Status ForwardOnDevice(int token, int position);
  absl::Status ReplayMovesOnDevice(uint32_t evictions_per_head);

  const ModelWeights* weights_;
  const ModelConfig config_;
  ThreadPool pool_;
  KvCacheSlots cache_;
  // Activations, allocated once.
  std::vector<float> x_, xb_, xb2_, q_, k_, v_, hb_, hb2_, att_, logits_, scores_, rope_cos_, rope_sin_;
  std::vector<float> attention_outputs_;
  std::shared_ptr<const DeviceModel> device_model_;  // kCuda only
  cuda::Sequence* device_sequence_ = nullptr;
  DeviceScoreTarget device_score_target_;  // kCuda only, when redirected
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_ENGINE_ENGINE_H_
