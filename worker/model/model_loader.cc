#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <algorithm>
#include <array>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/float16.h"
#include "nlohmann/json.hpp"
#include "worker/model/gguf.h"
#include "worker/model/gguf_model.h"
#include "worker/model/model.h"

namespace a2sf::worker {

absl::Status ValidateConfig(const ModelConfig& c) {
  auto bad = [](const char* field, int64_t value, const char* why) {
    return absl::InvalidArgumentError(absl::StrCat("model config ", field, " = ", value, ": ", why));
  };
  if (c.dim <= 0 || c.dim > 65536) return bad("dim", c.dim, "must be in [1, 65536]");
  if (c.hidden_dim <= 0 || c.hidden_dim > 262144) return bad("hidden_dim", c.hidden_dim, "must be in [1, 262144]");
  if (c.n_layers <= 0 || c.n_layers > 1024) return bad("n_layers", c.n_layers, "must be in [1, 1024]");
  if (c.n_heads <= 0 || c.n_heads > 1024) return bad("n_heads", c.n_heads, "must be in [1, 1024]");
  if (c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads != 0) {
    return bad("n_kv_heads", c.n_kv_heads, "must be >= 1 and divide n_heads");
  }
  if (c.vocab_size <= 0 || c.vocab_size > (1 << 22)) return bad("vocab_size", c.vocab_size, "must be in [1, 4194304]");
  if (c.seq_len <= 0 || c.seq_len > (1 << 22)) return bad("seq_len", c.seq_len, "must be in [1, 4194304]");
  if (c.head_dim <= 0 || c.head_dim % 2 != 0) return bad("head_dim", c.head_dim, "must be positive and even");
  if (!(c.rope_theta > 0.0f) || !std::isfinite(c.rope_theta)) {
    return absl::InvalidArgumentError("model config rope_theta: must be a positive number");
  }
  if (!(c.norm_eps > 0.0f) || !(c.norm_eps < 1.0f)) {
    return absl::InvalidArgumentError("model config rms_norm_eps: must be in (0, 1)");
  }
  return absl::OkStatus();
}

size_t ModelWeights::bytes_per_token() const {
  size_t bytes = classifier_.bytes() + size_t(config_.dim) * 4;
  for (const LayerWeights& l : layers_) {
    for (const LayerMatrixField& f : kLayerMatrices) bytes += (l.*f.member).bytes();
    bytes += size_t(config_.dim) * 4 * 2;
  }
  return bytes;
}

std::string ModelWeights::weight_types() const {
  std::vector<WeightType> seen;
  auto add = [&](const WeightMatrix& m) {
    if (!m.empty() && std::find(seen.begin(), seen.end(), m.type) == seen.end()) seen.push_back(m.type);
  };
  add(token_embedding_);
  for (const LayerWeights& l : layers_) {
    for (const LayerMatrixField& f : kLayerMatrices) add(l.*f.member);
  }
  add(classifier_);
  std::string out;
  for (WeightType t : seen) absl::StrAppend(&out, out.empty() ? "" : "+", WeightTypeName(t));
  return out;
}

absl::StatusOr<WeightMatrix> ModelWeights::Place(const WeightMatrix& source, const PlaceOptions& options,
                                                 const std::string& name) {
  std::string note;
  absl::StatusOr<WeightMatrix> placed = PlaceMatrix(source, options, name, &storage_, &note);
  if (placed.ok() && !note.empty()) notes_.push_back(std::move(note));
  return placed;
}

absl::StatusOr<const float*> ModelWeights::PlaceVector(const WeightMatrix& source, const std::string& name) {
  PlaceOptions options;
  options.wanted = WeightType::kF32;
  absl::StatusOr<WeightMatrix> placed = Place(source, options, name);
  if (!placed.ok()) return placed.status();
  return static_cast<const float*>(placed->data);
}

namespace {

using nlohmann::json;

// Reads fields of a little-endian file with bounds checks.
class Reader {
 public:
  Reader(const MappedFile& file, size_t offset) : file_(file), offset_(offset) {}
  bool Has(size_t bytes) const { return offset_ <= file_.size() && file_.size() - offset_ >= bytes; }
  template <typename T>
  T Read() {
    T value;
    std::memcpy(&value, file_.data() + offset_, sizeof(T));
    offset_ += sizeof(T);
    return value;
  }
  const uint8_t* Take(size_t bytes) {
    const uint8_t* p = file_.data() + offset_;
    offset_ += bytes;
    return p;
  }
  size_t offset() const { return offset_; }

 private:
  const MappedFile& file_;
  size_t offset_;
 public:
  void Seek(size_t offset) { offset_ = offset; }
};

absl::Status Truncated(const std::string& path, const std::string& what, size_t need, size_t have) {
  return absl::DataLossError(absl::StrCat("'", path, "' is truncated: ", what, " needs ", need,
                                          " bytes at this point but the file has ", have));
}

}  // namespace

namespace {

// The header of a llama2.c checkpoint: the config, and for "version 2" the int8 group size.
struct Llama2cHeader {
  bool quantized = false;
  int group_size = 0;
  size_t data_offset = 28;
};

absl::StatusOr<Llama2cHeader> ReadLlama2cHeader(const MappedFile& file, ModelConfig* c) {
  const std::string& path = file.path();
  Llama2cHeader h;
  Reader header(file, 0);
  if (!header.Has(28)) return Truncated(path, "the header", 28, file.size());
  h.quantized = header.Read<uint32_t>() == 0x616b3432u;  // "ak42"
  if (h.quantized) {
    if (!header.Has(4)) return Truncated(path, "the version", 4, file.size());
    const int version = header.Read<int32_t>();
    if (version != 2) {
      return absl::UnimplementedError(absl::StrCat("'", path, "': llama2.c checkpoint version ", version,
                                                   " is not supported (only 0 = fp32 and 2 = int8)"));
    }
  } else {
    header.Seek(0);
  }
  if (!header.Has(28)) return Truncated(path, "the config", 28, file.size());
  c->dim = header.Read<int32_t>();
  c->hidden_dim = header.Read<int32_t>();
  c->n_layers = header.Read<int32_t>();
  c->n_heads = header.Read<int32_t>();
  c->n_kv_heads = header.Read<int32_t>();
  c->vocab_size = header.Read<int32_t>();
  c->seq_len = header.Read<int32_t>();
  if (h.quantized) {
    if (!header.Has(5)) return Truncated(path, "the int8 header", 5, file.size());
    c->shared_classifier = header.Read<uint8_t>() != 0;
    h.group_size = header.Read<int32_t>();
    h.data_offset = 256;
    if (file.size() < 256) return Truncated(path, "the 256-byte header", 256, file.size());
    if (h.group_size <= 0 || h.group_size > (1 << 20)) {
      return absl::InvalidArgumentError(absl::StrCat("'", path, "': group_size ", h.group_size, " is invalid"));
    }
  } else {
    // A negative vocab_size marks a separate classifier at the end of the file.
    c->shared_classifier = c->vocab_size > 0;
    c->vocab_size = std::abs(c->vocab_size);
  }
  c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
  if (absl::Status s = ValidateConfig(*c); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", s.message()));
  }
  if (c->dim % c->n_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': dim ", c->dim, " is not a multiple of n_heads ", c->n_heads));
  }
  return h;
}

// A llama2.c int8 tensor (int8[rows * cols] then one fp32 scale per group of `group_size`
// consecutive values) re-laid-out as GGUF q8_0 blocks, each with its group's scale rounded to fp16:
// the int8 values are kept exactly, the scales lose at most 2^-11 relative. When groups are not whole
// blocks of a row (they cross row ends, e.g. down-projection rows of 172) the tensor is dequantized
// exactly to f32 instead. Either way an owned tensor (the file interleaves no blocks).
WeightMatrix Int8ToBlocks(const int8_t* values, const uint8_t* scales, int64_t rows, int64_t cols, int group_size,
                          WeightStorage* storage, std::string* note, const std::string& name) {
  auto scale = [&](size_t i) {
    float s;
    std::memcpy(&s, scales + (i / group_size) * 4, 4);
    return s;
  };
  const bool blocks = cols % kQuantBlock == 0 && group_size % kQuantBlock == 0 && cols % group_size == 0;
  WeightMatrix out{blocks ? WeightType::kQ8_0 : WeightType::kF32, nullptr, rows, cols};
  uint8_t* dst = storage->Allocate(out.bytes());
  out.data = dst;
  const size_t n = size_t(rows) * cols;
  if (blocks) {
    for (size_t b = 0; b < n / kQuantBlock; ++b) {
      BlockQ8_0 block;
      block.d = FloatToHalf(scale(b * kQuantBlock));
      std::memcpy(block.qs, values + b * kQuantBlock, kQuantBlock);
      std::memcpy(dst + b * sizeof(BlockQ8_0), &block, sizeof(block));
    }
  } else {
    float* f = reinterpret_cast<float*>(dst);
    for (size_t i = 0; i < n; ++i) f[i] = float(values[i]) * scale(i);
    *note = absl::StrCat(name, ": int8 groups of ", group_size, " are not whole q8_0 blocks of rows of ", cols,
                         " weights: held as f32 (dequantized exactly)");
  }
  return out;
}

// PlaceOptions for a loader's matrices: the type and the layout LoadOptions ask for.
PlaceOptions MatrixPlacement(const LoadOptions& options) {
  PlaceOptions place;
  place.wanted = options.weights;
  place.panels = options.panels;
  return place;
}

// A layer matrix of a llama2.c checkpoint: its [rows][cols] and its name there.
struct Llama2cMatrix {
  WeightMatrix LayerWeights::*member;
  int64_t rows, cols;
  const char* name;
};

// The seven layer matrices in the file's order.
std::array<Llama2cMatrix, 7> Llama2cMatrices(const ModelConfig& c) {
  const int64_t dim = c.dim, hidden = c.hidden_dim, kv = c.kv_dim(), q = c.q_dim();
  return {{{&LayerWeights::wq, q, dim, "wq"},     {&LayerWeights::wk, kv, dim, "wk"},
           {&LayerWeights::wv, kv, dim, "wv"},    {&LayerWeights::wo, dim, q, "wo"},
           {&LayerWeights::w1, hidden, dim, "w1"}, {&LayerWeights::w2, dim, hidden, "w2"},
           {&LayerWeights::w3, hidden, dim, "w3"}}};
}

// Reads a llama2.c checkpoint's tensors from the end of its header, in the file's order, and places
// them into the model (whose config and layer count are already set).
class Llama2cTensorReader {
 public:
  Llama2cTensorReader(const MappedFile& file, const Llama2cHeader& header, const LoadOptions& options,
                      ModelWeights* w)
      : file_(file), header_(header), r_(file, header.data_offset), place_(MatrixPlacement(options)), w_(w) {}

  // llama2.c's layouts: v0 stores each tensor for all layers back to back, embedding first; v2 the
  // fp32 norms first, then the int8 tensors. Each reads every tensor up to the classifier and
  // returns the token embedding.
  absl::StatusOr<WeightMatrix> ReadV0Tensors();
  absl::StatusOr<WeightMatrix> ReadV2Tensors();
  // Sets the classifier: the embedding when shared, else the file's last tensor.
  absl::Status ReadClassifier(const WeightMatrix& embedding);
  // INVALID_ARGUMENT when bytes follow the last tensor.
  absl::Status ExpectEnd() const;

 private:
  absl::StatusOr<WeightMatrix> TakeF32(int64_t rows, int64_t cols, const char* what);
  absl::Status TakeVectors(const float* LayerWeights::*member, int64_t n, const char* what);
  absl::Status TakeFinalNorm();
  absl::StatusOr<WeightMatrix> TakeMatrix(int64_t rows, int64_t cols, const std::string& name);
  absl::StatusOr<WeightMatrix> TakeInt8Matrix(int64_t rows, int64_t cols, const std::string& name);
  absl::Status TakeLayerMatrices(const Llama2cMatrix& f);

  const MappedFile& file_;
  const Llama2cHeader& header_;
  Reader r_;
  PlaceOptions place_;
  ModelWeights* w_;
};

// `count` fp32 values at the read position, as a [rows][cols] view.
absl::StatusOr<WeightMatrix> Llama2cTensorReader::TakeF32(int64_t rows, int64_t cols, const char* what) {
  const size_t bytes = size_t(rows) * cols * 4;
  if (!r_.Has(bytes)) return Truncated(file_.path(), what, bytes, file_.size() - r_.offset());
  return WeightMatrix{WeightType::kF32, r_.Take(bytes), rows, cols};
}

// One fp32 vector of `n` per layer, stored for all layers back to back.
absl::Status Llama2cTensorReader::TakeVectors(const float* LayerWeights::*member, int64_t n, const char* what) {
  const int64_t L = w_->config().n_layers;
  absl::StatusOr<WeightMatrix> all = TakeF32(L, n, what);
  if (!all.ok()) return all.status();
  std::vector<LayerWeights>& layers = w_->mutable_layers();
  for (int64_t l = 0; l < L; ++l) {
    absl::StatusOr<const float*> v = w_->PlaceVector({WeightType::kF32, all->row(l), 1, n}, what);
    if (!v.ok()) return v.status();
    layers[l].*member = *v;
  }
  return absl::OkStatus();
}

absl::Status Llama2cTensorReader::TakeFinalNorm() {
  absl::StatusOr<WeightMatrix> final_norm = TakeF32(1, w_->config().dim, "rms_final_weight");
  if (!final_norm.ok()) return final_norm.status();
  absl::StatusOr<const float*> rms_final = w_->PlaceVector(*final_norm, "rms_final_weight");
  if (!rms_final.ok()) return rms_final.status();
  w_->set_rms_final(*rms_final);
  return absl::OkStatus();
}

// One matrix of layer `l` (or of the model when l < 0), in the file's type or the one asked for.
absl::StatusOr<WeightMatrix> Llama2cTensorReader::TakeMatrix(int64_t rows, int64_t cols, const std::string& name) {
  if (header_.quantized) return TakeInt8Matrix(rows, cols, name);
  absl::StatusOr<WeightMatrix> m = TakeF32(rows, cols, name.c_str());
  if (!m.ok()) return m.status();
  return w_->Place(*m, place_, name);
}

// An int8 tensor re-blocked (Int8ToBlocks), its mapped pages released, then placed; the re-blocked
// copy is freed when placing made another, so the tensor is held once.
absl::StatusOr<WeightMatrix> Llama2cTensorReader::TakeInt8Matrix(int64_t rows, int64_t cols, const std::string& name) {
  const std::string& path = file_.path();
  const size_t n = size_t(rows) * cols, groups = n / header_.group_size;
  if (n % header_.group_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", name, " has ", n,
                                                   " values, not a multiple of group_size ", header_.group_size));
  }
  if (!r_.Has(n + groups * 4)) return Truncated(path, name, n + groups * 4, file_.size() - r_.offset());
  const int8_t* values = reinterpret_cast<const int8_t*>(r_.Take(n));
  const uint8_t* scales = r_.Take(groups * 4);
  std::string note;
  const WeightMatrix blocks = Int8ToBlocks(values, scales, rows, cols, header_.group_size, &w_->storage(), &note, name);
  w_->storage().Release(values, n + groups * 4);
  if (!note.empty() && !place_.wanted) w_->AddNote(std::move(note));
  absl::StatusOr<WeightMatrix> placed = w_->Place(blocks, place_, name);
  if (placed.ok() && placed->data != blocks.data) w_->storage().Free(blocks.data);  // held once
  return placed;
}

// Matrix `f` of every layer, stored back to back.
absl::Status Llama2cTensorReader::TakeLayerMatrices(const Llama2cMatrix& f) {
  std::vector<LayerWeights>& layers = w_->mutable_layers();
  for (int64_t l = 0; l < w_->config().n_layers; ++l) {
    absl::StatusOr<WeightMatrix> m = TakeMatrix(f.rows, f.cols, absl::StrCat("layers.", l, ".", f.name));
    if (!m.ok()) return m.status();
    layers[l].*f.member = *m;
  }
  return absl::OkStatus();
}

absl::StatusOr<WeightMatrix> Llama2cTensorReader::ReadV0Tensors() {
  const ModelConfig& c = w_->config();
  absl::StatusOr<WeightMatrix> embedding = TakeMatrix(c.vocab_size, c.dim, "token_embedding_table");
  if (!embedding.ok()) return embedding.status();
  if (absl::Status s = TakeVectors(&LayerWeights::rms_att, c.dim, "rms_att_weight"); !s.ok()) return s;
  for (const Llama2cMatrix& f : Llama2cMatrices(c)) {
    if (f.member == &LayerWeights::w1) {
      if (absl::Status s = TakeVectors(&LayerWeights::rms_ffn, c.dim, "rms_ffn_weight"); !s.ok()) return s;
    }
    if (absl::Status s = TakeLayerMatrices(f); !s.ok()) return s;
  }
  if (absl::Status s = TakeFinalNorm(); !s.ok()) return s;
  // freq_cis_real and freq_cis_imag (unused: RoPE is computed) sit between the norm and a separate
  // classifier.
  absl::StatusOr<WeightMatrix> freq = TakeF32(c.seq_len, c.head_dim, "freq_cis");
  if (!freq.ok()) return freq.status();
  return embedding;
}

absl::StatusOr<WeightMatrix> Llama2cTensorReader::ReadV2Tensors() {
  const ModelConfig& c = w_->config();
  if (absl::Status s = TakeVectors(&LayerWeights::rms_att, c.dim, "rms_att_weight"); !s.ok()) return s;
  if (absl::Status s = TakeVectors(&LayerWeights::rms_ffn, c.dim, "rms_ffn_weight"); !s.ok()) return s;
  if (absl::Status s = TakeFinalNorm(); !s.ok()) return s;
  absl::StatusOr<WeightMatrix> embedding = TakeMatrix(c.vocab_size, c.dim, "token_embedding_table");
  if (!embedding.ok()) return embedding.status();
  for (const Llama2cMatrix& f : Llama2cMatrices(c)) {
    if (absl::Status s = TakeLayerMatrices(f); !s.ok()) return s;
  }
  return embedding;
}

absl::Status Llama2cTensorReader::ReadClassifier(const WeightMatrix& embedding) {
  const ModelConfig& c = w_->config();
  if (c.shared_classifier) {
    w_->set_classifier(embedding);
    return absl::OkStatus();
  }
  absl::StatusOr<WeightMatrix> cls = TakeMatrix(c.vocab_size, c.dim, "classifier");
  if (!cls.ok()) return cls.status();
  w_->set_classifier(*cls);
  return absl::OkStatus();
}

absl::Status Llama2cTensorReader::ExpectEnd() const {
  if (r_.offset() == file_.size()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("'", file_.path(), "': ", file_.size() - r_.offset(),
                                                 " unexpected bytes after the last tensor (wrong shape in the header?)"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadLlama2cCheckpoint(const std::string& path, const LoadOptions& options) {
  absl::StatusOr<MappedFile> opened = MappedFile::Open(path);
  if (!opened.ok()) return opened.status();
  auto w = std::make_unique<ModelWeights>();
  const MappedFile& file = w->storage().Keep(std::move(*opened));
  absl::StatusOr<Llama2cHeader> header = ReadLlama2cHeader(file, &w->mutable_config());
  if (!header.ok()) return header.status();
  w->mutable_layers().resize(w->config().n_layers);
  Llama2cTensorReader tensors(file, *header, options, w.get());
  absl::StatusOr<WeightMatrix> embedding = header->quantized ? tensors.ReadV2Tensors() : tensors.ReadV0Tensors();
  if (!embedding.ok()) return embedding.status();
  w->set_token_embedding(*embedding);
  if (absl::Status s = tensors.ReadClassifier(*embedding); !s.ok()) return s;
  if (absl::Status s = tensors.ExpectEnd(); !s.ok()) return s;
  w->set_format(absl::StrCat(header->quantized ? "llama2.c v2 (int8)" : "llama2.c v0 (fp32)", ", held as ",
                             w->weight_types()));
  return w;
}

namespace {

struct SafetensorsEntry {
  const uint8_t* data;
  size_t bytes;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string file;
};

absl::Status ParseSafetensors(const MappedFile& file, std::map<std::string, SafetensorsEntry>* out) {
  const std::string& path = file.path();
  if (file.size() < 8) return Truncated(path, "the safetensors header length", 8, file.size());
  uint64_t header_len;
  std::memcpy(&header_len, file.data(), 8);
  if (header_len > file.size() - 8 || header_len > (100u << 20)) {
    return absl::DataLossError(absl::StrCat("'", path, "': safetensors header length ", header_len,
                                            " exceeds the file (truncated or not a safetensors file)"));
  }
  json header = json::parse(file.data() + 8, file.data() + 8 + header_len, nullptr, false);
  if (header.is_discarded() || !header.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': safetensors header is not a JSON object"));
  }
  const size_t data_start = 8 + header_len;
  const size_t data_size = file.size() - data_start;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    if (!info.is_object() || !info.contains("dtype") || !info.contains("shape") || !info.contains("data_offsets") ||
        !info["dtype"].is_string() || !info["shape"].is_array() || !info["data_offsets"].is_array() ||
        info["data_offsets"].size() != 2 || !info["data_offsets"][0].is_number_unsigned() ||
        !info["data_offsets"][1].is_number_unsigned()) {
      return absl::InvalidArgumentError(absl::StrCat("'", path, "': tensor '", name, "' has a malformed entry"));
    }
    const uint64_t begin = info["data_offsets"][0].get<uint64_t>(), end = info["data_offsets"][1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return absl::DataLossError(absl::StrCat("'", path, "': tensor '", name, "' lies outside the file (offsets ",
                                              begin, "..", end, ", data ", data_size, " bytes)"));
    }
    SafetensorsEntry e{file.data() + data_start + begin, end - begin, info["dtype"].get<std::string>(), {}, path};
    for (const json& d : info["shape"]) {
      if (!d.is_number_unsigned()) return absl::InvalidArgumentError(absl::StrCat("'", path, "': bad shape of '", name, "'"));
      e.shape.push_back(d.get<int64_t>());
    }
    (*out)[name] = std::move(e);
  }
  return absl::OkStatus();
}

// config.json of a Hugging Face folder, which must be a JSON object.
absl::StatusOr<json> ReadConfigJson(const std::string& folder) {
  absl::StatusOr<std::string> config_text = ReadFileToString(folder + "/config.json");
  if (!config_text.ok()) return config_text.status();
  json config = json::parse(*config_text, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("'", folder, "/config.json' is not a JSON object"));
  }
  return config;
}

// config.json's integer `key`; `fallback` when it is absent or null, unless `required`.
absl::StatusOr<int> ConfigInt(const json& config, const char* key, int fallback, bool required) {
  if (!config.contains(key) || config[key].is_null()) {
    if (required) return absl::InvalidArgumentError(absl::StrCat("config.json: missing '", key, "'"));
    return fallback;
  }
  if (!config[key].is_number_integer()) return absl::InvalidArgumentError(absl::StrCat("config.json: '", key, "' must be an integer"));
  return config[key].get<int>();
}

// The model's shape from config.json's keys, validated.
absl::Status ReadHfConfig(const json& config, ModelConfig* c) {
  const struct {
    const char* key;
    int* field;
    bool required;
  } ints[] = {{"hidden_size", &c->dim, true},         {"intermediate_size", &c->hidden_dim, true},
              {"num_hidden_layers", &c->n_layers, true}, {"num_attention_heads", &c->n_heads, true},
              {"vocab_size", &c->vocab_size, true},   {"max_position_embeddings", &c->seq_len, true}};
  for (const auto& f : ints) {
    absl::StatusOr<int> v = ConfigInt(config, f.key, 0, f.required);
    if (!v.ok()) return v.status();
    *f.field = *v;
  }
  absl::StatusOr<int> kv = ConfigInt(config, "num_key_value_heads", c->n_heads, false);
  if (!kv.ok()) return kv.status();
  c->n_kv_heads = *kv;
  absl::StatusOr<int> head_dim = ConfigInt(config, "head_dim", c->n_heads > 0 ? c->dim / c->n_heads : 0, false);
  if (!head_dim.ok()) return head_dim.status();
  c->head_dim = *head_dim;
  if (config.contains("rope_theta") && config["rope_theta"].is_number()) c->rope_theta = config["rope_theta"].get<float>();
  if (config.contains("rms_norm_eps") && config["rms_norm_eps"].is_number()) c->norm_eps = config["rms_norm_eps"].get<float>();
  if (config.contains("rope_scaling") && !config["rope_scaling"].is_null()) {
    return absl::UnimplementedError("config.json: rope_scaling is not supported");
  }
  absl::StatusOr<int> bos = ConfigInt(config, "bos_token_id", 1, false);
  absl::StatusOr<int> eos = ConfigInt(config, "eos_token_id", 2, false);
  if (bos.ok()) c->bos_id = *bos;
  if (eos.ok()) c->eos_id = *eos;
  c->shared_classifier = config.value("tie_word_embeddings", false);
  if (absl::Status s = ValidateConfig(*c); !s.ok()) return absl::InvalidArgumentError(absl::StrCat("config.json: ", s.message()));
  return absl::OkStatus();
}

// Which files: an index's weight_map, or the single model.safetensors.
absl::StatusOr<std::set<std::string>> SafetensorsFiles(const std::string& folder) {
  std::set<std::string> files;
  absl::StatusOr<std::string> index_text = ReadFileToString(folder + "/model.safetensors.index.json");
  if (!index_text.ok()) {
    files.insert("model.safetensors");
    return files;
  }
  json index = json::parse(*index_text, nullptr, false);
  if (index.is_discarded() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError("model.safetensors.index.json: missing 'weight_map' object");
  }
  for (const auto& [name, file] : index["weight_map"].items()) {
    if (!file.is_string() || absl::StrContains(file.get<std::string>(), "/")) {
      return absl::InvalidArgumentError(absl::StrCat("model.safetensors.index.json: bad file for '", name, "'"));
    }
    files.insert(file.get<std::string>());
  }
  return files;
}

// Maps each of `files` in `folder` (kept in `storage`: tensors are used from the maps) and indexes
// their tensors by name.
absl::Status MapSafetensors(const std::string& folder, const std::set<std::string>& files, WeightStorage* storage,
                            std::map<std::string, SafetensorsEntry>* tensors) {
  for (const std::string& name : files) {
    absl::StatusOr<MappedFile> file = MappedFile::Open(folder + "/" + name);
    if (!file.ok()) return file.status();
    if (absl::Status s = ParseSafetensors(storage->Keep(std::move(*file)), tensors); !s.ok()) return s;
  }
  return absl::OkStatus();
}

// The weight type of a safetensors dtype the loader reads (F32, F16, BF16); nullopt for others.
std::optional<WeightType> SafetensorsWeightType(const std::string& dtype) {
  return dtype == "F32"    ? std::optional(WeightType::kF32)
         : dtype == "F16"  ? std::optional(WeightType::kF16)
         : dtype == "BF16" ? std::optional(WeightType::kBF16)
                           : std::nullopt;
}

// Finds a folder's tensors by name, checks them against the shapes config.json implies and places
// them into the model; remembers the dtypes seen, for the format line.
class HfTensors {
 public:
  HfTensors(std::map<std::string, SafetensorsEntry> tensors, const LoadOptions& options, ModelWeights* w)
      : tensors_(std::move(tensors)), place_(MatrixPlacement(options)), w_(w) {}

  absl::StatusOr<WeightMatrix> Matrix(const std::string& name, const std::vector<int64_t>& shape, int permute_heads);
  absl::StatusOr<const float*> Vector(const std::string& name, int64_t n);
  bool Has(const std::string& name) const { return tensors_.count(name) != 0; }
  // The dtypes seen, e.g. "BF16" or "F16+F32".
  std::string DtypeList() const;

 private:
  absl::StatusOr<WeightMatrix> View(const std::string& name, const std::vector<int64_t>& shape, int permute_heads,
                                    PlaceOptions* place);

  std::map<std::string, SafetensorsEntry> tensors_;
  std::set<std::string> dtypes_;
  PlaceOptions place_;
  ModelWeights* w_;
};

// A tensor of the expected shape as a view of its file's type; `permute_heads` > 0 also gives the
// row order from rotate-half to interleaved pairs: HF row h*hd + c*hd/2 + i holds llama2.c row
// h*hd + 2*i + c.
absl::StatusOr<WeightMatrix> HfTensors::View(const std::string& name, const std::vector<int64_t>& shape,
                                             int permute_heads, PlaceOptions* place) {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return absl::InvalidArgumentError(absl::StrCat("safetensors: missing tensor '", name, "'"));
  const SafetensorsEntry& e = it->second;
  if (e.shape != shape) {
    std::string want, got;
    for (int64_t d : shape) absl::StrAppend(&want, want.empty() ? "" : ",", d);
    for (int64_t d : e.shape) absl::StrAppend(&got, got.empty() ? "" : ",", d);
    return absl::InvalidArgumentError(absl::StrCat("'", e.file, "': tensor '", name, "' has shape [", got,
                                                   "] but config.json implies [", want, "]"));
  }
  const std::optional<WeightType> type = SafetensorsWeightType(e.dtype);
  if (!type) {
    return absl::UnimplementedError(absl::StrCat("'", e.file, "': tensor '", name, "' has dtype ", e.dtype,
                                                 " (supported: F32, F16, BF16)"));
  }
  const WeightMatrix m{*type, e.data, shape.size() == 2 ? shape[0] : 1, shape.back()};
  if (e.bytes != m.bytes()) {
    return absl::DataLossError(absl::StrCat("'", e.file, "': tensor '", name, "' holds ", e.bytes, " bytes, expected ",
                                            m.bytes()));
  }
  dtypes_.insert(e.dtype);
  place->row_order.clear();
  const int64_t hd = w_->config().head_dim;
  for (int h = 0; h < permute_heads; ++h) {
    for (int64_t i = 0; i < hd; ++i) place->row_order.push_back(h * hd + (i % 2) * (hd / 2) + i / 2);
  }
  return m;
}

absl::StatusOr<WeightMatrix> HfTensors::Matrix(const std::string& name, const std::vector<int64_t>& shape,
                                               int permute_heads) {
  absl::StatusOr<WeightMatrix> m = View(name, shape, permute_heads, &place_);
  if (!m.ok()) return m.status();
  return w_->Place(*m, place_, name);
}

absl::StatusOr<const float*> HfTensors::Vector(const std::string& name, int64_t n) {
  PlaceOptions unused;
  absl::StatusOr<WeightMatrix> m = View(name, {n}, 0, &unused);
  if (!m.ok()) return m.status();
  return w_->PlaceVector(*m, name);
}

std::string HfTensors::DtypeList() const {
  std::string dtype_list;
  for (const std::string& d : dtypes_) absl::StrAppend(&dtype_list, dtype_list.empty() ? "" : "+", d);
  return dtype_list;
}

// Layer `l`'s seven matrices and two norms, by their Hugging Face names.
absl::Status LoadHfLayer(const ModelConfig& c, int l, HfTensors* tensors, LayerWeights* layer) {
  const int64_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kvd = c.kv_dim();
  const std::string p = absl::StrCat("model.layers.", l, ".");
  const struct {
    WeightMatrix LayerWeights::*member;
    std::string name;
    std::vector<int64_t> shape;
    int permute;
  } fields[] = {{&LayerWeights::wq, p + "self_attn.q_proj.weight", {q, dim}, c.n_heads},
                {&LayerWeights::wk, p + "self_attn.k_proj.weight", {kvd, dim}, c.n_kv_heads},
                {&LayerWeights::wv, p + "self_attn.v_proj.weight", {kvd, dim}, 0},
                {&LayerWeights::wo, p + "self_attn.o_proj.weight", {dim, q}, 0},
                {&LayerWeights::w1, p + "mlp.gate_proj.weight", {hidden, dim}, 0},
                {&LayerWeights::w2, p + "mlp.down_proj.weight", {dim, hidden}, 0},
                {&LayerWeights::w3, p + "mlp.up_proj.weight", {hidden, dim}, 0}};
  for (const auto& f : fields) {
    absl::StatusOr<WeightMatrix> t = tensors->Matrix(f.name, f.shape, f.permute);
    if (!t.ok()) return t.status();
    layer->*f.member = *t;
  }
  absl::StatusOr<const float*> att = tensors->Vector(p + "input_layernorm.weight", dim);
  if (!att.ok()) return att.status();
  absl::StatusOr<const float*> ffn = tensors->Vector(p + "post_attention_layernorm.weight", dim);
  if (!ffn.ok()) return ffn.status();
  layer->rms_att = *att;
  layer->rms_ffn = *ffn;
  return absl::OkStatus();
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadHuggingFaceFolder(const std::string& folder, const LoadOptions& options) {
  absl::StatusOr<json> config = ReadConfigJson(folder);
  if (!config.ok()) return config.status();
  auto w = std::make_unique<ModelWeights>();
  ModelConfig& c = w->mutable_config();
  if (absl::Status s = ReadHfConfig(*config, &c); !s.ok()) return s;
  absl::StatusOr<std::set<std::string>> files = SafetensorsFiles(folder);
  if (!files.ok()) return files.status();
  std::map<std::string, SafetensorsEntry> entries;
  if (absl::Status s = MapSafetensors(folder, *files, &w->storage(), &entries); !s.ok()) return s;
  HfTensors tensors(std::move(entries), options, w.get());

  const int64_t dim = c.dim, vocab = c.vocab_size;
  absl::StatusOr<WeightMatrix> embedding = tensors.Matrix("model.embed_tokens.weight", {vocab, dim}, 0);
  if (!embedding.ok()) return embedding.status();
  w->set_token_embedding(*embedding);
  std::vector<LayerWeights>& layers = w->mutable_layers();
  layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    if (absl::Status s = LoadHfLayer(c, l, &tensors, &layers[l]); !s.ok()) return s;
  }
  absl::StatusOr<const float*> norm = tensors.Vector("model.norm.weight", dim);
  if (!norm.ok()) return norm.status();
  w->set_rms_final(*norm);
  if (c.shared_classifier || !tensors.Has("lm_head.weight")) {
    c.shared_classifier = true;
    w->set_classifier(*embedding);
  } else {
    absl::StatusOr<WeightMatrix> head = tensors.Matrix("lm_head.weight", {vocab, dim}, 0);
    if (!head.ok()) return head.status();
    w->set_classifier(*head);
  }
  w->set_format(absl::StrCat("Hugging Face safetensors (", tensors.DtypeList(), "), held as ", w->weight_types()));
  return w;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModel(const std::string& path, const LoadOptions& options) {
  if (path.empty()) return absl::InvalidArgumentError("model path is empty");
  if (IsDirectory(path)) return LoadHuggingFaceFolder(path, options);
  if (gguf::GgufFile::HasMagic(path)) return LoadGgufModel(path, options);
  return LoadLlama2cCheckpoint(path, options);
}

}  // namespace a2sf::worker
