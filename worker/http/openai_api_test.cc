// The OpenAI <-> Generation mapping: fields, defaults, the LLaMA-2 chat template against strings
// written from Meta's reference format, stop-string cutting across pieces, and hostile bodies.
#include "worker/http/openai_api.h"

#include "gtest/gtest.h"
#include "worker/testing/fixtures.h"

namespace a2sf::worker::http {
namespace {

using nlohmann::json;

ServedModel Model(const Tokenizer* tokenizer = nullptr) { return {"stories260K", tokenizer, 512}; }

// Maps `body`; on failure returns the error (http_status 0 on success).
ApiError MapError(Endpoint endpoint, const json& body, MappedRequest* out = nullptr,
                  const Tokenizer* tokenizer = nullptr) {
  MappedRequest ignored;
  ApiError error;
  error.http_status = 0;
  if (!MapRequest(endpoint, body, Model(tokenizer), out != nullptr ? out : &ignored, &error)) return error;
  error.http_status = 0;
  return error;
}

TEST(OpenAiApiTest, CompletionFieldsMapToTheGenerateRequest) {
  MappedRequest m;
  const json body = {{"model", "stories260K"},  {"prompt", "Once upon"},        {"max_tokens", 40},
                     {"temperature", 0.5},       {"top_p", 0.9},                 {"seed", 7},
                     {"stop", {"\n", "END"}},    {"stream", true},               {"stream_options", {{"include_usage", true}}},
                     {"user", "alice"},          {"kv_policy", {{"name", "a2sf"}, {"alpha", 0.7}, {"recent_window", 8}}},
                     {"kv_budget", {{"ratio", 0.25}}}};
  ASSERT_EQ(MapError(Endpoint::kCompletions, body, &m).http_status, 0);
  EXPECT_EQ(m.generate.text(), "Once upon");
  EXPECT_EQ(m.generate.max_tokens(), 40u);
  EXPECT_DOUBLE_EQ(m.generate.sampling().temperature(), 0.5);
  EXPECT_DOUBLE_EQ(m.generate.sampling().top_p(), 0.9);
  EXPECT_EQ(m.generate.sampling().seed(), 7u);
  ASSERT_EQ(m.generate.stop().stop_strings_size(), 2);
  EXPECT_TRUE(m.stream);
  EXPECT_TRUE(m.include_usage);
  EXPECT_EQ(m.generate.policy().name(), "a2sf");
  EXPECT_DOUBLE_EQ(m.generate.policy().alpha(), 0.7);
  EXPECT_EQ(m.generate.policy().recent_window(), 8u);
  EXPECT_DOUBLE_EQ(m.generate.budget().ratio(), 0.25);
}

TEST(OpenAiApiTest, DefaultsAreOpenAisNotTheProtos) {
  MappedRequest m;
  ASSERT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}, {"prompt", "x"}}, &m).http_status, 0);
  EXPECT_DOUBLE_EQ(m.generate.sampling().temperature(), 1.0);  // OpenAI samples by default; proto 0 is greedy
  EXPECT_EQ(m.generate.max_tokens(), 16u);                      // OpenAI's completions default
  EXPECT_FALSE(m.stream);
  EXPECT_FALSE(m.generate.has_policy());
  EXPECT_FALSE(m.generate.has_budget());
  // Nulls are "unset", as OpenAI clients send them.
  ASSERT_EQ(MapError(Endpoint::kCompletions,
                     {{"model", "stories260K"}, {"prompt", "x"}, {"max_tokens", nullptr}, {"stop", nullptr}}, &m)
                .http_status,
            0);
}

TEST(OpenAiApiTest, TokenPromptsAndSingletonArraysAreAccepted) {
  MappedRequest m;
  ASSERT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}, {"prompt", {1, 403, 9}}}, &m).http_status, 0);
  ASSERT_EQ(m.generate.token_ids().ids_size(), 3);
  EXPECT_EQ(m.generate.token_ids().ids(1), 403u);
  ASSERT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}, {"prompt", {"only one"}}}, &m).http_status, 0);
  EXPECT_EQ(m.generate.text(), "only one");
}

// A batch of prompts and n: one job per choice, prompt-major (OpenAI's choice indexes), choice j of a
// prompt seeded seed + j; every other field as mapped.
TEST(OpenAiApiTest, ABatchOfPromptsTimesNIsOneJobPerChoice) {
  MappedRequest m;
  ASSERT_EQ(MapError(Endpoint::kCompletions,
                     {{"model", "stories260K"},
                      {"prompt", json::array({"Once", "Later"})},
                      {"n", 3},
                      {"seed", 7},
                      {"max_tokens", 5}},
                     &m)
                .http_status,
            0);
  ASSERT_EQ(ChoiceCount(m), 6u);
  const char* prompts[] = {"Once", "Once", "Once", "Later", "Later", "Later"};
  const uint64_t seeds[] = {7, 8, 9, 7, 8, 9};
  for (size_t i = 0; i < 6; ++i) {
    const v1::GenerateRequest job = ChoiceJob(m, i);
    EXPECT_EQ(job.text(), prompts[i]) << i;
    EXPECT_EQ(job.sampling().seed(), seeds[i]) << i;
    EXPECT_EQ(job.max_tokens(), 5u) << i;
    EXPECT_DOUBLE_EQ(job.sampling().temperature(), 1.0) << i;
  }
  // Token-id prompts in a batch; without a seed none is set (the worker draws one per job).
  m = MappedRequest();
  ASSERT_EQ(MapError(Endpoint::kCompletions,
                     {{"model", "stories260K"}, {"prompt", json::array({{1, 2}, {1, 403, 9}})}, {"n", 2}}, &m)
                .http_status,
            0);
  ASSERT_EQ(ChoiceCount(m), 4u);
  EXPECT_EQ(ChoiceJob(m, 1).token_ids().ids_size(), 2);
  EXPECT_EQ(ChoiceJob(m, 2).token_ids().ids(1), 403u);
  EXPECT_FALSE(ChoiceJob(m, 3).sampling().has_seed());
  EXPECT_FALSE(ChoiceJob(m, 3).has_text());
  // The worker's capacity bounds the choices: 2 prompts x n=64 fit 128, x 65 do not (the bad cases).
  EXPECT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}, {"prompt", json::array({"a", "b"})}, {"n", 64}}).http_status,
            0);
}

// Each choice's index, text and finish; chat's prompt logprobs beside the choices.
TEST(OpenAiApiTest, ResponsesNumberTheirChoices) {
  const ResponseHeader completions{Endpoint::kCompletions, "cmpl-1", 0, "m"};
  const json r = CompleteResponse(completions, {{"a", "stop"}, {"b", "length"}}, Usage(3, 2));
  ASSERT_EQ(r["choices"].size(), 2u);
  EXPECT_EQ(r["choices"][1]["index"], 1);
  EXPECT_EQ(r["choices"][1]["text"], "b");
  EXPECT_EQ(r["choices"][1]["finish_reason"], "length");
  const ResponseHeader chat{Endpoint::kChatCompletions, "chatcmpl-1", 0, "m"};
  const json c = CompleteResponse(chat, {{"a", "stop"}, {"b", "stop"}}, Usage(3, 2));
  EXPECT_EQ(c["choices"][1]["message"]["content"], "b");
  const json chunk = StreamChunk(chat, 3, "x", false, nullptr);
  EXPECT_EQ(chunk["choices"][0]["index"], 3);
  EXPECT_EQ(chunk["choices"][0]["delta"]["content"], "x");
}

struct BadCase {
  const char* what;
  json body;
  int status;
  const char* param;
};

// Bodies are bounded in what they build, not only in bytes: too deep or too many values is a 400
// before anything is built; at the limits, and for a request's usual shapes, they parse.
TEST(OpenAiApiTest, ParseBodyBoundsDepthAndValues) {
  json out;
  ApiError error;
  const std::string deep_ok = std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']');
  EXPECT_TRUE(ParseBody(deep_ok, &out, &error)) << error.message;
  const std::string too_deep = std::string(kMaxJsonDepth + 1, '[') + std::string(kMaxJsonDepth + 1, ']');
  EXPECT_FALSE(ParseBody(too_deep, &out, &error));
  EXPECT_EQ(error.http_status, 400);
  EXPECT_NE(error.message.find("deeper than 64"), std::string::npos) << error.message;
  // Unclosed: the depth is passed before the end is found missing.
  EXPECT_FALSE(ParseBody(std::string(1000000, '['), &out, &error));
  EXPECT_NE(error.message.find("deeper"), std::string::npos) << error.message;

  // A prompt of token ids: the array and its values count.
  auto prompt_of = [](size_t ids) {
    std::string body = R"({"model":"m","prompt":[)";
    for (size_t i = 0; i < ids; ++i) body += i == 0 ? "1" : ",1";
    return body + "]}";
  };
  EXPECT_TRUE(ParseBody(prompt_of(kMaxJsonValues - 3), &out, &error)) << error.message;  // + object, model, array
  EXPECT_EQ(out["prompt"].size(), kMaxJsonValues - 3);
  EXPECT_FALSE(ParseBody(prompt_of(kMaxJsonValues - 2), &out, &error));
  EXPECT_NE(error.message.find("more than 131072 JSON values"), std::string::npos) << error.message;

  EXPECT_FALSE(ParseBody("{not json", &out, &error));
  EXPECT_NE(error.message.find("not valid JSON"), std::string::npos) << error.message;
  EXPECT_FALSE(ParseBody("", &out, &error));
  EXPECT_TRUE(ParseBody(R"({"model":"m","messages":[{"role":"user","content":"hi"}],"stop":["a"]})", &out, &error));
  EXPECT_EQ(out["messages"][0]["content"], "hi");
}

TEST(OpenAiApiTest, BadFieldsAre4xxNamingTheField) {
  const json ok = {{"model", "stories260K"}, {"prompt", "x"}};
  const auto with = [&](const char* key, json value) {
    json b = ok;
    b[key] = std::move(value);
    return b;
  };
  const std::vector<BadCase> cases = {
      {"n 129", with("n", 129), 400, "n"},
      {"n x prompts past the worker's jobs", json::parse(R"({"model":"stories260K","prompt":["a","b"],"n":65})"), 400, "n"},
      {"129 prompts", with("prompt", std::vector<std::string>(129, "a")), 400, "prompt"},
      {"an empty prompt in a batch", with("prompt", json::array({"a", ""})), 400, "prompt"},
      {"a batch of a string and an id", with("prompt", json::array({json("a"), json(1)})), 400, "prompt"},
      {"an empty token prompt in a batch", with("prompt", json::array({json::array({1}), json::array()})), 400,
       "prompt"},
      {"token prompt past the context", with("prompt", std::vector<int>(513, 1)), 400, "prompt"},
      {"text prompt past the context's bytes", with("prompt", std::string(MaxPromptTextBytes(512) + 1, 'a')), 400,
       "prompt"},
      {"max_tokens as string", with("max_tokens", "10"), 400, "max_tokens"},
      {"max_tokens 0", with("max_tokens", 0), 400, "max_tokens"},
      // As the server parses a body: a non-negative integer is held unsigned, its lower bound too.
      {"max_tokens 0 parsed", json::parse(R"({"model":"stories260K","prompt":"x","max_tokens":0})"), 400,
       "max_tokens"},
      {"n 0 parsed", json::parse(R"({"model":"stories260K","prompt":"x","n":0})"), 400, "n"},
      {"max_tokens negative", with("max_tokens", -5), 400, "max_tokens"},
      {"max_tokens huge", with("max_tokens", 1e30), 400, "max_tokens"},
      {"temperature 3", with("temperature", 3), 400, "temperature"},
      {"temperature string", with("temperature", "hot"), 400, "temperature"},
      {"top_p 0", with("top_p", 0), 400, "top_p"},
      {"seed float", with("seed", 1.5), 400, "seed"},
      {"five stops", with("stop", {"a", "b", "c", "d", "e"}), 400, "stop"},
      {"empty stop", with("stop", ""), 400, "stop"},
      {"stop number", with("stop", 3), 400, "stop"},
      {"stream string", with("stream", "yes"), 400, "stream"},
      {"stream_options without stream", with("stream_options", {{"include_usage", true}}), 400, "stream_options"},
      {"kv_policy typo", with("kv_policy", {{"name", "a2sf"}, {"alpah", 0.5}}), 400, "kv_policy"},
      {"kv_policy wrong type", with("kv_policy", {{"name", "a2sf"}, {"alpha", "high"}}), 400, "kv_policy.alpha"},
      {"kv_policy negative window", with("kv_policy", {{"name", "a2sf"}, {"recent_window", -1}}), 400,
       "kv_policy.recent_window"},
      {"kv_budget both", with("kv_budget", {{"tokens", 8}, {"ratio", 0.5}}), 400, "kv_budget"},
      {"kv_budget not object", with("kv_budget", 0.5), 400, "kv_budget"},
      {"user number", with("user", 5), 400, "user"},
      {"logprobs as string", with("logprobs", "2"), 400, "logprobs"},
      {"empty prompt", with("prompt", ""), 400, "prompt"},
      {"negative token id", with("prompt", {1, -2}), 400, "prompt"},
      {"prompt object", with("prompt", {{"a", 1}}), 400, "prompt"},
      {"unknown model", with("model", "gpt-4"), 404, "model"},
      {"model number", with("model", 4), 400, "model"},
      {"echo as string", with("echo", "yes"), 400, "echo"},
      {"prompt_logprobs > 20", with("prompt_logprobs", 21), 400, "prompt_logprobs"},
      {"prompt_logprobs negative", with("prompt_logprobs", -1), 400, "prompt_logprobs"},
      {"prompt_logprobs as bool", with("prompt_logprobs", true), 400, "prompt_logprobs"},
      {"prompt_logprobs with stream", json({{"model", "stories260K"}, {"prompt", "x"}, {"prompt_logprobs", 1}, {"stream", true}}), 400, "prompt_logprobs"},
      {"best_of 3", with("best_of", 3), 400, "best_of"},
      {"suffix", with("suffix", "end"), 400, "suffix"},
      {"logit_bias", with("logit_bias", {{"50256", -100}}), 400, "logit_bias"},
      {"json mode", with("response_format", {{"type", "json_object"}}), 400, "response_format"},
      {"response_format type number", with("response_format", {{"type", 7}}), 400, "response_format"},
  };
  for (const BadCase& c : cases) {
    const ApiError e = MapError(Endpoint::kCompletions, c.body);
    EXPECT_EQ(e.http_status, c.status) << c.what;
    EXPECT_EQ(e.param, c.param) << c.what;
    EXPECT_FALSE(e.message.empty()) << c.what;
  }
  EXPECT_EQ(MapError(Endpoint::kCompletions, {{"model", "gpt-4"}, {"prompt", "x"}}).code, "model_not_found");
  EXPECT_EQ(MapError(Endpoint::kCompletions, json::array({1, 2})).http_status, 400);
  // Unsupported fields at their "off" values are fine.
  EXPECT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}, {"prompt", "x"}, {"echo", false}, {"best_of", 1},
                                              {"logit_bias", json::object()}, {"response_format", {{"type", "text"}}}})
                .http_status,
            0);
  EXPECT_EQ(MapError(Endpoint::kCompletions, {{"prompt", "x"}}).param, "model");
  EXPECT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}}).param, "prompt");
}

TEST(OpenAiApiTest, ErrorBodyIsOpenAiShaped) {
  ApiError e;
  e.message = "bad";
  e.param = "n";
  const json body = ErrorBody(e);
  EXPECT_EQ(body["error"]["message"], "bad");
  EXPECT_EQ(body["error"]["type"], "invalid_request_error");
  EXPECT_EQ(body["error"]["param"], "n");
  EXPECT_TRUE(body["error"]["code"].is_null());
}

TEST(OpenAiApiTest, GrpcStatusesMapToOpenAiHttpStatuses) {
  EXPECT_EQ(FromGrpc(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "x")).http_status, 400);
  EXPECT_EQ(FromGrpc(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "x")).http_status, 429);
  EXPECT_EQ(FromGrpc(grpc::Status(grpc::StatusCode::UNAVAILABLE, "x")).http_status, 503);
  EXPECT_EQ(FromGrpc(grpc::Status(grpc::StatusCode::INTERNAL, "x")).http_status, 500);
  EXPECT_EQ(FromGrpc(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "why")).message, "why");
}

TEST(OpenAiApiTest, FinishReasonsAreOpenAis) {
  EXPECT_EQ(FinishReason(v1::FINISH_REASON_EOS), "stop");
  EXPECT_EQ(FinishReason(v1::FINISH_REASON_STOP_STRING), "stop");
  EXPECT_EQ(FinishReason(v1::FINISH_REASON_MAX_TOKENS), "length");
  EXPECT_EQ(FinishReason(v1::FINISH_REASON_CONTEXT_FULL), "length");
  EXPECT_TRUE(FinishReason(v1::FINISH_REASON_CANCELLED).is_null());
}

TEST(OpenAiApiTest, LogprobsMapToTheWorkersOptionsAndBackToOpenAisShapes) {
  MappedRequest m;
  ASSERT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}, {"prompt", "x"}, {"logprobs", 3}}, &m).http_status,
            0);
  EXPECT_TRUE(m.logprobs);
  EXPECT_EQ(m.generate.logprobs().generated(), 3u);
  ASSERT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}, {"prompt", "x"}, {"logprobs", 0}}, &m).http_status,
            0);
  EXPECT_TRUE(m.generate.logprobs().has_generated());
  EXPECT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}, {"prompt", "x"}, {"logprobs", 6}}).param,
            "logprobs");
  EXPECT_EQ(MapError(Endpoint::kChatCompletions, {{"model", "stories260K"}, {"top_logprobs", 2}}).param, "messages");

  v1::TokenLogprobs token;
  token.mutable_token()->set_id(9);
  token.mutable_token()->set_piece(" cat");
  token.mutable_token()->set_logprob(-0.5f);
  auto* alt = token.add_top();
  alt->set_piece(" cat");
  alt->set_logprob(-0.5f);
  alt = token.add_top();
  alt->set_piece(" dog");
  alt->set_logprob(-1.25f);
  json completion = nullptr;
  AppendLogprobs(Endpoint::kCompletions, token, 7, &completion);
  EXPECT_EQ(completion["tokens"], json({" cat"}));
  EXPECT_EQ(completion["token_logprobs"], json({-0.5}));
  EXPECT_EQ(completion["top_logprobs"][0][" dog"], -1.25);
  EXPECT_EQ(completion["text_offset"], json({7}));
  json chat = nullptr;
  AppendLogprobs(Endpoint::kChatCompletions, token, 0, &chat);
  EXPECT_EQ(chat["content"][0]["token"], " cat");
  EXPECT_EQ(chat["content"][0]["bytes"], json({32, 99, 97, 116}));
  EXPECT_EQ(chat["content"][0]["top_logprobs"][1]["logprob"], -1.25);
}

TEST(OpenAiApiTest, StopStringsAreCutByTheWorkerAndVllmExtrasPassThrough) {
  MappedRequest m;
  const json body = {{"model", "stories260K"}, {"prompt", "x"},          {"stop", "END"},
                     {"min_tokens", 4},        {"stop_token_ids", {2, 7}}, {"ignore_eos", true},
                     {"top_k", 40},            {"min_p", 0.05},           {"repetition_penalty", 1.1},
                     {"presence_penalty", 0.5}, {"frequency_penalty", -0.5}};
  ASSERT_EQ(MapError(Endpoint::kCompletions, body, &m).http_status, 0);
  EXPECT_FALSE(m.generate.stop().include_stop_string());  // OpenAI's rule
  EXPECT_EQ(m.generate.stop().min_tokens(), 4u);
  EXPECT_EQ(m.generate.stop().stop_token_ids_size(), 2);
  EXPECT_FALSE(m.generate.stop().stop_on_eos());
  EXPECT_EQ(m.generate.sampling().top_k(), 40u);
  EXPECT_DOUBLE_EQ(m.generate.sampling().min_p(), 0.05);
  EXPECT_DOUBLE_EQ(m.generate.sampling().repetition_penalty(), 1.1);
  EXPECT_DOUBLE_EQ(m.generate.sampling().presence_penalty(), 0.5);
  EXPECT_DOUBLE_EQ(m.generate.sampling().frequency_penalty(), -0.5);
  EXPECT_TRUE(m.generate.sampling().has_seed() == false);  // unset: the worker draws and reports one
  EXPECT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}, {"prompt", "x"}, {"presence_penalty", 3}}).param,
            "presence_penalty");
  EXPECT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}, {"prompt", "x"}, {"stop_token_ids", {-1}}}).param,
            "stop_token_ids");
}

class ChatTemplateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    A2SF_REQUIRE_FIXTURES();
    auto t = LoadTokenizer(testing::FixturesDir() + "/tok512.bin");
    ASSERT_TRUE(t.ok()) << t.status();
    tokenizer_ = std::move(*t);
  }
  std::vector<uint32_t> Encode(const std::string& text) {
    std::vector<int> ids = *tokenizer_->Encode(text, true);
    return std::vector<uint32_t>(ids.begin(), ids.end());
  }
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(ChatTemplateTest, SystemAndUserFollowMetasFormat) {
  std::vector<uint32_t> ids;
  ApiError e;
  const json messages = {{{"role", "system"}, {"content", " Be brief. "}}, {{"role", "user"}, {"content", "Hi there\n"}}};
  ASSERT_TRUE(ChatPromptIds(messages, *tokenizer_, 512, &ids, &e)) << e.message;
  EXPECT_EQ(ids, Encode("[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST]"));
}

TEST_F(ChatTemplateTest, MultiTurnClosesEachExchangeWithEos) {
  std::vector<uint32_t> ids;
  ApiError e;
  const json messages = {{{"role", "user"}, {"content", "A"}},
                         {{"role", "assistant"}, {"content", {{{"type", "text"}, {"text", "B"}}}}},
                         {{"role", "user"}, {"content", "C"}}};
  ASSERT_TRUE(ChatPromptIds(messages, *tokenizer_, 512, &ids, &e)) << e.message;
  std::vector<uint32_t> want = Encode("[INST] A [/INST] B ");
  want.push_back(uint32_t(tokenizer_->eos_id()));
  const std::vector<uint32_t> last = Encode("[INST] C [/INST]");
  want.insert(want.end(), last.begin(), last.end());
  EXPECT_EQ(ids, want);
}

TEST_F(ChatTemplateTest, BadConversationsAre400s) {
  const std::vector<std::pair<json, std::string>> cases = {
      {json::array(), "messages"},
      {json("hi"), "messages"},
      {{{{"role", "assistant"}, {"content", "x"}}}, "messages[0]"},
      {{{{"role", "user"}, {"content", "x"}}, {{"role", "assistant"}, {"content", "y"}}}, "messages"},
      {{{{"role", "user"}, {"content", "x"}}, {{"role", "user"}, {"content", "y"}}}, "messages[1]"},
      {{{{"role", "user"}, {"content", "x"}}, {{"role", "system"}, {"content", "y"}}}, "messages[1]"},
      {{{{"role", "user"}}}, "messages[0].content"},
      {{{{"role", "user"}, {"content", 5}}}, "messages[0].content"},
      {{{{"role", 1}, {"content", "x"}}}, "messages[0]"},
      {{{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}, "messages[0].content"},
      // A part whose "type" is not a string is a 400, not an exception (json's value() throws).
      {{{{"role", "user"}, {"content", {{{"type", 1}, {"text", "x"}}}}}}, "messages[0].content"},
      {{{{"role", "user"}, {"content", {"just a string"}}}}, "messages[0].content"},
  };
  for (const auto& [messages, param] : cases) {
    std::vector<uint32_t> ids;
    ApiError e;
    EXPECT_FALSE(ChatPromptIds(messages, *tokenizer_, 512, &ids, &e)) << messages.dump();
    EXPECT_EQ(e.param, param) << messages.dump();
  }
}

// The fixture's tokenizer, counting the bytes it is asked to encode.
class CountingTokenizer final : public Tokenizer {
 public:
  explicit CountingTokenizer(const Tokenizer& inner) : inner_(inner) {}
  int vocab_size() const override { return inner_.vocab_size(); }
  int bos_id() const override { return inner_.bos_id(); }
  int eos_id() const override { return inner_.eos_id(); }
  const char* kind() const override { return inner_.kind(); }
  absl::StatusOr<std::vector<int>> Encode(const std::string& text, bool add_bos) const override {
    encoded_bytes += text.size();
    return inner_.Encode(text, add_bos);
  }
  std::string DecodePiece(int previous, int token) const override { return inner_.DecodePiece(previous, token); }
  mutable size_t encoded_bytes = 0;

 private:
  const Tokenizer& inner_;
};

// `n` messages of `content`, user and assistant in turn.
json Alternating(int n, const std::string& content) {
  json messages = json::array();
  for (int i = 0; i < n; ++i) messages.push_back({{"role", i % 2 ? "assistant" : "user"}, {"content", content}});
  return messages;
}

// A conversation that cannot fit the context is refused before it costs more than its bytes (a 4 MiB
// chat body was tokenized whole, ~200 MB of worker memory, before the worker refused its tokens).
TEST_F(ChatTemplateTest, AConversationLongerThanTheContextIsRefusedBeforeItIsTokenized) {
  const int context = 512;
  const std::string word_run(MaxPromptTextBytes(context) / 4, 'w');  // a quarter of the bytes allowed
  const json one_big = {{{"role", "user"}, {"content", std::string(MaxPromptTextBytes(context) + 1, 'w')}}};
  const json many = Alternating(5, word_run);  // a quarter of the bytes each: over them only together
  for (const json& messages : {one_big, many}) {
    CountingTokenizer counting(*tokenizer_);
    std::vector<uint32_t> ids;
    ApiError e;
    EXPECT_FALSE(ChatPromptIds(messages, counting, context, &ids, &e));
    EXPECT_EQ(e.param, "messages");
    EXPECT_NE(e.message.find("context of 512"), std::string::npos) << e.message;
    EXPECT_EQ(counting.encoded_bytes, 0u) << "tokenized before the refusal";
  }
  // Short turns, many of them: within the bytes, past the context in tokens. Refused once the tokens
  // pass it, not after tokenizing every turn.
  const json turns = Alternating(401, "Once upon a time");
  CountingTokenizer counting(*tokenizer_);
  std::vector<uint32_t> ids;
  ApiError e;
  EXPECT_FALSE(ChatPromptIds(turns, counting, context, &ids, &e));
  EXPECT_EQ(e.param, "messages");
  EXPECT_NE(e.message.find("more than the model's context of 512 tokens"), std::string::npos) << e.message;
  EXPECT_LT(counting.encoded_bytes, 401u * 16 / 4) << "tokenized on past the context";
  // The same turns fit a context large enough for them.
  ids.clear();
  EXPECT_TRUE(ChatPromptIds(turns, *tokenizer_, 100000, &ids, &e)) << e.message;
  EXPECT_GT(ids.size(), 512u);
}

TEST_F(ChatTemplateTest, ChatRequestDefaultsMaxTokensToTheRestOfTheContext) {
  MappedRequest m;
  const json body = {{"model", "stories260K"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}};
  ASSERT_EQ(MapError(Endpoint::kChatCompletions, body, &m, tokenizer_.get()).http_status, 0);
  EXPECT_EQ(m.generate.max_tokens(), 0u);  // the worker's "until a stop or the context is full"
  json with_max = body;
  with_max["max_completion_tokens"] = 9;
  ASSERT_EQ(MapError(Endpoint::kChatCompletions, with_max, &m, tokenizer_.get()).http_status, 0);
  EXPECT_EQ(m.generate.max_tokens(), 9u);
  EXPECT_EQ(MapError(Endpoint::kChatCompletions, body).param, "messages");  // no tokenizer
}

TEST_F(ChatTemplateTest, ChatTakesPromptLogprobs) {
  MappedRequest m;
  const json body = {{"model", "stories260K"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"prompt_logprobs", 0}};
  ASSERT_EQ(MapError(Endpoint::kChatCompletions, body, &m, tokenizer_.get()).http_status, 0);
  EXPECT_TRUE(m.generate.logprobs().has_prompt());
  EXPECT_EQ(m.generate.logprobs().prompt(), 0u);
}

}  // namespace
}  // namespace a2sf::worker::http

namespace a2sf::worker::http {
namespace {

// A prompt token's logprobs as the worker reports them: `id` (rank `rank`) and alternatives (id, logprob).
v1::TokenLogprobs Position(uint32_t id, float logprob, uint32_t rank, std::vector<std::pair<uint32_t, float>> top) {
  v1::TokenLogprobs t;
  t.mutable_token()->set_id(id);
  t.mutable_token()->set_logprob(logprob);
  t.mutable_token()->set_piece("p" + std::to_string(id));
  t.set_rank(rank);
  for (const auto& [alt, lp] : top) {
    v1::TokenLogprob* a = t.add_top();
    a->set_id(alt);
    a->set_logprob(lp);
    a->set_piece("p" + std::to_string(alt));
  }
  return t;
}

TEST(OpenAiApiTest, PromptLogprobsMapToTheWorkerAndBackToVllmsShape) {
  MappedRequest m;
  ASSERT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}, {"prompt", "x"}, {"prompt_logprobs", 2}}, &m)
                .http_status,
            0);
  ASSERT_TRUE(m.prompt_logprobs.has_value());
  EXPECT_EQ(*m.prompt_logprobs, 2u);
  EXPECT_EQ(m.generate.logprobs().prompt(), 2u);
  EXPECT_FALSE(m.generate.logprobs().has_generated());

  v1::PromptLogprobs prompt;
  *prompt.add_tokens() = Position(7, -0.5f, 1, {{7, -0.5f}, {9, -1.5f}, {3, -2.f}});  // among the top
  *prompt.add_tokens() = Position(5, -4.f, 9, {{1, -0.25f}, {2, -1.f}, {4, -3.f}});   // not among them
  const json out = PromptLogprobs(prompt, 2);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_TRUE(out[0].is_null());  // the first token has nothing before it
  EXPECT_EQ(out[1], json::parse(R"({"7": {"logprob": -0.5, "rank": 1, "decoded_token": "p7"},
                                   "9": {"logprob": -1.5, "rank": 2, "decoded_token": "p9"}})"));
  EXPECT_EQ(out[2], json::parse(R"({"1": {"logprob": -0.25, "rank": 1, "decoded_token": "p1"},
                                   "2": {"logprob": -1.0, "rank": 2, "decoded_token": "p2"},
                                   "5": {"logprob": -4.0, "rank": 9, "decoded_token": "p5"}})"));
  const ResponseHeader completions{Endpoint::kCompletions, "cmpl-1", 0, "m"};
  const std::vector<ChoiceResult> with_prompt = {{"t", "stop", nullptr, out}};
  EXPECT_EQ(CompleteResponse(completions, with_prompt, Usage(3, 1))["choices"][0]["prompt_logprobs"], out);
  const ResponseHeader chat_header{Endpoint::kChatCompletions, "chatcmpl-1", 0, "m"};
  EXPECT_EQ(CompleteResponse(chat_header, with_prompt, Usage(3, 1))["prompt_logprobs"], out);
  EXPECT_FALSE(CompleteResponse(completions, {{"t", "stop"}}, Usage(3, 1))["choices"][0].contains("prompt_logprobs"));
}

TEST(OpenAiApiTest, EchoPutsThePromptAndItsLogprobsFirst) {
  MappedRequest m;
  ASSERT_EQ(MapError(Endpoint::kCompletions,
                     {{"model", "stories260K"}, {"prompt", {1, 7, 5}}, {"echo", true}, {"logprobs", 1}}, &m)
                .http_status,
            0);
  EXPECT_TRUE(m.echo);
  EXPECT_EQ(m.generate.logprobs().prompt(), 1u);  // echo with logprobs asks for the prompt's
  EXPECT_FALSE(m.prompt_logprobs.has_value());
  v1::PromptLogprobs prompt;
  *prompt.add_tokens() = Position(7, -0.5f, 1, {{7, -0.5f}});
  *prompt.add_tokens() = Position(5, -4.f, 9, {{1, -0.25f}});
  json logprobs = nullptr;
  EXPECT_EQ(EchoPrompt(m, m.prompts[0], prompt, "B", &logprobs), "Bp7p5");  // token ids: the prompt's pieces
  EXPECT_EQ(logprobs, json::parse(R"({"tokens": ["B", "p7", "p5"], "token_logprobs": [null, -0.5, -4.0],
      "top_logprobs": [null, {"p7": -0.5}, {"p1": -0.25}], "text_offset": [0, 1, 3]})"));
  // A text prompt is echoed as sent; without logprobs none are reported.
  MappedRequest text;
  ASSERT_EQ(MapError(Endpoint::kCompletions, {{"model", "stories260K"}, {"prompt", "Once"}, {"echo", true}}, &text)
                .http_status,
            0);
  json none = nullptr;
  EXPECT_EQ(EchoPrompt(text, text.prompts[0], prompt, "", &none), "Once");
  EXPECT_TRUE(none.is_null());
  // Chat has no echo.
  EXPECT_EQ(MapError(Endpoint::kChatCompletions,
                     {{"model", "stories260K"}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"echo", true}},
                     nullptr)
                .param,
            "echo");
}

}  // namespace
}  // namespace a2sf::worker::http
