// CpuScoreStore: the ScoreStore on the host. Per session, one contiguous [heads][capacity] block of
// accumulators (two of them: current and next, for all-or-nothing steps) and one of positions. A token
// step makes one fused, vectorised pass per head (accumulate, validate, find the minimum); a batch of
// sessions is spread over a thread pool.
#ifndef A2SF_CACHEMGR_STORE_CPU_SCORE_STORE_H_
#define A2SF_CACHEMGR_STORE_CPU_SCORE_STORE_H_

#include <memory>
#include <unordered_map>

#include "absl/synchronization/mutex.h"
#include "cachemgr/store/score_store.h"
#include "common/thread_pool.h"

namespace a2sf::cachemgr {

class CpuScoreStore final : public ScoreStore {
 public:
  // `num_threads` threads process a batch of sessions (1: all on the calling thread).
  explicit CpuScoreStore(int num_threads = 1);
  ~CpuScoreStore() override;

  std::string backend() const override { return "cpu"; }
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
  Session* Find(SessionHandle session) const;
  absl::Status ProcessTokenStep(const TokenStep& step, kv::EvictionDecision* decision);

  ThreadPool pool_;
  mutable absl::Mutex mutex_;
  std::unordered_map<SessionHandle, std::unique_ptr<Session>> sessions_ ABSL_GUARDED_BY(mutex_);
  SessionHandle next_handle_ ABSL_GUARDED_BY(mutex_) = 1;
};

}  // namespace a2sf::cachemgr

#endif  // A2SF_CACHEMGR_STORE_CPU_SCORE_STORE_H_
