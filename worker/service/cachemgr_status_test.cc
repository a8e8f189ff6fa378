#include "worker/service/cachemgr_status.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/default_policy_misfit.h"
#include "gtest/gtest.h"

namespace a2sf::worker {
namespace {

// Only codes that need no probe of the channel (UNAVAILABLE and DEADLINE_EXCEEDED do).
absl::Status ForClient(const absl::Status& status) { return OpenFailureForClient(status, nullptr); }

TEST(OpenFailureForClient, TheRequestsOwnMistakesPassWithTheFieldNamed) {
  const absl::Status bad = absl::InvalidArgumentError("policy.alpha: must be in [0, 1], got 2");
  EXPECT_EQ(ForClient(bad), bad);
  const absl::Status range = absl::OutOfRangeError("budget.tokens: 9000 exceed the context");
  EXPECT_EQ(ForClient(range), range);
}

TEST(OpenFailureForClient, ADefaultThatDoesNotFitIsTheServersFaultWithTheMessageKept) {
  const std::string message =
      absl::StrCat(kDefaultPolicyMisfit, ": policy.layer_alphas: has 6 values but the session's model has 5 layers");
  const absl::Status told = ForClient(absl::FailedPreconditionError(message));
  EXPECT_EQ(told.code(), absl::StatusCode::kInternal) << told;
  EXPECT_EQ(told.message(), message);
}

TEST(OpenFailureForClient, OtherPreconditionsAndCodesSayNothingOfTheCacheManagersInsides) {
  // A FAILED_PRECONDITION that is not the misfit (an older cache manager refusing a ring offer, say)
  // names the worker's address: the caller gets the generic answer, not that message.
  const absl::Status ring = absl::FailedPreconditionError("shared-memory ring offered over TCP from ipv4:10.0.0.7:5531");
  const absl::Status told = ForClient(ring);
  EXPECT_EQ(told.code(), absl::StatusCode::kUnavailable) << told;
  EXPECT_EQ(std::string(told.message()).find("10.0.0.7"), std::string::npos) << told;
  // The misfit's words under another code are not the misfit either.
  EXPECT_EQ(ForClient(absl::AbortedError(kDefaultPolicyMisfit)).code(), absl::StatusCode::kUnavailable);
  const absl::Status full = ForClient(absl::ResourceExhaustedError("--max_sessions=64 reached by peer ipv4:10.0.0.7"));
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(std::string(full.message()).find("max_sessions"), std::string::npos) << full;
}

}  // namespace
}  // namespace a2sf::worker
