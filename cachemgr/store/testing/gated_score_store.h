// GatedScoreStore: a ScoreStore for tests that runs everything through another store and can hold
// token steps at a gate, so that a test can act while a job is certainly in the middle of a step
// (instead of polling a job that a fast machine may finish first). A held step blocks inside
// SessionManager's step, with its session's lock held, until Release; the worker waiting for the
// decision blocks with it. So that a failed test cannot hang, a hold that lasts kMaxHold opens the
// gate for good (as Release does). Thread-safe.
#ifndef A2SF_CACHEMGR_STORE_TESTING_GATED_SCORE_STORE_H_
#define A2SF_CACHEMGR_STORE_TESTING_GATED_SCORE_STORE_H_

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <utility>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cachemgr/store/score_store.h"

namespace a2sf::cachemgr::testing {

class GatedScoreStore final : public ScoreStore {
 public:
  static constexpr absl::Duration kMaxHold = absl::Seconds(60);

  explicit GatedScoreStore(std::unique_ptr<ScoreStore> inner) : inner_(std::move(inner)) {}

  // From now on `steps` more token-step calls pass; the one after them waits at the gate.
  void HoldAfter(uint64_t steps) {
    absl::MutexLock lock(&mutex_);
    hold_at_ = passed_ + steps;
  }
  // Waits until a token step waits at the gate; false after `timeout`.
  bool AwaitHeld(absl::Duration timeout) {
    absl::MutexLock lock(&mutex_);
    auto held = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return waiting_ > 0 && !Open(); };
    return mutex_.AwaitWithTimeout(absl::Condition(&held), timeout);
  }
  // Lets the waiting step (or the next one) pass and holds the one after it.
  void PassOne() {
    absl::MutexLock lock(&mutex_);
    hold_at_ = passed_ + 1;
  }
  // Opens the gate: the waiting step and all later ones pass (until the next HoldAfter).
  void Release() {
    absl::MutexLock lock(&mutex_);
    hold_at_ = kNever;
  }

  std::string backend() const override { return inner_->backend(); }
  absl::StatusOr<SessionHandle> CreateSession(SessionGeometry geometry, uint32_t expected_entries) override {
    return inner_->CreateSession(geometry, expected_entries);
  }
  absl::Status DestroySession(SessionHandle session) override { return inner_->DestroySession(session); }
  absl::StatusOr<uint32_t> EntriesPerHead(SessionHandle session) const override {
    return inner_->EntriesPerHead(session);
  }
  void ProcessTokenSteps(absl::Span<const TokenStep> steps, absl::Span<absl::Status> statuses,
                         absl::Span<kv::EvictionDecision> decisions) override {
    {
      absl::MutexLock lock(&mutex_);
      if (passed_ >= hold_at_) {
        ++waiting_;
        if (!mutex_.AwaitWithTimeout(absl::Condition(this, &GatedScoreStore::Open), kMaxHold)) hold_at_ = kNever;
        --waiting_;
      }
      ++passed_;
    }
    inner_->ProcessTokenSteps(steps, statuses, decisions);
  }
  absl::StatusOr<kv::EvictionDecision> ProcessBulkPrefill(const BulkPrefill& prefill) override {
    return inner_->ProcessBulkPrefill(prefill);
  }
  absl::StatusOr<HeadSnapshot> ReadHead(SessionHandle session, uint32_t layer, uint32_t kv_head) const override {
    return inner_->ReadHead(session, layer, kv_head);
  }
  absl::Status SeedEntries(SessionHandle session, absl::Span<const uint32_t> positions, uint32_t entries) override {
    return inner_->SeedEntries(session, positions, entries);
  }
  size_t BytesHeld() const override { return inner_->BytesHeld(); }

 private:
  static constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();
  bool Open() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mutex_) { return passed_ < hold_at_; }

  std::unique_ptr<ScoreStore> inner_;
  absl::Mutex mutex_;
  uint64_t passed_ ABSL_GUARDED_BY(mutex_) = 0;
  uint64_t hold_at_ ABSL_GUARDED_BY(mutex_) = kNever;
  int waiting_ ABSL_GUARDED_BY(mutex_) = 0;  // steps at the gate
};

}  // namespace a2sf::cachemgr::testing

#endif  // A2SF_CACHEMGR_STORE_TESTING_GATED_SCORE_STORE_H_
