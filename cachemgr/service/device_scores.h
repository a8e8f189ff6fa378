// The cache manager's side of the device-resident hand-off (CUDA IPC): whether to take a worker's
// DeviceScoresOffer in OpenSession, and, for a session that took one, the score view of a header-only
// ring step (kRingStepKindDeviceToken) -- the scores read in place on the GPU by the CUDA store.
//
// An offer is taken only when every condition holds, checked in this order, each failing one named in
// the answer's structured refusal: the store is --backend=cuda; a shared-memory ring came with it (the
// ring carries the step headers and the decisions); decision_lag is 0 (a pipelined worker would
// rewrite the buffer before it is read); the offer is well formed; the worker's GPU is this process's
// (same UUID and PCI bus id); and both handles open here, on an allocation at least as large as claimed.
// A refusal is never an error: the session goes on with the ring. Thread-safety: stateless functions;
// a DeviceScores is immutable and shared by the session's ring server and its closers.
#ifndef A2SF_CACHEMGR_SERVICE_DEVICE_SCORES_H_
#define A2SF_CACHEMGR_SERVICE_DEVICE_SCORES_H_

#include <memory>
#include <string>

#include "a2sf/v1/cache_manager.pb.h"
#include "absl/status/statusor.h"
#include "cachemgr/store/score_store.h"
#include "common/cuda/ipc.h"
#include "common/shm/score_ring.h"

namespace a2sf::cachemgr {

// A session's opened device buffer: `bytes` of `dtype` scores at `pointer`, written once `event` (a
// cudaEvent_t) completes; `owner` keeps the mapping open (null in tests that never read).
struct DeviceScores {
  const void* pointer = nullptr;
  size_t bytes = 0;
  void* event = nullptr;
  kv::ScoreDType dtype = kv::ScoreDType::kFp32;
  std::unique_ptr<cuda_ipc::ImportedDeviceBuffer> owner;
};

struct DeviceScoresContext {
  std::string store_backend;  // ScoreStore::backend()
  bool has_ring = false;
  uint32_t decision_lag = 0;
};

// Answers an offer; `accepted` receives the opened buffer when the answer accepts it.
v1::DeviceScoresAnswer AnswerDeviceScoresOffer(const v1::DeviceScoresOffer& offer, const DeviceScoresContext& context,
                                               std::shared_ptr<const DeviceScores>* accepted);

// The scores a header-only ring step describes, in the session's device buffer. INVALID_ARGUMENT for
// a shape, dtype or size that does not fit the buffer; FAILED_PRECONDITION when the session has none.
absl::StatusOr<ScoreView> DeviceScoreView(const DeviceScores* scores, const RingStep& step);

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_SERVICE_DEVICE_SCORES_H_
