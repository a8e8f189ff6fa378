#include "cachemgr/service/device_scores.h"

#include "common/kv/proto_convert.h"

#include "absl/strings/str_cat.h"
#include "cachemgr/service/proto_convert.h"

namespace a2sf::cachemgr {

namespace {

// The largest buffer an offer may claim: a ring slot's limit, far above [layers][kv_heads][context].
constexpr uint64_t kMaxDeviceBufferBytes = ScoreRing::kMaxSlotBytes;

v1::DeviceScoresAnswer Refuse(v1::DeviceScoresRefusal refusal, std::string detail) {
  v1::DeviceScoresAnswer answer;
  answer.set_accepted(false);
  answer.set_refusal(refusal);
  answer.set_detail(std::move(detail));
  return answer;
}

}  // namespace

v1::DeviceScoresAnswer AnswerDeviceScoresOffer(const v1::DeviceScoresOffer& offer, const DeviceScoresContext& context,
                                               std::shared_ptr<const DeviceScores>* accepted) {
  if (context.store_backend != "cuda") {
    return Refuse(v1::DEVICE_SCORES_REFUSAL_NOT_CUDA_BACKEND,
                  absl::StrCat("the score store is '", context.store_backend, "', not cuda (--backend=cuda)"));
  }
  if (!context.has_ring) {
    return Refuse(v1::DEVICE_SCORES_REFUSAL_NO_RING, "device scores need a shared-memory ring for the step headers");
  }
  if (context.decision_lag != 0) {
    return Refuse(v1::DEVICE_SCORES_REFUSAL_PIPELINED,
                  absl::StrCat("decision_lag ", context.decision_lag, ": a pipelined worker rewrites the buffer "
                               "before its step is read"));
  }
  absl::StatusOr<kv::ScoreDType> dtype = kv::ScoreDTypeFromProto(int(offer.dtype()));
  if (!dtype.ok() || offer.buffer_bytes() == 0 || offer.buffer_bytes() > kMaxDeviceBufferBytes) {
    return Refuse(v1::DEVICE_SCORES_REFUSAL_BAD_OFFER,
                  absl::StrCat("device_scores: dtype ", int(offer.dtype()), " and buffer_bytes ",
                               offer.buffer_bytes(), " (1..", kMaxDeviceBufferBytes, ")"));
  }
  absl::StatusOr<cuda_ipc::DeviceId> here = cuda_ipc::CurrentDevice();
  if (!here.ok()) return Refuse(v1::DEVICE_SCORES_REFUSAL_OTHER_DEVICE, std::string(here.status().message()));
  if (here->uuid != offer.device_uuid() || here->pci_bus_id != offer.pci_bus_id()) {
    return Refuse(v1::DEVICE_SCORES_REFUSAL_OTHER_DEVICE,
                  absl::StrCat("the worker's GPU is ", offer.pci_bus_id().substr(0, 32), ", this store's ",
                               here->pci_bus_id));
  }
  absl::StatusOr<std::unique_ptr<cuda_ipc::ImportedDeviceBuffer>> buffer =
      cuda_ipc::ImportedDeviceBuffer::Open(offer.memory_handle(), offer.event_handle(), offer.buffer_bytes());
  if (!buffer.ok()) {
    return Refuse(buffer.status().code() == absl::StatusCode::kInvalidArgument ? v1::DEVICE_SCORES_REFUSAL_BAD_OFFER
                                                                               : v1::DEVICE_SCORES_REFUSAL_OPEN_FAILED,
                  std::string(buffer.status().message()));
  }
  auto scores = std::make_shared<DeviceScores>();
  scores->pointer = (*buffer)->device_pointer();
  scores->bytes = (*buffer)->bytes();
  scores->event = (*buffer)->event();
  scores->dtype = *dtype;
  scores->owner = std::move(*buffer);
  *accepted = std::move(scores);
  v1::DeviceScoresAnswer answer;
  answer.set_accepted(true);
  return answer;
}

absl::StatusOr<ScoreView> DeviceScoreView(const DeviceScores* scores, const RingStep& step) {
  if (scores == nullptr) {
    return absl::FailedPreconditionError("kind: a device-scores step, and the session has no device buffer");
  }
  if (step.num_dims != 3) {
    return absl::InvalidArgumentError(absl::StrCat("scores.shape: a device-scores step has 3 dimensions, got ",
                                                   step.num_dims));
  }
  absl::StatusOr<uint64_t> values = ScoreValueCount(absl::MakeConstSpan(step.shape, 3), 3);
  if (!values.ok()) return values.status();
  absl::StatusOr<kv::ScoreDType> dtype = kv::ScoreDTypeFromProto(int(step.dtype));
  if (!dtype.ok()) return dtype.status();
  const uint64_t bytes = *values * kv::ScoreDTypeBytes(*dtype);
  if (*dtype != scores->dtype || bytes != step.payload_bytes || bytes > scores->bytes) {
    return absl::InvalidArgumentError(absl::StrCat("scores: ", step.payload_bytes, " bytes of ", kv::ScoreDTypeName(*dtype),
                                                   " in the device buffer (", scores->bytes, " bytes of ",
                                                   kv::ScoreDTypeName(scores->dtype), "), shape says ", bytes));
  }
  ScoreView view;
  view.dtype = *dtype;
  view.data = scores->pointer;
  view.num_values = *values;
  view.on_device = true;
  view.ready_event = scores->event;
  return view;
}

}  // namespace a2sf::cachemgr
