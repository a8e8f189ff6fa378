#include "worker/http/openai_server.h"

#include <openssl/ssl.h>

#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "civetweb.h"
#include "common/files.h"
#include "common/log.h"
#include "common/metrics/metrics_server.h"

namespace a2sf::worker::http {

using nlohmann::json;

namespace {

void SendJson(mg_connection* conn, int status, const json& body, const char* allow = nullptr) {
  const std::string text = body.dump(-1, ' ', false, json::error_handler_t::replace);
  mg_response_header_start(conn, status);
  mg_response_header_add(conn, "Content-Type", "application/json", -1);
  mg_response_header_add(conn, "Content-Length", std::to_string(text.size()).c_str(), -1);
  if (allow != nullptr) mg_response_header_add(conn, "Allow", allow, -1);
  mg_response_header_send(conn);
  mg_write(conn, text.data(), text.size());
}

void SendError(mg_connection* conn, const ApiError& error, const char* allow = nullptr) {
  SendJson(conn, error.http_status, ErrorBody(error), allow);
}

ApiError Error(int status, std::string message, std::string type = "invalid_request_error") {
  ApiError e;
  e.http_status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  return e;
}

// Reads the body up to `limit` bytes; false (413 sent) when it is larger, whether or not it declared
// its length.
bool ReadBody(mg_connection* conn, size_t limit, std::string* body) {
  const long long declared = mg_get_request_info(conn)->content_length;
  if (declared > 0 && size_t(declared) > limit) {
    SendError(conn, Error(413, absl::StrCat("request body of ", declared, " bytes exceeds the limit of ", limit)));
    return false;
  }
  char buffer[16384];
  for (int n; (n = mg_read(conn, buffer, sizeof(buffer))) > 0;) {
    body->append(buffer, size_t(n));
    if (body->size() > limit) {
      SendError(conn, Error(413, absl::StrCat("request body exceeds the limit of ", limit, " bytes")));
      return false;
    }
  }
  return true;
}

// One server-sent event; false when the client is gone.
bool SendEvent(mg_connection* conn, const std::string& data) {
  const std::string event = absl::StrCat("data: ", data, "\n\n");
  return mg_send_chunk(conn, event.data(), unsigned(event.size())) > 0;
}

bool SendEvent(mg_connection* conn, const json& data) {
  return SendEvent(conn, data.dump(-1, ' ', false, json::error_handler_t::replace));
}

// The TLS context as the gRPC port has it: certificate chain, key, and optionally required client
// certificates. civetweb calls this once for its SSL_CTX (1: set up here).
int InitTls(void* ssl_context, void* user_data) {
  const auto& tls = static_cast<const OpenAiServerOptions*>(user_data)->tls;
  auto* ctx = static_cast<SSL_CTX*>(ssl_context);
  if (SSL_CTX_use_certificate_chain_file(ctx, tls.cert_chain_path.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, tls.private_key_path.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    A2SF_LOG(ERROR) << "http: cannot load the TLS certificate or key";
    return -1;
  }
  if (!tls.client_ca_path.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, tls.client_ca_path.c_str(), nullptr) != 1) {
      A2SF_LOG(ERROR) << "http: cannot load the client CA " << tls.client_ca_path;
      return -1;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return 1;
}

}  // namespace

absl::StatusOr<std::unique_ptr<OpenAiServer>> OpenAiServer::Start(const OpenAiServerOptions& options, ServedModel model,
                                                                   std::shared_ptr<grpc::Channel> generation) {
  if (absl::Status s = CheckListenAddress(options.listen); !s.ok()) return s;
  const bool tls = !options.plaintext;
  if (tls && (options.tls.cert_chain_path.empty() || options.tls.private_key_path.empty())) {
    return absl::InvalidArgumentError("http: TLS needs --tls_cert and --tls_key (or choose --plaintext)");
  }
  if (tls) {
    // Debian 12's civetweb 1.15 dereferences a null OpenSSL function on every TLS connection (its
    // OpenSSL 1.1 table against libssl3): refuse rather than crash on the first client.
    return absl::UnimplementedError(
        "http: TLS on --http_listen is not available with this civetweb build; serve it with --plaintext on a "
        "loopback address behind a TLS-terminating proxy");
    for (const std::string& path : {options.tls.cert_chain_path, options.tls.private_key_path, options.tls.client_ca_path}) {
      if (path.empty()) continue;
      if (absl::StatusOr<std::string> read = ReadFileToString(path); !read.ok()) {
        return absl::NotFoundError(absl::StrCat("http: ", read.status().message()));
      }
    }
  }
  std::unique_ptr<OpenAiServer> server(new OpenAiServer());
  server->options_ = options;
  server->model_ = std::move(model);
  server->stub_ = v1::Generation::NewStub(std::move(generation));
  server->created_ = absl::ToUnixSeconds(absl::Now());
  mg_init_library(tls ? MG_FEATURES_TLS : 0);
  mg_callbacks callbacks = {};
  if (tls) callbacks.init_ssl = InitTls;
  const std::string ports = options.listen + (tls ? "s" : "");
  const std::string threads = std::to_string(options.threads);
  const char* civet_options[] = {"listening_ports", ports.c_str(),  "num_threads", threads.c_str(),
                                 "enable_keep_alive", "yes",         "request_timeout_ms", "60000",
                                 nullptr};
  server->context_ = mg_start(&callbacks, &server->options_, civet_options);
  if (server->context_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("http: cannot listen on ", options.listen,
                                               tls ? " with TLS (check --tls_cert and --tls_key)" : ""));
  }
  mg_set_request_handler(server->context_, "/", &OpenAiServer::Handle, server.get());
  mg_server_port bound[4] = {};
  if (mg_get_server_ports(server->context_, 4, bound) > 0) server->port_ = bound[0].port;
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
  if (context_ != nullptr) mg_stop(context_);
}

int OpenAiServer::Handle(mg_connection* conn, void* self) {
  try {
    static_cast<OpenAiServer*>(self)->Route(conn);
  } catch (const std::exception& e) {  // a bug, not a client's fault: answer rather than crash
    A2SF_LOG(ERROR) << "http: " << e.what();
    SendError(conn, Error(500, "internal error", "server_error"));
  }
  return 1;
}

void OpenAiServer::Route(mg_connection* conn) {
  const mg_request_info* request = mg_get_request_info(conn);
  const std::string path = request->local_uri != nullptr ? request->local_uri : "";
  const std::string method = request->request_method != nullptr ? request->request_method : "";
  const auto only = [&](const char* allowed) {
    if (method == allowed) return true;
    SendError(conn, Error(405, absl::StrCat("method ", method, " is not allowed on ", path, " (use ", allowed, ")")),
              allowed);
    return false;
  };
  if (path == "/v1/completions" || path == "/v1/chat/completions") {
    if (only("POST")) Generate(conn, path == "/v1/completions" ? Endpoint::kCompletions : Endpoint::kChatCompletions);
  } else if (path == "/v1/models") {
    if (only("GET")) SendJson(conn, 200, ModelList(model_.id, created_));
  } else if (path == "/v1/models/" + model_.id) {
    if (only("GET")) SendJson(conn, 200, ModelList(model_.id, created_)["data"][0]);
  } else if (path == "/health") {
    if (only("GET")) SendJson(conn, 200, {{"status", "ok"}});
  } else {
    SendError(conn, Error(404, absl::StrCat("no such endpoint: ", method, " ", path)));
  }
}

namespace {

// What a job produced, as the HTTP response reports it.
struct JobOutcome {
  std::string id;
  uint32_t prompt_tokens = 0;
  uint32_t completion_tokens = 0;
  json finish_reason = nullptr;
  size_t text_bytes = 0;  // text produced so far (completions' logprobs text_offset)
};

// Runs one Generate call, handing each event's text and logprobs (null unless asked for) to
// `on_piece`, which returns false when the client is gone: the call is then cancelled, which cancels
// the job. Returns the call's status (OK when the client ended it).
grpc::Status RunJob(v1::Generation::Stub* stub, const MappedRequest& mapped, Endpoint endpoint, JobOutcome* outcome,
                    const std::function<bool(const std::string&, const json&)>& on_piece) {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub->Generate(&context, mapped.generate);
  v1::GenerateResponse event;
  while (reader->Read(&event)) {
    if (event.has_accepted()) {
      outcome->id = event.accepted().job_id();
      outcome->prompt_tokens = event.accepted().prompt_tokens();
    } else if (event.has_tokens()) {
      json logprobs = nullptr;
      size_t offset = outcome->text_bytes;
      for (const v1::TokenLogprobs& token : event.tokens().logprobs()) {
        AppendLogprobs(endpoint, token, offset, &logprobs);
        offset += token.token().piece().size();
      }
      outcome->text_bytes += event.tokens().text().size();
      if ((!event.tokens().text().empty() || !logprobs.is_null()) && !on_piece(event.tokens().text(), logprobs)) {
        context.TryCancel();
        reader->Finish();
        return grpc::Status::OK;
      }
    } else if (event.has_finished()) {
      outcome->completion_tokens = event.finished().generated_tokens();
      outcome->finish_reason = FinishReason(event.finished().finish_reason());
    }
  }
  return reader->Finish();
}

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

}  // namespace

void OpenAiServer::Generate(mg_connection* conn, Endpoint endpoint) {
  std::string body;
  if (!ReadBody(conn, options_.max_body_bytes, &body)) return;
  const json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    SendError(conn, Error(400, "We could not parse the JSON body of your request: it is not valid JSON."));
    return;
  }
  MappedRequest mapped;
  ApiError error;
  if (!MapRequest(endpoint, parsed, model_, &mapped, &error)) {
    SendError(conn, error);
    return;
  }
  ResponseHeader header{endpoint, "", absl::ToUnixSeconds(absl::Now()), model_.id};
  const char* prefix = endpoint == Endpoint::kCompletions ? "cmpl-" : "chatcmpl-";
  JobOutcome outcome;
  if (!mapped.stream) {
    std::string text;
    json logprobs = nullptr;
    grpc::Status status = RunJob(stub_.get(), mapped, endpoint, &outcome, [&](const std::string& piece, const json& lp) {
      text += piece;
      MergeLogprobs(lp, &logprobs);
      return true;
    });
    if (!status.ok()) return SendError(conn, FromGrpc(status));
    header.id = prefix + outcome.id;
    SendJson(conn, 200, CompleteResponse(header, text, outcome.finish_reason,
                                         Usage(outcome.prompt_tokens, outcome.completion_tokens), logprobs));
    return;
  }
  // Streaming: headers go out with the first piece of text, so that a job the worker refuses is still
  // an HTTP error rather than an error event.
  bool started = false;
  bool client_gone = false;
  const auto start = [&]() {
    if (started) return true;
    started = true;
    header.id = prefix + outcome.id;
    mg_send_http_ok(conn, "text/event-stream", -1);
    // Chat streams open with the assistant's role, as OpenAI's do.
    if (endpoint == Endpoint::kChatCompletions && !SendEvent(conn, StreamChunk(header, "", true, nullptr))) {
      client_gone = true;
    }
    return !client_gone;
  };
  grpc::Status status = RunJob(stub_.get(), mapped, endpoint, &outcome, [&](const std::string& piece, const json& lp) {
    if (!start()) return false;
    client_gone = !SendEvent(conn, StreamChunk(header, piece, false, nullptr, lp));
    return !client_gone;
  });
  if (client_gone) return;
  if (!status.ok() && !started) return SendError(conn, FromGrpc(status));
  if (!start()) return;
  if (!status.ok()) {
    SendEvent(conn, ErrorBody(FromGrpc(status)));
  } else {
    SendEvent(conn, StreamChunk(header, "", false, outcome.finish_reason));
    if (mapped.include_usage) SendEvent(conn, UsageChunk(header, Usage(outcome.prompt_tokens, outcome.completion_tokens)));
  }
  SendEvent(conn, std::string("[DONE]"));
  mg_send_chunk(conn, "", 0);
}

}  // namespace a2sf::worker::http
