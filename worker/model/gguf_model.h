// LLaMA models in GGUF files, as llama.cpp's converters write them (general.architecture "llama").
//
// Metadata: llama.context_length, embedding_length, block_count, feed_forward_length,
// attention.head_count, attention.head_count_kv (default: head_count), rope.freq_base (default
// 10000), attention.layer_norm_rms_epsilon; tokenizer.ggml.bos/eos_token_id when present.
// Tensors: token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate,
// ffn_up, ffn_down}, output_norm and output (absent: tied to token_embd), each "<name>.weight", a
// [rows][cols] matrix stored with dims {cols, rows}. llama.cpp's converter has already permuted the
// q/k rows into interleaved RoPE pairs, the engine's layout, so nothing is reordered: tensors of the
// types the engine runs (f32, f16, bf16, q8_0, q4_0) are used in place from the memory map unless
// LoadOptions asks for another type or for panels (LoadOptions::panels, the CPU engine's default).
//
// Writing GGUF (and Hugging Face folders) is in model_writers.h. The returned model is immutable and thread-safe like every ModelWeights.
#ifndef A2SF_WORKER_MODEL_GGUF_MODEL_H_
#define A2SF_WORKER_MODEL_GGUF_MODEL_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/model/model.h"

namespace a2sf::worker {

// INVALID_ARGUMENT: another architecture, missing or mismatched tensors or keys, bad hyperparameters;
// UNIMPLEMENTED: a tensor type the engine does not run (named, e.g. "q4_K"), RoPE scaling; NOT_FOUND /
// DATA_LOSS from the container (gguf.h). Every message names the file.
// GGUF names of a layer's norm vectors (its matrices and their names are kLayerMatrices, model.h).
struct LayerNormField {
  const float* LayerWeights::*member;
  const char* gguf_name;
};
inline constexpr LayerNormField kLayerNorms[] = {{&LayerWeights::rms_att, "attn_norm"},
                                                 {&LayerWeights::rms_ffn, "ffn_norm"}};
// "blk.<layer>.<stem>.weight", or "<stem>.weight" for a model tensor (layer < 0).
std::string GgufTensorName(int layer, const char* stem);

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadGgufModel(const std::string& path, const LoadOptions& options = {});

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_MODEL_GGUF_MODEL_H_
