// A LLaMA-2 model's shape and weights, loaded from a llama2.c checkpoint (fp32 "version 0", or the
// int8 "version 2" export dequantized on load) or a Hugging Face LLaMA folder (config.json and one or
// several *.safetensors; fp32 / fp16 / bf16 tensors).
//
// Weights are used in place from a read-only memory map whenever the file holds them as the engine
// needs them (fp32, llama2.c layout); only tensors that must change -- dequantized int8, converted
// fp16/bf16, HF q/k rows permuted from rotate-half to interleaved RoPE pairs -- are held as owned
// copies, and then the mapped original is not read again. The engine therefore sees one layout:
// matrices row-major [out][in] (y = W x), RoPE pairs (2i, 2i+1) within each head.
//
// Immutable after loading; safe to share between engines and threads.
#ifndef A2SF_WORKER_MODEL_MODEL_H_
#define A2SF_WORKER_MODEL_MODEL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/mapped_file.h"

namespace a2sf::worker {

struct ModelConfig {
  int dim = 0;         // hidden size
  int hidden_dim = 0;  // FFN intermediate size
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int seq_len = 0;  // context length
  int head_dim = 0;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  bool shared_classifier = true;
  int bos_id = 1;
  int eos_id = 2;

  int kv_dim() const { return n_kv_heads * head_dim; }
  int q_dim() const { return n_heads * head_dim; }
  int group_size() const { return n_heads / n_kv_heads; }
};

// INVALID_ARGUMENT naming the field if the shape is impossible (non-positive sizes, heads that do
// not divide, an odd head_dim, absurd sizes).
absl::Status ValidateConfig(const ModelConfig& config);

struct LayerWeights {
  const float* rms_att = nullptr;  // [dim]
  const float* wq = nullptr;       // [q_dim][dim]
  const float* wk = nullptr;       // [kv_dim][dim]
  const float* wv = nullptr;       // [kv_dim][dim]
  const float* wo = nullptr;       // [dim][q_dim]
  const float* rms_ffn = nullptr;  // [dim]
  const float* w1 = nullptr;       // gate [hidden_dim][dim]
  const float* w2 = nullptr;       // down [dim][hidden_dim]
  const float* w3 = nullptr;       // up [hidden_dim][dim]
};

class ModelWeights {
 public:
  const ModelConfig& config() const { return config_; }
  const float* token_embedding() const { return token_embedding_; }  // [vocab][dim]
  const LayerWeights& layer(int l) const { return layers_[l]; }
  const float* rms_final() const { return rms_final_; }    // [dim]
  const float* classifier() const { return classifier_; }  // [vocab][dim]
  // Where the weights came from, e.g. "llama2.c v0 (fp32)" or "Hugging Face safetensors (bf16)".
  const std::string& format() const { return format_; }
  // Bytes of weights read per generated token (every matrix once, the embedding row aside).
  size_t bytes_per_token() const;

 private:
  friend class ModelLoader;
  friend absl::StatusOr<std::unique_ptr<ModelWeights>> MakeSyntheticModel(const ModelConfig&, uint64_t);
  ModelConfig config_;
  const float* token_embedding_ = nullptr;
  std::vector<LayerWeights> layers_;
  const float* rms_final_ = nullptr;
  const float* classifier_ = nullptr;
  std::string format_;
  std::vector<MappedFile> files_;
  std::vector<std::vector<float>> owned_;
};

// `path` is a llama2.c .bin file or a Hugging Face folder. Errors: NOT_FOUND for missing files,
// INVALID_ARGUMENT / DATA_LOSS naming the file and what is wrong for bad or truncated content,
// UNIMPLEMENTED for unsupported dtypes or versions.
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModel(const std::string& path);

// Random weights of any LLaMA shape (for benchmarks): deterministic for a seed, values ~ U(-a, a)
// with a = 1/sqrt(fan_in), norms 1.
absl::StatusOr<std::unique_ptr<ModelWeights>> MakeSyntheticModel(const ModelConfig& config, uint64_t seed);

// Shapes for synthetic models: "stories110M" (dim 768, hidden 2048, 12 layers, 12 heads, vocab 32000,
// context 1024), "stories260K", "llama2-7b" (32 layers; `layers` > 0 reduces the depth).
absl::StatusOr<ModelConfig> NamedShape(const std::string& name, int layers = 0);

// Writes `weights` as a llama2.c fp32 ("version 0") checkpoint.
absl::Status WriteLlama2cCheckpoint(const ModelWeights& weights, const std::string& path);

// Loaders by format (LoadModel picks one).
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadLlama2cCheckpoint(const std::string& path);
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadHuggingFaceFolder(const std::string& folder);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_MODEL_MODEL_H_
