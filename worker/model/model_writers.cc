#include "worker/model/model_writers.h"

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "worker/model/gguf_model.h"

namespace a2sf::worker {
namespace {

// Appends row `r` of `m` to `out` in type `to`, row-major (its bytes copied when the type is already
// `to`, whatever m's layout).
void AppendRow(const WeightMatrix& m, int64_t r, WeightType to, std::vector<float>* scratch, std::vector<uint8_t>* out) {
  const size_t at = out->size();
  const size_t bytes = RowBytes(to, m.cols);
  out->resize(at + bytes);
  if (m.type == to) {
    m.CopyRow(r, out->data() + at);
    return;
  }
  scratch->resize(size_t(m.cols));
  m.RowToFloat(r, scratch->data());
  Traits(to).from_float(scratch->data(), out->data() + at, m.cols);
}

// All rows of `m` in type `to`; row r of the result is row `source_row(r)` of `m`.
template <typename RowMap>
void ConvertMatrix(const WeightMatrix& m, WeightType to, RowMap source_row, std::vector<uint8_t>* out) {
  std::vector<float> scratch;
  out->reserve(size_t(m.rows) * RowBytes(to, m.cols));
  for (int64_t r = 0; r < m.rows; ++r) AppendRow(m, source_row(r), to, &scratch, out);
}

WeightMatrix VectorView(const float* v, int64_t n) { return {WeightType::kF32, v, 1, n}; }

// llama.cpp's general.file_type (llama_ftype) for a file mostly of `type`.
uint32_t FileType(WeightType type) {
  switch (type) {
    case WeightType::kF32: return 0;
    case WeightType::kF16: return 1;
    case WeightType::kQ4_0: return 2;
    case WeightType::kQ8_0: return 7;
    case WeightType::kBF16: return 32;
  }
  return 0;
}

}  // namespace

absl::Status WriteGgufModel(const ModelWeights& w, std::optional<WeightType> type, gguf::GgufWriter* writer,
                            const std::string& path, std::vector<std::string>* notes) {
  using gguf::Value;
  const ModelConfig& c = w.config();
  const WeightType main_type = type.value_or(w.layer(0).wq.type);
  writer->Set("general.architecture", Value::String("llama"));
  writer->Set("general.file_type", Value::Uint32(FileType(main_type)));
  if (main_type == WeightType::kQ8_0 || main_type == WeightType::kQ4_0) {
    writer->Set("general.quantization_version", Value::Uint32(2));
  }
  writer->Set("llama.context_length", Value::Uint32(c.seq_len));
  writer->Set("llama.embedding_length", Value::Uint32(c.dim));
  writer->Set("llama.block_count", Value::Uint32(c.n_layers));
  writer->Set("llama.feed_forward_length", Value::Uint32(c.hidden_dim));
  writer->Set("llama.rope.dimension_count", Value::Uint32(c.head_dim));
  writer->Set("llama.attention.head_count", Value::Uint32(c.n_heads));
  writer->Set("llama.attention.head_count_kv", Value::Uint32(c.n_kv_heads));
  writer->Set("llama.attention.layer_norm_rms_epsilon", Value::Float32(c.norm_eps));
  writer->Set("llama.rope.freq_base", Value::Float32(c.rope_theta));
  writer->Set("llama.vocab_size", Value::Uint32(c.vocab_size));

  auto add_matrix = [&](const std::string& name, const WeightMatrix& m) {
    const WeightType to = type ? FallbackType(*type, m.cols) : m.type;
    if (type && to != *type && notes != nullptr) {
      notes->push_back(absl::StrCat(name, ": rows of ", m.cols, " weights are not whole ", WeightTypeName(*type),
                                    " blocks: written as ", WeightTypeName(to)));
    }
    return writer->AddTensor(name, {uint64_t(m.cols), uint64_t(m.rows)}, Traits(to).gguf_type,
                             [m, to](std::vector<uint8_t>* out) {
                               ConvertMatrix(m, to, [](int64_t r) { return r; }, out);
                               return absl::OkStatus();
                             });
  };
  auto add_vector = [&](const std::string& name, const float* v) {
    const WeightMatrix m = VectorView(v, c.dim);
    return writer->AddTensor(name, {uint64_t(c.dim)}, gguf::kF32, [m](std::vector<uint8_t>* out) {
      ConvertMatrix(m, WeightType::kF32, [](int64_t r) { return r; }, out);
      return absl::OkStatus();
    });
  };
  absl::Status s = add_matrix(GgufTensorName(-1, "token_embd"), w.token_embedding());
  for (int l = 0; l < c.n_layers && s.ok(); ++l) {
    for (const LayerNormField& f : kLayerNorms) s.Update(add_vector(GgufTensorName(l, f.gguf_name), w.layer(l).*f.member));
    for (const LayerMatrixField& f : kLayerMatrices) s.Update(add_matrix(GgufTensorName(l, f.gguf_name), w.layer(l).*f.member));
  }
  s.Update(add_vector(GgufTensorName(-1, "output_norm"), w.rms_final()));
  if (!c.shared_classifier) s.Update(add_matrix(GgufTensorName(-1, "output"), w.classifier()));
  if (!s.ok()) return s;
  return writer->Write(path);
}

namespace {

using nlohmann::json;

// The names of a weight type in a Hugging Face folder: safetensors' dtype, config.json's torch_dtype.
struct HfDtype {
  const char* safetensors;
  const char* torch;
};

// f32, f16 and bf16, the types Hugging Face folders hold; nullopt for the others.
std::optional<HfDtype> HfDtypeOf(WeightType type) {
  switch (type) {
    case WeightType::kF32: return HfDtype{"F32", "float32"};
    case WeightType::kF16: return HfDtype{"F16", "float16"};
    case WeightType::kBF16: return HfDtype{"BF16", "bfloat16"};
    default: return std::nullopt;
  }
}

// config.json for a model of shape `c`, with the keys LoadHuggingFaceFolder reads.
json HfConfigJson(const ModelConfig& c, const char* torch_dtype) {
  const json config = {{"architectures", {"LlamaForCausalLM"}},
                       {"model_type", "llama"},
                       {"hidden_size", c.dim},
                       {"intermediate_size", c.hidden_dim},
                       {"num_hidden_layers", c.n_layers},
                       {"num_attention_heads", c.n_heads},
                       {"num_key_value_heads", c.n_kv_heads},
                       {"head_dim", c.head_dim},
                       {"vocab_size", c.vocab_size},
                       {"max_position_embeddings", c.seq_len},
                       {"rms_norm_eps", c.norm_eps},
                       {"rope_theta", c.rope_theta},
                       {"rope_scaling", nullptr},
                       {"hidden_act", "silu"},
                       {"tie_word_embeddings", c.shared_classifier},
                       {"bos_token_id", c.bos_id},
                       {"eos_token_id", c.eos_id},
                       {"torch_dtype", torch_dtype}};
  return config;
}

// Writes `config`, indented, as `folder`/config.json.
absl::Status WriteConfigJson(const std::string& folder, const json& config) {
  std::FILE* f = std::fopen((folder + "/config.json").c_str(), "wb");
  if (f == nullptr) return absl::PermissionDeniedError(absl::StrCat("cannot write '", folder, "/config.json'"));
  const std::string text = config.dump(2) + "\n";
  const bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (std::fclose(f) != 0 || !ok) return absl::DataLossError(absl::StrCat("error writing '", folder, "/config.json'"));
  return absl::OkStatus();
}

// One tensor of model.safetensors; a vector's shape is [cols].
struct HfEntry {
  std::string name;
  WeightMatrix m;
  bool vector;
  int permute_heads;
};

// Tensors in writing order; q/k rows go back from interleaved pairs to rotate-half order:
// HF row h*hd + half*hd/2 + i holds engine row h*hd + 2*i + half.
std::vector<HfEntry> HfEntries(const ModelWeights& w) {
  const ModelConfig& c = w.config();
  std::vector<HfEntry> entries = {{"model.embed_tokens.weight", w.token_embedding(), false, 0}};
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layer(l);
    const std::string p = absl::StrCat("model.layers.", l, ".");
    entries.push_back({p + "input_layernorm.weight", VectorView(L.rms_att, c.dim), true, 0});
    entries.push_back({p + "self_attn.q_proj.weight", L.wq, false, c.n_heads});
    entries.push_back({p + "self_attn.k_proj.weight", L.wk, false, c.n_kv_heads});
    entries.push_back({p + "self_attn.v_proj.weight", L.wv, false, 0});
    entries.push_back({p + "self_attn.o_proj.weight", L.wo, false, 0});
    entries.push_back({p + "post_attention_layernorm.weight", VectorView(L.rms_ffn, c.dim), true, 0});
    entries.push_back({p + "mlp.gate_proj.weight", L.w1, false, 0});
    entries.push_back({p + "mlp.up_proj.weight", L.w3, false, 0});
    entries.push_back({p + "mlp.down_proj.weight", L.w2, false, 0});
  }
  entries.push_back({"model.norm.weight", VectorView(w.rms_final(), c.dim), true, 0});
  if (!c.shared_classifier) entries.push_back({"lm_head.weight", w.classifier(), false, 0});
  return entries;
}

// safetensors' JSON header for `entries` in `type`, back to back, padded with spaces to a multiple
// of 8 bytes.
std::string SafetensorsHeader(const std::vector<HfEntry>& entries, WeightType type, const char* dtype) {
  json header = {{"__metadata__", {{"format", "pt"}}}};
  uint64_t offset = 0;
  for (const HfEntry& e : entries) {
    const uint64_t bytes = uint64_t(e.m.rows) * RowBytes(type, e.m.cols);
    const json shape = e.vector ? json::array({e.m.cols}) : json::array({e.m.rows, e.m.cols});
    header[e.name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header_text = header.dump();
  while (header_text.size() % 8 != 0) header_text += ' ';
  return header_text;
}

// Writes `path`: the header's length and the header, then the entries converted to `type` one at a
// time (rows of heads `head_dim` long), so the file may be larger than memory.
absl::Status WriteSafetensors(const std::string& path, const std::string& header_text,
                              const std::vector<HfEntry>& entries, WeightType type, int64_t head_dim) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::PermissionDeniedError(absl::StrCat("cannot write '", path, "'"));
  const uint64_t header_len = header_text.size();
  bool ok = std::fwrite(&header_len, 8, 1, f) == 1 && std::fwrite(header_text.data(), 1, header_len, f) == header_len;
  std::vector<uint8_t> bytes;
  for (const HfEntry& e : entries) {
    if (!ok) break;
    bytes.clear();
    const int64_t hd = head_dim;
    ConvertMatrix(e.m, type,
                  [&](int64_t r) {
                    if (e.permute_heads == 0) return r;
                    const int64_t h = r / hd, half = (r % hd) / (hd / 2), i = r % (hd / 2);
                    return h * hd + 2 * i + half;
                  },
                  &bytes);
    ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  }
  ok = std::fclose(f) == 0 && ok;
  if (!ok) return absl::DataLossError(absl::StrCat("error writing '", path, "' (disk full?)"));
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteHuggingFaceFolder(const ModelWeights& w, WeightType type, const std::string& folder) {
  const std::optional<HfDtype> dtype = HfDtypeOf(type);
  if (!dtype) {
    return absl::InvalidArgumentError(absl::StrCat("Hugging Face folders hold f32, f16 or bf16, not ", WeightTypeName(type)));
  }
  ::mkdir(folder.c_str(), 0755);
  if (absl::Status s = WriteConfigJson(folder, HfConfigJson(w.config(), dtype->torch)); !s.ok()) return s;
  const std::vector<HfEntry> entries = HfEntries(w);
  return WriteSafetensors(folder + "/model.safetensors", SafetensorsHeader(entries, type, dtype->safetensors), entries,
                          type, w.config().head_dim);
}

}  // namespace a2sf::worker
