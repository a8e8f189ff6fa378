#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/files.h"
#include "common/float16.h"
#include "nlohmann/json.hpp"
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
  const ModelConfig& c = config_;
  const size_t per_layer = size_t(c.q_dim()) * c.dim * 2 + size_t(c.kv_dim()) * c.dim * 2 +
                           size_t(c.hidden_dim) * c.dim * 3 + size_t(c.dim) * 2;
  return 4 * (per_layer * c.n_layers + size_t(c.vocab_size) * c.dim + c.dim);
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

class ModelLoader {
 public:
  static absl::StatusOr<std::unique_ptr<ModelWeights>> Llama2c(const std::string& path);
  static absl::StatusOr<std::unique_ptr<ModelWeights>> HuggingFace(const std::string& folder);

 private:
  static const float* Own(ModelWeights* w, std::vector<float> values) {
    w->owned_.push_back(std::move(values));
    return w->owned_.back().data();
  }
};

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelLoader::Llama2c(const std::string& path) {
  absl::StatusOr<MappedFile> file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  auto w = std::unique_ptr<ModelWeights>(new ModelWeights());
  Reader header(*file, 0);
  if (!header.Has(28)) return Truncated(path, "the header", 28, file->size());
  const uint32_t magic = header.Read<uint32_t>();
  const bool quantized = magic == 0x616b3432u;  // "ak42"
  int version = 0;
  int group_size = 0;
  if (quantized) {
    if (!header.Has(4)) return Truncated(path, "the version", 4, file->size());
    version = header.Read<int32_t>();
    if (version != 2) {
      return absl::UnimplementedError(absl::StrCat("'", path, "': llama2.c checkpoint version ", version,
                                                   " is not supported (only 0 = fp32 and 2 = int8)"));
    }
  } else {
    header.Seek(0);
  }
  if (!header.Has(28)) return Truncated(path, "the config", 28, file->size());
  ModelConfig& c = w->config_;
  c.dim = header.Read<int32_t>();
  c.hidden_dim = header.Read<int32_t>();
  c.n_layers = header.Read<int32_t>();
  c.n_heads = header.Read<int32_t>();
  c.n_kv_heads = header.Read<int32_t>();
  c.vocab_size = header.Read<int32_t>();
  c.seq_len = header.Read<int32_t>();
  if (quantized) {
    if (!header.Has(5)) return Truncated(path, "the int8 header", 5, file->size());
    c.shared_classifier = header.Read<uint8_t>() != 0;
    group_size = header.Read<int32_t>();
  } else {
    // A negative vocab_size marks a separate classifier at the end of the file.
    c.shared_classifier = c.vocab_size > 0;
    c.vocab_size = std::abs(c.vocab_size);
  }
  c.head_dim = c.n_heads > 0 ? c.dim / c.n_heads : 0;
  if (absl::Status s = ValidateConfig(c); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", s.message()));
  }
  if (c.dim % c.n_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "': dim ", c.dim, " is not a multiple of n_heads ", c.n_heads));
  }
  const size_t L = c.n_layers, dim = c.dim, hidden = c.hidden_dim, kv = c.kv_dim(), q = c.q_dim(),
               vocab = c.vocab_size;
  w->layers_.resize(L);

  if (!quantized) {
    w->format_ = "llama2.c v0 (fp32)";
    Reader r(*file, 28);
    auto take = [&](size_t count, const char* what) -> absl::StatusOr<const float*> {
      if (!r.Has(count * 4)) return Truncated(path, what, count * 4, file->size() - r.offset());
      return reinterpret_cast<const float*>(r.Take(count * 4));
    };
    // llama2.c's layout: each tensor for all layers, back to back.
    struct Field {
      const float* LayerWeights::*member;
      size_t per_layer;
      const char* name;
    };
    absl::StatusOr<const float*> embedding = take(vocab * dim, "token_embedding_table");
    if (!embedding.ok()) return embedding.status();
    w->token_embedding_ = *embedding;
    const Field fields[] = {{&LayerWeights::rms_att, dim, "rms_att_weight"}, {&LayerWeights::wq, q * dim, "wq"},
                            {&LayerWeights::wk, kv * dim, "wk"},           {&LayerWeights::wv, kv * dim, "wv"},
                            {&LayerWeights::wo, dim * q, "wo"},            {&LayerWeights::rms_ffn, dim, "rms_ffn_weight"},
                            {&LayerWeights::w1, hidden * dim, "w1"},      {&LayerWeights::w2, dim * hidden, "w2"},
                            {&LayerWeights::w3, hidden * dim, "w3"}};
    for (const Field& f : fields) {
      absl::StatusOr<const float*> base = take(f.per_layer * L, f.name);
      if (!base.ok()) return base.status();
      for (size_t l = 0; l < L; ++l) w->layers_[l].*f.member = *base + l * f.per_layer;
    }
    absl::StatusOr<const float*> final_norm = take(dim, "rms_final_weight");
    if (!final_norm.ok()) return final_norm.status();
    w->rms_final_ = *final_norm;
    // freq_cis_real and freq_cis_imag (unused: RoPE is computed) sit between the norm and a separate
    // classifier.
    absl::StatusOr<const float*> freq = take(size_t(c.seq_len) * c.head_dim, "freq_cis");
    if (!freq.ok()) return freq.status();
    if (c.shared_classifier) {
      w->classifier_ = w->token_embedding_;
    } else {
      absl::StatusOr<const float*> cls = take(vocab * dim, "classifier");
      if (!cls.ok()) return cls.status();
      w->classifier_ = *cls;
    }
    if (r.offset() != file->size()) {
      return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", file->size() - r.offset(),
                                                     " unexpected bytes after the last tensor (wrong shape in the header?)"));
    }
  } else {
    w->format_ = "llama2.c v2 (int8, dequantized on load)";
    if (group_size <= 0 || group_size > (1 << 20)) {
      return absl::InvalidArgumentError(absl::StrCat("'", path, "': group_size ", group_size, " is invalid"));
    }
    Reader r(*file, 256);
    if (file->size() < 256) return Truncated(path, "the 256-byte header", 256, file->size());
    auto take_f32 = [&](size_t count, const char* what) -> absl::StatusOr<const float*> {
      if (!r.Has(count * 4)) return Truncated(path, what, count * 4, file->size() - r.offset());
      return reinterpret_cast<const float*>(r.Take(count * 4));
    };
    absl::StatusOr<const float*> rms_att = take_f32(L * dim, "rms_att_weight");
    if (!rms_att.ok()) return rms_att.status();
    absl::StatusOr<const float*> rms_ffn = take_f32(L * dim, "rms_ffn_weight");
    if (!rms_ffn.ok()) return rms_ffn.status();
    absl::StatusOr<const float*> rms_final = take_f32(dim, "rms_final_weight");
    if (!rms_final.ok()) return rms_final.status();
    w->rms_final_ = *rms_final;
    for (size_t l = 0; l < L; ++l) {
      w->layers_[l].rms_att = *rms_att + l * dim;
      w->layers_[l].rms_ffn = *rms_ffn + l * dim;
    }
    // Each quantized tensor: int8[n] then fp32[n / group_size]; value = float(q) * scale.
    auto dequantize = [&](size_t n, const char* what) -> absl::StatusOr<const float*> {
      if (n % group_size != 0) {
        return absl::InvalidArgumentError(absl::StrCat("'", path, "': ", what, " has ", n,
                                                       " values, not a multiple of group_size ", group_size));
      }
      const size_t groups = n / group_size;
      if (!r.Has(n + groups * 4)) return Truncated(path, what, n + groups * 4, file->size() - r.offset());
      const int8_t* values = reinterpret_cast<const int8_t*>(r.Take(n));
      const uint8_t* scale_bytes = r.Take(groups * 4);
      std::vector<float> out(n);
      for (size_t g = 0; g < groups; ++g) {
        float scale;
        std::memcpy(&scale, scale_bytes + g * 4, 4);
        for (size_t i = g * group_size; i < (g + 1) * group_size; ++i) out[i] = float(values[i]) * scale;
      }
      return Own(w.get(), std::move(out));
    };
    absl::StatusOr<const float*> embedding = dequantize(vocab * dim, "token_embedding_table");
    if (!embedding.ok()) return embedding.status();
    w->token_embedding_ = *embedding;
    struct Field {
      const float* LayerWeights::*member;
      size_t count;
      const char* name;
    };
    const Field fields[] = {{&LayerWeights::wq, q * dim, "wq"},           {&LayerWeights::wk, kv * dim, "wk"},
                            {&LayerWeights::wv, kv * dim, "wv"},          {&LayerWeights::wo, dim * q, "wo"},
                            {&LayerWeights::w1, hidden * dim, "w1"},      {&LayerWeights::w2, dim * hidden, "w2"},
                            {&LayerWeights::w3, hidden * dim, "w3"}};
    for (const Field& f : fields) {
      for (size_t l = 0; l < L; ++l) {
        absl::StatusOr<const float*> t = dequantize(f.count, f.name);
        if (!t.ok()) return t.status();
        w->layers_[l].*f.member = *t;
      }
    }
    if (c.shared_classifier) {
      w->classifier_ = w->token_embedding_;
    } else {
      absl::StatusOr<const float*> cls = dequantize(vocab * dim, "classifier");
      if (!cls.ok()) return cls.status();
      w->classifier_ = *cls;
    }
    if (r.offset() != file->size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", path, "': ", file->size() - r.offset(), " unexpected bytes after the last tensor"));
    }
  }
  w->files_.push_back(std::move(*file));
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

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> ModelLoader::HuggingFace(const std::string& folder) {
  absl::StatusOr<std::string> config_text = ReadFileToString(folder + "/config.json");
  if (!config_text.ok()) return config_text.status();
  json config = json::parse(*config_text, nullptr, false);
  if (config.is_discarded() || !config.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat("'", folder, "/config.json' is not a JSON object"));
  }
  auto w = std::unique_ptr<ModelWeights>(new ModelWeights());
  ModelConfig& c = w->config_;
  auto get_int = [&](const char* key, int fallback, bool required) -> absl::StatusOr<int> {
    if (!config.contains(key) || config[key].is_null()) {
      if (required) return absl::InvalidArgumentError(absl::StrCat("config.json: missing '", key, "'"));
      return fallback;
    }
    if (!config[key].is_number_integer()) return absl::InvalidArgumentError(absl::StrCat("config.json: '", key, "' must be an integer"));
    return config[key].get<int>();
  };
  const struct {
    const char* key;
    int* field;
    bool required;
  } ints[] = {{"hidden_size", &c.dim, true},         {"intermediate_size", &c.hidden_dim, true},
              {"num_hidden_layers", &c.n_layers, true}, {"num_attention_heads", &c.n_heads, true},
              {"vocab_size", &c.vocab_size, true},   {"max_position_embeddings", &c.seq_len, true}};
  for (const auto& f : ints) {
    absl::StatusOr<int> v = get_int(f.key, 0, f.required);
    if (!v.ok()) return v.status();
    *f.field = *v;
  }
  absl::StatusOr<int> kv = get_int("num_key_value_heads", c.n_heads, false);
  if (!kv.ok()) return kv.status();
  c.n_kv_heads = *kv;
  absl::StatusOr<int> head_dim = get_int("head_dim", c.n_heads > 0 ? c.dim / c.n_heads : 0, false);
  if (!head_dim.ok()) return head_dim.status();
  c.head_dim = *head_dim;
  if (config.contains("rope_theta") && config["rope_theta"].is_number()) c.rope_theta = config["rope_theta"].get<float>();
  if (config.contains("rms_norm_eps") && config["rms_norm_eps"].is_number()) c.norm_eps = config["rms_norm_eps"].get<float>();
  if (config.contains("rope_scaling") && !config["rope_scaling"].is_null()) {
    return absl::UnimplementedError("config.json: rope_scaling is not supported");
  }
  absl::StatusOr<int> bos = get_int("bos_token_id", 1, false);
  absl::StatusOr<int> eos = get_int("eos_token_id", 2, false);
  if (bos.ok()) c.bos_id = *bos;
  if (eos.ok()) c.eos_id = *eos;
  c.shared_classifier = config.value("tie_word_embeddings", false);
  if (absl::Status s = ValidateConfig(c); !s.ok()) return absl::InvalidArgumentError(absl::StrCat("config.json: ", s.message()));

  // Which files: an index's weight_map, or the single model.safetensors.
  std::set<std::string> files;
  absl::StatusOr<std::string> index_text = ReadFileToString(folder + "/model.safetensors.index.json");
  if (index_text.ok()) {
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
  } else {
    files.insert("model.safetensors");
  }
  std::map<std::string, SafetensorsEntry> tensors;
  for (const std::string& name : files) {
    absl::StatusOr<MappedFile> file = MappedFile::Open(folder + "/" + name);
    if (!file.ok()) return file.status();
    w->files_.push_back(std::move(*file));
    if (absl::Status s = ParseSafetensors(w->files_.back(), &tensors); !s.ok()) return s;
  }
  w->format_ = "Hugging Face safetensors";
  std::set<std::string> dtypes;

  // Returns fp32 values of a tensor of the expected shape; fp32 in place, others converted.
  // `permute_rope_heads` > 0 reorders rows from rotate-half to interleaved pairs.
  auto tensor = [&](const std::string& name, std::vector<int64_t> shape, int permute_heads) -> absl::StatusOr<const float*> {
    auto it = tensors.find(name);
    if (it == tensors.end()) return absl::InvalidArgumentError(absl::StrCat("safetensors: missing tensor '", name, "'"));
    const SafetensorsEntry& e = it->second;
    if (e.shape != shape) {
      std::string want, got;
      for (int64_t d : shape) absl::StrAppend(&want, want.empty() ? "" : ",", d);
      for (int64_t d : e.shape) absl::StrAppend(&got, got.empty() ? "" : ",", d);
      return absl::InvalidArgumentError(absl::StrCat("'", e.file, "': tensor '", name, "' has shape [", got,
                                                     "] but config.json implies [", want, "]"));
    }
    size_t count = 1;
    for (int64_t d : shape) count *= size_t(d);
    size_t elem = e.dtype == "F32" ? 4 : (e.dtype == "F16" || e.dtype == "BF16") ? 2 : 0;
    if (elem == 0) {
      return absl::UnimplementedError(absl::StrCat("'", e.file, "': tensor '", name, "' has dtype ", e.dtype,
                                                   " (supported: F32, F16, BF16)"));
    }
    if (e.bytes != count * elem) {
      return absl::DataLossError(absl::StrCat("'", e.file, "': tensor '", name, "' holds ", e.bytes, " bytes, expected ",
                                              count * elem));
    }
    dtypes.insert(e.dtype);
    const bool aligned = reinterpret_cast<uintptr_t>(e.data) % 4 == 0;
    if (e.dtype == "F32" && permute_heads == 0 && aligned) return reinterpret_cast<const float*>(e.data);
    std::vector<float> values(count);
    for (size_t i = 0; i < count; ++i) {
      if (e.dtype == "F32") {
        std::memcpy(&values[i], e.data + 4 * i, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, e.data + 2 * i, 2);
        values[i] = e.dtype == "F16" ? HalfToFloat(h) : Bfloat16ToFloat(h);
      }
    }
    if (permute_heads > 0) {
      // HF row h*hd + c*hd/2 + i holds llama2.c row h*hd + 2*i + c.
      const size_t hd = c.head_dim, cols = size_t(shape[1]);
      std::vector<float> permuted(count);
      for (int h = 0; h < permute_heads; ++h) {
        for (size_t i = 0; i < hd / 2; ++i) {
          for (size_t half = 0; half < 2; ++half) {
            const size_t src = h * hd + half * (hd / 2) + i, dst = h * hd + 2 * i + half;
            std::memcpy(&permuted[dst * cols], &values[src * cols], cols * 4);
          }
        }
      }
      values.swap(permuted);
    }
    return Own(w.get(), std::move(values));
  };
  const int64_t dim = c.dim, hidden = c.hidden_dim, q = c.q_dim(), kvd = c.kv_dim(), vocab = c.vocab_size;
  absl::StatusOr<const float*> embedding = tensor("model.embed_tokens.weight", {vocab, dim}, 0);
  if (!embedding.ok()) return embedding.status();
  w->token_embedding_ = *embedding;
  w->layers_.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l, ".");
    const struct {
      const float* LayerWeights::*member;
      std::string name;
      std::vector<int64_t> shape;
      int permute;
    } fields[] = {{&LayerWeights::rms_att, p + "input_layernorm.weight", {dim}, 0},
                  {&LayerWeights::wq, p + "self_attn.q_proj.weight", {q, dim}, c.n_heads},
                  {&LayerWeights::wk, p + "self_attn.k_proj.weight", {kvd, dim}, c.n_kv_heads},
                  {&LayerWeights::wv, p + "self_attn.v_proj.weight", {kvd, dim}, 0},
                  {&LayerWeights::wo, p + "self_attn.o_proj.weight", {dim, q}, 0},
                  {&LayerWeights::rms_ffn, p + "post_attention_layernorm.weight", {dim}, 0},
                  {&LayerWeights::w1, p + "mlp.gate_proj.weight", {hidden, dim}, 0},
                  {&LayerWeights::w2, p + "mlp.down_proj.weight", {dim, hidden}, 0},
                  {&LayerWeights::w3, p + "mlp.up_proj.weight", {hidden, dim}, 0}};
    for (const auto& f : fields) {
      absl::StatusOr<const float*> t = tensor(f.name, f.shape, f.permute);
      if (!t.ok()) return t.status();
      w->layers_[l].*f.member = *t;
    }
  }
  absl::StatusOr<const float*> norm = tensor("model.norm.weight", {dim}, 0);
  if (!norm.ok()) return norm.status();
  w->rms_final_ = *norm;
  if (c.shared_classifier || tensors.count("lm_head.weight") == 0) {
    c.shared_classifier = true;
    w->classifier_ = w->token_embedding_;
  } else {
    absl::StatusOr<const float*> head = tensor("lm_head.weight", {vocab, dim}, 0);
    if (!head.ok()) return head.status();
    w->classifier_ = *head;
  }
  std::string dtype_list;
  for (const std::string& d : dtypes) absl::StrAppend(&dtype_list, dtype_list.empty() ? "" : "+", d);
  absl::StrAppend(&w->format_, " (", dtype_list, ")");
  return w;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadLlama2cCheckpoint(const std::string& path) {
  return ModelLoader::Llama2c(path);
}

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadHuggingFaceFolder(const std::string& folder) {
  return ModelLoader::HuggingFace(folder);
}

absl::StatusOr<std::unique_ptr<ModelWeights>> LoadModel(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("model path is empty");
  if (IsDirectory(path)) return LoadHuggingFaceFolder(path);
  return LoadLlama2cCheckpoint(path);
}

}  // namespace a2sf::worker
