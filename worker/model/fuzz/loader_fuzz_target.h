// One fuzz input through the model loaders. The first byte picks the format: even = a model file (the
// rest of the input; a llama2.c checkpoint, or a GGUF file when it starts with "GGUF", whose
// tokenizer is loaded and used too), odd = a Hugging Face folder whose
// model.safetensors is the rest of the input, next to kFuzzConfigJson (a tiny LLaMA: dim 8, 2 layers,
// 2 heads, 1 KV head, vocab 16). Every input must load or fail with a status; anything else (a crash,
// a sanitizer report, a hang) is a bug. Shared by the libFuzzer entry point (scripts/fuzz.sh, clang)
// and the corpus replay test (bazel, gcc).
#ifndef A2SF_WORKER_MODEL_FUZZ_LOADER_FUZZ_TARGET_H_
#define A2SF_WORKER_MODEL_FUZZ_LOADER_FUZZ_TARGET_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"

namespace a2sf::worker {

extern const char kFuzzConfigJson[];

// Writes the input where the loaders expect it (a scratch folder of this process) and loads it.
absl::Status LoadFuzzInput(const uint8_t* data, size_t size);

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_MODEL_FUZZ_LOADER_FUZZ_TARGET_H_
