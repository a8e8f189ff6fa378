// The admission queue (max_batch, max_waiting, max_kv_bytes, cancellation while queued) and the loop
// (jobs joining, finishing and being cancelled) on the fixture model.
#include "worker/service/batch_scheduler.h"

#include <atomic>
#include <future>
#include <memory>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "worker/testing/fixtures.h"

namespace a2sf::worker {
namespace {

std::unique_ptr<ModelWeights> Load() {
  auto weights = LoadModel(testing::FixturesDir() + "/stories260K-dq.bin");
  EXPECT_TRUE(weights.ok()) << weights.status();
  return weights.ok() ? std::move(*weights) : nullptr;
}

const auto kNever = [] { return false; };

// Admission within `timeout` on another thread: OK, CANCELLED, or DEADLINE_EXCEEDED if still waiting.
absl::Status AdmittedWithin(BatchScheduler* scheduler, BatchScheduler::Place* place, absl::Duration timeout,
                            std::atomic<bool>* cancel) {
  auto admitted = std::async(std::launch::async, [&] {
    return scheduler->AwaitAdmission(place, [cancel] { return cancel->load(); });
  });
  if (admitted.wait_for(std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout))) == std::future_status::ready) {
    return admitted.get();
  }
  cancel->store(true);  // lets the waiter go before the future's destructor joins it
  admitted.get().IgnoreError();  // the waiter let go: its status is the cancellation
  return absl::DeadlineExceededError("still queued");
}

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (testing::FixturesDir().empty()) GTEST_SKIP() << "stories260K fixtures not found (set A2SF_FIXTURES)";
    weights_ = Load();
    ASSERT_NE(weights_, nullptr);
  }
  std::unique_ptr<ModelWeights> weights_;
};

TEST_F(SchedulerTest, BeyondMaxBatchAJobWaitsUntilARunningOneLeaves) {
  BatchScheduler scheduler(weights_.get(), {/*max_batch=*/1, /*max_waiting=*/4, 0, 1});
  auto first = *scheduler.Enqueue(100);
  EXPECT_EQ(first->queue_position(), 0);
  EXPECT_TRUE(scheduler.AwaitAdmission(first.get(), kNever).ok());
  auto second = *scheduler.Enqueue(100);
  EXPECT_EQ(scheduler.waiting(), 1);
  std::atomic<bool> cancel{false};
  EXPECT_EQ(AdmittedWithin(&scheduler, second.get(), absl::Milliseconds(100), &cancel).code(),
            absl::StatusCode::kDeadlineExceeded);  // still queued; then cancelled, so it left the queue
  auto third = *scheduler.Enqueue(100);
  EXPECT_EQ(third->queue_position(), 0);  // the second left the queue when it was cancelled
  first.reset();
  cancel = false;
  EXPECT_TRUE(AdmittedWithin(&scheduler, third.get(), absl::Seconds(5), &cancel).ok());
  EXPECT_EQ(scheduler.running(), 1);
  EXPECT_GE(third->waited(), absl::ZeroDuration());
}

TEST_F(SchedulerTest, BeyondMaxWaitingAJobIsRefusedAsResourceExhausted) {
  BatchScheduler scheduler(weights_.get(), {1, /*max_waiting=*/1, 0, 1});
  auto running = *scheduler.Enqueue(1);
  auto queued = *scheduler.Enqueue(1);
  EXPECT_EQ(queued->queue_position(), 0);
  auto refused = scheduler.Enqueue(1);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_EQ(scheduler.waiting(), 1);
  EXPECT_EQ(scheduler.running(), 1);
}

TEST_F(SchedulerTest, AJobWaitsUntilItsKvReservationFitsAndOneThatNeverCanIsRefused) {
  BatchScheduler scheduler(weights_.get(), {8, 8, /*max_kv_bytes=*/1000, 1});
  auto big = scheduler.Enqueue(1001);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("--max_kv_bytes"), std::string::npos) << big.status();
  auto a = *scheduler.Enqueue(600);
  auto b = *scheduler.Enqueue(600);  // 1200 > 1000: waits though the batch has room
  auto c = *scheduler.Enqueue(300);  // would fit, but does not overtake b
  EXPECT_EQ(scheduler.running(), 1);
  EXPECT_EQ(scheduler.waiting(), 2);
  EXPECT_EQ(c->queue_position(), 1);
  a.reset();
  std::atomic<bool> cancel{false};
  EXPECT_TRUE(AdmittedWithin(&scheduler, b.get(), absl::Seconds(5), &cancel).ok());
  EXPECT_TRUE(AdmittedWithin(&scheduler, c.get(), absl::Seconds(5), &cancel).ok());
  EXPECT_EQ(scheduler.running(), 2);
}

TEST_F(SchedulerTest, ACancelledQueuedJobLeavesTheQueueAtOnce) {
  BatchScheduler scheduler(weights_.get(), {1, 4, 0, 1});
  auto running = *scheduler.Enqueue(1);
  auto queued = *scheduler.Enqueue(1);
  std::atomic<bool> cancel{false};
  auto waiter = std::async(std::launch::async, [&] {
    return scheduler.AwaitAdmission(queued.get(), [&] { return cancel.load(); });
  });
  absl::SleepFor(absl::Milliseconds(50));
  const absl::Time cancelled_at = absl::Now();
  cancel = true;
  scheduler.Wake();
  EXPECT_EQ(waiter.get().code(), absl::StatusCode::kCancelled);
  EXPECT_LT(absl::Now() - cancelled_at, absl::Milliseconds(500));
  EXPECT_EQ(scheduler.waiting(), 0);
}

// Two jobs run in the loop; one is cancelled mid-way and leaves (its place freed, on_done called)
// while the other runs to its end. The cancellation arrives while its fifth token is delivered (not from
// a polling thread, which a fast machine outruns), so the loop must see it before the next step.
TEST_F(SchedulerTest, TheLoopRunsJoinedJobsAndACancelledOneLeavesAtOnce) {
  BatchScheduler scheduler(weights_.get(), {4, 4, 0, 2});
  struct Job {
    std::unique_ptr<Engine> engine;
    std::unique_ptr<SequenceGeneration> sequence;
    std::unique_ptr<BatchScheduler::Place> place;
    absl::Notification done;
    std::atomic<int> tokens{0};
    std::atomic<bool> cancel{false};
  };
  std::vector<std::unique_ptr<Job>> jobs;
  for (int i = 0; i < 2; ++i) {
    auto job = std::make_unique<Job>();
    job->engine = *Engine::Create(weights_.get(), {});
    GenerateOptions options;
    options.max_new_tokens = 200;
    options.stop_on_eos = false;
    GenerateCallbacks callbacks;
    Job* raw = job.get();
    callbacks.on_token = [raw, i](const TokenEvent&) {
      if (++raw->tokens == 5 && i == 0) raw->cancel = true;
      return TokenVerdict::kContinue;
    };
    const std::vector<int> prompt = {1, 300, 301 + i};
    job->sequence = *SequenceGeneration::Start(job->engine.get(), nullptr, prompt, options, callbacks);
    job->place = *scheduler.Enqueue(1);
    ASSERT_TRUE(scheduler.AwaitAdmission(job->place.get(), kNever).ok());
    scheduler.Join(job->place.get(), job->sequence.get(), [raw] { return raw->cancel.load(); },
                   [raw] { raw->done.Notify(); });
    jobs.push_back(std::move(job));
  }
  ASSERT_TRUE(jobs[0]->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(jobs[0]->sequence->result().finish_reason, FinishReason::kCancelled);
  EXPECT_EQ(jobs[0]->tokens.load(), 5);  // no step ran after the cancellation
  ASSERT_TRUE(jobs[1]->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_TRUE(jobs[1]->sequence->status().ok());
  EXPECT_EQ(jobs[1]->tokens.load(), 200);
  EXPECT_EQ(scheduler.running(), 0);
}

}  // namespace
}  // namespace a2sf::worker
