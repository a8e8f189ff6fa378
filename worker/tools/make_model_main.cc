// a2sf-make-model: writes a random-weight llama2.c checkpoint of a named LLaMA shape, for benchmarks.
//   a2sf-make-model --shape=stories110M --out=/tmp/stories110M-random.bin
//   a2sf-make-model --shape=llama2-7b --layers=2 --out=/tmp/llama2-7b-2layers.bin
#include <iostream>

#include "common/cli.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "worker/model/model.h"

ABSL_FLAG(std::string, shape, "stories110M", "stories110M, stories260K or llama2-7b");
ABSL_FLAG(int, layers, 0, "number of layers (0: the shape's own)");
ABSL_FLAG(uint64_t, seed, 1, "random seed");
ABSL_FLAG(std::string, out, "", "output path");

int main(int argc, char** argv) {
  a2sf::ParseCommandLine(argc, argv,
                         {"a2sf-make-model", "writes a random-weight llama2.c checkpoint of a LLaMA shape.", {}});
  if (absl::GetFlag(FLAGS_out).empty()) {
    std::cerr << "a2sf-make-model: --out is required\n";
    return 2;
  }
  auto shape = a2sf::worker::NamedShape(absl::GetFlag(FLAGS_shape), absl::GetFlag(FLAGS_layers));
  if (!shape.ok()) {
    std::cerr << "a2sf-make-model: " << shape.status().message() << "\n";
    return 2;
  }
  auto model = a2sf::worker::MakeSyntheticModel(*shape, absl::GetFlag(FLAGS_seed));
  if (!model.ok()) {
    std::cerr << "a2sf-make-model: " << model.status().message() << "\n";
    return 1;
  }
  if (absl::Status s = a2sf::worker::WriteLlama2cCheckpoint(**model, absl::GetFlag(FLAGS_out)); !s.ok()) {
    std::cerr << "a2sf-make-model: " << s.message() << "\n";
    return 1;
  }
  std::cout << "wrote " << absl::GetFlag(FLAGS_out) << " (" << (*model)->bytes_per_token() / 1e6 << " MB of weights)\n";
  return 0;
}
