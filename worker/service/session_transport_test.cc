// RemotePolicyClient over a session's own transports -- its StreamScores stream (inline scores, no
// batcher) and its shared-memory ring -- whose cache manager breaks the protocol (HostileCacheManager
// serves the stream step by step, or attaches the ring and serves its slots): a decision for another
// step, or a malformed decision, fails the step with UNAVAILABLE "the cache manager broke the
// protocol" (ProtocolViolation, one rule for every transport), synchronous and pipelined, at once
// rather than at the decision deadline, the step still counted in flight; the transport is then
// broken, so later steps fail at once with UNAVAILABLE and reach the cache manager no more. So too
// when the broken answer is a bulk prefill's (on the ring: its unary SubmitStep). A peer that holds
// the call open after a breach, or after an honest answer, holds neither the job nor its end, even
// without a decision deadline. Both transports behave alike. Without a breach the ring carries the
// honest service's decisions.
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "cachemgr/service/testing/hostile_cache_manager.h"
#include "gtest/gtest.h"
#include "worker/service/remote_policy_client.h"
#include "worker/service/testing/remote_session.h"

namespace a2sf::worker {
namespace {

using cachemgr::testing::Breach;

// Far above every bound checked: a step that fails by the deadline fails those checks.
constexpr absl::Duration kDecisionTimeout = absl::Seconds(10);
constexpr uint32_t kHeads = testing::kSmallModelScoreHeads;

// How the session's scores travel to the hostile cache manager.
enum class Route { kSessionStream, kRing };
const char* RouteName(Route route) { return route == Route::kRing ? "Ring" : "SessionStream"; }
void PrintTo(Route route, std::ostream* out) { *out << RouteName(route); }

class SessionTransportTest : public ::testing::Test {
 protected:
  // The tests' a2sf session (testing::OpenA2sfSession) on `channel`; its scores go through a ring when
  // `ring_socket` is set (the test fails unless the ring was taken), else on its own stream.
  std::unique_ptr<RemotePolicyClient> Open(const std::shared_ptr<grpc::Channel>& channel,
                                           const std::string& ring_socket, uint32_t decision_lag = 0,
                                           absl::Duration decision_timeout = kDecisionTimeout) {
    RemotePolicyOptions options;
    options.decision_lag = decision_lag;
    options.ring_socket = ring_socket;
    options.decision_timeout = decision_timeout;
    auto remote = testing::OpenA2sfSession(channel, options);
    if (remote != nullptr) {
      EXPECT_EQ(remote->uses_shared_memory(), !ring_socket.empty());
    }
    return remote;
  }

  std::unique_ptr<RemotePolicyClient> OpenOverHostile(Route route, uint32_t decision_lag = 0,
                                                      absl::Duration decision_timeout = kDecisionTimeout) {
    return Open(stack_.hostile_channel(), route == Route::kRing ? stack_.hostile_ring_socket() : "", decision_lag,
                decision_timeout);
  }

  // Step 0 decided honestly, then `breach` from step 1 on: steps 1 .. lag + 1 submitted (the most a
  // pipelined session has in flight) and the status of the first decision awaited after them, which
  // must come long before the decision deadline.
  absl::Status FirstStatusAfterBreach(RemotePolicyClient* remote, Breach breach) {
    EXPECT_TRUE(remote->SubmitStep(0, 0, Scores(0)).ok());
    EXPECT_TRUE(remote->AwaitDecision().ok());
    stack_.hostile()->Target([](const v1::ScoreStep& step) { return step.step() >= 1; }, breach);
    for (uint64_t step = 1; step <= remote->decision_lag() + 1; ++step) {
      EXPECT_TRUE(remote->SubmitStep(step, uint32_t(step), Scores(step)).ok());
    }
    const absl::Time start = absl::Now();
    absl::Status status = remote->AwaitDecision().status();
    EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "the step waited for the deadline, not the breach";
    return status;
  }

  // After `breach` failed a step the transport no longer knows which step a decision answers: it is
  // broken, so the next await and the next step fail at once with UNAVAILABLE -- instead of waiting
  // for a decision the cache manager will not send (synchronous), reading the decision behind the bad
  // one as the failed step's (pipelined), or handing the next step to the cache manager (which, honest
  // again, would answer it). Synchronous and pipelined.
  void ExpectLaterStepsFailAtOnceUnavailable(Route route, Breach breach) {
    for (uint32_t lag : {0u, 2u}) {
      SCOPED_TRACE(::testing::Message() << "decision lag " << lag);
      auto remote = OpenOverHostile(route, lag);
      ASSERT_NE(remote, nullptr);
      ASSERT_EQ(FirstStatusAfterBreach(remote.get(), breach).code(), absl::StatusCode::kUnavailable);
      stack_.hostile()->Target(nullptr, Breach::kNone);
      const uint64_t next = lag + 2;
      const absl::Time start = absl::Now();
      const absl::Status awaited = remote->AwaitDecision().status();
      const absl::Status sent = remote->SubmitStep(next, uint32_t(next), Scores(next));
      EXPECT_LT(absl::Now() - start, absl::Seconds(1)) << "a later step waited instead of failing";
      for (const absl::Status& status : {awaited, sent}) {
        EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
        EXPECT_EQ(status.message(), "the stream to the cache manager is broken") << status;
      }
      EXPECT_EQ(remote->steps_in_flight(), lag + 1) << "no decision was taken, no step was added";
      auto session = stack_.manager()->Get(remote->session_id());
      ASSERT_TRUE(session.ok()) << session.status();
      // Steps 0 and 1 were decided; the steps behind the violation may or may not have been read
      // before the call was cancelled; step `next` must not have been.
      EXPECT_GE(session->steps, 2u);
      EXPECT_LE(session->steps, next) << "the cache manager got a step after the violation";
    }
  }

  // Scores of step `step` while nothing has been evicted yet (step + 1 entries per head, budget 4).
  static std::vector<float> Scores(uint64_t step) { return std::vector<float>(kHeads * (step + 1), 0.5f); }

  cachemgr::testing::HostileCacheManagerStack stack_;
};

// The breaches, on either transport.
class SessionTransportBreachTest : public SessionTransportTest, public ::testing::WithParamInterface<Route> {};

INSTANTIATE_TEST_SUITE_P(Routes, SessionTransportBreachTest, ::testing::Values(Route::kSessionStream, Route::kRing),
                         [](const ::testing::TestParamInfo<Route>& info) { return RouteName(info.param); });

TEST_F(SessionTransportTest, WithoutABreachTheRingCarriesTheHonestDecisions) {
  auto ring = OpenOverHostile(Route::kRing);
  auto inline_scores = Open(stack_.honest_channel(), /*ring_socket=*/"");
  ASSERT_TRUE(ring && inline_scores);
  std::mt19937 random(11);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  uint32_t entries = 0;
  for (uint64_t step = 0; step < 10; ++step) {
    std::vector<float> scores(kHeads * (entries + 1));
    for (float& v : scores) v = uniform(random);
    auto got = ring->Step(step, uint32_t(step), scores);
    auto want = inline_scores->Step(step, uint32_t(step), scores);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_TRUE(want.ok()) << want.status();
    EXPECT_EQ(got->evicted_slots, want->evicted_slots);
    EXPECT_EQ(got->evicted_positions, want->evicted_positions);
    EXPECT_EQ(got->entries_after, want->entries_after);
    entries = got->entries_after;
  }
  EXPECT_EQ(entries, 4u);  // the budget was reached: the ring's decisions did evict
  EXPECT_EQ(stack_.hostile()->breaches(), 0);
}

TEST_P(SessionTransportBreachTest, ADecisionForAnotherStepFailsTheStepUnavailableAsABrokenProtocol) {
  for (uint32_t lag : {0u, 2u}) {
    SCOPED_TRACE(::testing::Message() << "decision lag " << lag);
    auto remote = OpenOverHostile(GetParam(), lag);
    ASSERT_NE(remote, nullptr);
    const absl::Status status = FirstStatusAfterBreach(remote.get(), Breach::kWrongStep);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    // The hostile cache manager wrote step 1's decision as step 1001's.
    EXPECT_EQ(status.message(), "the cache manager broke the protocol: it answered step 1001 to step 1") << status;
    EXPECT_EQ(remote->steps_in_flight(), lag + 1) << "the failed step and those behind it stay in flight";
    stack_.hostile()->Target(nullptr, Breach::kNone);
  }
}

TEST_P(SessionTransportBreachTest, AMalformedDecisionFailsTheStepUnavailableAsABrokenProtocol) {
  // What each transport's decoder says of a decision claiming 3 evictions per head and listing none.
  const std::string malformed = GetParam() == Route::kRing ? "cache manager wrote a malformed decision into the ring"
                                                           : "evicted_positions: 0 values for 3 evictions per head";
  for (uint32_t lag : {0u, 2u}) {
    SCOPED_TRACE(::testing::Message() << "decision lag " << lag);
    auto remote = OpenOverHostile(GetParam(), lag);
    ASSERT_NE(remote, nullptr);
    const absl::Status status = FirstStatusAfterBreach(remote.get(), Breach::kMalformed);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_EQ(status.message(), "the cache manager broke the protocol: " + malformed) << status;
    EXPECT_EQ(remote->steps_in_flight(), lag + 1);
    stack_.hostile()->Target(nullptr, Breach::kNone);
  }
}

TEST_P(SessionTransportBreachTest, AfterADecisionForAnotherStepLaterStepsFailAtOnceUnavailable) {
  ExpectLaterStepsFailAtOnceUnavailable(GetParam(), Breach::kWrongStep);
}

TEST_P(SessionTransportBreachTest, AfterAMalformedDecisionLaterStepsFailAtOnceUnavailable) {
  ExpectLaterStepsFailAtOnceUnavailable(GetParam(), Breach::kMalformed);
}

// A peer that breaks the protocol and then holds the call open -- never ends the stream, ignores the
// closed ring -- holds nothing of the worker's, even without a decision deadline
// (--decision_timeout_ms=0): the step fails at once, the transport is abandoned (its call cancelled,
// nothing more read), and the session's end (its Close and CloseSession) returns at once too.
TEST_P(SessionTransportBreachTest, APeerThatHoldsTheCallOpenAfterABreachHoldsNothing) {
  for (uint32_t lag : {0u, 2u}) {
    SCOPED_TRACE(::testing::Message() << "decision lag " << lag);
    auto remote = OpenOverHostile(GetParam(), lag, absl::InfiniteDuration());
    ASSERT_NE(remote, nullptr);
    const absl::Time start = absl::Now();
    const absl::Status status = FirstStatusAfterBreach(remote.get(), Breach::kWrongStepThenHold);
    stack_.hostile()->Target(nullptr, Breach::kNone);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_EQ(status.message(), "the cache manager broke the protocol: it answered step 1001 to step 1") << status;
    const absl::Status sent = remote->SubmitStep(lag + 2, lag + 2, Scores(lag + 2));
    EXPECT_EQ(sent.code(), absl::StatusCode::kUnavailable) << sent;
    remote.reset();
    EXPECT_LT(absl::Now() - start, absl::Seconds(5))
        << "the worker waited for the peer to let go (held for up to " << cachemgr::testing::kHoldCap << ")";
  }
}

// Without a decision deadline a session's clean end still does not wait for a peer that answered and
// then never ends the stream (or serves on after the ring closed): what is still travelling is read
// for SessionStream::kDrainGrace, then the call is cancelled.
TEST_P(SessionTransportBreachTest, ASessionsEndDoesNotWaitForAPeerThatNeverEndsTheStream) {
  for (uint32_t lag : {0u, 2u}) {
    SCOPED_TRACE(::testing::Message() << "decision lag " << lag);
    auto remote = OpenOverHostile(GetParam(), lag, absl::InfiniteDuration());
    ASSERT_NE(remote, nullptr);
    stack_.hostile()->Target([](const v1::ScoreStep& step) { return step.step() == 0; }, Breach::kHoldAfterAnswer);
    ASSERT_TRUE(remote->Step(0, 0, Scores(0)).ok());
    stack_.hostile()->Target(nullptr, Breach::kNone);
    const absl::Time start = absl::Now();
    remote.reset();
    const absl::Duration closing = absl::Now() - start;
    EXPECT_GE(closing, SessionStream::kDrainGrace) << "an honest peer would have ended the stream by now";
    EXPECT_LT(closing, SessionStream::kDrainGrace + absl::Seconds(3))
        << "the worker waited for the peer to let go (held for up to " << cachemgr::testing::kHoldCap << ")";
  }
}

// A bulk prefill (the stream: a message like any step; the ring: a unary SubmitStep before the ring is
// attached) answered with a decision for another step or a malformed one fails with UNAVAILABLE "the
// cache manager broke the protocol", at once, the step still in flight; the transport is broken, so
// the next step fails at once and never reaches the cache manager.
TEST_P(SessionTransportBreachTest, ABrokenBulkPrefillAnswerFailsItAndEndsTheTransport) {
  constexpr uint32_t kPrompt = 6;  // budget 4: its decision evicts 2 entries per head
  for (Breach breach : {Breach::kWrongStep, Breach::kMalformed}) {
    SCOPED_TRACE(cachemgr::testing::BreachName(breach));
    auto remote = OpenOverHostile(GetParam());
    ASSERT_NE(remote, nullptr);
    stack_.hostile()->Target([](const v1::ScoreStep& step) { return step.kind() == v1::STEP_KIND_BULK_PREFILL; },
                             breach);
    const int breaches = stack_.hostile()->breaches();
    const absl::Time start = absl::Now();
    const absl::Status status = remote->BulkPrefill(0, kPrompt, testing::BulkPrefillScores(kPrompt)).status();
    stack_.hostile()->Target(nullptr, Breach::kNone);
    EXPECT_EQ(stack_.hostile()->breaches(), breaches + 1);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_EQ(status.message(), breach == Breach::kWrongStep
                                    ? "the cache manager broke the protocol: it answered step 1000 to step 0"
                                    : "the cache manager broke the protocol: evicted_positions: 0 values for 5 "
                                      "evictions per head")
        << status;
    EXPECT_EQ(remote->steps_in_flight(), 1u);
    const absl::Status sent = remote->SubmitStep(1, kPrompt, Scores(4));
    EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "waited for the deadline, not the breach";
    EXPECT_EQ(sent.code(), absl::StatusCode::kUnavailable) << sent;
    EXPECT_EQ(sent.message(), "the stream to the cache manager is broken") << sent;
    auto session = stack_.manager()->Get(remote->session_id());
    ASSERT_TRUE(session.ok()) << session.status();
    EXPECT_EQ(session->steps, 1u) << "the cache manager got no step after the bulk prefill";
  }
}

}  // namespace
}  // namespace a2sf::worker
