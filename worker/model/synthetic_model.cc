#include <cmath>
#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "worker/model/model.h"

namespace a2sf::worker {

absl::StatusOr<ModelConfig> NamedShape(const std::string& name, int layers) {
  ModelConfig c;
  if (name == "stories110M") {
    c.dim = 768, c.hidden_dim = 2048, c.n_layers = 12, c.n_heads = 12, c.n_kv_heads = 12, c.vocab_size = 32000,
    c.seq_len = 1024;
  } else if (name == "stories260K") {
    c.dim = 64, c.hidden_dim = 172, c.n_layers = 5, c.n_heads = 8, c.n_kv_heads = 4, c.vocab_size = 512, c.seq_len = 512;
  } else if (name == "llama2-7b") {
    c.dim = 4096, c.hidden_dim = 11008, c.n_layers = 32, c.n_heads = 32, c.n_kv_heads = 32, c.vocab_size = 32000,
    c.seq_len = 4096;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown shape '", name, "' (known: stories110M, stories260K, llama2-7b)"));
  }
  if (layers > 0) c.n_layers = layers;
  c.head_dim = c.dim / c.n_heads;
  c.shared_classifier = true;
  if (absl::Status s = ValidateConfig(c); !s.ok()) return s;
  return c;
}

absl::StatusOr<std::unique_ptr<ModelWeights>> MakeSyntheticModel(const ModelConfig& config, uint64_t seed,
                                                                  WeightType type, bool panels) {
  if (absl::Status s = ValidateConfig(config); !s.ok()) return s;
  auto w = std::make_unique<ModelWeights>();
  w->mutable_config() = config;
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  // Values are drawn in fp32 into owned storage, then placed: as a loader does with an intermediate
  // tensor, a draw that Place converted (another type, panels) is freed once placed, so the model
  // holds each tensor once and never more than one extra fp32 matrix at a time.
  absl::Status status;
  auto allocate = [&](size_t n) -> float* {
    float* v = reinterpret_cast<float*>(w->storage().Allocate(n * 4));
    if (v == nullptr) {
      status.Update(absl::ResourceExhaustedError(absl::StrCat("synthetic model: no memory for ", n, " weights")));
    }
    return v;
  };
  auto draw = [&](float* v, size_t n, int fan_in, bool norm) {
    const float a = 1.0f / std::sqrt(float(fan_in));
    for (size_t i = 0; i < n; ++i) {
      if (norm) {
        v[i] = 1.0f;
        continue;
      }
      state = state * 6364136223846793005ull + 1442695040888963407ull;  // PCG-style LCG step
      v[i] = (float(uint32_t(state >> 40)) / 16777216.0f * 2.0f - 1.0f) * a;
    }
  };
  auto norm = [&](int64_t n) {
    float* v = allocate(size_t(n));
    if (v != nullptr) draw(v, size_t(n), 1, true);
    return v;
  };
  PlaceOptions place;
  place.wanted = type;
  place.panels = panels;
  auto matrix = [&](int64_t rows, int64_t cols, const char* name) -> WeightMatrix {
    const size_t n = size_t(rows) * cols;
    float* v = allocate(n);
    if (v == nullptr) return {};
    draw(v, n, int(cols), false);
    absl::StatusOr<WeightMatrix> m = w->Place({WeightType::kF32, v, rows, cols}, place, name);
    if (!m.ok()) {
      status.Update(m.status());
      return {};
    }
    if (m->data != v) w->storage().Free(v);
    return *m;
  };
  const ModelConfig& c = config;
  w->set_token_embedding(matrix(c.vocab_size, c.dim, "token_embedding"));
  std::vector<LayerWeights>& layers = w->mutable_layers();
  layers.resize(c.n_layers);
  for (LayerWeights& l : layers) {
    l.rms_att = norm(c.dim);
    l.wq = matrix(c.q_dim(), c.dim, "wq");
    l.wk = matrix(c.kv_dim(), c.dim, "wk");
    l.wv = matrix(c.kv_dim(), c.dim, "wv");
    l.wo = matrix(c.dim, c.q_dim(), "wo");
    l.rms_ffn = norm(c.dim);
    l.w1 = matrix(c.hidden_dim, c.dim, "w1");
    l.w2 = matrix(c.dim, c.hidden_dim, "w2");
    l.w3 = matrix(c.hidden_dim, c.dim, "w3");
  }
  w->set_rms_final(norm(c.dim));
  w->set_classifier(c.shared_classifier ? w->token_embedding() : matrix(c.vocab_size, c.dim, "classifier"));
  if (!status.ok()) return status;
  w->set_format(absl::StrCat("synthetic (random), held as ", w->weight_types()));
  return w;
}

absl::Status WriteLlama2cCheckpoint(const ModelWeights& w, const std::string& path) {
  const ModelConfig& c = w.config();
  if (c.head_dim * c.n_heads != c.dim) {
    return absl::InvalidArgumentError("llama2.c checkpoints need head_dim * n_heads == dim");
  }
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::PermissionDeniedError(absl::StrCat("cannot write '", path, "'"));
  bool ok = true;
  auto write = [&](const void* data, size_t bytes) { ok = ok && std::fwrite(data, 1, bytes, f) == bytes; };
  const int32_t header[7] = {c.dim,        c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                             c.shared_classifier ? c.vocab_size : -c.vocab_size, c.seq_len};
  write(header, sizeof(header));
  // Matrices of any type as their fp32 values, row by row.
  std::vector<float> row;
  auto write_matrix = [&](const WeightMatrix& m) {
    row.resize(size_t(m.cols));
    for (int64_t r = 0; r < m.rows; ++r) {
      m.RowToFloat(r, row.data());
      write(row.data(), row.size() * 4);
    }
  };
  auto write_norms = [&](const float* LayerWeights::*member) {
    for (int l = 0; l < c.n_layers; ++l) write(w.layer(l).*member, size_t(c.dim) * 4);
  };
  write_matrix(w.token_embedding());
  write_norms(&LayerWeights::rms_att);
  for (const LayerMatrixField& f : kLayerMatrices) {
    if (f.member == &LayerWeights::w1) write_norms(&LayerWeights::rms_ffn);  // llama2.c's order
    for (int l = 0; l < c.n_layers; ++l) write_matrix(w.layer(l).*f.member);
  }
  write(w.rms_final(), size_t(c.dim) * 4);
  // freq_cis_real / freq_cis_imag as llama2.c's export writes them.
  std::vector<float> freq(size_t(c.seq_len) * c.head_dim / 2);
  for (int part = 0; part < 2; ++part) {
    for (int p = 0; p < c.seq_len; ++p) {
      for (int i = 0; i < c.head_dim / 2; ++i) {
        const float angle = float(p) / std::pow(c.rope_theta, float(2 * i) / float(c.head_dim));
        freq[size_t(p) * (c.head_dim / 2) + i] = part == 0 ? std::cos(angle) : std::sin(angle);
      }
    }
    write(freq.data(), freq.size() * 4);
  }
  if (!c.shared_classifier) write_matrix(w.classifier());
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) return absl::DataLossError(absl::StrCat("error writing '", path, "'"));
  return absl::OkStatus();
}

}  // namespace a2sf::worker
