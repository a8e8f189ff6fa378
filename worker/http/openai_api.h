// The OpenAI API's JSON vocabulary, mapped to and from the worker's Generation API: requests of
// /v1/completions and /v1/chat/completions become a v1::GenerateRequest (chat messages through the
// LLaMA-2 chat template), and the job's events become OpenAI responses and stream chunks. Pure
// functions over values, no I/O: the HTTP server (openai_server.h) is the only caller besides tests.
// Stop strings are the worker's (StopConditions with include_stop_string false: cut and held back as
// OpenAI does); this file only names them. Thread-safety: the functions are reentrant.
#ifndef A2SF_WORKER_HTTP_OPENAI_API_H_
#define A2SF_WORKER_HTTP_OPENAI_API_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "a2sf/v1/generation.pb.h"
#include "grpcpp/support/status.h"
#include "nlohmann/json.hpp"
#include "worker/tokenizer/tokenizer.h"

namespace a2sf::worker::http {

// An OpenAI-shaped error: HTTP status and the body's error.{message, type, param, code}.
struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the request field at fault; empty: null
  std::string code;   // empty: null
};
nlohmann::json ErrorBody(const ApiError& error);
// A failed Generate call as OpenAI reports it (INVALID_ARGUMENT -> 400, RESOURCE_EXHAUSTED -> 429, ...).
ApiError FromGrpc(const grpc::Status& status);

enum class Endpoint { kCompletions, kChatCompletions };

// What the adapter needs of the model to map a request.
struct ServedModel {
  std::string id;                        // the `model` name clients must send
  const Tokenizer* tokenizer = nullptr;  // chat needs one (the template is tokenized here)
  int context_tokens = 0;                // the model's context: chat prompts longer are refused here
  // The most jobs one request may start (its prompts x n): the worker's --max_batch + --max_waiting,
  // the jobs it can hold at once; a request for more could never be admitted whole (400, not 429).
  int max_choices = 128;
};

// One request, mapped. It asks for prompts.size() x n choices, each a job of its own (ChoiceJobs).
struct MappedRequest {
  v1::GenerateRequest generate;  // every choice's job but its prompt and seed; the first prompt's
  // Each prompt (completions take several: `prompt` as an array of strings or of token-id arrays), a
  // request holding just the prompt; the first is also generate's.
  std::vector<v1::GenerateRequest> prompts;
  uint32_t n = 1;  // choices per prompt
  bool stream = false;
  bool include_usage = false;          // stream_options.include_usage
  bool logprobs = false;               // report per-token logprobs (the count of alternatives is in generate)
  uint32_t top_logprobs = 0;           // alternatives per token in those logprobs
  bool echo = false;                   // completions: the prompt precedes the text (and its tokens the logprobs)
  // vLLM's prompt_logprobs: report this many alternatives per prompt token (the count the worker is
  // asked for, generate.logprobs.prompt, may be larger when echo wants more); unset: none.
  std::optional<uint32_t> prompt_logprobs;
  std::string model;
};

// A request body as JSON. Refused (400) before a value is built when it nests deeper than
// kMaxJsonDepth or holds more than kMaxJsonValues values (strings, numbers, ... each count): a body of
// small values builds ~30x its bytes in memory, so the body limit alone does not bound what parsing a
// request costs (32 bodies of 4 MiB of "[[[..." held 3.6 GB). Not JSON at all: 400 too.
inline constexpr int kMaxJsonDepth = 64;
inline constexpr size_t kMaxJsonValues = size_t(1) << 17;
bool ParseBody(const std::string& body, nlohmann::json* out, ApiError* error);

// Parses and validates `body`; on failure fills `error` and returns false. Unknown fields are ignored
// (as OpenAI's servers do); known fields of the wrong type or range are 400s naming the field.
bool MapRequest(Endpoint endpoint, const nlohmann::json& body, const ServedModel& model, MappedRequest* out,
                ApiError* error);

// The jobs of a request, one per choice, in OpenAI's order: prompt p's n choices are the indexes
// p*n .. p*n+n-1. Choice j of a prompt samples with seed + j when the request sets a seed, so the n
// choices differ and each is reproducible (unset, the worker draws a seed per job).
v1::GenerateRequest ChoiceJob(const MappedRequest& request, size_t choice);
inline size_t ChoiceCount(const MappedRequest& request) { return request.prompts.size() * request.n; }

// LLaMA-2's chat format as Meta's reference chat_completion writes it: each finished exchange is
// BOS "[INST] {user} [/INST] {assistant} " EOS, the last user turn BOS "[INST] {user} [/INST]"; a leading
// system message is folded into the first user turn as "<<SYS>>\n{system}\n<</SYS>>\n\n{user}".
// Contents are stripped of surrounding whitespace. Roles must alternate user/assistant and end with user.
// A conversation that cannot fit `context_tokens` is refused ("messages") before it costs more than its
// bytes: contents over MaxPromptTextBytes together before anything is tokenized, and the prompt as soon
// as its tokens pass the context.
bool ChatPromptIds(const nlohmann::json& messages, const Tokenizer& tokenizer, int context_tokens,
                   std::vector<uint32_t>* ids, ApiError* error);

// OpenAI's finish_reason for a job's: "stop" (EOS, stop string or token), "length" (max_tokens or the
// context), or null while running / when cancelled.
nlohmann::json FinishReason(v1::FinishReason reason);

// Appends one generated token's logprobs to `logprobs` in the endpoint's format: completions'
// {tokens, token_logprobs, top_logprobs, text_offset} (`text_offset`: the token's offset in the text),
// chat's {content: [{token, logprob, bytes, top_logprobs}]}. A null `logprobs` becomes the object.
void AppendLogprobs(Endpoint endpoint, const v1::TokenLogprobs& token, size_t text_offset, nlohmann::json* logprobs);

// vLLM's prompt_logprobs: null for the first token (nothing precedes it), then for each token a map
// from token id (a string) to {logprob, rank, decoded_token}: the `top` most likely tokens and the
// prompt's own token.
nlohmann::json PromptLogprobs(const v1::PromptLogprobs& prompt, uint32_t top);

// Completions' echo: the prompt text that precedes the output of a job whose prompt is `prompt` (one
// of request.prompts: its text, or its token-id prompt's pieces) and, with logprobs, its tokens
// appended to `logprobs` in completions' format (the first token's logprob and top_logprobs null, as
// OpenAI reports them). `first_piece` is the first prompt token's text (nothing precedes it, so the
// worker reports no piece for it).
std::string EchoPrompt(const MappedRequest& request, const v1::GenerateRequest& prompt,
                       const v1::PromptLogprobs& prompt_logprobs, const std::string& first_piece,
                       nlohmann::json* logprobs);

// Response documents. `id` is the response id ("cmpl-..." / "chatcmpl-..."), `created` Unix seconds.
struct ResponseHeader {
  Endpoint endpoint;
  std::string id;
  int64_t created = 0;
  std::string model;
};
nlohmann::json Usage(uint32_t prompt_tokens, uint32_t completion_tokens);
// One choice of a response, as it ended.
struct ChoiceResult {
  std::string text;
  nlohmann::json finish_reason = nullptr;
  nlohmann::json logprobs = nullptr;
  nlohmann::json prompt_logprobs = nullptr;  // vLLM's, when asked for
};
// choices[i] is choice i. A non-null prompt_logprobs is reported where vLLM does: in its choice
// (completions) or beside the choices (chat, whose choices share one prompt: the first's).
nlohmann::json CompleteResponse(const ResponseHeader& header, const std::vector<ChoiceResult>& choices,
                                const nlohmann::json& usage);
// A stream chunk of choice `index`: `text` as the delta (chat: `first` adds role "assistant").
nlohmann::json StreamChunk(const ResponseHeader& header, size_t index, const std::string& text, bool first,
                           const nlohmann::json& finish_reason, const nlohmann::json& logprobs = nullptr);
// The last chunk of a stream with include_usage: no choices, the usage.
nlohmann::json UsageChunk(const ResponseHeader& header, const nlohmann::json& usage);
nlohmann::json ModelList(const std::string& model_id, int64_t created);

}  // namespace a2sf::worker::http

#endif  // A2SF_WORKER_HTTP_OPENAI_API_H_
