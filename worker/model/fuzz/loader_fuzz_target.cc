#include "worker/model/fuzz/loader_fuzz_target.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "worker/model/gguf.h"
#include "worker/model/model.h"
#include "worker/tokenizer/tokenizer.h"

namespace a2sf::worker {

const char kFuzzConfigJson[] = R"({
  "model_type": "llama", "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
  "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16, "max_position_embeddings": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false
})";

namespace {

bool WriteFile(const std::string& path, const void* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(data, 1, size, f) == size;
  return std::fclose(f) == 0 && ok;
}

const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* base = std::getenv("TEST_TMPDIR");
    auto* path = new std::string(absl::StrCat(base != nullptr ? base : "/tmp", "/a2sf-loader-fuzz-", getpid()));
    std::string command = "mkdir -p '" + *path + "/hf'";
    if (std::system(command.c_str()) != 0) std::abort();
    WriteFile(*path + "/hf/config.json", kFuzzConfigJson, sizeof(kFuzzConfigJson) - 1);
    return path;
  }();
  return *dir;
}

}  // namespace

namespace {

// A GGUF input also carries a tokenizer: it must load or fail cleanly, and tokenize when it loads.
absl::Status LoadGgufTokenizer(const std::string& path) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(path);
  if (!tokenizer.ok()) return tokenizer.status();
  absl::StatusOr<std::vector<int>> ids = (*tokenizer)->Encode("Once upon a time, 日本", true);
  if (!ids.ok()) return ids.status();
  int previous = -1;
  for (int id : *ids) (*tokenizer)->DecodePiece(previous, id), previous = id;
  return absl::OkStatus();
}

}  // namespace

absl::Status LoadFuzzInput(const uint8_t* data, size_t size) {
  if (size == 0) return absl::InvalidArgumentError("empty input");
  const bool safetensors = (data[0] & 1) != 0;
  const std::string path = safetensors ? ScratchDir() + "/hf/model.safetensors" : ScratchDir() + "/model.bin";
  if (!WriteFile(path, data + 1, size - 1)) return absl::InternalError("cannot write the scratch file");
  const bool gguf = !safetensors && gguf::GgufFile::HasMagic(path);
  const absl::Status tokenizer = gguf ? LoadGgufTokenizer(path) : absl::OkStatus();
  // LoadModel picks the llama2.c or the GGUF loader by the file's magic.
  absl::StatusOr<std::unique_ptr<ModelWeights>> model =
      safetensors ? LoadHuggingFaceFolder(ScratchDir() + "/hf") : LoadModel(path);
  if (!model.ok()) return model.status();
  // A model that loads must be readable to its last weight: read the last row of every matrix.
  const ModelConfig& c = (*model)->config();
  std::vector<float> row;
  volatile float sink = (*model)->rms_final()[c.dim - 1];
  auto touch = [&](const WeightMatrix& m) {
    row.resize(size_t(m.cols));
    m.RowToFloat(m.rows - 1, row.data());
    sink = sink + row.back();
  };
  touch((*model)->token_embedding());
  touch((*model)->classifier());
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = (*model)->layer(l);
    for (const LayerMatrixField& f : kLayerMatrices) touch(w.*f.member);
    sink = sink + w.rms_att[c.dim - 1] + w.rms_ffn[c.dim - 1];
  }
  (void)sink;
  return tokenizer;
}

}  // namespace a2sf::worker
