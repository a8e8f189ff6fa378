#include "worker/http/openai_api.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace a2sf::worker::http {

using nlohmann::json;

json ErrorBody(const ApiError& error) {
  json e = {{"message", error.message}, {"type", error.type}, {"param", nullptr}, {"code", nullptr}};
  if (!error.param.empty()) e["param"] = error.param;
  if (!error.code.empty()) e["code"] = error.code;
  return {{"error", e}};
}

ApiError FromGrpc(const grpc::Status& status) {
  ApiError error;
  error.message = status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::FAILED_PRECONDITION:
    case grpc::StatusCode::OUT_OF_RANGE:
      return error;
    case grpc::StatusCode::NOT_FOUND:
      error.http_status = 404;
      return error;
    case grpc::StatusCode::ALREADY_EXISTS:
      error.http_status = 409;
      return error;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      error.http_status = 429;
      error.type = "rate_limit_error";
      return error;
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      error.http_status = 503;
      error.type = "service_unavailable";
      return error;
    case grpc::StatusCode::CANCELLED:
      error.http_status = 499;
      error.type = "cancelled";
      return error;
    default:
      error.http_status = 500;
      error.type = "server_error";
      return error;
  }
}

namespace {

// Fills `error` for field `param` and returns false, so a check reads `return Fail(...)`.
bool Fail(ApiError* error, std::string param, std::string message, int http_status = 400) {
  error->http_status = http_status;
  error->type = "invalid_request_error";
  error->param = std::move(param);
  error->message = std::move(message);
  return false;
}

bool FailType(ApiError* error, const std::string& param, const char* want) {
  return Fail(error, param, absl::StrCat("'", param, "' must be ", want));
}

// A field present and not null (OpenAI clients send null for "unset").
const json* Field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

// True when `object` is an object whose `key` is the string `value`; any other type is false (json's
// value(key, default) throws on a field of another type).
bool StringFieldIs(const json& object, const char* key, absl::string_view value) {
  const json* v = object.is_object() ? Field(object, key) : nullptr;
  return v != nullptr && v->is_string() && v->get_ref<const std::string&>() == value;
}

bool Number(const json& body, const char* name, double lo, double hi, double* out, ApiError* error) {
  const json* v = Field(body, name);
  if (v == nullptr) return true;
  if (!v->is_number()) return FailType(error, name, "a number");
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) return Fail(error, name, absl::StrCat("'", name, "' must be in [", lo, ", ", hi, "]"));
  *out = x;
  return true;
}

bool Integer(const json& body, const char* name, int64_t lo, int64_t hi, int64_t* out, ApiError* error) {
  const json* v = Field(body, name);
  if (v == nullptr) return true;
  if (!v->is_number_integer()) return FailType(error, name, "an integer");
  // The parser holds every non-negative integer as unsigned: past int64's range it is out of [lo, hi]
  // (hi is an int64), below it both bounds are compared as signed.
  const bool huge = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX);
  const int64_t value = huge ? 0 : v->get<int64_t>();
  if (huge || value < lo || value > hi) {
    return Fail(error, name, absl::StrCat("'", name, "' must be in [", lo, ", ", hi, "]"));
  }
  *out = value;
  return true;
}

bool Bool(const json& body, const char* name, bool* out, ApiError* error) {
  const json* v = Field(body, name);
  if (v == nullptr) return true;
  if (!v->is_boolean()) return FailType(error, name, "a boolean");
  *out = v->get<bool>();
  return true;
}

// kv_policy -> PolicySpec: {name, alpha, layer_alphas, sinks, recent_window}; unknown keys are 400s
// (a typo must not silently fall back to defaults). Ranges are the policy library's to check.
bool MapPolicySpec(const json& v, v1::PolicySpec* spec, ApiError* error) {
  if (!v.is_object()) return FailType(error, "kv_policy", "an object");
  for (const auto& [key, value] : v.items()) {
    const std::string param = "kv_policy." + key;
    if (key == "name") {
      if (!value.is_string()) return FailType(error, param, "a string");
      spec->set_name(value.get<std::string>());
    } else if (key == "alpha") {
      if (!value.is_number()) return FailType(error, param, "a number");
      spec->set_alpha(value.get<double>());
    } else if (key == "layer_alphas") {
      if (!value.is_array()) return FailType(error, param, "an array of numbers");
      for (const json& a : value) {
        if (!a.is_number()) return FailType(error, param, "an array of numbers");
        spec->add_layer_alphas(a.get<double>());
      }
    } else if (key == "sinks" || key == "recent_window") {
      if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<uint64_t>() > UINT32_MAX) {
        return FailType(error, param, "a non-negative integer");
      }
      key == "sinks" ? spec->set_sinks(value.get<uint32_t>()) : spec->set_recent_window(value.get<uint32_t>());
    } else {
      return Fail(error, "kv_policy", absl::StrCat("'kv_policy' has no field '", key, "' (name, alpha, layer_alphas, sinks, recent_window)"));
    }
  }
  return true;
}

// kv_budget -> Budget: {tokens} or {ratio[, reference_length]}.
bool MapBudget(const json& v, v1::Budget* budget, ApiError* error) {
  if (!v.is_object()) return FailType(error, "kv_budget", "an object");
  for (const auto& [key, value] : v.items()) {
    const std::string param = "kv_budget." + key;
    if (key == "ratio") {
      if (!value.is_number()) return FailType(error, param, "a number");
      budget->set_ratio(value.get<double>());
    } else if (key == "tokens" || key == "reference_length") {
      if (!value.is_number_integer() || value.get<int64_t>() < 0 || value.get<uint64_t>() > UINT32_MAX) {
        return FailType(error, param, "a non-negative integer");
      }
      key == "tokens" ? budget->set_tokens(value.get<uint32_t>()) : budget->set_reference_length(value.get<uint32_t>());
    } else {
      return Fail(error, "kv_budget", absl::StrCat("'kv_budget' has no field '", key, "' (tokens, ratio, reference_length)"));
    }
  }
  if (v.contains("tokens") && v.contains("ratio")) return Fail(error, "kv_budget", "'kv_budget': tokens or ratio, not both");
  return true;
}

bool MapStop(const json& body, MappedRequest* out, ApiError* error) {
  const json* v = Field(body, "stop");
  if (v == nullptr) return true;
  std::vector<std::string> stops;
  if (v->is_string()) {
    stops.push_back(v->get<std::string>());
  } else if (v->is_array() && v->size() <= 4) {
    for (const json& s : *v) {
      if (!s.is_string()) return FailType(error, "stop", "a string or an array of up to 4 strings");
      stops.push_back(s.get<std::string>());
    }
  } else {
    return FailType(error, "stop", "a string or an array of up to 4 strings");
  }
  for (const std::string& s : stops) {
    if (s.empty()) return Fail(error, "stop", "'stop' strings must not be empty");
    if (!IsValidUtf8(s)) return Fail(error, "stop", "'stop' strings must be valid UTF-8");
    out->generate.mutable_stop()->add_stop_strings(s);
  }
  out->generate.mutable_stop()->set_include_stop_string(false);  // OpenAI's rule: the stop string is cut
  return true;
}

bool MapSampling(const json& body, MappedRequest* out, ApiError* error) {
  double temperature = 1.0;  // OpenAI's default; the proto's 0 is greedy
  double top_p = 1.0;
  if (!Number(body, "temperature", 0, 2, &temperature, error)) return false;
  if (!Number(body, "top_p", 0, 1, &top_p, error)) return false;
  if (Field(body, "top_p") != nullptr && top_p == 0) return Fail(error, "top_p", "'top_p' must be > 0");
  v1::Sampling* s = out->generate.mutable_sampling();
  s->set_temperature(temperature);
  s->set_top_p(top_p);
  int64_t seed = 0;
  if (!Integer(body, "seed", INT64_MIN, INT64_MAX, &seed, error)) return false;
  if (Field(body, "seed") != nullptr) s->set_seed(uint64_t(seed));
  int64_t n = 1;
  if (!Integer(body, "n", 1, 128, &n, error)) return false;
  out->n = uint32_t(n);
  double presence = 0, frequency = 0, min_p = 0, repetition = 1;
  int64_t top_k = 0;
  if (!Number(body, "presence_penalty", -2, 2, &presence, error) ||
      !Number(body, "frequency_penalty", -2, 2, &frequency, error)) {
    return false;
  }
  // vLLM's extra sampling fields, for users coming from it.
  if (!Integer(body, "top_k", 0, INT32_MAX, &top_k, error) || !Number(body, "min_p", 0, 1, &min_p, error) ||
      !Number(body, "repetition_penalty", 1e-6, 1e6, &repetition, error)) {
    return false;
  }
  s->set_presence_penalty(presence);
  s->set_frequency_penalty(frequency);
  s->set_top_k(uint32_t(top_k));
  s->set_min_p(min_p);
  s->set_repetition_penalty(repetition);
  return true;
}

// vLLM's extra stop fields: min_tokens, stop_token_ids, ignore_eos.
bool MapStopExtras(const json& body, MappedRequest* out, ApiError* error) {
  v1::StopConditions* stop = out->generate.mutable_stop();
  int64_t min_tokens = 0;
  if (!Integer(body, "min_tokens", 0, UINT32_MAX, &min_tokens, error)) return false;
  if (min_tokens > 0 && out->generate.prompt_only()) {
    return Fail(error, "min_tokens", "'min_tokens' does not apply to a scoring call (echo with max_tokens 0)");
  }
  stop->set_min_tokens(uint32_t(min_tokens));
  bool ignore_eos = false;
  if (!Bool(body, "ignore_eos", &ignore_eos, error)) return false;
  if (ignore_eos) stop->set_stop_on_eos(false);
  if (const json* ids = Field(body, "stop_token_ids"); ids != nullptr) {
    if (!ids->is_array()) return FailType(error, "stop_token_ids", "an array of token ids");
    for (const json& id : *ids) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<uint64_t>() > UINT32_MAX) {
        return FailType(error, "stop_token_ids", "an array of token ids");
      }
      stop->add_stop_token_ids(id.get<uint32_t>());
    }
  }
  return true;
}

// vLLM's prompt_logprobs = n alternatives per prompt token (0..20), not with stream; completions'
// echo (with logprobs: the prompt's tokens first). Both ask the worker for prompt logprobs.
bool MapPromptLogprobs(Endpoint endpoint, const json& body, MappedRequest* out, ApiError* error) {
  int64_t top = 0;
  if (!Integer(body, "prompt_logprobs", 0, 20, &top, error)) return false;
  if (Field(body, "prompt_logprobs") != nullptr) {
    if (out->stream) return Fail(error, "prompt_logprobs", "'prompt_logprobs' is not available with 'stream': true");
    out->prompt_logprobs = uint32_t(top);
  }
  if (endpoint == Endpoint::kCompletions && !Bool(body, "echo", &out->echo, error)) return false;
  if (out->echo && out->logprobs) top = std::max<int64_t>(top, out->top_logprobs);
  if (out->echo || out->prompt_logprobs) out->generate.mutable_logprobs()->set_prompt(uint32_t(top));
  return true;
}

// Completions: logprobs = n alternatives (0..5). Chat: logprobs = true, top_logprobs = n (0..20).
bool MapLogprobs(Endpoint endpoint, const json& body, MappedRequest* out, ApiError* error) {
  int64_t top = 0;
  if (endpoint == Endpoint::kChatCompletions) {
    if (!Bool(body, "logprobs", &out->logprobs, error)) return false;
    if (!Integer(body, "top_logprobs", 0, 20, &top, error)) return false;
    if (Field(body, "top_logprobs") != nullptr && !out->logprobs) {
      return Fail(error, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
    }
  } else {
    if (!Integer(body, "logprobs", 0, 5, &top, error)) return false;
    out->logprobs = Field(body, "logprobs") != nullptr;
  }
  if (out->logprobs) out->generate.mutable_logprobs()->set_generated(uint32_t(top));
  out->top_logprobs = uint32_t(top);
  return true;
}

bool MapStreaming(const json& body, MappedRequest* out, ApiError* error) {
  if (!Bool(body, "stream", &out->stream, error)) return false;
  const json* options = Field(body, "stream_options");
  if (options == nullptr) return true;
  if (!options->is_object()) return FailType(error, "stream_options", "an object");
  if (!out->stream) return Fail(error, "stream_options", "'stream_options' is only allowed when 'stream' is true");
  return Bool(*options, "include_usage", &out->include_usage, error);
}

bool MapPolicy(const json& body, MappedRequest* out, ApiError* error) {
  if (const json* v = Field(body, "kv_policy"); v != nullptr && !MapPolicySpec(*v, out->generate.mutable_policy(), error)) {
    return false;
  }
  const json* v = Field(body, "kv_budget");
  return v == nullptr || MapBudget(*v, out->generate.mutable_budget(), error);
}

// `to` with the prompt of `from` in place of its own.
void SetPrompt(const v1::GenerateRequest& from, v1::GenerateRequest* to) {
  if (from.has_text()) {
    to->set_text(from.text());
  } else {
    *to->mutable_token_ids() = from.token_ids();
  }
}

// One prompt of completions: a non-empty string or array of token ids, no longer than the model's
// context can hold (the worker's rule, applied here too because a request copies it into each choice).
bool MapOnePrompt(const json& one, const ServedModel& model, v1::GenerateRequest* out, ApiError* error) {
  if (one.is_string()) {
    const std::string& text = one.get_ref<const std::string&>();
    if (text.empty()) return Fail(error, "prompt", "'prompt' must not be empty");
    if (text.size() > MaxPromptTextBytes(model.context_tokens)) {
      return Fail(error, "prompt", absl::StrCat("the prompt is longer than the model's context of ",
                                                model.context_tokens, " tokens can hold"));
    }
    out->set_text(text);
    return true;
  }
  if (!one.is_array() || one.empty()) {
    return FailType(error, "prompt", "a non-empty string or array of token ids, or an array of those");
  }
  if (one.size() > size_t(std::max(model.context_tokens, 0))) {
    return Fail(error, "prompt", absl::StrCat("the prompt's ", one.size(), " tokens exceed the model's context of ",
                                              model.context_tokens));
  }
  for (const json& id : one) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<uint64_t>() > UINT32_MAX) {
      return FailType(error, "prompt", "a string or an array of token ids");
    }
    out->mutable_token_ids()->add_ids(id.get<uint32_t>());
  }
  return true;
}

// `prompt`: one prompt, or a batch of them (an array of strings or of token-id arrays).
bool MapCompletionPrompt(const json& body, const ServedModel& model, MappedRequest* out, ApiError* error) {
  const json* prompt = Field(body, "prompt");
  if (prompt == nullptr) return Fail(error, "prompt", "'prompt' is required");
  const bool batch = prompt->is_array() && !prompt->empty() && !(*prompt)[0].is_number();
  const size_t count = batch ? prompt->size() : 1;
  if (count > size_t(model.max_choices)) {
    return Fail(error, "prompt", absl::StrCat(count, " prompts are more jobs than this worker holds at once (",
                                              model.max_choices, ")"));
  }
  out->prompts.assign(count, v1::GenerateRequest());
  for (size_t i = 0; i < count; ++i) {
    if (!MapOnePrompt(batch ? (*prompt)[i] : *prompt, model, &out->prompts[i], error)) return false;
  }
  SetPrompt(out->prompts[0], &out->generate);
  return true;
}

bool MapChatPrompt(const json& body, const ServedModel& model, MappedRequest* out, ApiError* error) {
  const json* messages = Field(body, "messages");
  if (messages == nullptr) return Fail(error, "messages", "'messages' is required");
  if (model.tokenizer == nullptr) {
    return Fail(error, "messages", "this worker has no tokenizer; chat needs one (start it with --tokenizer)");
  }
  std::vector<uint32_t> ids;
  if (!ChatPromptIds(*messages, *model.tokenizer, model.context_tokens, &ids, error)) return false;
  out->prompts.assign(1, v1::GenerateRequest());
  out->prompts[0].mutable_token_ids()->mutable_ids()->Assign(ids.begin(), ids.end());
  SetPrompt(out->prompts[0], &out->generate);
  return true;
}

// Every choice is a job: a request for more than the worker holds at once could never be admitted.
bool CheckChoices(const ServedModel& model, const MappedRequest& request, ApiError* error) {
  if (ChoiceCount(request) <= size_t(model.max_choices)) return true;
  return Fail(error, "n", absl::StrCat(request.prompts.size(), " prompt(s) x n=", request.n, " are ",
                                       ChoiceCount(request), " jobs, more than this worker holds at once (",
                                       model.max_choices, ")"));
}

// Counts what a body would build, and stops the parse at the first limit passed (json::sax_parse).
class JsonShape final : public nlohmann::json_sax<json> {
 public:
  bool null() override { return Value(); }
  bool boolean(bool) override { return Value(); }
  bool number_integer(number_integer_t) override { return Value(); }
  bool number_unsigned(number_unsigned_t) override { return Value(); }
  bool number_float(number_float_t, const string_t&) override { return Value(); }
  bool string(string_t&) override { return Value(); }
  bool binary(binary_t&) override { return Value(); }
  bool start_object(std::size_t) override { return Open(); }
  bool key(string_t&) override { return true; }
  bool end_object() override { return Close(); }
  bool start_array(std::size_t) override { return Open(); }
  bool end_array() override { return Close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
    malformed_ = true;
    return false;
  }
  // Empty when the body is within the limits and well-formed.
  std::string Fault() const { return fault_; }
  bool malformed() const { return malformed_; }

 private:
  bool Value() {
    if (++values_ <= kMaxJsonValues) return true;
    fault_ = absl::StrCat("the request body holds more than ", kMaxJsonValues, " JSON values");
    return false;
  }
  bool Open() {
    if (++depth_ <= kMaxJsonDepth) return Value();
    fault_ = absl::StrCat("the request body nests JSON deeper than ", kMaxJsonDepth, " levels");
    return false;
  }
  bool Close() {
    --depth_;
    return true;
  }
  int depth_ = 0;
  size_t values_ = 0;
  bool malformed_ = false;
  std::string fault_;
};

bool MapMaxTokens(Endpoint endpoint, const json& body, MappedRequest* out, ApiError* error) {
  // OpenAI's defaults: 16 for completions; for chat, until a stop or the context is full (0).
  int64_t max_tokens = endpoint == Endpoint::kCompletions ? 16 : 0;
  const char* name = endpoint == Endpoint::kChatCompletions && Field(body, "max_completion_tokens") != nullptr
                         ? "max_completion_tokens"
                         : "max_tokens";
  // max_tokens 0 with echo scores the prompt and generates nothing (OpenAI's legacy scoring call, as
  // lm-evaluation-harness sends it with logprobs): a prompt-only job.
  const json* echo = Field(body, "echo");
  const bool scoring = endpoint == Endpoint::kCompletions && echo != nullptr && *echo == true;
  if (!Integer(body, name, scoring ? 0 : 1, UINT32_MAX, &max_tokens, error)) return false;
  out->generate.set_max_tokens(uint32_t(max_tokens));
  out->generate.set_prompt_only(scoring && max_tokens == 0);
  return true;
}

}  // namespace

// OpenAI fields this server does not implement are refused when they would change the answer, not
// silently ignored; their "off" values (echo false, best_of 1, empty logit_bias, text format) pass.
bool RejectUnsupported(Endpoint endpoint, const json& body, ApiError* error) {
  if (endpoint == Endpoint::kChatCompletions) {
    if (const json* echo = Field(body, "echo"); echo != nullptr && *echo != false) {
      return Fail(error, "echo", "'echo' is not supported by chat completions");
    }
  }
  for (const char* name : {"suffix", "best_of", "logit_bias", "tools", "functions", "response_format",
                           "audio", "modalities", "prediction"}) {
    const json* v = Field(body, name);
    if (v == nullptr) continue;
    const bool off = (v->is_boolean() && !v->get<bool>()) || ((v->is_object() || v->is_array()) && v->empty()) ||
                     (std::string(name) == "best_of" && *v == 1) ||
                     (std::string(name) == "response_format" && StringFieldIs(*v, "type", "text"));
    if (!off) return Fail(error, name, absl::StrCat("'", name, "' is not supported by this server"));
  }
  return true;
}

bool ParseBody(const std::string& body, json* out, ApiError* error) {
  JsonShape shape;
  const bool whole = json::sax_parse(body, &shape);
  if (!whole && !shape.malformed()) return Fail(error, "", shape.Fault());
  *out = whole ? json::parse(body, nullptr, /*allow_exceptions=*/false) : json(json::value_t::discarded);
  if (out->is_discarded()) {
    return Fail(error, "", "We could not parse the JSON body of your request: it is not valid JSON.");
  }
  return true;
}

bool MapRequest(Endpoint endpoint, const json& body, const ServedModel& model, MappedRequest* out, ApiError* error) {
  if (!body.is_object()) return Fail(error, "", "the request body must be a JSON object");
  const json* name = Field(body, "model");
  if (name == nullptr) return Fail(error, "model", "'model' is required");
  if (!name->is_string()) return FailType(error, "model", "a string");
  out->model = name->get<std::string>();
  if (out->model != model.id) {
    Fail(error, "model", absl::StrCat("The model '", out->model, "' does not exist (this worker serves '", model.id, "')"),
         404);
    error->code = "model_not_found";
    return false;
  }
  if (const json* user = Field(body, "user"); user != nullptr && !user->is_string()) {
    return FailType(error, "user", "a string");
  }
  if (!RejectUnsupported(endpoint, body, error)) return false;
  const bool prompt_ok = endpoint == Endpoint::kCompletions ? MapCompletionPrompt(body, model, out, error)
                                                            : MapChatPrompt(body, model, out, error);
  return prompt_ok && MapMaxTokens(endpoint, body, out, error) && MapSampling(body, out, error) &&
         CheckChoices(model, *out, error) &&
         MapStop(body, out, error) && MapStopExtras(body, out, error) && MapLogprobs(endpoint, body, out, error) &&
         MapStreaming(body, out, error) && MapPromptLogprobs(endpoint, body, out, error) && MapPolicy(body, out, error);
}

v1::GenerateRequest ChoiceJob(const MappedRequest& request, size_t choice) {
  v1::GenerateRequest job = request.generate;
  SetPrompt(request.prompts[choice / request.n], &job);
  const uint32_t j = uint32_t(choice % request.n);
  if (j > 0 && job.sampling().has_seed()) job.mutable_sampling()->set_seed(job.sampling().seed() + j);
  return job;
}

namespace {

// A message's content: a string or an array of {"type": "text", "text": ...} parts.
bool MessageContent(const json& message, size_t index, std::string* content, ApiError* error) {
  const std::string param = absl::StrCat("messages[", index, "].content");
  const json* c = Field(message, "content");
  if (c == nullptr) return Fail(error, param, absl::StrCat("'", param, "' is required"));
  if (c->is_string()) {
    *content = c->get<std::string>();
  } else if (c->is_array()) {
    for (const json& part : *c) {
      if (!StringFieldIs(part, "type", "text") || !part.contains("text") || !part["text"].is_string()) {
        return Fail(error, param, absl::StrCat("'", param, "' parts must be {\"type\": \"text\", \"text\": string}"));
      }
      content->append(part["text"].get<std::string>());
    }
  } else {
    return FailType(error, param, "a string or an array of text parts");
  }
  *content = std::string(absl::StripAsciiWhitespace(*content));
  return true;
}

}  // namespace

bool ChatPromptIds(const json& messages, const Tokenizer& tokenizer, int context_tokens, std::vector<uint32_t>* ids,
                   ApiError* error) {
  if (!messages.is_array() || messages.empty()) return FailType(error, "messages", "a non-empty array");
  std::string system;
  std::vector<std::string> turns;  // user, assistant, user, ...
  size_t content_bytes = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string param = absl::StrCat("messages[", i, "]");
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return Fail(error, param, absl::StrCat("'", param, "' must be an object with a string 'role'"));
    }
    const std::string role = m["role"].get<std::string>();
    std::string content;
    if (!MessageContent(m, i, &content, error)) return false;
    content_bytes += content.size();
    if (content_bytes > MaxPromptTextBytes(context_tokens)) {
      return Fail(error, "messages",
                  absl::StrCat("the messages' contents are longer than the model's context of ", context_tokens,
                               " tokens can hold"));
    }
    if (role == "system" || role == "developer") {
      if (i != 0) return Fail(error, param, "a system message is only allowed first");
      system = content;
      continue;
    }
    const char* expected = turns.size() % 2 == 0 ? "user" : "assistant";
    if (role != expected) {
      return Fail(error, param,
                  absl::StrCat("roles must alternate user/assistant starting with user (got '", role, "' where '",
                               expected, "' belongs)"));
    }
    turns.push_back(std::move(content));
  }
  if (turns.size() % 2 == 0) return Fail(error, "messages", "the last message must be from the user");
  if (!system.empty() || StringFieldIs(messages[0], "role", "system")) {
    turns[0] = std::string(absl::StripAsciiWhitespace(absl::StrCat("<<SYS>>\n", system, "\n<</SYS>>\n\n", turns[0])));
  }
  const auto append = [&](const std::string& text) {
    absl::StatusOr<std::vector<int>> encoded = tokenizer.Encode(text, /*add_bos=*/true);
    if (!encoded.ok()) return Fail(error, "messages", std::string(encoded.status().message()));
    ids->insert(ids->end(), encoded->begin(), encoded->end());
    if (ids->size() > size_t(std::max(context_tokens, 0))) {  // as a token-id prompt's limit
      return Fail(error, "messages",
                  absl::StrCat("the conversation needs more than the model's context of ", context_tokens, " tokens"));
    }
    return true;
  };
  for (size_t t = 0; t + 1 < turns.size(); t += 2) {
    if (!append(absl::StrCat("[INST] ", turns[t], " [/INST] ", turns[t + 1], " "))) return false;
    ids->push_back(uint32_t(tokenizer.eos_id()));
  }
  return append(absl::StrCat("[INST] ", turns.back(), " [/INST]"));
}

json FinishReason(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_EOS:
    case v1::FINISH_REASON_STOP_STRING:
    case v1::FINISH_REASON_STOP_TOKEN:
      return "stop";
    case v1::FINISH_REASON_MAX_TOKENS:
    case v1::FINISH_REASON_CONTEXT_FULL:
      return "length";
    default:
      return nullptr;
  }
}

namespace {

json Bytes(const std::string& piece) {
  json bytes = json::array();
  for (unsigned char c : piece) bytes.push_back(int(c));
  return bytes;
}

// Completions' logprobs object, empty, unless `logprobs` is one already.
void InitCompletionLogprobs(json* logprobs) {
  if (!logprobs->is_null()) return;
  *logprobs = {{"tokens", json::array()},
               {"token_logprobs", json::array()},
               {"top_logprobs", json::array()},
               {"text_offset", json::array()}};
}

}  // namespace

void AppendLogprobs(Endpoint endpoint, const v1::TokenLogprobs& token, size_t text_offset, json* logprobs) {
  const std::string& piece = token.token().piece();
  if (endpoint == Endpoint::kChatCompletions) {
    if (logprobs->is_null()) *logprobs = {{"content", json::array()}};
    json top = json::array();
    for (const v1::TokenLogprob& alt : token.top()) {
      top.push_back({{"token", alt.piece()}, {"logprob", alt.logprob()}, {"bytes", Bytes(alt.piece())}});
    }
    (*logprobs)["content"].push_back(
        {{"token", piece}, {"logprob", token.token().logprob()}, {"bytes", Bytes(piece)}, {"top_logprobs", top}});
    return;
  }
  InitCompletionLogprobs(logprobs);
  json top = json::object();
  for (const v1::TokenLogprob& alt : token.top()) top[alt.piece()] = alt.logprob();
  (*logprobs)["tokens"].push_back(piece);
  (*logprobs)["token_logprobs"].push_back(token.token().logprob());
  (*logprobs)["top_logprobs"].push_back(top);
  (*logprobs)["text_offset"].push_back(text_offset);
}

namespace {

// `token` with only its `top` most likely alternatives.
v1::TokenLogprobs Truncated(const v1::TokenLogprobs& token, uint32_t top) {
  v1::TokenLogprobs copy = token;
  while (uint32_t(copy.top_size()) > top) copy.mutable_top()->RemoveLast();
  return copy;
}

}  // namespace

json PromptLogprobs(const v1::PromptLogprobs& prompt, uint32_t top) {
  json out = json::array({nullptr});
  for (const v1::TokenLogprobs& token : prompt.tokens()) {
    json position = json::object();
    const auto add = [&](const v1::TokenLogprob& t, uint32_t rank) {
      position[std::to_string(t.id())] = {{"logprob", t.logprob()}, {"rank", rank}, {"decoded_token", t.piece()}};
    };
    for (int i = 0; i < token.top_size() && uint32_t(i) < top; ++i) add(token.top(i), uint32_t(i + 1));
    add(token.token(), token.rank());
    out.push_back(std::move(position));
  }
  return out;
}

std::string EchoPrompt(const MappedRequest& request, const v1::GenerateRequest& prompt,
                       const v1::PromptLogprobs& prompt_logprobs, const std::string& first_piece, json* logprobs) {
  std::string pieces = first_piece;
  for (const v1::TokenLogprobs& token : prompt_logprobs.tokens()) pieces += token.token().piece();
  if (request.logprobs) {
    InitCompletionLogprobs(logprobs);
    (*logprobs)["tokens"].push_back(first_piece);
    (*logprobs)["token_logprobs"].push_back(nullptr);
    (*logprobs)["top_logprobs"].push_back(nullptr);
    (*logprobs)["text_offset"].push_back(0);
    size_t offset = first_piece.size();
    for (const v1::TokenLogprobs& token : prompt_logprobs.tokens()) {
      AppendLogprobs(Endpoint::kCompletions, Truncated(token, request.top_logprobs), offset, logprobs);
      offset += token.token().piece().size();
    }
  }
  return prompt.has_text() ? prompt.text() : pieces;
}

namespace {

json Header(const ResponseHeader& h, const char* object) {
  return {{"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model}};
}

}  // namespace

json Usage(uint32_t prompt_tokens, uint32_t completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

json CompleteResponse(const ResponseHeader& h, const std::vector<ChoiceResult>& choices, const json& usage) {
  const bool chat = h.endpoint == Endpoint::kChatCompletions;
  json response = Header(h, chat ? "chat.completion" : "text_completion");
  response["choices"] = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    json choice = {{"index", i}, {"finish_reason", c.finish_reason}, {"logprobs", c.logprobs}};
    if (chat) {
      choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    } else {
      choice["text"] = c.text;
      if (!c.prompt_logprobs.is_null()) choice["prompt_logprobs"] = c.prompt_logprobs;
    }
    response["choices"].push_back(std::move(choice));
  }
  if (chat && !choices.empty() && !choices[0].prompt_logprobs.is_null()) {
    response["prompt_logprobs"] = choices[0].prompt_logprobs;
  }
  response["usage"] = usage;
  return response;
}

json StreamChunk(const ResponseHeader& h, size_t index, const std::string& text, bool first, const json& finish_reason,
                 const json& logprobs) {
  const bool chat = h.endpoint == Endpoint::kChatCompletions;
  json choice = {{"index", index}, {"finish_reason", finish_reason}, {"logprobs", logprobs}};
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || (first && finish_reason.is_null())) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  json chunk = Header(h, chat ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = json::array({choice});
  return chunk;
}

json UsageChunk(const ResponseHeader& h, const json& usage) {
  json chunk = Header(h, h.endpoint == Endpoint::kChatCompletions ? "chat.completion.chunk" : "text_completion");
  chunk["choices"] = json::array();
  chunk["usage"] = usage;
  return chunk;
}

json ModelList(const std::string& model_id, int64_t created) {
  return {{"object", "list"},
          {"data", json::array({{{"id", model_id}, {"object", "model"}, {"created", created}, {"owned_by", "a2sf"}}})}};
}

}  // namespace a2sf::worker::http
