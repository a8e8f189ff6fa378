#include "worker/engine/engine.h"

#include <algorithm>
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

absl::Status CheckKvType(WeightType kv_type, EngineDevice device) {
  if (!IsKvType(kv_type)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_type: the KV cache holds f32, f16 or q8_0, not ", WeightTypeName(kv_type)));
  }
  if (device == EngineDevice::kCuda && kv_type != WeightType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("kv_type ", WeightTypeName(kv_type), ": the CUDA engine holds its KV cache in f32"));
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

// The GPU kernels read row-major matrices: a model loaded in panels (LoadOptions::panels) is
// refused rather than misread.
absl::Status AllInRows(const ModelWeights& weights) {
  bool rows = !weights.token_embedding().panels() && !weights.classifier().panels();
  for (int l = 0; l < weights.config().n_layers; ++l) {
    for (const LayerMatrixField& f : kLayerMatrices) rows = rows && !(weights.layer(l).*f.member).panels();
  }
  if (rows) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "device cuda: the model was loaded with matrices in CPU panels; load it with panels off (LoadOptions::panels)");
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
  if (absl::Status kv = CheckKvType(options.kv_type, options.device); !kv.ok()) return kv;
  if (options.device == EngineDevice::kCuda) {
    if (absl::Status rows = AllInRows(*weights); !rows.ok()) return rows;  // before the GPU: testable anywhere
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
      cache_(config_.n_layers, config_.n_kv_heads, config_.head_dim, capacity, options.kv_type,
             /*host_storage=*/options.device == EngineDevice::kCpu),
      threads_(options.threads) {
  const ModelConfig& c = config_;
  BeginRows(1);
  if (options.capture_attention_outputs) attention_outputs_.resize(size_t(c.n_layers) * c.q_dim());
}

void Engine::BeginRows(int rows) {
  rows_ = rows;
  first_entries_ = cache_.entries();
  if (logits_.size() < size_t(rows) * config_.vocab_size) {
    logits_.resize(size_t(rows) * config_.vocab_size);
    scores_.resize(size_t(rows) * score_stride());
  }
}

ForwardPass* Engine::own_pass() {
  if (solo_ == nullptr) solo_ = std::make_unique<ForwardPass>(weights_, threads_);
  return solo_.get();
}

absl::Status Engine::Forward(int token, int position) {
  const ForwardRow row{this, token, position};
  return own_pass()->Run(absl::MakeConstSpan(&row, 1));
}

ForwardPass::ForwardPass(const ModelWeights* weights, int threads)
    : weights_(weights), config_(weights->config()), pool_(threads) {
  Reserve(1);
}

void ForwardPass::Reserve(int rows) {
  if (rows <= reserved_rows_) return;
  const ModelConfig& c = config_;
  const size_t n = size_t(rows);
  x_.resize(n * c.dim);
  xb_.resize(n * std::max(c.dim, c.q_dim()));
  xb2_.resize(n * std::max(c.dim, c.q_dim()));
  q_.resize(n * c.q_dim());
  k_.resize(n * c.kv_dim());
  v_.resize(n * c.kv_dim());
  hb_.resize(n * c.hidden_dim);
  hb2_.resize(n * c.hidden_dim);
  logits_.resize(n * c.vocab_size);
  rope_cos_.resize(n * (c.head_dim / 2));
  rope_sin_.resize(n * (c.head_dim / 2));
  reserved_rows_ = rows;
}

absl::Status ForwardPass::Check(absl::Span<const ForwardRow> rows) {
  const ModelConfig& c = config_;
  groups_.clear();
  for (int r = 0; r < int(rows.size()); ++r) {
    const ForwardRow& row = rows[r];
    if (row.engine == nullptr || row.engine->weights_ != weights_) {
      return absl::InvalidArgumentError(absl::StrCat("forward row ", r, ": no engine, or an engine of another model"));
    }
    if (row.token < 0 || row.token >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", row.token, " is outside the vocabulary [0, ",
                                                     c.vocab_size, ")"));
    }
    if (row.position < 0 || row.position >= c.seq_len) {
      return absl::InvalidArgumentError(absl::StrCat("position ", row.position, " is outside the context [0, ",
                                                     c.seq_len, ")"));
    }
    if (!groups_.empty() && groups_.back().engine == row.engine) {
      if (row.position <= rows[r - 1].position) {
        return absl::InvalidArgumentError(absl::StrCat("forward row ", r, ": positions of a chunk must increase"));
      }
      groups_.back().end = r + 1;
      continue;
    }
    for (const Group& g : groups_) {
      if (g.engine == row.engine) {
        return absl::InvalidArgumentError(absl::StrCat("forward row ", r, ": the rows of an engine must be adjacent"));
      }
    }
    groups_.push_back({row.engine, r, r + 1});
  }
  for (const Group& g : groups_) {
    const KvCacheSlots& cache = g.engine->cache_;
    if (cache.entries() + (g.end - g.begin) > cache.capacity()) {
      return absl::FailedPreconditionError(absl::StrCat("KV cache full (", cache.capacity(),
                                                        " entries per head): evict before the next token"));
    }
  }
  return absl::OkStatus();
}

absl::Status ForwardPass::Run(absl::Span<const ForwardRow> rows) {
  if (absl::Status s = Check(rows); !s.ok()) return s;
  for (const Group& g : groups_) g.engine->BeginRows(g.end - g.begin);
  if (absl::Status s = RunOnDevice(rows); !s.ok()) return s;
  host_rows_.clear();
  for (const ForwardRow& row : rows) {
    if (row.engine->device_sequence_ == nullptr) host_rows_.push_back(row);
  }
  if (host_rows_.empty()) return absl::OkStatus();
  if (host_rows_.size() != rows.size()) {
    if (absl::Status s = Check(host_rows_); !s.ok()) return s;  // regroups the host rows
  }
  RunOnHost(host_rows_);
  return absl::OkStatus();
}

ForwardPass::~ForwardPass() = default;

void ForwardPass::DeviceBatchDeleter::operator()(cuda::DeviceBatch* batch) const { cuda::DestroyBatch(batch); }

absl::Status ForwardPass::BindDevice(const Engine& engine) {
  if (device_batch_ != nullptr) {
    if (engine.device_model_ == device_model_) return absl::OkStatus();
    // Engines of one model share one device model while any of them lives (DeviceModel::For).
    return absl::InternalError("GPU forward pass: an engine of another device copy of the model");
  }
  cuda::DeviceBatch* batch = nullptr;
  std::string error;
  if (cuda::CreateBatch(engine.device_model_->weights(), &batch, &error) != 0) {
    return absl::ResourceExhaustedError(absl::StrCat("creating a GPU forward pass: ", error));
  }
  device_model_ = engine.device_model_;
  device_batch_.reset(batch);
  return absl::OkStatus();
}

absl::Status ForwardPass::RunOnDevice(absl::Span<const ForwardRow> rows) {
  const size_t vocab = size_t(config_.vocab_size);
  device_rows_.clear();
  for (const Group& g : groups_) {
    Engine* e = g.engine;
    if (e->device_sequence_ == nullptr) continue;
    if (absl::Status s = BindDevice(*e); !s.ok()) return s;
    for (int r = g.begin; r < g.end; ++r) {
      const int row = r - g.begin;
      float* attention = r == g.end - 1 && !e->attention_outputs_.empty() ? e->attention_outputs_.data() : nullptr;
      device_rows_.push_back({e->device_sequence_, rows[r].token, rows[r].position, e->cache_.entries() + row,
                              e->logits_.data() + row * vocab, e->scores_.data() + row * e->score_stride(),
                              attention});
    }
  }
  if (device_rows_.empty()) return absl::OkStatus();
  std::string error;
  if (cuda::ForwardBatch(device_batch_.get(), device_rows_.data(), int(device_rows_.size()), &error) != 0) {
    return absl::InternalError(absl::StrCat("GPU forward pass: ", error));
  }
  for (const Group& g : groups_) {
    if (g.engine->device_sequence_ == nullptr) continue;
    for (int r = g.begin; r < g.end; ++r) g.engine->CommitDeviceRow(rows[r].position);
  }
  return absl::OkStatus();
}

void ForwardPass::RunOnHost(absl::Span<const ForwardRow> rows) {
  const ModelConfig& c = config_;
  const int n = int(rows.size());
  Reserve(n);
  row_groups_.resize(n);
  attended_slots_ = 0;
  for (const Group& g : groups_) {
    std::fill(row_groups_.begin() + g.begin, row_groups_.begin() + g.end, &g);
    const size_t rows = size_t(g.end - g.begin), entries = size_t(g.engine->cache_.entries());
    attended_slots_ += rows * entries + rows * (rows + 1) / 2;  // row r attends entries + r + 1 slots
  }
  for (int r = 0; r < n; ++r) {
    weights_->token_embedding().RowToFloat(rows[r].token, x_.data() + size_t(r) * c.dim);
    RopeTable(c.head_dim, rows[r].position, c.rope_theta, rope_cos(r), rope_sin(r));
  }
  for (int l = 0; l < c.n_layers; ++l) Layer(l, rows);
  for (const Group& g : groups_) {
    for (int r = g.begin; r < g.end; ++r) g.engine->cache_.CommitAppend();
  }
  for (int r = 0; r < n; ++r) {
    float* x = x_.data() + size_t(r) * c.dim;
    RmsNorm(x, x, weights_->rms_final(), c.dim, c.norm_eps);
  }
  MatMul(logits_.data(), weights_->classifier(), x_.data(), n, &pool_);
  for (const Group& g : groups_) {
    std::memcpy(g.engine->logits_.data(), logits_.data() + size_t(g.begin) * c.vocab_size,
                size_t(g.end - g.begin) * c.vocab_size * sizeof(float));
  }
}

// One transformer layer for every row: the products for all rows at once, then every row's attention.
void ForwardPass::Layer(int l, absl::Span<const ForwardRow> rows) {
  const ModelConfig& c = config_;
  const LayerWeights& w = weights_->layer(l);
  const int n = int(rows.size());
  const int dim = c.dim, q_dim = c.q_dim(), kv_dim = c.kv_dim(), hd = c.head_dim;
  for (int r = 0; r < n; ++r) {
    RmsNorm(xb_.data() + size_t(r) * dim, x_.data() + size_t(r) * dim, w.rms_att, dim, c.norm_eps);
  }
  const Product qkv[] = {{q_.data(), &w.wq, xb_.data()}, {k_.data(), &w.wk, xb_.data()}, {v_.data(), &w.wv, xb_.data()}};
  MatMuls(qkv, n, &pool_);
  for (const Group& g : groups_) {
    KvCacheSlots& cache = g.engine->cache_;
    for (int r = g.begin; r < g.end; ++r) {
      float* q = q_.data() + size_t(r) * q_dim;
      float* k = k_.data() + size_t(r) * kv_dim;
      const float* v = v_.data() + size_t(r) * kv_dim;
      ApplyRope(q, q_dim, hd, rope_cos(r), rope_sin(r));
      ApplyRope(k, kv_dim, hd, rope_cos(r), rope_sin(r));
      const int slot = cache.append_slot() + (r - g.begin);
      for (int h = 0; h < c.n_kv_heads; ++h) {
        cache.Store(l, h, slot, k + h * hd, v + h * hd);
        cache.set_position(l, h, slot, uint32_t(rows[r].position));
      }
    }
  }
  Attention(l);
  for (const Group& g : groups_) {
    if (!g.engine->attention_outputs_.empty()) {
      std::memcpy(g.engine->attention_outputs_.data() + size_t(l) * q_dim, xb2_.data() + size_t(g.end - 1) * q_dim,
                  q_dim * sizeof(float));
    }
  }
  MatMul(xb_.data(), w.wo, xb2_.data(), n, &pool_);
  for (size_t i = 0; i < size_t(n) * dim; ++i) x_[i] += xb_[i];
  for (int r = 0; r < n; ++r) {
    RmsNorm(xb_.data() + size_t(r) * dim, x_.data() + size_t(r) * dim, w.rms_ffn, dim, c.norm_eps);
  }
  const Product gate_up[] = {{hb_.data(), &w.w1, xb_.data()}, {hb2_.data(), &w.w3, xb_.data()}};
  MatMuls(gate_up, n, &pool_);
  SwiGlu(hb_.data(), hb2_.data(), size_t(n) * c.hidden_dim);  // silu(w1 x) * (w3 x)
  MatMul(xb_.data(), w.w2, hb_.data(), n, &pool_);
  for (size_t i = 0; i < size_t(n) * dim; ++i) x_[i] += xb_[i];
}

// Every row's attention, its KV heads as items: one fork-join for all rows and heads when the rows'
// attention is long enough to share (a fork-join costs about a microsecond; short rows run here).
void ForwardPass::Attention(int l) {
  const ModelConfig& c = config_;
  const int q_dim = c.q_dim();
  auto item = [&](size_t i) {
    const int r = int(i / c.n_kv_heads), kv_head = int(i % c.n_kv_heads);
    const Group& g = *row_groups_[r];
    g.engine->AttendGroup(l, r - g.begin, kv_head, q_.data() + size_t(r) * q_dim, xb2_.data() + size_t(r) * q_dim);
  };
  const size_t items = row_groups_.size() * size_t(c.n_kv_heads);
  if (pool_.num_threads() > 1 && attended_slots_ * c.head_dim * c.n_heads >= kParallelAttentionWork) {
    pool_.ParallelFor(items, item);
  } else {
    for (size_t i = 0; i < items; ++i) item(i);
  }
}

void Engine::CommitDeviceRow(int position) {
  const int slot = cache_.append_slot();
  for (int l = 0; l < config_.n_layers; ++l) {
    for (int g = 0; g < config_.n_kv_heads; ++g) cache_.set_position(l, g, slot, uint32_t(position));
  }
  cache_.CommitAppend();
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
  if (cuda::SwapRemoveEntries(device_sequence_, cache_.last_victim_slots().data(), evictions_per_head,
                              uint32_t(cache_.last_entries_before_eviction()), &error) != 0) {
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

// The query heads of KV head `kv_head` attend over its entries (those before the row and the row's
// own); their softmax rows are summed into the head's score vector in head order (the first written,
// the others added), so the sums do not depend on the thread count.
void Engine::AttendGroup(int layer, int row, int kv_head, const float* q_row, float* out) {
  const ModelConfig& c = config_;
  const int n = cache_.entries() + row + 1;
  const int hd = c.head_dim;
  const float scale = 1.0f / std::sqrt(float(hd));
  float* sum = scores_.data() + size_t(row) * score_stride() + (size_t(layer) * c.n_kv_heads + kv_head) * n;
  thread_local std::vector<float> att;  // the second and later heads' softmax rows
  if (att.size() < size_t(n)) att.resize(n);
  const KvRows keys{cache_.keys(layer, kv_head), cache_.kv_type()};
  const KvRows values{cache_.values(layer, kv_head), cache_.kv_type()};
  for (int j = 0; j < c.group_size(); ++j) {
    const int h = kv_head * c.group_size() + j;
    float* weights = j == 0 ? sum : att.data();
    AttentionScores(weights, q_row + size_t(h) * hd, keys, n, hd, scale);
    Softmax(weights, n);
    WeightedSum(out + size_t(h) * hd, weights, values, n, hd);
    if (j > 0) {
      for (int t = 0; t < n; ++t) sum[t] += weights[t];
    }
  }
}

}  // namespace a2sf::worker
