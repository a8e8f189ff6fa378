// a2sf-make-model: writes a random-weight model of a named LLaMA shape, for benchmarks and rehearsals,
// as a llama2.c checkpoint, a GGUF file or a Hugging Face folder, in any weight type.
//   a2sf-make-model --shape=stories110M --out=/tmp/stories110M-random.bin
//   a2sf-make-model --shape=llama2-7b --format=gguf --weights=q8_0 --out=/tmp/llama2-7b-q8_0.gguf
//   a2sf-make-model --shape=llama2-7b --layers=2 --format=hf --weights=bf16 --out=/tmp/llama2-7b-2l-hf
// The model is generated in memory in the weight type asked for (7B in q8_0: ~7 GB), then written.
#include <iostream>

#include "common/cli.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "worker/model/gguf.h"
#include "worker/model/model.h"
#include "worker/model/model_writers.h"

ABSL_FLAG(std::string, shape, "stories110M", "stories110M, stories260K or llama2-7b");
ABSL_FLAG(int, layers, 0, "number of layers (0: the shape's own)");
ABSL_FLAG(uint64_t, seed, 1, "random seed");
ABSL_FLAG(std::string, format, "llama2c", "llama2c (.bin, fp32), gguf or hf (Hugging Face folder)");
ABSL_FLAG(std::string, weights, "f32", "f32, f16, bf16, q8_0 or q4_0 (gguf: any; hf: f32/f16/bf16; llama2c: f32)");
ABSL_FLAG(std::string, out, "", "output path");

namespace a2sf::worker {
namespace {

int Fail(const absl::Status& status) {
  std::cerr << "a2sf-make-model: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

int Main() {
  const std::string out = absl::GetFlag(FLAGS_out), format = absl::GetFlag(FLAGS_format);
  if (out.empty()) return Fail(absl::InvalidArgumentError("--out is required"));
  if (format != "llama2c" && format != "gguf" && format != "hf") {
    return Fail(absl::InvalidArgumentError("--format: llama2c, gguf or hf"));
  }
  absl::StatusOr<std::optional<WeightType>> type = ParseWeightsFlag(absl::GetFlag(FLAGS_weights));
  if (!type.ok()) return Fail(type.status());
  const WeightType weights = type->value_or(WeightType::kF32);
  if (format == "llama2c" && weights != WeightType::kF32) {
    return Fail(absl::InvalidArgumentError("--format=llama2c writes f32 only"));
  }
  absl::StatusOr<ModelConfig> shape = NamedShape(absl::GetFlag(FLAGS_shape), absl::GetFlag(FLAGS_layers));
  if (!shape.ok()) return Fail(shape.status());
  absl::StatusOr<std::unique_ptr<ModelWeights>> model = MakeSyntheticModel(*shape, absl::GetFlag(FLAGS_seed), weights,
                                                                              /*panels=*/false);  // written row by row
  if (!model.ok()) return Fail(model.status());
  absl::Status written;
  if (format == "llama2c") {
    written = WriteLlama2cCheckpoint(**model, out);
  } else if (format == "gguf") {
    gguf::GgufWriter writer;
    writer.Set("general.name", gguf::Value::String("a2sf synthetic " + absl::GetFlag(FLAGS_shape)));
    written = WriteGgufModel(**model, std::nullopt, &writer, out);
  } else {
    written = WriteHuggingFaceFolder(**model, weights, out);
  }
  if (!written.ok()) return Fail(written);
  std::cout << "wrote " << out << " (" << format << ", " << (*model)->weight_types() << ", "
            << (*model)->bytes_per_token() / 1e6 << " MB of weights)\n";
  return 0;
}

}  // namespace
}  // namespace a2sf::worker

int main(int argc, char** argv) {
  a2sf::ParseCommandLine(argc, argv,
                         {"a2sf-make-model", "writes a random-weight LLaMA model of a named shape (llama2.c, GGUF or HF).", {}});
  return a2sf::worker::Main();
}
