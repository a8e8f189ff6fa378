// A LLaMA-2 model's shape and weights, loaded from a llama2.c checkpoint (fp32 "version 0", or the
// int8 "version 2" export, held quantized as q8_0) or a Hugging Face LLaMA folder (config.json and one
// or several *.safetensors; fp32 / fp16 / bf16 tensors); other loaders (GGUF) fill the same class.
//
// Matrices are WeightMatrix views (worker/model/weights.h) of any of the five weight types; norm
// vectors are fp32. Weights are used in place from a read-only memory map whenever the file holds them
// in the type asked for (LoadOptions::weights; by default the file's own type); only tensors that must
// change -- converted types, HF q/k rows permuted from rotate-half to interleaved RoPE pairs, the
// llama2.c int8 layout re-blocked -- are owned copies, made row by row, and then the mapped original
// pages are released. The engine therefore sees one layout: matrices row-major [out][in] (y = W x),
// RoPE pairs (2i, 2i+1) within each head.
//
// Immutable after loading; safe to share between engines and threads.
#ifndef A2SF_WORKER_MODEL_MODEL_H_
#define A2SF_WORKER_MODEL_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/weights.h"

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
  WeightMatrix wq;                 // [q_dim][dim]
  WeightMatrix wk;                 // [kv_dim][dim]
  WeightMatrix wv;                 // [kv_dim][dim]
  WeightMatrix wo;                 // [dim][q_dim]
  const float* rms_ffn = nullptr;  // [dim]
  WeightMatrix w1;                 // gate [hidden_dim][dim]
  WeightMatrix w2;                 // down [dim][hidden_dim]
  WeightMatrix w3;                 // up [hidden_dim][dim]
};

// The nine-per-layer plus three model tensors, in one list for code that walks them all (writers,
// byte counts, uploads). `name` is llama.cpp's GGUF name stem ("attn_q", "token_embd").
struct LayerMatrixField {
  WeightMatrix LayerWeights::*member;
  const char* gguf_name;
};
inline constexpr LayerMatrixField kLayerMatrices[] = {
    {&LayerWeights::wq, "attn_q"},     {&LayerWeights::wk, "attn_k"},   {&LayerWeights::wv, "attn_v"},
    {&LayerWeights::wo, "attn_output"}, {&LayerWeights::w1, "ffn_gate"}, {&LayerWeights::w2, "ffn_down"},
    {&LayerWeights::w3, "ffn_up"}};

// How to load: the weight type to hold matrices in (nullopt: the file's own, "auto"), and whether
// matrices of the types panels hold (f32, f16, bf16, q8_0) go in panels (weights.h), the layout the
// CPU kernels run fastest on; the GPU engine takes rows (cuda_forward.h), so a model loaded for
// --device=cuda sets it false.
struct LoadOptions {
  std::optional<WeightType> weights;
  bool panels = true;
};

class ModelWeights {
 public:
  const ModelConfig& config() const { return config_; }
  const WeightMatrix& token_embedding() const { return token_embedding_; }  // [vocab][dim]
  const LayerWeights& layer(int l) const { return layers_[l]; }
  const float* rms_final() const { return rms_final_; }                // [dim]
  const WeightMatrix& classifier() const { return classifier_; }      // [vocab][dim]
  // Where the weights came from and how they are held, e.g. "llama2.c v0 (fp32)" or
  // "Hugging Face safetensors (BF16), held as q8_0".
  const std::string& format() const { return format_; }
  // Tensors not held in the type asked for (rows not whole blocks), one line each.
  const std::vector<std::string>& load_notes() const { return notes_; }
  // "q8_0" when every matrix has that type, else e.g. "q8_0+f16".
  std::string weight_types() const;
  // Bytes of weights read per generated token (every matrix once, the norms; the embedding row aside).
  size_t bytes_per_token() const;
  // Bytes of converted tensors this model owns (the mapped files aside).
  size_t owned_bytes() const { return storage_.owned_bytes(); }

  // --- For loaders, before the model is shared (not thread-safe). ---
  ModelWeights() = default;
  ModelConfig& mutable_config() { return config_; }
  std::vector<LayerWeights>& mutable_layers() { return layers_; }
  void set_token_embedding(const WeightMatrix& m) { token_embedding_ = m; }
  void set_rms_final(const float* v) { rms_final_ = v; }
  void set_classifier(const WeightMatrix& m) { classifier_ = m; }
  void set_format(std::string format) { format_ = std::move(format); }
  WeightStorage& storage() { return storage_; }
  void AddNote(std::string note) { notes_.push_back(std::move(note)); }
  // PlaceMatrix into this model's storage; a fallback note is kept in load_notes().
  absl::StatusOr<WeightMatrix> Place(const WeightMatrix& source, const PlaceOptions& options, const std::string& name);
  // A norm vector of n values in any type, as fp32 (in place when it is fp32 and aligned).
  absl::StatusOr<const float*> PlaceVector(const WeightMatrix& source, const std::string& name);

 private:
  ModelConfig config_;
  WeightMatrix token_embedding_;
  std::vector<LayerWeights> layers_;
  const float* rms_final_ = nullptr;
  WeightMatrix classifier_;
  std::string format_;
  std::vector<std::string> notes_;
  WeightStorage storage_;
};

// `path` is a llama2.c .bin file, a GGUF file (by its magic; gguf_model.h) or a Hugging Face folder. Errors: NOT_FOUND for missing files,
// INVALID_ARGUMENT / DATA_LOSS naming the file and what is wrong for bad or truncated content,
// UNIMPLEMENTED for unsupported dtypes or versions.
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModel(const std::string& path, const LoadOptions& options = {});

// Random weights of any LLaMA shape (for benchmarks): deterministic for a seed, values ~ U(-a, a)
// with a = 1/sqrt(fan_in), norms 1; held in `type` (quantized from those fp32 values, tensor by tensor).
absl::StatusOr<std::unique_ptr<ModelWeights>> MakeSyntheticModel(const ModelConfig& config, uint64_t seed,
                                                                  WeightType type = WeightType::kF32,
                                                                  bool panels = true);

// Shapes for synthetic models: "stories110M" (dim 768, hidden 2048, 12 layers, 12 heads, vocab 32000,
// context 1024), "stories260K", "llama2-7b" (32 layers; `layers` > 0 reduces the depth).
absl::StatusOr<ModelConfig> NamedShape(const std::string& name, int layers = 0);

// Writes `weights` as a llama2.c fp32 ("version 0") checkpoint (other types written as their fp32 values).
absl::Status WriteLlama2cCheckpoint(const ModelWeights& weights, const std::string& path);

// Loaders by format (LoadModel picks one).
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadLlama2cCheckpoint(const std::string& path,
                                                                     const LoadOptions& options = {});
absl::StatusOr<std::unique_ptr<ModelWeights>> LoadHuggingFaceFolder(const std::string& folder,
                                                                     const LoadOptions& options = {});

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_MODEL_MODEL_H_
