#include <algorithm>
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

namespace {

// Values are drawn in fp32 into owned storage, then placed: as a loader does with an intermediate
// tensor, a draw that Place converted (another type, panels) is freed once placed, so the model
// holds each tensor once and never more than one extra fp32 matrix at a time. The first failure is
// kept in status(); later tensors are still attempted (and come back empty when they fail).
class SyntheticTensors {
 public:
  SyntheticTensors(uint64_t seed, WeightType type, bool panels, ModelWeights* w)
      : w_(w), state_(seed * 0x9E3779B97F4A7C15ull + 1) {
    place_.wanted = type;
    place_.panels = panels;
  }

  // A norm vector of n ones.
  const float* Norm(int64_t n);
  // A [rows][cols] matrix of values ~ U(-a, a), a = 1/sqrt(cols), placed in the type asked for.
  WeightMatrix Matrix(int64_t rows, int64_t cols, const char* name);
  const absl::Status& status() const { return status_; }

 private:
  float* Allocate(size_t n);
  void DrawUniform(float* v, size_t n, int fan_in);

  ModelWeights* w_;
  uint64_t state_;
  absl::Status status_;
  PlaceOptions place_;
};

float* SyntheticTensors::Allocate(size_t n) {
  float* v = reinterpret_cast<float*>(w_->storage().Allocate(n * 4));
  if (v == nullptr) {
    status_.Update(absl::ResourceExhaustedError(absl::StrCat("synthetic model: no memory for ", n, " weights")));
  }
  return v;
}

void SyntheticTensors::DrawUniform(float* v, size_t n, int fan_in) {
  const float a = 1.0f / std::sqrt(float(fan_in));
  for (size_t i = 0; i < n; ++i) {
    state_ = state_ * 6364136223846793005ull + 1442695040888963407ull;  // PCG-style LCG step
    v[i] = (float(uint32_t(state_ >> 40)) / 16777216.0f * 2.0f - 1.0f) * a;
  }
}

const float* SyntheticTensors::Norm(int64_t n) {
  float* v = Allocate(size_t(n));
  if (v != nullptr) std::fill(v, v + n, 1.0f);
  return v;
}

WeightMatrix SyntheticTensors::Matrix(int64_t rows, int64_t cols, const char* name) {
  const size_t n = size_t(rows) * cols;
  float* v = Allocate(n);
  if (v == nullptr) return {};
  DrawUniform(v, n, int(cols));
  absl::StatusOr<WeightMatrix> m = w_->Place({WeightType::kF32, v, rows, cols}, place_, name);
  if (!m.ok()) {
    status_.Update(m.status());
    return {};
  }
  if (m->data != v) w_->storage().Free(v);
  return *m;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelWeights>> MakeSyntheticModel(const ModelConfig& config, uint64_t seed,
                                                                  WeightType type, bool panels) {
  if (absl::Status s = ValidateConfig(config); !s.ok()) return s;
  auto w = std::make_unique<ModelWeights>();
  w->mutable_config() = config;
  SyntheticTensors draw(seed, type, panels, w.get());
  const ModelConfig& c = config;
  w->set_token_embedding(draw.Matrix(c.vocab_size, c.dim, "token_embedding"));
  std::vector<LayerWeights>& layers = w->mutable_layers();
  layers.resize(c.n_layers);
  for (LayerWeights& l : layers) {
    l.rms_att = draw.Norm(c.dim);
    l.wq = draw.Matrix(c.q_dim(), c.dim, "wq");
    l.wk = draw.Matrix(c.kv_dim(), c.dim, "wk");
    l.wv = draw.Matrix(c.kv_dim(), c.dim, "wv");
    l.wo = draw.Matrix(c.dim, c.q_dim(), "wo");
    l.rms_ffn = draw.Norm(c.dim);
    l.w1 = draw.Matrix(c.hidden_dim, c.dim, "w1");
    l.w2 = draw.Matrix(c.dim, c.hidden_dim, "w2");
    l.w3 = draw.Matrix(c.hidden_dim, c.dim, "w3");
  }
  w->set_rms_final(draw.Norm(c.dim));
  w->set_classifier(c.shared_classifier ? w->token_embedding() : draw.Matrix(c.vocab_size, c.dim, "classifier"));
  if (!draw.status().ok()) return draw.status();
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
