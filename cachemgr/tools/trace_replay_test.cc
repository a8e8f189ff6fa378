#include "cachemgr/tools/trace_replay.h"

#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace a2sf::cachemgr {
namespace {

std::string Replay(const std::string& trace, const ReplayOptions& options, absl::Status* status = nullptr) {
  std::istringstream in(trace);
  std::ostringstream out;
  absl::StatusOr<ReplaySummary> summary = ReplayTrace(in, out, options);
  if (status != nullptr) *status = summary.status();
  return out.str();
}

std::string ReadTestdata() {
  std::ifstream file("cachemgr/tools/testdata/h2o_vs_a2sf.jsonl");
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

TEST(TraceReplay, PrintsEachDecisionIncludingARunTimeSwap) {
  // Worked by hand (alpha 0.1, budget 2): step 2 A = (0.1, 0.51, 0.5) -> position 0 goes from slot 0
  // and position 2 moves into slot 0. After the swap to H2O (alpha 1, recent window 1), step 3 gives
  // A = (0.75, 0.76, 0.5) with position 3 protected -> position 2 (slot 0) goes.
  absl::Status status;
  const std::string out = Replay(ReadTestdata(), {}, &status);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_NE(out.find("step 0 position 0 [a2sf]: no eviction"), std::string::npos) << out;
  EXPECT_NE(out.find("step 2 position 2 [a2sf]: L0H0 slot 0 (pos 0)"), std::string::npos) << out;
  EXPECT_NE(out.find("a2sf(alpha=0.1, recent_window=0) -> h2o(alpha=1) from step 3"), std::string::npos) << out;
  EXPECT_NE(out.find("step 3 position 3 [h2o]: L0H0 slot 0 (pos 2)"), std::string::npos) << out;
  std::istringstream in(ReadTestdata());
  std::ostringstream sink;
  absl::StatusOr<ReplaySummary> summary = ReplayTrace(in, sink, {});
  ASSERT_TRUE(summary.ok());
  EXPECT_EQ(summary->steps, 4u);
  EXPECT_EQ(summary->evictions, 2u);
}

TEST(TraceReplay, PolicyOverrideAndJsonOutput) {
  ReplayOptions options;
  options.json = true;
  options.policy_override = *ParsePolicyJson(R"({"name": "h2o"})");
  absl::Status status;
  const std::string out = Replay(ReadTestdata(), options, &status);
  ASSERT_TRUE(status.ok()) << status;
  // H2O from the start: step 2 A = (1.9, 0.6, 0.5), position 2 protected -> position 1 from slot 1.
  EXPECT_NE(out.find(R"({"entries_after":2,"evicted":[{"kv_head":0,"layer":0,"position":1,"slot":1}],"policy":"h2o","position":2,"step":2})"),
            std::string::npos)
      << out;
}

TEST(TraceReplay, ErrorsNameTheLine) {
  absl::Status status;
  Replay("{\"a2sf_trace\":1,\"num_layers\":1,\"num_kv_heads\":1,\"budget_tokens\":2}\n"
         "{\"position\":0,\"scores\":[[[1.0, 2.0]]]}\n",
         {}, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("trace line 2"), std::string::npos) << status;
  Replay("{\"position\":0}\n", {}, &status);
  EXPECT_NE(status.message().find("header"), std::string::npos);
  Replay("not json\n", {}, &status);
  EXPECT_NE(status.message().find("trace line 1"), std::string::npos);
  Replay("", {}, &status);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  Replay("{\"a2sf_trace\":1,\"num_layers\":1,\"num_kv_heads\":1,\"budget_tokens\":2,\"policy\":{\"name\":\"x\"}}\n",
         {}, &status);
  EXPECT_NE(status.message().find("policy.name"), std::string::npos);
  Replay("{\"a2sf_trace\":1,\"num_layers\":1,\"num_kv_heads\":1,\"budget_tokens\":2}\n"
         "{\"position\":0,\"scores\":[[[-1.0]]]}\n",
         {}, &status);
  EXPECT_NE(status.message().find("negative"), std::string::npos) << status;
}

}  // namespace
}  // namespace a2sf::cachemgr
