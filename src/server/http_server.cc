#include "server/http_server.h"

#include <httplib.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "engine/engine.h"
#include "server/metrics.h"
#include "server/openai_protocol.h"

namespace dsi::server {

namespace {

constexpr const char* kJson = "application/json";

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

ApiError make_error(int status, std::string type, std::string message, std::string code = "") {
  ApiError e;
  e.http_status = status;
  e.type = std::move(type);
  e.message = std::move(message);
  e.code = std::move(code);
  return e;
}

// Engine::submit errors: user errors are 400, the rest 503 (shutting down) or 500.
ApiError submit_error(const Status& s) {
  if (s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kOutOfRange) {
    return bad_request(s.message());
  }
  if (s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kUnsupported) return make_error(503, "service_unavailable", s.message());
  return make_error(500, "internal_server_error", s.message());
}

bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size() || b.empty()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// The state of one streaming response, shared by httplib's content provider and its releaser.
struct StreamState {
  ParsedRequest request;
  std::vector<std::shared_ptr<RequestHandle>> handles;
  std::unique_ptr<ResponseBuilder> builder;
  std::vector<bool> finished;
  bool ended = false;
  std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
};

}  // namespace

struct HttpServer::Impl {
  ServerConfig config;
  httplib::Server svr;
  std::atomic<Engine*> engine{nullptr};
  std::atomic<bool> shutting_down{false};
  std::atomic<int> in_flight{0};
  std::atomic<uint64_t> next_id{0};
  std::mutex mu;  // guards fatal_error, shutdown_done
  std::string fatal_error;
  ModelInfo info;
  bool shutdown_done = false;
  int bound_port = -1;
  ServerCounters counters;
  const int64_t start_time = unix_now();

  explicit Impl(ServerConfig c) : config(std::move(c)) {}

  void set_fatal(const std::string& message) {
    std::lock_guard<std::mutex> lock(mu);
    if (fatal_error.empty()) fatal_error = message.empty() ? "engine error" : message;
  }

  ModelInfo model_info() {
    std::lock_guard<std::mutex> lock(mu);
    return info;
  }

  std::string fatal() {
    std::lock_guard<std::mutex> lock(mu);
    return fatal_error;
  }

  void send_error(httplib::Response& res, const ApiError& e) {
    res.status = e.http_status;
    res.set_content(error_body(e), kJson);
  }

  std::string new_id(const char* prefix) {
    return str_cat(prefix, std::hex, start_time, next_id.fetch_add(1));
  }

  void routes();
  void handle_generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res);
  void finish_counts(const ResponseBuilder& b, const ParsedRequest& r, const std::vector<std::string>& reasons);
};

void HttpServer::Impl::routes() {
  svr.new_task_queue = [n = config.num_threads] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
  svr.set_keep_alive_max_count(static_cast<size_t>(config.keep_alive_max_count));
  svr.set_keep_alive_timeout(config.keep_alive_timeout_s);
  svr.set_read_timeout(config.read_timeout_s, 0);
  svr.set_write_timeout(config.write_timeout_s, 0);
  svr.set_payload_max_length(config.max_body_bytes);

  svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (config.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    static constexpr std::string_view kBearer = "Bearer ";
    const bool ok = auth.size() > kBearer.size() && std::string_view(auth).substr(0, kBearer.size()) == kBearer &&
                    constant_time_equal(auth.substr(kBearer.size()), config.api_key);
    if (ok) return httplib::Server::HandlerResponse::Unhandled;
    ApiError e = make_error(401, "invalid_request_error",
                            auth.empty() ? "Missing API key: send 'Authorization: Bearer <key>'."
                                         : "Incorrect API key provided.",
                            "invalid_api_key");
    send_error(res, e);
    counters.count_http(req.path, 401);
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 404) {
      send_error(res, make_error(404, "invalid_request_error", str_cat("No route for ", req.method, " ", req.path),
                                 "not_found"));
    } else if (res.status == 413) {
      send_error(res, bad_request(str_cat("request body is larger than ", config.max_body_bytes, " bytes")));
    } else if (res.status >= 400) {
      send_error(res, make_error(res.status, "invalid_request_error", str_cat("HTTP error ", res.status)));
    }
  });
  svr.set_exception_handler([this](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown exception";
    try {
      if (ep) std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, make_error(500, "internal_server_error", str_cat("internal error: ", what)));
  });

  svr.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generate(Endpoint::kChatCompletions, req, res);
  });
  svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_generate(Endpoint::kCompletions, req, res);
  });
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    Engine* e = engine.load();
    const ModelInfo mi = model_info();
    res.set_content(models_body(mi.served_model_name, e ? e->max_model_len() : 0, mi.model_note, start_time),
                    kJson);
  });
  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const std::string err = fatal();
    if (!err.empty()) {
      res.status = 503;
      res.set_content(str_cat("{\"status\":\"error\",\"message\":\"engine failed: see the server log\"}"), kJson);
    } else if (engine.load() == nullptr) {
      res.status = 503;
      res.set_content("{\"status\":\"loading\"}", kJson);
    } else if (shutting_down.load()) {
      res.status = 503;
      res.set_content("{\"status\":\"shutting_down\"}", kJson);
    } else {
      res.set_content("{\"status\":\"ok\"}", kJson);
    }
  });
  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    Engine* e = engine.load();
    EngineStats stats = e ? e->stats() : EngineStats();
    res.set_content(render_metrics(stats, counters.snapshot(), model_info().served_model_name),
                    "text/plain; version=0.0.4; charset=utf-8");
  });
  svr.Get("/version", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(str_cat("{\"version\":\"", config.version, "\"}"), kJson);
  });
}

void HttpServer::Impl::finish_counts(const ResponseBuilder& b, const ParsedRequest& r,
                                     const std::vector<std::string>& reasons) {
  if (b.error()) {
    counters.count_failure(b.error()->http_status == 500 ? "engine_error" : "aborted");
    return;
  }
  counters.count_success(reasons.empty() ? "stop" : reasons.front());
}

void HttpServer::Impl::handle_generate(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
  const char* route = endpoint == Endpoint::kChatCompletions ? "/v1/chat/completions" : "/v1/completions";
  Engine* e = engine.load();
  if (e == nullptr) {
    send_error(res, make_error(503, "service_unavailable", "the model is still loading; retry shortly"));
    return;
  }
  if (shutting_down.load()) {
    send_error(res, make_error(503, "service_unavailable", "the server is shutting down"));
    return;
  }
  const ModelInfo mi = model_info();
  ProtocolContext ctx{.tokenizer = &e->tokenizer(),
                      .served_model_name = mi.served_model_name,
                      .max_model_len = e->max_model_len(),
                      .reasoning = mi.reasoning};
  auto state = std::make_shared<StreamState>();
  if (auto err = parse_request(endpoint, req.body, ctx, &state->request)) {
    counters.count_failure("invalid_request");
    counters.count_http(route, err->http_status);
    send_error(res, *err);
    return;
  }
  for (const GenerationRequest& g : state->request.choices) {
    auto handle = e->submit(g);
    if (!handle.ok()) {
      for (auto& h : state->handles) e->abort(h->id());
      ApiError err = submit_error(handle.status());
      counters.count_failure(err.http_status == 400 ? "invalid_request" : "aborted");
      counters.count_http(route, err.http_status);
      send_error(res, err);
      return;
    }
    state->handles.push_back(std::move(handle).value());
  }
  const size_t n = state->handles.size();
  state->finished.assign(n, false);
  state->builder = std::make_unique<ResponseBuilder>(
      state->request, e->tokenizer(), new_id(endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-"),
      unix_now());
  const auto poll = std::chrono::milliseconds(n == 1 ? 200 : 2);
  counters.count_http(route, 200);

  if (!state->request.stream) {
    in_flight.fetch_add(1);
    std::vector<std::string> reasons;
    while (!state->builder->all_finished()) {
      for (size_t i = 0; i < n; ++i) {
        GenerationDelta d;
        if (state->finished[i] || !state->handles[i]->next(&d, poll)) continue;
        if (d.finished) {
          state->finished[i] = true;
          reasons.push_back(d.finish_reason);
        }
        state->builder->add_delta(static_cast<int>(i), d);
      }
    }
    finish_counts(*state->builder, state->request, reasons);
    if (state->builder->error()) send_error(res, *state->builder->error());
    else res.set_content(state->builder->final_body(), kJson);
    in_flight.fetch_sub(1);
    return;
  }

  in_flight.fetch_add(1);
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  auto reasons = std::make_shared<std::vector<std::string>>();
  res.set_chunked_content_provider(
      "text/event-stream",
      [this, state, e, poll, reasons](size_t, httplib::DataSink& sink) {
        auto write = [&](const std::string& text) {
          if (text.empty()) return true;
          state->last_write = std::chrono::steady_clock::now();
          return sink.write(text.data(), text.size());
        };
        if (!sink.is_writable()) return false;  // the releaser aborts the engine requests
        std::string out;
        for (size_t i = 0; i < state->handles.size(); ++i) {
          GenerationDelta d;
          if (state->finished[i] || !state->handles[i]->next(&d, poll)) continue;
          if (d.finished) {
            state->finished[i] = true;
            reasons->push_back(d.finish_reason);
            }
          out += state->builder->stream_delta(static_cast<int>(i), d);
          if (state->builder->error()) break;
        }
        if (state->builder->error() || state->builder->all_finished()) {
          // An error event ends the stream at once: abort the other choices.
          for (size_t i = 0; i < state->handles.size(); ++i) {
            if (!state->finished[i]) e->abort(state->handles[i]->id());
          }
          std::fill(state->finished.begin(), state->finished.end(), true);
          out += state->builder->stream_end();
          state->ended = true;
          const bool ok = write(out);
          sink.done();
          return ok;
        }
        if (out.empty() && std::chrono::steady_clock::now() - state->last_write > std::chrono::seconds(2)) {
          out = ": keep-alive\n\n";  // an SSE comment: finds clients that went away while the request waits
        }
        return write(out);
      },
      [this, state, e, reasons](bool) {
        if (!state->ended) {
          for (size_t i = 0; i < state->handles.size(); ++i) {
            if (!state->finished[i]) e->abort(state->handles[i]->id());
          }
          counters.count_failure("client_disconnect");
        } else {
          finish_counts(*state->builder, state->request, *reasons);
        }
        in_flight.fetch_sub(1);
      });
}

HttpServer::HttpServer(ServerConfig config) : impl_(std::make_unique<Impl>(std::move(config))) { impl_->routes(); }

HttpServer::~HttpServer() {
  if (impl_->svr.is_running()) impl_->svr.stop();
}

Status HttpServer::bind() {
  const ServerConfig& c = impl_->config;
  if (c.port == 0) {
    impl_->bound_port = impl_->svr.bind_to_any_port(c.host);
    if (impl_->bound_port < 0) return Status::IoError(str_cat("cannot bind ", c.host, " to any port"));
  } else {
    if (!impl_->svr.bind_to_port(c.host, c.port)) {
      return Status::IoError(str_cat("cannot bind ", c.host, ":", c.port, " (in use, or not a local address?)"));
    }
    impl_->bound_port = c.port;
  }
  return Status::Ok();
}

int HttpServer::port() const { return impl_->bound_port; }

Status HttpServer::listen() {
  if (!impl_->svr.listen_after_bind() && !impl_->shutting_down.load()) {
    return Status::IoError(str_cat("the HTTP listener on port ", impl_->bound_port, " stopped unexpectedly"));
  }
  return Status::Ok();
}

void HttpServer::set_engine(Engine* engine, ModelInfo info) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->info = std::move(info);
  }
  impl_->engine.store(engine);
}

void HttpServer::set_fatal_error(const std::string& message) {
  impl_->set_fatal(message);
}

void HttpServer::shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->shutdown_done) return;
    impl_->shutdown_done = true;
  }
  impl_->shutting_down.store(true);
  if (Engine* e = impl_->engine.load()) e->shutdown(grace);
  // Let the handlers write their final events (bounded: a stuck client must not block the exit).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (impl_->in_flight.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  impl_->svr.stop();
}

}  // namespace dsi::server
