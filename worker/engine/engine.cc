#include "worker/engine/engine.h"

#include <cmath>
#include <cstring>

#include <map>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "worker/engine/cuda/cuda_forward.h"
#include "worker/engine/math.h"
#include "worker/engine/matmul.h"

namespace a2sf::worker {

absl::Status CheckEngineDevice(EngineDevice device) {
  if (device == EngineDevice::kCpu) return absl::OkStatus();
  // Any error from cudaGetDeviceCount means "no GPU".
  int count = 0;
  std::string error;
  if (cuda::CountDevices(&count, &error) != 0) {
    return absl::UnavailableError(absl::StrCat("device cuda: no usable GPU (", error, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<EngineDevice> ParseEngineDevice(const std::string& name) {
  if (name == "cpu") return EngineDevice::kCpu;
  if (name == "cuda") return EngineDevice::kCuda;
  return absl::InvalidArgumentError(absl::StrCat("device: 'cpu' or 'cuda', got '", name, "'"));
}

cuda::HostMatrix Host(const WeightMatrix& m) {
  return {static_cast<int>(m.type), m.data, m.rows, m.cols, m.bytes()};
}

// A model's weights on the GPU, uploaded once and shared by every engine of that model; freed with
// the last engine that uses it.
class DeviceModel {
 public:
  static absl::StatusOr<std::shared_ptr<const DeviceModel>> For(const ModelWeights* weights) {
    static absl::Mutex* mutex = new absl::Mutex();
    static auto* models = new std::map<const ModelWeights*, std::weak_ptr<const DeviceModel>>();
    absl::MutexLock lock(mutex);
    if (auto it = models->find(weights); it != models->end()) {
      if (std::shared_ptr<const DeviceModel> model = it->second.lock()) return model;
    }
    const ModelConfig& c = weights->config();
    cuda::Dims dims;
    dims.dim = c.dim;
    dims.hidden_dim = c.hidden_dim;
    dims.n_layers = c.n_layers;
    dims.n_heads = c.n_heads;
    dims.n_kv_heads = c.n_kv_heads;
    dims.head_dim = c.head_dim;
    dims.vocab_size = c.vocab_size;
    dims.rope_theta = c.rope_theta;
    dims.norm_eps = c.norm_eps;
    std::vector<cuda::HostLayer> layers;
    for (int l = 0; l < c.n_layers; ++l) {
      const LayerWeights& w = weights->layer(l);
      layers.push_back({w.rms_att, Host(w.wq), Host(w.wk), Host(w.wv), Host(w.wo), w.rms_ffn, Host(w.w1), Host(w.w2),
                        Host(w.w3)});
    }
    cuda::DeviceWeights* device = nullptr;
    std::string error;
    if (cuda::UploadWeights(dims, Host(weights->token_embedding()), layers.data(), weights->rms_final(),
                            Host(weights->classifier()), &device, &error) != 0) {
      return absl::ResourceExhaustedError(absl::StrCat("uploading the model to the GPU: ", error));
    }
    auto model = std::shared_ptr<const DeviceModel>(new DeviceModel(device));
    (*models)[weights] = model;
    return model;
  }
  ~DeviceModel() { cuda::FreeWeights(weights_); }
  const cuda::DeviceWeights* weights() const { return weights_; }

 private:
  explicit DeviceModel(cuda::DeviceWeights* weights) : weights_(weights) {}
  cuda::DeviceWeights* weights_;
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Create(const ModelWeights* weights, EngineOptions options) {
  if (weights == nullptr) return absl::InvalidArgumentError("engine: no model");
  const ModelConfig& c = weights->config();
  if (options.threads < 1 || options.threads > 256) {
    return absl::InvalidArgumentError(absl::StrCat("threads: must be in [1, 256], got ", options.threads));
  }
  const int capacity = options.cache_capacity == 0 ? c.seq_len : options.cache_capacity;
  if (capacity < 1 || capacity > c.seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("cache capacity ", capacity, " must be in [1, ", c.seq_len,
                                                   "] (the model's context)"));
  }
  std::unique_ptr<Engine> engine(new Engine(weights, options, capacity));
  if (options.device == EngineDevice::kCuda) {
    if (absl::Status gpu = CheckEngineDevice(EngineDevice::kCuda); !gpu.ok()) return gpu;
    absl::StatusOr<std::shared_ptr<const DeviceModel>> model = DeviceModel::For(weights);
    if (!model.ok()) return model.status();
    engine->device_model_ = *model;
    std::string error;
    if (cuda::CreateSequence((*model)->weights(), capacity, options.capture_attention_outputs,
                             &engine->device_sequence_, &error) != 0) {
      return absl::ResourceExhaustedError(absl::StrCat("allocating a sequence on the GPU: ", error));
    }
  }
  return engine;
}

Engine::~Engine() { cuda::DestroySequence(device_sequence_); }

Engine::Engine(const ModelWeights* weights, const EngineOptions& options, int capacity)
    : weights_(weights),
      config_(weights->config()),
      pool_(options.threads),
      cache_(config_.n_layers, config_.n_kv_heads, config_.head_dim, capacity,
             /*host_storage=*/options.device == EngineDevice::kCpu) {
  const ModelConfig& c = config_;
  x_.resize(c.dim);
  xb_.resize(std::max(c.dim, c.q_dim()));
  xb2_.resize(std::max(c.dim, c.q_dim()));
  q_.resize(c.q_dim());
  k_.resize(c.kv_dim());
  v_.resize(c.kv_dim());
  hb_.resize(c.hidden_dim);
  hb2_.resize(c.hidden_dim);
  att_.resize(size_t(c.n_heads) * capacity);
  logits_.resize(c.vocab_size);
  scores_.resize(size_t(c.n_layers) * c.n_kv_heads * capacity);
  if (options.capture_attention_outputs) attention_outputs_.resize(size_t(c.n_layers) * c.q_dim());
  rope_cos_.resize(c.head_dim / 2);
  rope_sin_.resize(c.head_dim / 2);
}

absl::Status Engine::Forward(int token, int position) {
  const ModelConfig& c = config_;
  if (token < 0 || token >= c.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("token id ", token, " is outside the vocabulary [0, ", c.vocab_size, ")"));
  }
  if (position < 0 || position >= c.seq_len) {
    return absl::InvalidArgumentError(absl::StrCat("position ", position, " is outside the context [0, ", c.seq_len, ")"));
  }
  if (cache_.entries() >= cache_.capacity()) {
    return absl::FailedPreconditionError(absl::StrCat("KV cache full (", cache_.capacity(),
                                                      " entries per head): evict before the next token"));
  }
  if (device_sequence_ != nullptr) return ForwardOnDevice(token, position);
  const int dim = c.dim;
  weights_->token_embedding().RowToFloat(token, x_.data());
  const int slot = cache_.append_slot();
  RopeTable(c.head_dim, position, c.rope_theta, rope_cos_.data(), rope_sin_.data());
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = weights_->layer(l);
    RmsNorm(xb_.data(), x_.data(), w.rms_att, dim, c.norm_eps);
    MatMul(q_.data(), w.wq, xb_.data(), 1, &pool_);
    MatMul(k_.data(), w.wk, xb_.data(), 1, &pool_);
    MatMul(v_.data(), w.wv, xb_.data(), 1, &pool_);
    ApplyRope(q_.data(), c.q_dim(), c.head_dim, rope_cos_.data(), rope_sin_.data());
    ApplyRope(k_.data(), c.kv_dim(), c.head_dim, rope_cos_.data(), rope_sin_.data());
    for (int g = 0; g < c.n_kv_heads; ++g) {
      std::memcpy(cache_.key(l, g, slot), k_.data() + g * c.head_dim, c.head_dim * sizeof(float));
      std::memcpy(cache_.value(l, g, slot), v_.data() + g * c.head_dim, c.head_dim * sizeof(float));
      cache_.set_position(l, g, slot, uint32_t(position));
    }
    Attention(l);
    if (!attention_outputs_.empty()) {
      std::memcpy(attention_outputs_.data() + size_t(l) * c.q_dim(), xb2_.data(), c.q_dim() * sizeof(float));
    }
    MatMul(xb_.data(), w.wo, xb2_.data(), 1, &pool_);
    for (int i = 0; i < dim; ++i) x_[i] += xb_[i];
    RmsNorm(xb_.data(), x_.data(), w.rms_ffn, dim, c.norm_eps);
    MatMul(hb_.data(), w.w1, xb_.data(), 1, &pool_);
    MatMul(hb2_.data(), w.w3, xb_.data(), 1, &pool_);
    for (int i = 0; i < c.hidden_dim; ++i) {
      const float gate = hb_[i];
      hb_[i] = gate / (1.0f + std::exp(-gate)) * hb2_[i];  // SwiGLU: silu(w1 x) * (w3 x)
    }
    MatMul(xb_.data(), w.w2, hb_.data(), 1, &pool_);
    for (int i = 0; i < dim; ++i) x_[i] += xb_[i];
  }
  cache_.CommitAppend();
  RmsNorm(x_.data(), x_.data(), weights_->rms_final(), dim, c.norm_eps);
  MatMul(logits_.data(), weights_->classifier(), x_.data(), 1, &pool_);
  return absl::OkStatus();
}

absl::Status Engine::ForwardOnDevice(int token, int position) {
  const ModelConfig& c = config_;
  const int slot = cache_.append_slot();
  std::string error;
  if (cuda::Forward(device_sequence_, token, position, cache_.entries(), logits_.data(), scores_.data(),
                    attention_outputs_.empty() ? nullptr : attention_outputs_.data(), &error) != 0) {
    return absl::InternalError(absl::StrCat("GPU forward pass: ", error));
  }
  for (int l = 0; l < c.n_layers; ++l) {
    for (int g = 0; g < c.n_kv_heads; ++g) cache_.set_position(l, g, slot, uint32_t(position));
  }
  cache_.CommitAppend();
  return absl::OkStatus();
}

absl::Status Engine::WriteDeviceScoresTo(DeviceScoreTarget target) {
  if (device_sequence_ == nullptr) {
    return absl::FailedPreconditionError("device scores: this engine runs on the CPU");
  }
  const size_t needed = size_t(config_.n_layers) * config_.n_kv_heads * cache_.capacity() * sizeof(float);
  if (target.scores == nullptr || target.bytes < needed) {
    return absl::InvalidArgumentError(
        absl::StrCat("device scores: the target holds ", target.bytes, " bytes, a step needs up to ", needed));
  }
  std::string error;
  if (cuda::SetScoreTarget(device_sequence_, static_cast<float*>(target.scores), target.written_event, &error) != 0) {
    return absl::InternalError(absl::StrCat("device scores: ", error));
  }
  device_score_target_ = std::move(target);
  return absl::OkStatus();
}

absl::Status Engine::ReplayMovesOnDevice(uint32_t evictions_per_head) {
  if (device_sequence_ == nullptr || evictions_per_head == 0) return absl::OkStatus();
  std::string error;
  if (cuda::MoveEntries(device_sequence_, cache_.last_move_destinations().data(), cache_.last_move_sources().data(),
                        evictions_per_head, &error) != 0) {
    return absl::InternalError(absl::StrCat("GPU eviction: ", error));
  }
  return absl::OkStatus();
}

absl::Status Engine::Evict(uint32_t evictions_per_head, absl::Span<const uint32_t> slots,
                           absl::Span<const uint32_t> expected_positions) {
  if (absl::Status s = cache_.Evict(evictions_per_head, slots, expected_positions); !s.ok()) return s;
  return ReplayMovesOnDevice(evictions_per_head);
}

absl::Status Engine::EvictPositions(uint32_t evictions_per_head, absl::Span<const uint32_t> positions) {
  if (absl::Status s = cache_.EvictPositions(evictions_per_head, positions); !s.ok()) return s;
  return ReplayMovesOnDevice(evictions_per_head);
}

// Every query head attends over its KV head's entries (slot + 1 of them, the new one included); the
// softmax rows of a group are summed into that KV head's score vector.
void Engine::Attention(int layer) {
  const ModelConfig& c = config_;
  const int n = cache_.entries() + 1;
  const int hd = c.head_dim;
  const float scale = 1.0f / std::sqrt(float(hd));
  float* layer_scores = scores_.data() + size_t(layer) * c.n_kv_heads * n;
  auto head = [&](size_t h) {
    const int g = int(h) / c.group_size();
    const float* q = q_.data() + h * hd;
    float* att = att_.data() + h * cache_.capacity();
    AttentionScores(att, q, cache_.key(layer, g, 0), n, hd, scale);
    Softmax(att, n);
    WeightedSum(xb2_.data() + h * hd, att, cache_.value(layer, g, 0), n, hd);
  };
  if (pool_.num_threads() > 1 && size_t(n) * hd * c.n_heads >= (size_t(1) << 16)) {
    pool_.ParallelFor(c.n_heads, head);
  } else {
    for (int h = 0; h < c.n_heads; ++h) head(h);
  }
  // Group sums in head order, so the result does not depend on the thread count.
  for (int g = 0; g < c.n_kv_heads; ++g) {
    float* s = layer_scores + size_t(g) * n;
    const float* first = att_.data() + size_t(g) * c.group_size() * cache_.capacity();
    std::memcpy(s, first, n * sizeof(float));
    for (int j = 1; j < c.group_size(); ++j) {
      const float* att = first + size_t(j) * cache_.capacity();
      for (int t = 0; t < n; ++t) s[t] += att[t];
    }
  }
}

}  // namespace a2sf::worker
