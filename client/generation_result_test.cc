// The one JSON schema: every field present, 64-bit integers as numbers, enums by name.
#include "client/generation_result.h"

#include "gtest/gtest.h"

namespace a2sf::client {
namespace {

TEST(GenerationJson, AllFieldsPresentAndUint64AsNumbers) {
  GenerationResult result;
  result.text = "Once";
  result.ids = {403};
  result.finished.set_job_id("j");
  result.finished.set_evictions(18446744073709551615ull);  // 2^64 - 1 keeps all its digits
  result.finished.set_seed(12345678901234ull);
  result.finished.set_finish_reason(v1::FINISH_REASON_STOP_STRING);
  v1::TokenLogprobs logprob;
  logprob.mutable_token()->set_id(403);
  logprob.mutable_token()->set_logprob(-0.5f);
  logprob.mutable_token()->set_piece("\xff");  // not UTF-8: replaced when dumped
  result.logprobs.push_back(logprob);
  const nlohmann::json json = GenerationJson(result);
  EXPECT_EQ(json["text"], "Once");
  EXPECT_EQ(json["ids"], nlohmann::json::array({403}));
  const nlohmann::json& stats = json["stats"];
  EXPECT_TRUE(stats["evictions"].is_number_unsigned());
  EXPECT_EQ(stats["evictions"].get<uint64_t>(), 18446744073709551615ull);
  EXPECT_EQ(stats["seed"].get<uint64_t>(), 12345678901234ull);
  EXPECT_EQ(stats["finish_reason"], "FINISH_REASON_STOP_STRING");
  // Zero and empty fields are present.
  EXPECT_EQ(stats["kv_bytes_peak"], 0);
  EXPECT_EQ(stats["shared_memory"], false);
  EXPECT_EQ(stats["session_id"], "");
  EXPECT_TRUE(stats["policy"]["layer_alphas"].is_array());
  EXPECT_EQ(stats["policy"]["alpha"], 0.0);
  EXPECT_EQ(json["logprobs"][0]["token"]["id"], 403);
  EXPECT_EQ(json["logprobs"][0]["rank"], 0);
  EXPECT_TRUE(json["prompt_logprobs"].is_array());
  const std::string line = DumpJson(json);
  EXPECT_NE(line.find("\"evictions\":18446744073709551615"), std::string::npos);
  EXPECT_NE(line.find("\xEF\xBF\xBD"), std::string::npos);
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

}  // namespace
}  // namespace a2sf::client
