#include "worker/model/gguf_model.h"

#include <algorithm>
#include <climits>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "worker/model/gguf.h"

namespace a2sf::worker {

std::string GgufTensorName(int layer, const char* stem) {
  return layer < 0 ? absl::StrCat(stem, ".weight") : absl::StrCat("blk.", layer, ".", stem, ".weight");
}

namespace {

// Reads llama.* hyperparameters into a config, each checked to fit.
class ConfigReader {
 public:
  explicit ConfigReader(const gguf::GgufFile& file) : file_(file) {}

  // `fallback` < 0: required.
  absl::Status Int(const char* key, int* out, int fallback = -1) {
    if (file_.Find(key) == nullptr && fallback >= 0) {
      *out = fallback;
      return absl::OkStatus();
    }
    absl::StatusOr<int64_t> v = file_.GetInteger(key);
    if (!v.ok()) return Prefixed(v.status());
    if (*v <= 0 || *v > INT_MAX) {
      return absl::InvalidArgumentError(absl::StrCat("'", file_.path(), "': ", key, " = ", *v, " is out of range"));
    }
    *out = int(*v);
    return absl::OkStatus();
  }
  absl::Status Float(const char* key, float* out, bool required) {
    if (file_.Find(key) == nullptr && !required) return absl::OkStatus();
    absl::StatusOr<double> v = file_.GetFloat(key);
    if (!v.ok()) return Prefixed(v.status());
    *out = float(*v);
    return absl::OkStatus();
  }

 private:
  absl::Status Prefixed(const absl::Status& s) {
    // NOT_FOUND from the container means a required key is missing: a malformed model.
    if (s.code() == absl::StatusCode::kNotFound) return absl::InvalidArgumentError(s.message());
    return s;
  }
  const gguf::GgufFile& file_;
};

absl::Status ReadConfig(const gguf::GgufFile& file, ModelConfig* c) {
  absl::StatusOr<std::string> arch = file.GetString("general.architecture");
  if (!arch.ok()) return absl::InvalidArgumentError(arch.status().message());
  if (*arch != "llama") {
    return absl::InvalidArgumentError(
        absl::StrCat("'", file.path(), "': architecture '", *arch, "' is not supported (only 'llama')"));
  }
  ConfigReader r(file);
  const struct {
    const char* key;
    int* field;
    int fallback;
  } ints[] = {{"llama.embedding_length", &c->dim, -1},
              {"llama.feed_forward_length", &c->hidden_dim, -1},
              {"llama.block_count", &c->n_layers, -1},
              {"llama.attention.head_count", &c->n_heads, -1},
              {"llama.context_length", &c->seq_len, -1}};
  for (const auto& f : ints) {
    if (absl::Status s = r.Int(f.key, f.field, f.fallback); !s.ok()) return s;
  }
  if (absl::Status s = r.Int("llama.attention.head_count_kv", &c->n_kv_heads, c->n_heads); !s.ok()) return s;
  if (absl::Status s = r.Float("llama.rope.freq_base", &c->rope_theta, false); !s.ok()) return s;
  if (absl::Status s = r.Float("llama.attention.layer_norm_rms_epsilon", &c->norm_eps, true); !s.ok()) return s;
  c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
  int rope_dims = c->head_dim;
  if (absl::Status s = r.Int("llama.rope.dimension_count", &rope_dims, c->head_dim); !s.ok()) return s;
  if (rope_dims != c->head_dim || c->head_dim * c->n_heads != c->dim) {
    return absl::InvalidArgumentError(absl::StrCat("'", file.path(), "': rope.dimension_count ", rope_dims,
                                                   " and embedding_length / head_count ", c->dim, "/", c->n_heads,
                                                   " must give one whole head size"));
  }
  if (const gguf::Value* scaling = file.Find("llama.rope.scaling.type");
      scaling != nullptr && !(scaling->type == gguf::ValueType::kString && scaling->text == "none")) {
    return absl::UnimplementedError(absl::StrCat("'", file.path(), "': RoPE scaling is not supported"));
  }
  for (const auto& [key, field] : {std::pair<const char*, int*>{"tokenizer.ggml.bos_token_id", &c->bos_id},
                                   {"tokenizer.ggml.eos_token_id", &c->eos_id}}) {
    if (file.Find(key) == nullptr) continue;
    absl::StatusOr<int64_t> id = file.GetInteger(key);
    if (!id.ok()) return id.status();
    if (*id < 0 || *id > INT_MAX) return absl::InvalidArgumentError(absl::StrCat("'", file.path(), "': ", key, " out of range"));
    *field = int(*id);
  }
  return absl::OkStatus();
}

std::string Shape(const std::vector<uint64_t>& dims) { return absl::StrCat("[", absl::StrJoin(dims, ", "), "]"); }

// The tensor `name` as a [rows][cols] view of the mapped file (rows = 1 for vectors).
absl::StatusOr<WeightMatrix> FindTensor(const gguf::GgufFile& file, const std::string& name,
                                        std::vector<uint64_t> dims) {
  const gguf::TensorInfo* t = file.FindTensor(name);
  if (t == nullptr) return absl::InvalidArgumentError(absl::StrCat("'", file.path(), "': missing tensor '", name, "'"));
  if (t->dims != dims) {
    return absl::InvalidArgumentError(absl::StrCat("'", file.path(), "': tensor '", name, "' has dims ", Shape(t->dims),
                                                   " but the metadata implies ", Shape(dims)));
  }
  const WeightTypeTraits* traits = TraitsForGgufType(t->type);
  if (traits == nullptr) {
    return absl::UnimplementedError(absl::StrCat("'", file.path(), "': tensor '", name, "' has type ",
                                                 gguf::TensorTypeName(t->type),
                                                 ", which the engine does not run (f32, f16, bf16, q8_0, q4_0)"));
  }
  const int64_t cols = int64_t(dims[0]), rows = dims.size() > 1 ? int64_t(dims[1]) : 1;
  return WeightMatrix{traits->type, t->data, rows, cols};
}

// The model's shape from the metadata and the tensor list (the classifier is tied when there is no
// 'output'), validated.
absl::Status ReadModelConfig(const gguf::GgufFile& file, const std::string& path, ModelConfig* c) {
  if (absl::Status s = ReadConfig(file, c); !s.ok()) return s;
  // The vocabulary size is the embedding's row count.
  const gguf::TensorInfo* embd = file.FindTensor(GgufTensorName(-1, "token_embd"));
  if (embd == nullptr || embd->dims.size() != 2 || embd->dims[1] > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': missing or malformed tensor 'token_embd.weight'"));
  }
  c->vocab_size = int(embd->dims[1]);
  c->shared_classifier = file.FindTensor(GgufTensorName(-1, "output")) == nullptr;
  if (absl::Status s = ValidateConfig(*c); !s.ok()) return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", s.message()));
  return absl::OkStatus();
}

// [rows][cols] of each layer matrix, by GGUF name stem.
std::map<std::string, std::pair<int64_t, int64_t>> LayerMatrixShapes(const ModelConfig& c) {
  const int64_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kv = c.kv_dim();
  return {{"attn_q", {q, dim}},    {"attn_k", {kv, dim}},       {"attn_v", {kv, dim}},     {"attn_output", {dim, q}},
          {"ffn_gate", {hidden, dim}}, {"ffn_down", {dim, hidden}}, {"ffn_up", {hidden, dim}}};
}

// Finds the file's tensors, checks their dims against the config and places them into the model;
// remembers the file's tensor types, for the format line.
class GgufTensors {
 public:
  GgufTensors(const gguf::GgufFile& file, const LoadOptions& options, ModelWeights* w) : file_(file), w_(w) {
    place_.wanted = options.weights;
    place_.panels = options.panels;
  }

  absl::StatusOr<WeightMatrix> Matrix(int layer, const char* stem, int64_t rows, int64_t cols);
  absl::StatusOr<const float*> Vector(int layer, const char* stem);
  // Layer `l`'s norms and matrices (`shapes`: LayerMatrixShapes).
  absl::Status LoadLayer(int l, const std::map<std::string, std::pair<int64_t, int64_t>>& shapes, LayerWeights* layer);
  // The file's tensor types in order of appearance, e.g. "q8_0+f32".
  std::string FileTypes() const { return absl::StrJoin(file_types_, "+"); }

 private:
  const gguf::GgufFile& file_;
  ModelWeights* w_;
  PlaceOptions place_;
  std::vector<std::string> file_types_;
};

absl::StatusOr<WeightMatrix> GgufTensors::Matrix(int layer, const char* stem, int64_t rows, int64_t cols) {
  const std::string name = GgufTensorName(layer, stem);
  absl::StatusOr<WeightMatrix> source = FindTensor(file_, name, {uint64_t(cols), uint64_t(rows)});
  if (!source.ok()) return source.status();
  const std::string type = WeightTypeName(source->type);
  if (std::find(file_types_.begin(), file_types_.end(), type) == file_types_.end()) file_types_.push_back(type);
  return w_->Place(*source, place_, name);
}

absl::StatusOr<const float*> GgufTensors::Vector(int layer, const char* stem) {
  const std::string name = GgufTensorName(layer, stem);
  absl::StatusOr<WeightMatrix> source = FindTensor(file_, name, {uint64_t(w_->config().dim)});
  if (!source.ok()) return source.status();
  return w_->PlaceVector(*source, name);
}

absl::Status GgufTensors::LoadLayer(int l, const std::map<std::string, std::pair<int64_t, int64_t>>& shapes,
                                    LayerWeights* layer) {
  for (const LayerNormField& f : kLayerNorms) {
    absl::StatusOr<const float*> v = Vector(l, f.gguf_name);
    if (!v.ok()) return v.status();
    layer->*f.member = *v;
  }
  for (const LayerMatrixField& f : kLayerMatrices) {
    const auto& [rows, cols] = shapes.at(f.gguf_name);
    absl::StatusOr<WeightMatrix> m = Matrix(l, f.gguf_name, rows, cols);
    if (!m.ok()) return m.status();
    layer->*f.member = *m;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadGgufModel(const std::string& path, const LoadOptions& options) {
  absl::StatusOr<gguf::GgufFile> file = gguf::GgufFile::Open(path);
  if (!file.ok()) return file.status();
  auto w = std::make_unique<ModelWeights>();
  ModelConfig& c = w->mutable_config();
  if (absl::Status s = ReadModelConfig(*file, path, &c); !s.ok()) return s;
  w->storage().Keep(file->TakeMapping());  // tensor pointers stay valid: the mapping does not move

  GgufTensors tensors(*file, options, w.get());
  absl::StatusOr<WeightMatrix> embedding = tensors.Matrix(-1, "token_embd", c.vocab_size, c.dim);
  if (!embedding.ok()) return embedding.status();
  w->set_token_embedding(*embedding);
  const std::map<std::string, std::pair<int64_t, int64_t>> shapes = LayerMatrixShapes(c);
  std::vector<LayerWeights>& layers = w->mutable_layers();
  layers.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    if (absl::Status s = tensors.LoadLayer(l, shapes, &layers[l]); !s.ok()) return s;
  }
  absl::StatusOr<const float*> final_norm = tensors.Vector(-1, "output_norm");
  if (!final_norm.ok()) return final_norm.status();
  w->set_rms_final(*final_norm);
  if (c.shared_classifier) {
    w->set_classifier(*embedding);
  } else {
    absl::StatusOr<WeightMatrix> output = tensors.Matrix(-1, "output", c.vocab_size, c.dim);
    if (!output.ok()) return output.status();
    w->set_classifier(*output);
  }
  w->set_format(absl::StrCat("GGUF v", file->version(), " (", tensors.FileTypes(), "), held as ", w->weight_types()));
  return w;
}

}  // namespace a2sf::worker
