// GenerationResult: one finished job as a client sees it, and its JSON form -- the one schema both
// `a2sf generate --json` and `a2sf-generate --json` print:
//   {"text": "...", "ids": [...], "stats": JobStats, "logprobs": [TokenLogprobs...],
//    "prompt_logprobs": [TokenLogprobs...]}
// where every message is printed with all its fields (zeros, empty strings and lists included),
// 64-bit integers as JSON numbers, enums by name and bytes as text (invalid UTF-8 replaced).
#ifndef A2SF_CLIENT_GENERATION_RESULT_H_
#define A2SF_CLIENT_GENERATION_RESULT_H_

#include <string>
#include <vector>

#include "a2sf/v1/generation.pb.h"
#include "google/protobuf/message.h"
#include "nlohmann/json.hpp"

namespace a2sf::client {

struct GenerationResult {
  v1::JobStats accepted;
  v1::JobStats finished;
  std::vector<uint32_t> ids;
  std::string text;
  std::vector<v1::TokenLogprobs> logprobs;  // one per id when the request asked for them
  v1::PromptLogprobs prompt_logprobs;
};

// Every field of `message` (set or not) by its proto name; see above for the value rules.
nlohmann::json ProtoToJson(const google::protobuf::Message& message);
nlohmann::json GenerationJson(const GenerationResult& result);
// One line of JSON, invalid UTF-8 replaced by U+FFFD.
std::string DumpJson(const nlohmann::json& json);

}  // namespace a2sf::client

#endif  // A2SF_CLIENT_GENERATION_RESULT_H_
