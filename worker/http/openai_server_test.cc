// The HTTP server against hostile and careless peers, over raw sockets (nothing here parses HTTP
// for the server): oversized bodies declared or chunked, garbage, deep JSON, invalid UTF-8, wrong
// methods and paths; the worker keeps serving. And TLS as the gRPC port has it, checked with curl.
#include "worker/http/openai_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <set>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cachemgr/store/testing/gated_score_store.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/model/model.h"
#include "worker/service/generation_service.h"
#include "worker/testing/fixtures.h"
#include "worker/testing/local_stack.h"

namespace a2sf::worker::http {
namespace {

// A TCP connection to 127.0.0.1:`port`; -1 if it cannot be made.
int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(uint16_t(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sends `request` as is and returns all the server answers until it closes (or 10 s pass; requests
// say Connection: close).
std::string Exchange(int port, const std::string& request) {
  const int fd = Connect(port);
  if (fd < 0) return "";
  timeval timeout = {10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may answer (413) and close before reading everything
    sent += size_t(n);
  }
  // No half-close: httplib (rightly) takes a peer that shut its side down for gone.
  std::string response;
  char buffer[4096];
  for (ssize_t n; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) response.append(buffer, size_t(n));
  close(fd);
  return response;
}

std::string Post(const std::string& path, const std::string& body) {
  return absl::StrCat("POST ", path, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n",
                      "Content-Length: ", body.size(), "\r\n\r\n", body);
}

int Status(const std::string& response) {
  return response.size() > 12 ? std::atoi(response.substr(9, 3).c_str()) : 0;
}

// The JSON body of a (non-chunked) response.
nlohmann::json Body(const std::string& response) {
  const size_t start = response.find("\r\n\r\n");
  return nlohmann::json::parse(start == std::string::npos ? "" : response.substr(start + 4), nullptr, false);
}

class OpenAiServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    A2SF_REQUIRE_FIXTURES();
    weights_ = std::move(*LoadModel(testing::FixturesDir() + "/stories260K-dq.bin"));
    tokenizer_ = std::move(*LoadTokenizer(testing::FixturesDir() + "/tok512.bin"));
    WorkerOptions options;
    options.weights = weights_.get();
    options.tokenizer = tokenizer_.get();
    options.default_policy.set_name("a2sf");
    service_ = std::make_unique<GenerationService>(options);
    ServerOptions server;
    server.listen_addresses = {"127.0.0.1:0"};
    server.plaintext = true;
    grpc_ = std::move(*RunningServer::Start(server, {service_.get()}));
  }

  std::unique_ptr<OpenAiServer> StartHttp(OpenAiServerOptions options) {
    auto http = OpenAiServer::Start(options, {"m", tokenizer_.get(), 512},
                                    grpc_->server()->InProcessChannel(grpc::ChannelArguments()));
    EXPECT_TRUE(http.ok()) << http.status();
    return http.ok() ? std::move(*http) : nullptr;
  }

  std::unique_ptr<OpenAiServer> StartPlain() {
    OpenAiServerOptions options;
    options.listen = "127.0.0.1:0";
    options.plaintext = true;
    options.max_body_bytes = 64 << 10;
    return StartHttp(options);
  }

  // The server still answers a real request after whatever a test did.
  void ExpectServing(int port) {
    const std::string r = Exchange(port, Post("/v1/completions", R"({"model":"m","prompt":"Once","max_tokens":3})"));
    EXPECT_EQ(Status(r), 200) << r;
    EXPECT_NE(r.find("\"completion_tokens\":3"), std::string::npos) << r;
  }

  std::unique_ptr<ModelWeights> weights_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<RunningServer> grpc_;
};

TEST_F(OpenAiServerTest, OversizedBodiesAre413WhetherDeclaredOrChunked) {
  auto http = StartPlain();
  const std::string declared = absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n",
                                            "Content-Length: 100000000000\r\n\r\n{");
  EXPECT_EQ(Status(Exchange(http->port(), declared)), 413);
  std::string chunked = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 20; ++i) chunked += absl::StrCat("1000\r\n", std::string(0x1000, ' '), "\r\n");
  chunked += "0\r\n\r\n";
  const std::string chunked_response = Exchange(http->port(), chunked);
  EXPECT_EQ(Status(chunked_response), 413) << chunked_response;
  EXPECT_NE(chunked_response.find(R"("type":"invalid_request_error")"), std::string::npos) << chunked_response;
  EXPECT_NE(chunked_response.find(R"("message":"the request body is larger than 65536 bytes")"), std::string::npos);
  // One chunk declared huge: refused as it arrives, not after.
  const std::string one_chunk = absl::StrCat("POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                                             "fffffffff\r\n", std::string(100000, ' '));
  EXPECT_EQ(Status(Exchange(http->port(), one_chunk)), 413);
  // Under the limit, chunked bodies are served; a malformed chunked body is a 400.
  const std::string small = R"({"model":"m","prompt":"Once","max_tokens":2})";
  const std::string small_chunked = absl::StrCat(
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
      absl::Hex(small.size()), "\r\n", small, "\r\n0\r\n\r\n");
  EXPECT_EQ(Status(Exchange(http->port(), small_chunked)), 200);
  const std::string bad_chunked =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n";
  EXPECT_EQ(Status(Exchange(http->port(), bad_chunked)), 400);
  const std::string declared_body = Exchange(http->port(), Post("/v1/completions", std::string(70000, ' ')));
  EXPECT_EQ(Status(declared_body), 413);
  EXPECT_NE(declared_body.find(R"("message":"the request body is larger than 65536 bytes")"), std::string::npos);
  ExpectServing(http->port());
}

// A slowloris: 40 clients (more than the 32 warm threads) each dribble a header byte every 500 ms,
// inside httplib's per-read timeout, for 6 s. Meanwhile a real client is served at once (each
// connection gets a thread of its own: ConnectionPool); with a fixed pool of 32 it waited for them.
TEST_F(OpenAiServerTest, ClientsDribblingTheirHeadersDoNotStarveOthers) {
  auto http = StartPlain();
  const int port = http->port();
  std::vector<int> fds;
  for (int i = 0; i < 40; ++i) {
    const int fd = Connect(port);
    ASSERT_GE(fd, 0);
    const std::string start = "GET /health HTTP/1.1\r\nX-Slow: ";
    ASSERT_EQ(send(fd, start.data(), start.size(), MSG_NOSIGNAL), ssize_t(start.size()));
    fds.push_back(fd);
  }
  std::atomic<bool> stop{false};
  std::thread dribble([&] {
    for (int round = 0; round < 12 && !stop; ++round) {
      absl::SleepFor(absl::Milliseconds(500));
      for (int fd : fds) send(fd, "a", 1, MSG_NOSIGNAL);
    }
  });
  absl::SleepFor(absl::Milliseconds(200));  // every slow connection has reached the server
  const absl::Time start = absl::Now();
  const std::string health = Exchange(port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(Status(health), 200) << health;
  EXPECT_LT(absl::Now() - start, absl::Seconds(2)) << "a real client waited for the slow ones";
  ExpectServing(port);
  stop = true;
  dribble.join();
  for (int fd : fds) close(fd);
}

// Request bodies being read are bounded in all (max_body_bytes_in_flight), not only one by one: with
// one client holding 50 KB of an unfinished body, another's 20 KB is refused 503 with Retry-After
// (past a 64 KB bound); once the first is gone, bodies are read again.
TEST_F(OpenAiServerTest, BodiesInFlightAreBoundedTogether) {
  OpenAiServerOptions options;
  options.listen = "127.0.0.1:0";
  options.plaintext = true;
  options.max_body_bytes = 64 << 10;
  options.max_body_bytes_in_flight = 64 << 10;
  auto http = StartHttp(options);
  const int port = http->port();
  const int slow = Connect(port);
  ASSERT_GE(slow, 0);
  const std::string head =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n";
  const std::string part = head + std::string(50000, ' ');
  ASSERT_EQ(send(slow, part.data(), part.size(), MSG_NOSIGNAL), ssize_t(part.size()));
  absl::SleepFor(absl::Milliseconds(300));  // the server has read what was sent
  const std::string body = R"({"model":"m","prompt":"Once","max_tokens":3})" + std::string(20000, ' ');
  const std::string busy = Exchange(port, Post("/v1/completions", body));
  EXPECT_EQ(Status(busy), 503) << busy.substr(0, 300);
  EXPECT_NE(busy.find("Retry-After: 1"), std::string::npos) << busy.substr(0, 300);
  EXPECT_EQ(Body(busy)["error"]["type"], "server_error") << busy.substr(0, 300);
  close(slow);
  absl::SleepFor(absl::Milliseconds(300));  // its reservation is released
  const std::string served = Exchange(port, Post("/v1/completions", body));
  EXPECT_EQ(Status(served), 200) << served.substr(0, 300);
  // Every way a request fails gives its bytes back: ten failures of 40 KB each, then 40 KB is served.
  const std::string pad(40000, ' ');
  for (int i = 0; i < 2; ++i) {
    for (const std::string& bad :
         {"{not json" + pad, R"({"model":"m","prompt":"x","max_tokens":0})" + pad,
          R"({"model":"m","messages":[{"role":"user","content":[{"type":1,"text":"x"}]}]})" + pad,
          R"({"model":"nope","prompt":"x"})" + pad, std::string(70 << 10, 'x')}) {
      const std::string path = bad.find("messages") != std::string::npos ? "/v1/chat/completions" : "/v1/completions";
      const int status = Status(Exchange(port, Post(path, bad)));
      EXPECT_TRUE(status == 400 || status == 404 || status == 413) << status;
    }
  }
  const std::string after = Exchange(port, Post("/v1/completions", body + pad));
  EXPECT_EQ(Status(after), 200) << after.substr(0, 300);
}

// A client that dribbles its body (a byte every 300 ms, each read inside httplib's timeout) is
// answered 408 once body_deadline (here 1 s) has passed, and the server serves on.
TEST_F(OpenAiServerTest, ABodyThatDoesNotArriveInTimeIs408) {
  OpenAiServerOptions options;
  options.listen = "127.0.0.1:0";
  options.plaintext = true;
  options.body_deadline = absl::Seconds(1);
  auto http = StartHttp(options);
  const int port = http->port();
  const int fd = Connect(port);
  ASSERT_GE(fd, 0);
  const std::string head =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
  ASSERT_EQ(send(fd, head.data(), head.size(), MSG_NOSIGNAL), ssize_t(head.size()));
  timeval timeout = {0, 100000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  std::string answer;
  const absl::Time start = absl::Now();
  char buffer[4096];
  for (int i = 0; i < 30 && answer.empty(); ++i) {  // at most 30 bytes: 9 s
    send(fd, " ", 1, MSG_NOSIGNAL);
    absl::SleepFor(absl::Milliseconds(200));
    for (ssize_t n; (n = recv(fd, buffer, sizeof(buffer), 0)) > 0;) answer.append(buffer, size_t(n));
  }
  close(fd);
  EXPECT_EQ(Status(answer), 408) << answer;
  EXPECT_LT(absl::Now() - start, absl::Seconds(4)) << "answered at the deadline, not at the body's end";
  ExpectServing(port);
}

TEST_F(OpenAiServerTest, MalformedRequestsAre4xxAndTheServerKeepsServing) {
  auto http = StartPlain();
  const int port = http->port();
  EXPECT_EQ(Status(Exchange(port, Post("/v1/completions", "{not json"))), 400);
  EXPECT_EQ(Status(Exchange(port, Post("/v1/completions", std::string(30000, '[') + std::string(30000, ']')))), 400);
  EXPECT_EQ(Status(Exchange(port, Post("/v1/completions", "{\"model\":\"m\",\"prompt\":\"\xff\xfe\"}"))), 400);
  EXPECT_EQ(Status(Exchange(port, Post("/v1/completions", "null"))), 400);
  EXPECT_EQ(Status(Exchange(port, Post("/v1/completions", ""))), 400);
  const std::string wrong_model = Exchange(port, Post("/v1/chat/completions", R"({"model":"x","messages":[]})"));
  EXPECT_EQ(Status(wrong_model), 404);
  EXPECT_NE(wrong_model.find("model_not_found"), std::string::npos);
  const std::string get = Exchange(port, "GET /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(Status(get), 405);
  EXPECT_NE(get.find("Allow: POST"), std::string::npos) << get;
  EXPECT_EQ(Status(Exchange(port, "GET /v2/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")), 404);
  Exchange(port, "HELLO THERE\r\n\r\n");        // not HTTP at all
  Exchange(port, "POST /v1/completions HTTP/1.1\r\nContent-Length: 50\r\n\r\n{\"mod");  // body cut short
  const std::string worker_error = Exchange(port, Post("/v1/completions", R"({"model":"m","prompt":"x","max_tokens":100000})"));
  EXPECT_EQ(Status(worker_error), 400);  // the worker's own check, mapped
  EXPECT_NE(worker_error.find("context"), std::string::npos);
  ExpectServing(port);
  const std::string health = Exchange(port, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(Status(health), 200);
}

TEST_F(OpenAiServerTest, AStreamEndsWithDoneAndUsage) {
  auto http = StartPlain();
  const std::string r = Exchange(http->port(), Post("/v1/completions", R"({"model":"m","prompt":"Once","max_tokens":5,
      "stream":true,"stream_options":{"include_usage":true}})"));
  EXPECT_EQ(Status(r), 200);
  EXPECT_NE(r.find("text/event-stream"), std::string::npos);
  EXPECT_NE(r.find("\"finish_reason\":\"length\""), std::string::npos) << r;
  EXPECT_NE(r.find("\"completion_tokens\":5"), std::string::npos) << r;
  EXPECT_NE(r.find("data: [DONE]"), std::string::npos) << r;
  // With echo the first chunk is the prompt.
  const std::string echoed = Exchange(http->port(), Post("/v1/completions", R"({"model":"m","prompt":"Once upon",
      "max_tokens":2,"stream":true,"echo":true})"));
  const size_t first = echoed.find("data: ");
  ASSERT_NE(first, std::string::npos) << echoed;
  const nlohmann::json chunk = nlohmann::json::parse(echoed.substr(first + 6, echoed.find('\n', first) - first - 6));
  EXPECT_EQ(chunk["choices"][0]["text"], "Once upon") << echoed;
}

// vLLM's prompt_logprobs from the prefill agree with the logprobs the decoder reports for the same
// position; echo puts the prompt and its logprobs first.
TEST_F(OpenAiServerTest, PromptLogprobsAgreeWithDecodeLogprobsAndEchoLeadsWithThePrompt) {
  auto http = StartPlain();
  const std::string prompt = "Once upon a time";
  std::vector<int> ids = *tokenizer_->Encode(prompt, true);
  ASSERT_GE(ids.size(), 3u);
  const nlohmann::json all(ids), head(std::vector<int>(ids.begin(), ids.end() - 1));
  // The decoder's distribution after all but the last prompt token...
  const nlohmann::json decoded = Body(Exchange(http->port(), Post("/v1/completions", nlohmann::json{
      {"model", "m"}, {"prompt", head}, {"max_tokens", 1}, {"temperature", 0}, {"logprobs", 5}}.dump())));
  ASSERT_TRUE(decoded.contains("choices")) << decoded;
  const nlohmann::json decode_top = decoded["choices"][0]["logprobs"]["top_logprobs"][0];
  ASSERT_EQ(decode_top.size(), 5u) << decoded;
  // ... is the prefill's at the last prompt position.
  const nlohmann::json scored = Body(Exchange(http->port(), Post("/v1/completions", nlohmann::json{
      {"model", "m"}, {"prompt", all}, {"max_tokens", 1}, {"prompt_logprobs", 5}}.dump())));
  const nlohmann::json prompt_logprobs = scored["choices"][0]["prompt_logprobs"];
  ASSERT_EQ(prompt_logprobs.size(), ids.size()) << scored;
  EXPECT_TRUE(prompt_logprobs[0].is_null());
  for (size_t i = 1; i < ids.size(); ++i) {
    const nlohmann::json& position = prompt_logprobs[i];
    ASSERT_TRUE(position.contains(std::to_string(ids[i]))) << i << ": " << position;  // the prompt's own token
    EXPECT_GE(position[std::to_string(ids[i])]["rank"].get<int>(), 1);
    EXPECT_GE(position.size(), 5u);
    EXPECT_LE(position.size(), 6u);
  }
  int top_ranks = 0;
  for (const auto& [id, entry] : prompt_logprobs.back().items()) {
    if (entry["rank"].get<int>() > 5) continue;
    ++top_ranks;
    const std::string piece = entry["decoded_token"];
    ASSERT_TRUE(decode_top.contains(piece)) << piece << " not in " << decode_top;
    EXPECT_NEAR(entry["logprob"].get<double>(), decode_top[piece].get<double>(), 1e-4) << piece;
  }
  EXPECT_EQ(top_ranks, 5);
  // Echo: the text starts with the prompt, the logprobs with its tokens (the first without a logprob).
  const nlohmann::json echoed = Body(Exchange(http->port(), Post("/v1/completions", nlohmann::json{
      {"model", "m"}, {"prompt", prompt}, {"max_tokens", 2}, {"echo", true}, {"logprobs", 1}}.dump())));
  const std::string text = echoed["choices"][0]["text"];
  EXPECT_EQ(text.substr(0, prompt.size()), prompt) << echoed;
  const nlohmann::json& lp = echoed["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), ids.size() + 2) << echoed;
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  EXPECT_TRUE(lp["top_logprobs"][0].is_null());
  for (size_t i = 0; i < lp["tokens"].size(); ++i) {
    const size_t offset = lp["text_offset"][i];
    const std::string token = lp["tokens"][i];
    EXPECT_EQ(text.substr(offset, token.size()), token) << i;
    if (i >= 1 && i < ids.size()) {  // the prompt's tokens: the same logprobs as prompt_logprobs reported
      EXPECT_NEAR(lp["token_logprobs"][i].get<double>(),
                  prompt_logprobs[i][std::to_string(ids[i])]["logprob"].get<double>(), 1e-4) << i;
    }
  }
  EXPECT_EQ(lp["text_offset"][ids.size()].get<size_t>(), prompt.size());
  EXPECT_EQ(echoed["usage"]["completion_tokens"], 2);
  // Chat reports them beside the choices, as vLLM does.
  const nlohmann::json chat = Body(Exchange(http->port(), Post("/v1/chat/completions", nlohmann::json{
      {"model", "m"}, {"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 1}, {"prompt_logprobs", 0}}
      .dump())));
  ASSERT_TRUE(chat.contains("prompt_logprobs")) << chat;
  EXPECT_EQ(chat["prompt_logprobs"].size(), chat["usage"]["prompt_tokens"].get<size_t>());
}

// OpenAI's legacy scoring call, as lm-evaluation-harness sends it: echo with max_tokens 0 returns the
// prompt and its tokens' logprobs, generates nothing, and agrees with the logprobs a generating echo
// reports for the same prompt. max_tokens 0 without echo stays a 400.
TEST_F(OpenAiServerTest, EchoWithNoTokensScoresThePrompt) {
  auto http = StartPlain();
  const std::string prompt = "Once upon a time there was";
  const std::vector<int> ids = *tokenizer_->Encode(prompt, true);
  const auto complete = [&](int max_tokens) {
    return Body(Exchange(http->port(), Post("/v1/completions", nlohmann::json{
        {"model", "m"}, {"prompt", prompt}, {"max_tokens", max_tokens}, {"echo", true}, {"logprobs", 1},
        {"temperature", 0}}.dump())));
  };
  const nlohmann::json scored = complete(0), generating = complete(3);
  ASSERT_TRUE(scored.contains("choices")) << scored;
  const nlohmann::json& choice = scored["choices"][0];
  EXPECT_EQ(choice["text"], prompt) << scored;
  EXPECT_EQ(choice["finish_reason"], "length") << scored;
  EXPECT_EQ(scored["usage"]["completion_tokens"], 0) << scored;
  EXPECT_EQ(scored["usage"]["prompt_tokens"].get<size_t>(), ids.size()) << scored;
  const nlohmann::json& lp = choice["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), ids.size()) << scored;
  EXPECT_TRUE(lp["token_logprobs"][0].is_null());
  const nlohmann::json& with_tokens = generating["choices"][0]["logprobs"];
  ASSERT_EQ(with_tokens["tokens"].size(), ids.size() + 3) << generating;
  for (size_t i = 1; i < ids.size(); ++i) {
    EXPECT_EQ(lp["tokens"][i], with_tokens["tokens"][i]) << i;
    EXPECT_LT(lp["token_logprobs"][i].get<double>(), 0.0) << i;
    EXPECT_NEAR(lp["token_logprobs"][i].get<double>(), with_tokens["token_logprobs"][i].get<double>(), 1e-5) << i;
  }
  // Streamed: the prompt in the first chunk, then the end, usage with no completion tokens.
  const std::string streamed = Exchange(http->port(), Post("/v1/completions", nlohmann::json{
      {"model", "m"}, {"prompt", prompt}, {"max_tokens", 0}, {"echo", true}, {"stream", true},
      {"stream_options", {{"include_usage", true}}}}.dump()));
  const size_t first = streamed.find("data: ");
  ASSERT_NE(first, std::string::npos) << streamed;
  const nlohmann::json chunk = nlohmann::json::parse(streamed.substr(first + 6, streamed.find('\n', first) - first - 6));
  EXPECT_EQ(chunk["choices"][0]["text"], prompt) << streamed;
  EXPECT_NE(streamed.find("\"finish_reason\":\"length\""), std::string::npos) << streamed;
  EXPECT_NE(streamed.find("\"completion_tokens\":0"), std::string::npos) << streamed;
  EXPECT_NE(streamed.find("data: [DONE]"), std::string::npos) << streamed;
  // max_tokens 0 without echo, and min_tokens on a scoring call, are 400s naming the field.
  for (const auto& [body, param] : {std::pair<std::string, std::string>{R"({"model":"m","prompt":"Once","max_tokens":0})", "max_tokens"},
                                    {R"({"model":"m","prompt":"Once","max_tokens":0,"echo":true,"min_tokens":1})", "min_tokens"}}) {
    const std::string refused = Exchange(http->port(), Post("/v1/completions", body));
    EXPECT_EQ(Status(refused), 400) << refused;
    EXPECT_NE(refused.find("\"param\":\"" + param + "\""), std::string::npos) << refused;
  }
}

// The JSON of every server-sent event of a stream but [DONE] (each event is one write, so one chunk).
std::vector<nlohmann::json> Events(const std::string& response) {
  std::vector<nlohmann::json> events;
  for (size_t at = response.find("data: "); at != std::string::npos; at = response.find("data: ", at + 1)) {
    const std::string data = response.substr(at + 6, response.find('\n', at) - at - 6);
    if (data != "[DONE]") events.push_back(nlohmann::json::parse(data, nullptr, false));
  }
  return events;
}

// The jobs `service` lists once none of them runs or waits any more (or after 30 s).
v1::ListJobsResponse EndedJobs(GenerationService* service) {
  const auto list = [&] {
    grpc::ServerContext context;
    v1::ListJobsRequest request;
    v1::ListJobsResponse response;
    EXPECT_TRUE(service->ListJobs(&context, &request, &response).ok());
    return response;
  };
  const auto live = [](const v1::JobStatus& job) {
    return job.state() == v1::JOB_STATE_RUNNING || job.state() == v1::JOB_STATE_QUEUED;
  };
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  v1::ListJobsResponse jobs = list();
  while (std::any_of(jobs.jobs().begin(), jobs.jobs().end(), live) && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(5));
    jobs = list();
  }
  return jobs;
}

// `body` with `fields` set.
nlohmann::json With(nlohmann::json body, const nlohmann::json& fields) {
  for (const auto& [key, value] : fields.items()) body[key] = value;
  return body;
}

// A batch of prompts with n choices each answers as the same requests sent one by one would: choice
// p*n+j is prompt p's greedy text, or with a seed the text of seed + j; the usage counts each prompt
// once and every choice's tokens. Streamed, each choice's chunks add up to its text and end once.
TEST_F(OpenAiServerTest, ABatchOfPromptsTimesNAnswersAsOneRequestPerChoice) {
  auto http = StartPlain();
  const auto complete = [&](const nlohmann::json& body) {
    return Body(Exchange(http->port(), Post("/v1/completions", body.dump())));
  };
  const nlohmann::json greedy = {{"model", "m"}, {"max_tokens", 6}, {"temperature", 0}};
  const nlohmann::json prompts = nlohmann::json::array({"Once", "The dog ran"});
  std::vector<std::string> texts;
  uint32_t prompt_tokens = 0;
  for (const auto& prompt : prompts) {
    const nlohmann::json one = complete(With(greedy, {{"prompt", prompt}}));
    ASSERT_TRUE(one.contains("choices")) << one;
    texts.push_back(one["choices"][0]["text"]);
    prompt_tokens += one["usage"]["prompt_tokens"].get<uint32_t>();
  }
  const nlohmann::json batch = complete(With(greedy, {{"prompt", prompts}, {"n", 2}}));
  ASSERT_EQ(batch["choices"].size(), 4u) << batch;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(batch["choices"][i]["index"], i);
    EXPECT_EQ(batch["choices"][i]["text"], texts[i / 2]) << i;
    EXPECT_EQ(batch["choices"][i]["finish_reason"], "length") << i;
  }
  EXPECT_EQ(batch["usage"]["prompt_tokens"], prompt_tokens);
  EXPECT_EQ(batch["usage"]["completion_tokens"], 4 * 6);

  // Echo puts each choice's own prompt first.
  const nlohmann::json echoed = complete(With(greedy, {{"prompt", prompts}, {"n", 2}, {"echo", true}}));
  ASSERT_EQ(echoed["choices"].size(), 4u) << echoed;
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(echoed["choices"][i]["text"], prompts[i / 2].get<std::string>() + texts[i / 2]) << i;
  }

  const nlohmann::json sampled = {{"model", "m"}, {"prompt", "Once"}, {"max_tokens", 12}, {"temperature", 1}};
  const nlohmann::json three = complete(With(sampled, {{"n", 3}, {"seed", 5}}));
  ASSERT_EQ(three["choices"].size(), 3u) << three;
  std::set<std::string> distinct;
  for (int j = 0; j < 3; ++j) {
    const nlohmann::json alone = complete(With(sampled, {{"seed", 5 + j}}));
    EXPECT_EQ(three["choices"][j]["text"], alone["choices"][0]["text"]) << j;
    distinct.insert(three["choices"][j]["text"].get<std::string>());
  }
  EXPECT_GT(distinct.size(), 1u) << three;  // the choices are not one text thrice

  const std::string streamed = Exchange(http->port(), Post("/v1/completions", With(greedy, {
      {"prompt", prompts}, {"n", 2}, {"stream", true}, {"stream_options", {{"include_usage", true}}}}).dump()));
  std::vector<std::string> pieces(4);
  std::vector<int> finishes(4, 0);
  nlohmann::json usage;
  for (const nlohmann::json& event : Events(streamed)) {
    if (event.contains("usage")) usage = event["usage"];
    for (const nlohmann::json& choice : event["choices"]) {
      const size_t i = choice["index"];
      ASSERT_LT(i, 4u) << event;
      EXPECT_EQ(finishes[i], 0) << "a chunk after choice " << i << "'s end: " << event;
      pieces[i] += choice["text"].get<std::string>();
      finishes[i] += choice["finish_reason"].is_null() ? 0 : 1;
    }
  }
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(pieces[i], texts[i / 2]) << i;
    EXPECT_EQ(finishes[i], 1) << i;
  }
  EXPECT_EQ(usage, batch["usage"]) << streamed;
  EXPECT_NE(streamed.find("data: [DONE]"), std::string::npos);
}

// Chat's n: every choice opens with the assistant's role and answers the conversation.
TEST_F(OpenAiServerTest, ChatChoicesEachOpenWithTheRole) {
  auto http = StartPlain();
  const nlohmann::json chat = {{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "A cat"}}}},
                               {"max_tokens", 5}, {"temperature", 0}};
  const nlohmann::json one = Body(Exchange(http->port(), Post("/v1/chat/completions", chat.dump())));
  ASSERT_TRUE(one.contains("choices")) << one;
  const nlohmann::json two = Body(Exchange(http->port(), Post("/v1/chat/completions", With(chat, {{"n", 2}}).dump())));
  ASSERT_EQ(two["choices"].size(), 2u) << two;
  for (int i = 0; i < 2; ++i) EXPECT_EQ(two["choices"][i]["message"], one["choices"][0]["message"]) << i;
  EXPECT_EQ(two["usage"]["prompt_tokens"], one["usage"]["prompt_tokens"]);
  const std::string streamed =
      Exchange(http->port(), Post("/v1/chat/completions", With(chat, {{"n", 2}, {"stream", true}}).dump()));
  std::vector<int> first_roles(2, -1);  // the event number of each choice's first chunk with a role
  std::vector<int> firsts(2, -1);
  const std::vector<nlohmann::json> events = Events(streamed);
  for (size_t e = 0; e < events.size(); ++e) {
    for (const nlohmann::json& choice : events[e]["choices"]) {
      const size_t i = choice["index"];
      ASSERT_LT(i, 2u);
      if (firsts[i] < 0) firsts[i] = int(e);
      if (choice["delta"].contains("role") && first_roles[i] < 0) first_roles[i] = int(e);
    }
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_GE(firsts[i], 0) << streamed;
    EXPECT_EQ(first_roles[i], firsts[i]) << i << ": " << streamed;
  }
}

// A request whose choices do not all fit the worker (here 2 places: one running, one waiting) is a
// 429 that leaves nothing behind: the jobs accepted before the refusal are cancelled at once.
TEST_F(OpenAiServerTest, ChoicesAreAdmittedWholeOrNotAtAll) {
  WorkerOptions options;
  options.weights = weights_.get();
  options.tokenizer = tokenizer_.get();
  options.default_policy.set_name("full");
  options.max_batch = 1;
  options.max_waiting = 1;
  GenerationService small(options);
  ServerOptions server;
  server.listen_addresses = {"127.0.0.1:0"};
  server.plaintext = true;
  auto grpc = RunningServer::Start(server, {&small});
  ASSERT_TRUE(grpc.ok()) << grpc.status();
  OpenAiServerOptions http_options;
  http_options.listen = "127.0.0.1:0";
  http_options.plaintext = true;
  auto http = OpenAiServer::Start(http_options, {"m", tokenizer_.get(), 512},  // max_choices above the worker's
                                  (*grpc)->server()->InProcessChannel(grpc::ChannelArguments()));
  ASSERT_TRUE(http.ok()) << http.status();
  const std::string r = Exchange((*http)->port(), Post("/v1/completions", R"({"model":"m","prompt":[1],"n":3,
      "max_tokens":500,"ignore_eos":true})"));
  EXPECT_EQ(Status(r), 429) << r;
  const v1::ListJobsResponse ended = EndedJobs(&small);
  EXPECT_EQ(ended.jobs_size(), 2) << ended.DebugString();  // the two admitted; the refused one never was
  for (const v1::JobStatus& job : ended.jobs()) {  // cancelled long before their 500 tokens
    EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED) << job.DebugString();
    EXPECT_LT(job.stats().generated_tokens(), 500u) << job.DebugString();
  }
  const std::string fits = Exchange((*http)->port(), Post("/v1/completions", R"({"model":"m","prompt":[1],"n":2,
      "max_tokens":3})"));
  EXPECT_EQ(Status(fits), 200) << fits;
  EXPECT_EQ(Body(fits)["choices"].size(), 2u) << fits;
}

// A choice the worker refuses for its own reason (here a prompt too long for max_tokens in a batch whose
// other prompt is fine) fails the request with that reason, and the other choice's job is cancelled.
TEST_F(OpenAiServerTest, AChoiceRefusedFailsTheRequestAndCancelsTheOthers) {
  auto http = StartPlain();
  const nlohmann::json body = {{"model", "m"}, {"prompt", {std::vector<int>{1, 2}, std::vector<int>(200, 1)}},
                               {"max_tokens", 400}, {"ignore_eos", true}};
  const std::string r = Exchange(http->port(), Post("/v1/completions", body.dump()));
  EXPECT_EQ(Status(r), 400) << r;
  EXPECT_NE(r.find("context"), std::string::npos) << r;  // the worker's reason
  const v1::ListJobsResponse jobs = EndedJobs(service_.get());
  EXPECT_LE(jobs.jobs_size(), 1) << jobs.DebugString();  // the short prompt's, if it was admitted first
  for (const v1::JobStatus& job : jobs.jobs()) {
    EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED) << job.DebugString();
    EXPECT_LT(job.stats().generated_tokens(), 400u) << job.DebugString();
  }
  ExpectServing(http->port());
}

// A worker whose job of seed 1 fails after its first tokens while the others run on until cancelled
// (each counted): a choice that breaks mid-run.
class OneChoiceBreaks final : public v1::Generation::Service {
 public:
  // True once `n` jobs have seen their cancellation (a server handler notices it after the client's
  // call has ended), false after 10 s.
  bool AwaitCancelled(int n) {
    const absl::Time give_up = absl::Now() + absl::Seconds(10);
    while (cancelled.load() < n && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
    return cancelled.load() == n;
  }

  std::atomic<int> cancelled{0};

 private:
  grpc::Status Generate(grpc::ServerContext* context, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override {
    v1::GenerateResponse event;
    event.mutable_accepted()->set_job_id(absl::StrCat("job-", request->sampling().seed()));
    writer->Write(event);
    event.mutable_tokens()->set_text("x");
    writer->Write(event);
    if (request->sampling().seed() == 1) return grpc::Status(grpc::StatusCode::INTERNAL, "choice 1 broke");
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    while (!context->IsCancelled() && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(1));
    if (context->IsCancelled()) ++cancelled;
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
  }
};

// The request reports the broken choice's error (not the cancellations it caused), streamed or not,
// and the choices still running are cancelled, not left to run for nobody.
TEST(OpenAiServerChoices, AChoiceThatBreaksMidRunFailsTheRequestAndCancelsTheOthers) {
  OneChoiceBreaks worker;
  ServerOptions server;
  server.listen_addresses = {"127.0.0.1:0"};
  server.plaintext = true;
  auto grpc = RunningServer::Start(server, {&worker});
  ASSERT_TRUE(grpc.ok()) << grpc.status();
  OpenAiServerOptions options;
  options.listen = "127.0.0.1:0";
  options.plaintext = true;
  auto http = OpenAiServer::Start(options, {"m", nullptr, 512}, (*grpc)->server()->InProcessChannel(grpc::ChannelArguments()));
  ASSERT_TRUE(http.ok()) << http.status();
  const std::string whole = Exchange((*http)->port(), Post("/v1/completions", R"({"model":"m","prompt":[1],"n":3,
      "seed":0,"max_tokens":5})"));
  EXPECT_EQ(Status(whole), 500) << whole;
  EXPECT_NE(whole.find("choice 1 broke"), std::string::npos) << whole;
  EXPECT_TRUE(worker.AwaitCancelled(2)) << worker.cancelled.load();  // seeds 0 and 2
  const std::string streamed = Exchange((*http)->port(), Post("/v1/completions", R"({"model":"m","prompt":[1],"n":3,
      "seed":0,"max_tokens":5,"stream":true})"));
  EXPECT_EQ(Status(streamed), 200) << streamed;
  EXPECT_NE(streamed.find("choice 1 broke"), std::string::npos) << streamed;
  EXPECT_NE(streamed.find("data: [DONE]"), std::string::npos) << streamed;
  EXPECT_TRUE(worker.AwaitCancelled(4)) << worker.cancelled.load();
}

// A worker on a model slow enough that 1000 tokens take seconds (stories110M's shape, one layer,
// random weights), for clients that give up on a non-streaming request: they close the connection
// while the job runs and no byte is due to them yet, and the job must be cancelled at once, not when it
// would have ended. The job's policy runs in a cache manager whose token steps pass a gate: the client
// hangs up while the job waits at it (however fast the machine, the job cannot have ended), and the
// job goes on only then.
class HangUpTest : public ::testing::Test {
 protected:
  static constexpr char kLongRequest[] =
      R"({"model":"m","prompt":[1,2,3],"max_tokens":1000,"ignore_eos":true,"temperature":0})";

  void SetUp() override {
    auto slow = MakeSyntheticModel(*NamedShape("stories110M", 1), 1);
    ASSERT_TRUE(slow.ok()) << slow.status();
    model_ = std::move(*slow);
    testing::LocalCacheManagerOptions cachemgr_options;
    gate_ = testing::InstallGate(&cachemgr_options);
    cachemgr_ = std::make_unique<testing::LocalCacheManager>(std::move(cachemgr_options));
    WorkerOptions options;
    options.weights = model_.get();
    options.default_policy.set_name("a2sf");
    options.cache_manager = testing::PlaintextChannel(cachemgr_->tcp_address());
    options.decision_timeout = absl::InfiniteDuration();
    service_ = std::make_unique<GenerationService>(options);
    ServerOptions server;
    server.listen_addresses = {"127.0.0.1:0"};
    server.plaintext = true;
    grpc_ = std::move(*RunningServer::Start(server, {service_.get()}));
  }

  std::unique_ptr<OpenAiServer> StartHttp(const OpenAiServerOptions& options) {
    auto http = OpenAiServer::Start(options, {"m", nullptr, 512}, grpc_->server()->InProcessChannel(grpc::ChannelArguments()));
    EXPECT_TRUE(http.ok()) << http.status();
    return http.ok() ? std::move(*http) : nullptr;
  }

  v1::JobStatus Job() {
    grpc::ServerContext context;
    v1::ListJobsRequest list;
    v1::ListJobsResponse jobs;
    EXPECT_TRUE(service_->ListJobs(&context, &list, &jobs).ok());
    return jobs.jobs_size() == 1 ? jobs.jobs(0) : v1::JobStatus();
  }

  // Lets the job `send` started decode a few tokens, calls `hang_up` while it waits at the gate, and
  // expects the job cancelled within moments, far short of its 1000 tokens.
  void ExpectCancelledOnHangUp(const std::function<void()>& send, const std::function<void()>& hang_up) {
    gate_->HoldAfter(4);
    send();
    if (!gate_->AwaitHeld(absl::Seconds(30))) {
      hang_up();
      FAIL() << "the job did not reach its fifth token step: " << Job().DebugString();
    }
    ASSERT_EQ(Job().state(), v1::JOB_STATE_RUNNING) << Job().DebugString();
    hang_up();
    gate_->Release();
    const absl::Time give_up = absl::Now() + absl::Seconds(30);
    const absl::Time closed = absl::Now();
    while (Job().state() == v1::JOB_STATE_RUNNING && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(5));
    const double ms = absl::ToDoubleMilliseconds(absl::Now() - closed);
    const v1::JobStatus ended = Job();
    EXPECT_EQ(ended.state(), v1::JOB_STATE_CANCELLED) << ended.DebugString();
    EXPECT_EQ(ended.stats().finish_reason(), v1::FINISH_REASON_CANCELLED);
    EXPECT_LT(ended.stats().generated_tokens(), 1000u);
    EXPECT_GT(ended.stats().generated_tokens(), 0u);
    std::cout << "cancelled " << ms << " ms after the hang-up, after " << ended.stats().generated_tokens()
              << " of 1000 tokens\n";
  }

  std::unique_ptr<ModelWeights> model_;
  cachemgr::testing::GatedScoreStore* gate_ = nullptr;  // owned by cachemgr_'s session manager
  std::unique_ptr<testing::LocalCacheManager> cachemgr_;
  std::unique_ptr<GenerationService> service_;
  std::unique_ptr<RunningServer> grpc_;
};

TEST_F(HangUpTest, APlaintextClientThatHangsUpOnANonStreamingRequestCancelsItsJob) {
  OpenAiServerOptions options;
  options.listen = "127.0.0.1:0";
  options.plaintext = true;
  auto http = StartHttp(options);
  ASSERT_NE(http, nullptr);
  int fd = -1;
  ExpectCancelledOnHangUp(
      [&] {
        fd = Connect(http->port());
        ASSERT_GE(fd, 0);
        const std::string request = Post("/v1/completions", kLongRequest);
        ASSERT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL), ssize_t(request.size()));
      },
      [&] { close(fd); });
}

TEST_F(HangUpTest, ATlsClientThatGivesUpOnANonStreamingRequestCancelsItsJob) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") + "/hanguptls";
  const std::string make = "set -e; mkdir -p " + dir + "; cd " + dir +
                           "; openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
                           " -keyout server.key -out server.pem -subj /CN=localhost 2>/dev/null";
  if (std::system(("bash -c \"" + make + "\"").c_str()) != 0 || std::system("command -v curl >/dev/null") != 0) {
    GTEST_SKIP() << "needs openssl and curl";
  }
  OpenAiServerOptions options;
  options.listen = "127.0.0.1:0";
  options.tls = {dir + "/server.pem", dir + "/server.key", ""};
  auto http = StartHttp(options);
  ASSERT_NE(http, nullptr);
  std::thread curl;  // gives up after 3 s, as a client with a timeout does (the job waits at the gate)
  ExpectCancelledOnHangUp(
      [&] {
        curl = std::thread([&] {
          (void)!std::system(absl::StrCat("curl -sk -o /dev/null --max-time 3 https://127.0.0.1:", http->port(),
                                   "/v1/completions -d '", kLongRequest, "'")
                          .c_str());
        });
      },
      [&] { curl.join(); });
}

// A stream of several choices is one client: its hang-up cancels every choice's job.
TEST_F(HangUpTest, AClientThatHangsUpOnAStreamOfSeveralChoicesCancelsThemAll) {
  OpenAiServerOptions options;
  options.listen = "127.0.0.1:0";
  options.plaintext = true;
  auto http = StartHttp(options);
  ASSERT_NE(http, nullptr);
  gate_->HoldAfter(4);
  const int fd = Connect(http->port());
  ASSERT_GE(fd, 0);
  const std::string request = Post("/v1/completions", R"({"model":"m","prompt":[1,2,3],"max_tokens":1000,
      "ignore_eos":true,"temperature":0,"n":2,"stream":true})");
  ASSERT_EQ(send(fd, request.data(), request.size(), MSG_NOSIGNAL), ssize_t(request.size()));
  const bool held = gate_->AwaitHeld(absl::Seconds(30));
  close(fd);
  gate_->Release();
  ASSERT_TRUE(held) << "no token step reached the gate";
  const v1::ListJobsResponse jobs = EndedJobs(service_.get());
  ASSERT_EQ(jobs.jobs_size(), 2) << jobs.DebugString();
  for (const v1::JobStatus& job : jobs.jobs()) {
    EXPECT_EQ(job.state(), v1::JOB_STATE_CANCELLED) << job.DebugString();
    EXPECT_LT(job.stats().generated_tokens(), 1000u) << job.DebugString();
  }
}

// A worker that is full: every job refused RESOURCE_EXHAUSTED, as the scheduler refuses one beyond
// --max_batch + --max_waiting.
class FullWorker final : public v1::Generation::Service {
  grpc::Status Generate(grpc::ServerContext*, const v1::GenerateRequest*,
                        grpc::ServerWriter<v1::GenerateResponse>*) override {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "the worker is full: 16 running, 64 waiting");
  }
};

// OpenAI's clients back off on 429; Retry-After says when to come back, as on the 503s.
TEST(OpenAiServerFull, AFullWorkerIs429WithRetryAfter) {
  FullWorker worker;
  ServerOptions server;
  server.listen_addresses = {"127.0.0.1:0"};
  server.plaintext = true;
  auto grpc = RunningServer::Start(server, {&worker});
  ASSERT_TRUE(grpc.ok()) << grpc.status();
  OpenAiServerOptions options;
  options.listen = "127.0.0.1:0";
  options.plaintext = true;
  auto http = OpenAiServer::Start(options, {"m", nullptr, 512}, (*grpc)->server()->InProcessChannel(grpc::ChannelArguments()));
  ASSERT_TRUE(http.ok()) << http.status();
  const std::string r = Exchange((*http)->port(), Post("/v1/completions", R"({"model":"m","prompt":[1],"max_tokens":2})"));
  EXPECT_EQ(Status(r), 429) << r;
  EXPECT_NE(r.find("Retry-After: 1"), std::string::npos) << r;
  EXPECT_NE(r.find("rate_limit_error"), std::string::npos) << r;
  EXPECT_NE(r.find("the worker is full"), std::string::npos) << r;
}

TEST_F(OpenAiServerTest, BadAddressesAndMissingTlsFilesAreRefusedAtStart) {
  OpenAiServerOptions options;
  const auto start = [&] {
    return OpenAiServer::Start(options, {"m", nullptr, 512}, grpc_->server()->InProcessChannel(grpc::ChannelArguments()))
        .status()
        .code();
  };
  options.listen = "999.1.1.1:1";
  options.plaintext = true;
  EXPECT_EQ(start(), absl::StatusCode::kInvalidArgument);
  options.listen = "127.0.0.1:0";
  options.plaintext = false;  // TLS without a certificate
  EXPECT_EQ(start(), absl::StatusCode::kInvalidArgument);
  options.tls = {"/nonexistent.pem", "/nonexistent.key", ""};
  EXPECT_EQ(start(), absl::StatusCode::kNotFound);
}

TEST_F(OpenAiServerTest, TlsAndMutualTlsAsTheGrpcPort) {
  const std::string dir = std::string(std::getenv("TEST_TMPDIR") ? std::getenv("TEST_TMPDIR") : "/tmp") + "/httptls";
  const std::string make =
      "set -e; mkdir -p " + dir + "; cd " + dir +
      "; K='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1';"
      " openssl req -x509 \\$K -keyout server.key -out server.pem -subj /CN=localhost -addext subjectAltName=DNS:localhost"
      " 2>/dev/null; openssl req -x509 \\$K -keyout client.key -out client.pem -subj /CN=client 2>/dev/null";
  if (std::system(("bash -c \"" + make + "\"").c_str()) != 0 || std::system("command -v curl >/dev/null") != 0) {
    GTEST_SKIP() << "needs openssl and curl";
  }
  const auto curl = [&](int port, const std::string& extra) {
    return std::system(absl::StrCat("curl -sf -o /dev/null --resolve localhost:", port, ":127.0.0.1 --cacert ", dir,
                                    "/server.pem ", extra, " https://localhost:", port, "/health")
                           .c_str());
  };
  OpenAiServerOptions options;
  options.listen = "127.0.0.1:0";
  options.tls = {dir + "/server.pem", dir + "/server.key", ""};
  {
    auto http = StartHttp(options);
    ASSERT_NE(http, nullptr);
    EXPECT_EQ(curl(http->port(), ""), 0);
    EXPECT_NE(std::system(absl::StrCat("curl -sf -o /dev/null http://127.0.0.1:", http->port(), "/health").c_str()), 0);
  }
  options.tls.client_ca_path = dir + "/client.pem";  // the self-signed client certificate is its own CA
  auto http = StartHttp(options);
  ASSERT_NE(http, nullptr);
  EXPECT_NE(curl(http->port(), ""), 0);  // no client certificate
  EXPECT_EQ(curl(http->port(), absl::StrCat("--cert ", dir, "/client.pem --key ", dir, "/client.key")), 0);
}

}  // namespace
}  // namespace a2sf::worker::http
