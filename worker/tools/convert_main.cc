// a2sf-convert: rewrites any model the project loads (llama2.c .bin, Hugging Face folder, GGUF) as a
// GGUF file with its tokenizer, or as a Hugging Face folder, in the weight type asked for.
//   a2sf-convert --in=stories260K.bin --tokenizer=tok512.bin --out=stories260K-q8_0.gguf --weights=q8_0
//   a2sf-convert --in=model.gguf --out=/tmp/hf-folder --format=hf --weights=bf16
// Tensors are converted one at a time from the input's memory map, so neither file needs to fit in
// memory twice.
#include <iostream>

#include "absl/flags/flag.h"
#include "common/cli.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "worker/model/gguf.h"
#include "worker/model/model.h"
#include "worker/model/model_writers.h"
#include "worker/tokenizer/vocabulary.h"

ABSL_FLAG(std::string, in, "", "input model: llama2.c .bin, Hugging Face folder or .gguf");
ABSL_FLAG(std::string, tokenizer, "",
          "tokenizer to embed (tokenizer.bin or tokenizer.model); default: the input's own (GGUF), else none");
ABSL_FLAG(std::string, out, "", "output: a .gguf file, or a folder with --format=hf");
ABSL_FLAG(std::string, format, "gguf", "gguf or hf");
ABSL_FLAG(std::string, weights, "auto", "auto (as the input holds them), f32, f16, bf16, q8_0 or q4_0 (hf: f32/f16/bf16)");

namespace a2sf::worker {
namespace {

int Fail(const absl::Status& status) {
  std::cerr << "a2sf-convert: " << status.message() << "\n";
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

int Main() {
  const std::string in = absl::GetFlag(FLAGS_in), out = absl::GetFlag(FLAGS_out), format = absl::GetFlag(FLAGS_format);
  if (in.empty() || out.empty()) return Fail(absl::InvalidArgumentError("--in and --out are required"));
  if (format != "gguf" && format != "hf") return Fail(absl::InvalidArgumentError("--format: gguf or hf"));
  absl::StatusOr<std::optional<WeightType>> type = ParseWeightsFlag(absl::GetFlag(FLAGS_weights));
  if (!type.ok()) return Fail(type.status());
  LoadOptions as_held;
  as_held.panels = false;  // as the file holds it: rows, used in place where the type allows
  absl::StatusOr<std::unique_ptr<ModelWeights>> model = LoadModel(in, as_held);
  if (!model.ok()) return Fail(model.status());
  std::cout << "read " << in << ": " << (*model)->format() << "\n";

  if (format == "hf") {
    const WeightType hf_type = type->value_or((*model)->layer(0).wq.type);
    if (absl::Status s = WriteHuggingFaceFolder(**model, hf_type, out); !s.ok()) return Fail(s);
    std::cout << "wrote " << out << " (Hugging Face, " << WeightTypeName(hf_type) << ")\n";
    return 0;
  }
  gguf::GgufWriter writer;
  const std::string tokenizer = absl::GetFlag(FLAGS_tokenizer).empty() && gguf::GgufFile::HasMagic(in)
                                    ? in
                                    : absl::GetFlag(FLAGS_tokenizer);
  if (!tokenizer.empty()) {
    absl::StatusOr<Vocabulary> vocabulary = ReadVocabulary(tokenizer, (*model)->config().vocab_size);
    if (vocabulary.ok()) {
      AddVocabularyToGguf(*vocabulary, &writer);
    } else if (tokenizer != in || vocabulary.status().code() != absl::StatusCode::kNotFound) {
      return Fail(vocabulary.status());
    }
  }
  if (tokenizer.empty()) std::cerr << "a2sf-convert: no --tokenizer: the file will need one given at run time\n";
  std::vector<std::string> notes;
  if (absl::Status s = WriteGgufModel(**model, *type, &writer, out, &notes); !s.ok()) return Fail(s);
  for (const std::string& note : notes) std::cout << "note: " << note << "\n";
  absl::StatusOr<std::unique_ptr<ModelWeights>> check = LoadModel(out);
  if (!check.ok()) return Fail(check.status());
  std::cout << "wrote " << out << ": " << (*check)->format() << ", " << (*check)->bytes_per_token() / 1e6
            << " MB of weights per token\n";
  return 0;
}

}  // namespace
}  // namespace a2sf::worker

int main(int argc, char** argv) {
  a2sf::ParseCommandLine(argc, argv,
                         {"a2sf-convert", "converts a LLaMA model (llama2.c .bin, Hugging Face folder, GGUF) to GGUF or HF.", {}});
  return a2sf::worker::Main();
}
