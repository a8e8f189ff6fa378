// CudaScoreStore: the ScoreStore with accumulators and positions in GPU memory. A batch of token steps
// is one kernel launch with one block per (session, layer, KV head) that accumulates, validates and
// reduces to the eviction candidate; evictions are applied on the device by swap-remove. Bulk prefill
// scores every prompt entry on the device and picks the k smallest per head with CUB's segmented radix
// sort. Rare cases -- several evictions in one token step, or a recent window that is not contiguous
// after a policy swap -- read that head back and decide on the host with the shared victim selection.
//
// Results are bit-identical to CpuScoreStore (no fused multiply-adds on either side).
// Thread-safety: as ScoreStore; kernel launches are serialised on one stream.
#ifndef A2SF_CACHEMGR_STORE_CUDA_SCORE_STORE_H_
#define A2SF_CACHEMGR_STORE_CUDA_SCORE_STORE_H_

#include <memory>
#include <unordered_map>

#include "absl/synchronization/mutex.h"
#include "cachemgr/store/score_store.h"

namespace a2sf::cachemgr {

class CudaScoreStore final : public ScoreStore {
 public:
  // UNAVAILABLE (with the reason) when the binary has no CUDA or no GPU is usable.
  static absl::StatusOr<std::unique_ptr<CudaScoreStore>> Create();
  ~CudaScoreStore() override;

  std::string backend() const override { return "cuda"; }
  absl::StatusOr<SessionHandle> CreateSession(SessionGeometry geometry, uint32_t expected_entries) override;
  absl::Status DestroySession(SessionHandle session) override;
  absl::StatusOr<uint32_t> EntriesPerHead(SessionHandle session) const override;
  void ProcessTokenSteps(absl::Span<const TokenStep> steps, absl::Span<absl::Status> statuses,
                         absl::Span<kv::EvictionDecision> decisions) override;
  absl::StatusOr<kv::EvictionDecision> ProcessBulkPrefill(const BulkPrefill& prefill) override;
  absl::StatusOr<HeadSnapshot> ReadHead(SessionHandle session, uint32_t layer, uint32_t kv_head) const override;
  size_t BytesHeld() const override;
  absl::Status SeedEntries(SessionHandle session, absl::Span<const uint32_t> positions, uint32_t entries) override;

  struct Session;

 private:
  CudaScoreStore();
  Session* Find(SessionHandle session) const;

  struct ContextDeleter {
    void operator()(void* context) const;
  };
  mutable absl::Mutex mutex_;  // guards sessions_ and serialises device work
  std::unique_ptr<void, ContextDeleter> context_;
  std::unordered_map<SessionHandle, std::unique_ptr<Session>> sessions_ ABSL_GUARDED_BY(mutex_);
  SessionHandle next_handle_ ABSL_GUARDED_BY(mutex_) = 1;
};

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_STORE_CUDA_SCORE_STORE_H_
