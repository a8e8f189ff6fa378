// DeviceScoreExport: the worker's half of the device-resident hand-off (CUDA IPC). When the engine
// runs on the GPU and the cache manager's CUDA store shares that GPU, a step's scores need not travel
// GPU -> host -> ring -> host -> GPU: the worker allocates one score buffer per sequence, sized for a
// whole context ([n_layers][n_kv_heads][seq_len] fp32, so it is never reallocated while exported),
// exports it and an interprocess event in OpenSession (FillOffer), and makes the engine write its
// scores there (Bind). The cache manager reads them in place after waiting on the event; the ring
// slot carries only the step header, and decisions come back through the ring as before.
//
// The buffer is allocated before the engine exists because the session's answer (its budget) sizes
// the engine's cache. Not thread-safe: one job uses it. The buffer lives until the last of this object
// and the bound engine is gone; the session is closed (and the cache manager's view of the buffer
// with it) before either is destroyed.
#ifndef A2SF_WORKER_SERVICE_DEVICE_SCORE_EXPORT_H_
#define A2SF_WORKER_SERVICE_DEVICE_SCORE_EXPORT_H_

#include <memory>

#include "a2sf/v1/cache_manager.pb.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/cuda/ipc.h"
#include "worker/engine/engine.h"

namespace a2sf::worker {

class DeviceScoreExport {
 public:
  // UNAVAILABLE (with the CUDA reason) without CUDA or a GPU.
  static absl::StatusOr<std::unique_ptr<DeviceScoreExport>> Create(const ModelConfig& model);

  void FillOffer(v1::DeviceScoresOffer* offer) const;
  // Makes `engine` write its device scores into the buffer. FAILED_PRECONDITION for a CPU engine.
  absl::Status Bind(Engine* engine);
  // Whether `scores` are the bound engine's latest step scores, i.e. the buffer holds them too (and
  // a header-only ring step may stand for them).
  bool Holds(absl::Span<const float> scores) const;
  // Whether an engine writes into the buffer (Bind succeeded).
  bool bound() const { return engine_ != nullptr; }

 private:
  explicit DeviceScoreExport(std::shared_ptr<cuda_ipc::ExportedDeviceBuffer> buffer) : buffer_(std::move(buffer)) {}
  std::shared_ptr<cuda_ipc::ExportedDeviceBuffer> buffer_;
  const Engine* engine_ = nullptr;
};

}  // namespace a2sf::worker

#endif  // A2SF_WORKER_SERVICE_DEVICE_SCORE_EXPORT_H_
