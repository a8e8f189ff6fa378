#include "worker/model/load_flags.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, weights, "auto",
          "weight type in memory: auto (as the file holds them), f32, f16, bf16, q8_0 or q4_0 (converted on load)");
ABSL_FLAG(bool, panels, true,
          "CPU engine: hold matrices in panels, the layout the kernels read fastest "
          "(the load copies them: ~1 minute for LLaMA-2-7B q8_0 on 2 cores); false: row-major, used in place "
          "from the memory map where the type allows (a faster start, slower decoding and batching). "
          "Ignored with --device=cuda (rows)");
ABSL_FLAG(std::string, kv_type, "f32",
          "KV cache element type: f32; f16 (half the KV memory and the bytes attention reads); q8_0 (GGUF's "
          "8-bit blocks of 32: about a quarter, a little less exact). f16 and q8_0: CPU engine only");

namespace a2sf::worker {

absl::StatusOr<LoadOptions> LoadOptionsFromFlags() {
  absl::StatusOr<std::optional<WeightType>> type = ParseWeightsFlag(absl::GetFlag(FLAGS_weights));
  if (!type.ok()) return type.status();
  LoadOptions options;
  options.weights = *type;
  options.panels = absl::GetFlag(FLAGS_panels);
  return options;
}

absl::StatusOr<WeightType> KvTypeFromFlags() {
  absl::StatusOr<WeightType> type = ParseKvType(absl::GetFlag(FLAGS_kv_type));
  if (!type.ok()) return absl::InvalidArgumentError(absl::StrCat("--", type.status().message()));
  return type;
}

std::string DescribeLoadedModel(const ModelWeights& weights) {
  std::string out = absl::StrCat(weights.format(), "; ", weights.bytes_per_token() >> 20, " MiB of weights per token, ",
                                 weights.owned_bytes() >> 20, " MiB converted in memory");
  for (const std::string& note : weights.load_notes()) absl::StrAppend(&out, "\n  ", note);
  return out;
}

}  // namespace a2sf::worker
