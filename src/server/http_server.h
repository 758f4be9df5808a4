// `dsinfer serve`: the OpenAI-compatible HTTP server (cpp-httplib) in front of an Engine.
//
// Routes: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health, GET /metrics,
// GET /version. Streaming uses SSE (chunked); a client that goes away has its requests aborted in the engine.
//
// Thread use: bind / listen run on one thread (listen blocks); set_engine, set_fatal_error and shutdown may be
// called from any other thread (not from a signal handler). Handlers run on the server's own thread pool.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "core/status.h"

namespace dsi {
class Engine;
}

namespace dsi::server {

// What the server says about the model; known once it has loaded (see HttpServer::set_engine).
struct ModelInfo {
  std::string served_model_name = "dsinfer";
  std::string model_note;            // e.g. "random weights (demo)": shown by /v1/models
  bool reasoning = false;            // split <think>...</think> into reasoning_content
};

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8000;                   // 0: any free port (see HttpServer::port())
  std::string api_key;               // empty: no authentication; else "Authorization: Bearer <key>" on /v1/*
  std::string version = "unknown";   // GET /version
  int num_threads = 512;             // HTTP worker threads = concurrent connections served
  int keep_alive_max_count = 100000;
  int keep_alive_timeout_s = 30;
  int read_timeout_s = 60;
  int write_timeout_s = 60;
  size_t max_body_bytes = 32u << 20;
};

class HttpServer {
 public:
  // The engine may come later (set_engine): until then /health answers 503 and the /v1 routes 503 "loading".
  explicit HttpServer(ServerConfig config);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket (errors name host and port).
  Status bind();
  int port() const;
  // Serves until shutdown(); call after bind().
  Status listen();

  // Borrowed; must outlive the server (or be shut down through it). Until it is set the server is "loading".
  void set_engine(Engine* engine, ModelInfo info);
  // /health turns 503 with this message (e.g. a rank died, the engine loop failed).
  void set_fatal_error(const std::string& message);

  // Graceful stop: refuse new requests (503), engine->shutdown(grace) (running requests finish or are aborted
  // and their clients get an error finish), wait for the in-flight responses to be written (bounded), then stop
  // the listener so listen() returns. Idempotent.
  void shutdown(std::chrono::milliseconds grace);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsi::server
