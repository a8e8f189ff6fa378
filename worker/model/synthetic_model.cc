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

absl::StatusOr<std::unique_ptr<ModelWeights>> MakeSyntheticModel(const ModelConfig& config, uint64_t seed) {
  if (absl::Status s = ValidateConfig(config); !s.ok()) return s;
  auto w = std::unique_ptr<ModelWeights>(new ModelWeights());
  w->config_ = config;
  w->format_ = "synthetic (random fp32)";
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  auto tensor = [&](size_t count, int fan_in, bool norm) -> const float* {
    std::vector<float> values(count);
    const float a = 1.0f / std::sqrt(float(fan_in));
    for (float& v : values) {
      if (norm) {
        v = 1.0f;
        continue;
      }
      state = state * 6364136223846793005ull + 1442695040888963407ull;  // PCG-style LCG step
      v = (float(uint32_t(state >> 40)) / 16777216.0f * 2.0f - 1.0f) * a;
    }
    w->owned_.push_back(std::move(values));
    return w->owned_.back().data();
  };
  const ModelConfig& c = config;
  w->token_embedding_ = tensor(size_t(c.vocab_size) * c.dim, c.dim, false);
  w->layers_.resize(c.n_layers);
  for (LayerWeights& l : w->layers_) {
    l.rms_att = tensor(c.dim, 1, true);
    l.wq = tensor(size_t(c.q_dim()) * c.dim, c.dim, false);
    l.wk = tensor(size_t(c.kv_dim()) * c.dim, c.dim, false);
    l.wv = tensor(size_t(c.kv_dim()) * c.dim, c.dim, false);
    l.wo = tensor(size_t(c.dim) * c.q_dim(), c.q_dim(), false);
    l.rms_ffn = tensor(c.dim, 1, true);
    l.w1 = tensor(size_t(c.hidden_dim) * c.dim, c.dim, false);
    l.w2 = tensor(size_t(c.dim) * c.hidden_dim, c.hidden_dim, false);
    l.w3 = tensor(size_t(c.hidden_dim) * c.dim, c.dim, false);
  }
  w->rms_final_ = tensor(c.dim, 1, true);
  w->classifier_ = c.shared_classifier ? w->token_embedding_ : tensor(size_t(c.vocab_size) * c.dim, c.dim, false);
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
  write(w.token_embedding(), size_t(c.vocab_size) * c.dim * 4);
  const struct {
    const float* LayerWeights::*member;
    size_t count;
  } fields[] = {{&LayerWeights::rms_att, size_t(c.dim)},
                {&LayerWeights::wq, size_t(c.q_dim()) * c.dim},
                {&LayerWeights::wk, size_t(c.kv_dim()) * c.dim},
                {&LayerWeights::wv, size_t(c.kv_dim()) * c.dim},
                {&LayerWeights::wo, size_t(c.dim) * c.q_dim()},
                {&LayerWeights::rms_ffn, size_t(c.dim)},
                {&LayerWeights::w1, size_t(c.hidden_dim) * c.dim},
                {&LayerWeights::w2, size_t(c.dim) * c.hidden_dim},
                {&LayerWeights::w3, size_t(c.hidden_dim) * c.dim}};
  for (const auto& field : fields) {
    for (int l = 0; l < c.n_layers; ++l) write(w.layer(l).*field.member, field.count * 4);
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
  if (!c.shared_classifier) write(w.classifier(), size_t(c.vocab_size) * c.dim * 4);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) return absl::DataLossError(absl::StrCat("error writing '", path, "'"));
  return absl::OkStatus();
}

}  // namespace a2sf::worker
