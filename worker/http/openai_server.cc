#include "worker/http/openai_server.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/files.h"
#include "common/log.h"
#include "common/metrics/metrics_server.h"
#include "httplib.h"
#include "worker/http/connection_pool.h"
#include "worker/http/connection_watcher.h"

namespace a2sf::worker::http {

using nlohmann::json;

namespace {

std::string Dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

void SendError(httplib::Response& response, const ApiError& error) {
  response.status = error.http_status;
  response.set_content(Dump(ErrorBody(error)), "application/json");
  // A full worker (429) or a passing outage (503): when to come back, for clients that honour it.
  if (error.http_status == 429 || error.http_status == 503) response.set_header("Retry-After", "1");
}

ApiError Error(int status, std::string message, std::string type = "invalid_request_error") {
  ApiError e;
  e.http_status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  return e;
}

// What a job produced, as the HTTP response reports it.
struct JobOutcome {
  std::string id;
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  json finish_reason = nullptr;
  json prompt_logprobs = nullptr;  // vLLM's, when asked for
  size_t text_bytes = 0;           // text produced so far, echo included (completions' logprobs text_offset)
};

// The first prompt token's text, which the worker's prompt logprobs do not carry (nothing precedes
// it): empty for BOS (a text prompt always starts with it) or without a tokenizer.
std::string FirstPromptPiece(const v1::GenerateRequest& request, const Tokenizer* tokenizer) {
  if (!request.has_token_ids() || request.token_ids().ids_size() == 0 || tokenizer == nullptr) return "";
  const int first = int(request.token_ids().ids(0));
  return first == tokenizer->bos_id() ? "" : tokenizer->DecodePiece(tokenizer->bos_id(), first);
}

// One Generate call on the worker's own service, for one choice's job. Accept() reads up to the job's
// `accepted` event, so that a job the worker refuses is an HTTP error before any byte of a stream is
// sent; Run() reads the rest, handing each event's text and logprobs (null unless asked for) to
// `on_piece` (with echo, the prompt first), which returns false when the client is gone: the call is
// then cancelled, which cancels the job.
class JobCall {
 public:
  // The call starts here; the job's request (ChoiceJob) lives only while it is sent (the reader's
  // constructor waits for that), the call keeps just its prompt, in `mapped`.
  JobCall(v1::Generation::Stub* stub, std::shared_ptr<const MappedRequest> mapped, size_t choice, Endpoint endpoint,
          const Tokenizer* tokenizer)
      : endpoint_(endpoint),
        mapped_(std::move(mapped)),
        prompt_(mapped_->prompts[choice / mapped_->n]),
        first_piece_(FirstPromptPiece(prompt_, tokenizer)),
        reader_(stub->Generate(&context_, ChoiceJob(*mapped_, choice))) {}

  grpc::Status Accept() {
    v1::GenerateResponse event;
    if (reader_->Read(&event) && event.has_accepted()) {
      outcome.id = event.accepted().job_id();
      outcome.prompt_tokens = event.accepted().prompt_tokens();
      return grpc::Status::OK;
    }
    const grpc::Status status = reader_->Finish();
    return status.ok() ? grpc::Status(grpc::StatusCode::INTERNAL, "the job ended before it was accepted") : status;
  }

  grpc::Status Run(const std::function<bool(const std::string&, const json&)>& on_piece) {
    v1::GenerateResponse event;
    while (reader_->Read(&event)) {
      if (event.has_prompt_logprobs()) {
        if (mapped_->prompt_logprobs) {
          outcome.prompt_logprobs = PromptLogprobs(event.prompt_logprobs(), *mapped_->prompt_logprobs);
        }
        if (!mapped_->echo) continue;
        json logprobs = nullptr;
        const std::string text = EchoPrompt(*mapped_, prompt_, event.prompt_logprobs(), first_piece_, &logprobs);
        outcome.text_bytes = text.size();
        if (!on_piece(text, logprobs)) return Abandon();
      } else if (event.has_tokens()) {
        json logprobs = nullptr;
        size_t offset = outcome.text_bytes;
        for (const v1::TokenLogprobs& token : event.tokens().logprobs()) {
          AppendLogprobs(endpoint_, token, offset, &logprobs);
          offset += token.token().piece().size();
        }
        outcome.text_bytes += event.tokens().text().size();
        if ((!event.tokens().text().empty() || !logprobs.is_null()) && !on_piece(event.tokens().text(), logprobs)) {
          return Abandon();
        }
      } else if (event.has_finished()) {
        outcome.completion_tokens = event.finished().generated_tokens();
        outcome.finish_reason = FinishReason(event.finished().finish_reason());
      }
    }
    return reader_->Finish();
  }

  // Cancels the call (and so its job); any thread.
  void Cancel() { context_.TryCancel(); }

  JobOutcome outcome;

 private:
  // The client is gone: cancel the call (and so the job).
  grpc::Status Abandon() {
    context_.TryCancel();
    reader_->Finish();
    return grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
  }

  const Endpoint endpoint_;
  const std::shared_ptr<const MappedRequest> mapped_;
  const v1::GenerateRequest& prompt_;  // the choice's prompt, in mapped_->prompts
  const std::string first_piece_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader_;
};

// What a request's choices hand back while they run: a piece of choice `choice`'s output, and the end
// of a choice whose job ended well. Either returns false when the client is gone.
struct ChoiceEvents {
  std::function<bool(size_t choice, const std::string& text, const json& logprobs)> piece;
  std::function<bool(size_t choice, const JobOutcome& outcome)> done;
};

// The calls of one request, a JobCall per choice (ChoiceJob). Accept() has every job accepted or none
// (the first refusal cancels the others). Run() runs them together: choice 0 on the calling thread, each
// other on a thread of its own, their events handed over one at a time; the first failure, or an event
// the client is not there to take, cancels them all. A client that hangs up cancels them all too.
class ChoiceCalls {
 public:
  ChoiceCalls(v1::Generation::Stub* stub, const std::shared_ptr<const MappedRequest>& mapped, Endpoint endpoint,
              const Tokenizer* tokenizer) {
    for (size_t i = 0; i < ChoiceCount(*mapped); ++i) {
      calls_.push_back(std::make_unique<JobCall>(stub, mapped, i, endpoint, tokenizer));
    }
  }

  grpc::Status Accept() {
    for (auto& call : calls_) {
      if (grpc::Status status = call->Accept(); !status.ok()) {
        CancelAll();
        return status;
      }
    }
    return grpc::Status::OK;
  }

  void CancelWhenClosed(ConnectionWatcher* watcher, int fd) {
    watch_ = watcher->Watch(fd, [this] { CancelAll(); });
  }

  grpc::Status Run(const ChoiceEvents& events) {
    std::vector<grpc::Status> statuses(calls_.size());
    auto run = [&](size_t i) { statuses[i] = RunOne(i, events); };
    std::vector<std::thread> threads;
    for (size_t i = 1; i < calls_.size(); ++i) {
      try {
        threads.emplace_back(run, i);
      } catch (const std::system_error&) {  // no thread to be had: the request fails whole
        statuses[i] = grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "the server could not start a thread");
        CancelAll();
        break;
      }
    }
    run(0);
    for (std::thread& thread : threads) thread.join();
    return Cause(statuses);
  }

  size_t size() const { return calls_.size(); }
  const JobOutcome& outcome(size_t choice) const { return calls_[choice]->outcome; }

 private:
  grpc::Status RunOne(size_t i, const ChoiceEvents& events) {
    grpc::Status status = calls_[i]->Run([&](const std::string& text, const json& logprobs) {
      std::lock_guard<std::mutex> lock(events_mutex_);
      return events.piece(i, text, logprobs);
    });
    if (status.ok()) {
      std::lock_guard<std::mutex> lock(events_mutex_);
      if (!events.done(i, calls_[i]->outcome)) status = grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
    }
    if (!status.ok()) CancelAll();
    return status;
  }

  // The request's outcome: the first error that is not a cancellation (what caused the others'),
  // else the first cancellation, else OK.
  static grpc::Status Cause(const std::vector<grpc::Status>& statuses) {
    const grpc::Status* cancelled = nullptr;
    for (const grpc::Status& s : statuses) {
      if (s.error_code() == grpc::StatusCode::CANCELLED) {
        if (cancelled == nullptr) cancelled = &s;
      } else if (!s.ok()) {
        return s;
      }
    }
    return cancelled != nullptr ? *cancelled : grpc::Status::OK;
  }

  void CancelAll() {
    for (auto& call : calls_) call->Cancel();
  }

  std::vector<std::unique_ptr<JobCall>> calls_;
  std::mutex events_mutex_;  // one event handed over at a time
  std::unique_ptr<ConnectionWatcher::Handle> watch_;  // destroyed first: its callback uses the calls
};

// Appends one piece's logprobs to the whole response's.
void MergeLogprobs(const json& piece, json* whole) {
  if (piece.is_null()) return;
  if (whole->is_null()) {
    *whole = piece;
    return;
  }
  for (auto& [key, values] : whole->items()) {
    for (const json& v : piece[key]) values.push_back(v);
  }
}

// Bytes of request bodies reserved in a shared budget (OpenAiServer::body_bytes_in_flight_), given
// back when the reservation ends, whatever way its request ends.
class BodyReservation {
 public:
  BodyReservation(std::atomic<size_t>* in_flight, size_t max) : in_flight_(in_flight), max_(max) {}
  ~BodyReservation() { in_flight_->fetch_sub(bytes_); }
  BodyReservation(const BodyReservation&) = delete;
  BodyReservation& operator=(const BodyReservation&) = delete;
  // False (nothing reserved) when `bytes` more would pass the budget.
  bool Add(size_t bytes) {
    if (in_flight_->fetch_add(bytes) + bytes > max_) {
      in_flight_->fetch_sub(bytes);
      return false;
    }
    bytes_ += bytes;
    return true;
  }
  size_t max() const { return max_; }

 private:
  std::atomic<size_t>* const in_flight_;
  const size_t max_;
  size_t bytes_ = 0;
};

// Reads the request body into `body`: at most `max_bytes` (else 413, whether its length was declared
// -- httplib refuses that before reading -- or it came chunked), within `time` (else 408), each
// chunk first reserved in `reservation` (else 503, which OpenAI's clients retry); a malformed one is
// 400. False, with the error sent, on any failure. The answer says "Connection: close"; httplib 0.11
// still reads on until the client closes or its read timeout (5 s), and answers what follows a
// refused chunked body as a malformed request.
bool ReadBody(const httplib::ContentReader& content, size_t max_bytes, absl::Duration time,
              BodyReservation* reservation, std::string* body, httplib::Response& response) {
  const absl::Time deadline = absl::Now() + time;
  bool too_large = false, busy = false, late = false;
  const bool read = content([&](const char* data, size_t size) {
    too_large = body->size() + size > max_bytes;
    late = !too_large && absl::Now() > deadline;
    busy = !too_large && !late && !reservation->Add(size);
    if (too_large || late || busy) return false;
    body->append(data, size);
    return true;
  });
  if (read) return true;
  if (busy) {
    SendError(response, Error(503, absl::StrCat("the server is reading more request bodies than it holds at once (",
                                                reservation->max(), " bytes); retry"),
                              "server_error"));
  } else if (late) {
    SendError(response,
              Error(408, absl::StrCat("the request body did not arrive within ", absl::FormatDuration(time))));
  } else {
    SendError(response, too_large || response.status == 413
                            ? Error(413, absl::StrCat("the request body is larger than ", max_bytes, " bytes"))
                            : Error(400, "the request body could not be read (malformed chunked encoding or cut short)"));
  }
  response.set_header("Connection", "close");
  return false;
}

// One server-sent event; false when the client is gone.
bool SendEvent(httplib::DataSink& sink, const std::string& data) {
  const std::string event = absl::StrCat("data: ", data, "\n\n");
  return sink.write(event.data(), event.size());
}

// The usage of a request's choices: each prompt's tokens once (its first choice's count), every
// choice's completion tokens.
json ChoicesUsage(const ChoiceCalls& calls, const MappedRequest& mapped) {
  uint32_t prompt = 0, completion = 0;
  for (size_t i = 0; i < calls.size(); ++i) {
    if (i % mapped.n == 0) prompt += calls.outcome(i).prompt_tokens;
    completion += calls.outcome(i).completion_tokens;
  }
  return Usage(prompt, completion);
}

// A non-streaming answer: every choice's whole text, once all have ended.
void Complete(ChoiceCalls& calls, const MappedRequest& mapped, const ResponseHeader& header,
              httplib::Response& response) {
  std::vector<ChoiceResult> choices(calls.size());
  const grpc::Status status = calls.Run({[&](size_t i, const std::string& piece, const json& logprobs) {
                                           choices[i].text += piece;
                                           MergeLogprobs(logprobs, &choices[i].logprobs);
                                           return true;
                                         },
                                         [&](size_t i, const JobOutcome& o) {
                                           choices[i].finish_reason = o.finish_reason;
                                           choices[i].prompt_logprobs = o.prompt_logprobs;
                                           return true;
                                         }});
  if (!status.ok()) return SendError(response, FromGrpc(status));
  response.set_content(Dump(CompleteResponse(header, choices, ChoicesUsage(calls, mapped))), "application/json");
}

// A streamed answer: chunks of every choice as they come (each names its choice), a choice's finish
// chunk when it ends, then the usage if asked for and [DONE]. False when the client is gone.
bool Stream(ChoiceCalls& calls, const MappedRequest& mapped, const ResponseHeader& header, httplib::DataSink& sink) {
  // Chat streams open each choice with the assistant's role, as OpenAI's do.
  for (size_t i = 0; i < calls.size() && header.endpoint == Endpoint::kChatCompletions; ++i) {
    if (!SendEvent(sink, Dump(StreamChunk(header, i, "", true, nullptr)))) return false;
  }
  const grpc::Status status = calls.Run(
      {[&](size_t i, const std::string& piece, const json& logprobs) {
         return SendEvent(sink, Dump(StreamChunk(header, i, piece, false, nullptr, logprobs)));
       },
       [&](size_t i, const JobOutcome& o) { return SendEvent(sink, Dump(StreamChunk(header, i, "", false, o.finish_reason))); }});
  if (status.error_code() == grpc::StatusCode::CANCELLED) return false;  // the client is gone
  if (!status.ok()) {
    SendEvent(sink, Dump(ErrorBody(FromGrpc(status))));
  } else if (mapped.include_usage) {
    SendEvent(sink, Dump(UsageChunk(header, ChoicesUsage(calls, mapped))));
  }
  SendEvent(sink, "[DONE]");
  sink.done();
  return true;
}

// "host:port" -> host (brackets of an IPv6 literal dropped) and port; CheckListenAddress ran first.
std::pair<std::string, int> SplitHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  std::string host = address.substr(0, colon);
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return {host, std::atoi(address.c_str() + colon + 1)};
}

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiServer>> OpenAiServer::Start(const OpenAiServerOptions& options, ServedModel model,
                                                                   std::shared_ptr<grpc::Channel> generation) {
  if (absl::Status s = CheckListenAddress(options.listen); !s.ok()) return s;
  const bool tls = !options.plaintext;
  if (tls && (options.tls.cert_chain_path.empty() || options.tls.private_key_path.empty())) {
    return absl::InvalidArgumentError("http: TLS needs --tls_cert and --tls_key (or choose --plaintext)");
  }
  for (const std::string& path : {options.tls.cert_chain_path, options.tls.private_key_path, options.tls.client_ca_path}) {
    if (!tls || path.empty()) continue;
    if (absl::StatusOr<std::string> read = ReadFileToString(path); !read.ok()) {
      return absl::NotFoundError(absl::StrCat("http: ", read.status().message()));
    }
  }
  std::unique_ptr<OpenAiServer> server(new OpenAiServer());
  server->options_ = options;
  server->model_ = std::move(model);
  server->stub_ = v1::Generation::NewStub(std::move(generation));
  server->created_ = absl::ToUnixSeconds(absl::Now());
  server->watcher_ = std::make_unique<ConnectionWatcher>();
  if (tls) {
    const std::string& ca = options.tls.client_ca_path;
    server->server_ = std::make_unique<httplib::SSLServer>(options.tls.cert_chain_path.c_str(),
                                                           options.tls.private_key_path.c_str(),
                                                           ca.empty() ? nullptr : ca.c_str());
  } else {
    server->server_ = std::make_unique<httplib::Server>();
  }
  if (!server->server_->is_valid()) {
    return absl::InvalidArgumentError("http: cannot set up TLS with --tls_cert, --tls_key and --tls_client_ca");
  }
  const size_t warm = size_t(std::max(options.threads, 1)), max = size_t(std::max(options.max_connections, 1));
  const size_t queued = size_t(std::max(options.max_queued_connections, 0));
  server->server_->new_task_queue = [warm, max, queued, stopping = &server->stopping_] {
    return new ConnectionPool(warm, max, queued, stopping);  // ends before the server (its thread is joined)
  };
  server->server_->set_payload_max_length(options.max_body_bytes);
  server->Routes();
  const auto [host, port] = SplitHostPort(options.listen);
  server->port_ = port == 0 ? server->server_->bind_to_any_port(host) : (server->server_->bind_to_port(host, port) ? port : -1);
  if (server->port_ <= 0) return absl::UnavailableError(absl::StrCat("http: cannot listen on ", options.listen));
  server->thread_ = std::thread([s = server.get()] { s->server_->listen_after_bind(); });
  return server;
}

absl::StatusOr<std::unique_ptr<OpenAiServer>> OpenAiServer::StartIfAsked(const OpenAiServerOptions& options,
                                                                          ServedModel model,
                                                                          std::shared_ptr<grpc::Channel> generation) {
  if (options.listen.empty()) return std::unique_ptr<OpenAiServer>();
  const std::string id = model.id;
  absl::StatusOr<std::unique_ptr<OpenAiServer>> server = Start(options, std::move(model), std::move(generation));
  if (server.ok()) {
    A2SF_LOG(INFO) << "OpenAI-compatible API on " << (options.plaintext ? "http" : "https") << "://" << options.listen
                   << "/v1 (port " << (*server)->port() << ", model '" << id << "')";
  }
  return server;
}

OpenAiServer::~OpenAiServer() {
  stopping_ = true;  // a listen thread waiting for room in a full connection queue goes on
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void OpenAiServer::Routes() {
  httplib::Server& s = *server_;
  const auto method_not_allowed = [](const char* allowed) {
    return [allowed](const httplib::Request& request, httplib::Response& response) {
      SendError(response, Error(405, absl::StrCat("method ", request.method, " is not allowed on ", request.path,
                                                   " (use ", allowed, ")")));
      response.set_header("Allow", allowed);
    };
  };
  for (const auto& [path, endpoint] : {std::pair{"/v1/completions", Endpoint::kCompletions},
                                       std::pair{"/v1/chat/completions", Endpoint::kChatCompletions}}) {
    s.Post(path, [this, endpoint = endpoint](const httplib::Request& request, httplib::Response& response,
                                             const httplib::ContentReader& content) {
      std::shared_ptr<MappedRequest> mapped = ReadRequest(content, endpoint, response);
      if (mapped != nullptr) Generate(request, std::move(mapped), response, endpoint);
    });
    s.Get(path, method_not_allowed("POST"));
  }
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& response) {
    response.set_content(Dump(ModelList(model_.id, created_)), "application/json");
  });
  s.Get("/v1/models/(.+)", [this](const httplib::Request& request, httplib::Response& response) {
    if (request.matches[1] != model_.id) {
      ApiError error = Error(404, absl::StrCat("The model '", request.matches[1].str(), "' does not exist"));
      error.code = "model_not_found";
      return SendError(response, error);
    }
    response.set_content(Dump(ModelList(model_.id, created_)["data"][0]), "application/json");
  });
  s.Get("/health", [](const httplib::Request&, httplib::Response& response) {
    response.set_content(Dump({{"status", "ok"}}), "application/json");
  });
  for (const char* path : {"/v1/models", "/health"}) s.Post(path, method_not_allowed("GET"));
  // httplib's own refusals (unknown path, oversized or malformed request) in OpenAI's shape.
  s.set_error_handler([max_body = options_.max_body_bytes](const httplib::Request& request, httplib::Response& response) {
    if (!response.body.empty()) return;
    const int status = response.status;
    SendError(response, Error(status, status == 404   ? absl::StrCat("no such endpoint: ", request.method, " ", request.path)
                                      : status == 413 ? absl::StrCat("the request body is larger than ", max_body, " bytes")
                                                      : absl::StrCat("bad request (HTTP ", status, ")")));
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& response, std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {  // a bug, not a client's fault: answer rather than crash
      A2SF_LOG(ERROR) << "http: " << x.what();
    } catch (...) {
    }
    SendError(response, Error(500, "internal error", "server_error"));
  });
}

std::shared_ptr<MappedRequest> OpenAiServer::ReadRequest(const httplib::ContentReader& content, Endpoint endpoint,
                                                         httplib::Response& response) {
  // The body and its JSON live (and stay reserved) only while the request is read and mapped.
  BodyReservation reservation(&body_bytes_in_flight_, options_.max_body_bytes_in_flight);
  std::string body;
  if (!ReadBody(content, options_.max_body_bytes, options_.body_deadline, &reservation, &body, response)) {
    return nullptr;
  }
  json parsed;
  ApiError error;
  auto mapped = std::make_shared<MappedRequest>();
  if (!ParseBody(body, &parsed, &error) || !MapRequest(endpoint, parsed, model_, mapped.get(), &error)) {
    SendError(response, error);
    return nullptr;
  }
  return mapped;
}

void OpenAiServer::Generate(const httplib::Request& request, std::shared_ptr<MappedRequest> mapped,
                            httplib::Response& response, Endpoint endpoint) {
  auto calls = std::make_shared<ChoiceCalls>(stub_.get(), mapped, endpoint, model_.tokenizer);
  calls->CancelWhenClosed(watcher_.get(), ConnectionSocket(request));
  if (grpc::Status accepted = calls->Accept(); !accepted.ok()) return SendError(response, FromGrpc(accepted));
  const char* prefix = endpoint == Endpoint::kCompletions ? "cmpl-" : "chatcmpl-";
  const ResponseHeader header{endpoint, prefix + calls->outcome(0).id, absl::ToUnixSeconds(absl::Now()), model_.id};
  if (!mapped->stream) return Complete(*calls, *mapped, header, response);
  // The stream runs in httplib's content provider, after this handler returns, on the same thread.
  response.set_chunked_content_provider("text/event-stream", [calls, mapped, header](size_t, httplib::DataSink& sink) {
    return Stream(*calls, *mapped, header, sink);
  });
  response.set_header("Cache-Control", "no-cache");
}

}  // namespace a2sf::worker::http
