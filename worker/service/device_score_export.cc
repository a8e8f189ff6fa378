#include "worker/service/device_score_export.h"

namespace a2sf::worker {

absl::StatusOr<std::unique_ptr<DeviceScoreExport>> DeviceScoreExport::Create(const ModelConfig& model) {
  const size_t bytes = size_t(model.n_layers) * model.n_kv_heads * model.seq_len * sizeof(float);
  absl::StatusOr<std::unique_ptr<cuda_ipc::ExportedDeviceBuffer>> buffer =
      cuda_ipc::ExportedDeviceBuffer::Create(bytes);
  if (!buffer.ok()) return buffer.status();
  return std::unique_ptr<DeviceScoreExport>(new DeviceScoreExport(std::move(*buffer)));
}

void DeviceScoreExport::FillOffer(v1::DeviceScoresOffer* offer) const {
  offer->set_memory_handle(buffer_->memory_handle());
  offer->set_event_handle(buffer_->event_handle());
  offer->set_buffer_bytes(buffer_->bytes());
  offer->set_dtype(v1::SCORE_DTYPE_FP32);
  offer->set_device_uuid(buffer_->device().uuid);
  offer->set_pci_bus_id(buffer_->device().pci_bus_id);
}

absl::Status DeviceScoreExport::Bind(Engine* engine) {
  absl::Status bound =
      engine->WriteDeviceScoresTo({buffer_->device_pointer(), buffer_->bytes(), buffer_->event(), buffer_});
  if (bound.ok()) engine_ = engine;
  return bound;
}

bool DeviceScoreExport::Holds(absl::Span<const float> scores) const {
  if (engine_ == nullptr || !engine_->writes_device_scores()) return false;
  const absl::Span<const float> latest = engine_->step_scores();
  return scores.data() == latest.data() && scores.size() == latest.size();
}

}  // namespace a2sf::worker
