// Writers for the formats the loaders read: GGUF (llama.cpp's single file, with the tokenizer when the
// caller adds it) and Hugging Face folders (config.json + model.safetensors). The llama2.c writer is
// WriteLlama2cCheckpoint in model.h. Both stream: one tensor is converted and written at a time, so a
// file may be larger than memory. Free functions; `weights` is only read.
#ifndef A2SF_WORKER_MODEL_MODEL_WRITERS_H_
#define A2SF_WORKER_MODEL_MODEL_WRITERS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/model/gguf.h"
#include "worker/model/model.h"

namespace a2sf::worker {

// Writes `weights` as a GGUF v3 file of architecture "llama": `writer` may already hold metadata
// (the tokenizer's, see AddVocabularyToGguf); matrices are written in `type` (nullopt: each as the
// model holds it; a type whose blocks do not fit a matrix's rows falls back as FallbackType says, one
// line per such matrix in `notes`), norms in f32. Tensors are converted one at a time, so the file
// may be larger than memory.
absl::Status WriteGgufModel(const ModelWeights& weights, std::optional<WeightType> type, gguf::GgufWriter* writer,
                            const std::string& path, std::vector<std::string>* notes = nullptr);

// Writes `weights` as a Hugging Face LLaMA folder (config.json and one model.safetensors) with every
// tensor in `type` (f32, f16 or bf16; INVALID_ARGUMENT otherwise), q/k rows permuted back to
// rotate-half order, so LoadHuggingFaceFolder reads the same model. Streams tensor by tensor.
absl::Status WriteHuggingFaceFolder(const ModelWeights& weights, WeightType type, const std::string& folder);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_MODEL_MODEL_WRITERS_H_
