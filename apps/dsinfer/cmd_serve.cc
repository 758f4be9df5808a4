// dsinfer serve: the OpenAI-compatible HTTP server. Binds first (so /health answers 503 while the model loads),
// loads the model (or the random-weights demo model), starts the engine, and serves until SIGTERM / SIGINT, which
// trigger a graceful shutdown (stop admitting, let running requests finish within --shutdown-timeout, exit 0).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <thread>

#include "apps/dsinfer/commands.h"
#include "apps/dsinfer/model_flags.h"  // report_error
#include "apps/dsinfer/serve_model.h"
#include "core/log.h"
#include "engine/engine.h"
#include "server/http_server.h"
#include "tokenizer/tokenizer.h"

namespace dsi::app {

namespace {

// Self-pipe: the signal handler only writes one byte; the main thread waits on the read end.
// While the model loads there is nothing to drain, so a stop signal exits at once (a multi-minute load must not
// ignore Ctrl-C or Kubernetes' SIGTERM); a second signal during the graceful shutdown exits at once too.
int g_signal_pipe[2] = {-1, -1};
volatile sig_atomic_t g_serving = 0;
volatile sig_atomic_t g_signals = 0;

extern "C" void on_stop_signal(int sig) {
  if (!g_serving || g_signals > 0) _exit(128 + sig);
  g_signals = 1;
  const int saved = errno;
  const unsigned char b = static_cast<unsigned char>(sig);
  if (g_signal_pipe[1] >= 0) (void)!write(g_signal_pipe[1], &b, 1);
  errno = saved;
}

Status install_signal_handlers() {
  if (pipe(g_signal_pipe) != 0) return Status::IoError("cannot create the signal pipe");
  for (int fd : g_signal_pipe) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  struct sigaction sa = {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a client that vanished must not kill the server
  return Status::Ok();
}

// Waits for a stop signal, or for the listener to end on its own (then returns -1).
int wait_for_signal(const std::atomic<bool>& listener_done) {
  while (!listener_done.load()) {
    pollfd p = {g_signal_pipe[0], POLLIN, 0};
    if (poll(&p, 1, 200) > 0) {
      unsigned char b = 0;
      if (read(g_signal_pipe[0], &b, 1) == 1) return b;
    }
  }
  return -1;
}

}  // namespace

int cmd_serve(int argc, char** argv) {
  CLI::App cli{"Serve a model over an OpenAI-compatible HTTP API.", "dsinfer serve"};
  std::string model_dir, device = "cpu";
  server::ServerConfig sc;
  EngineConfig ec;
  bool no_prefix_caching = false;
  double shutdown_timeout_s = 30;
  std::string reasoning = "auto";
  std::string served_model_name;
  cli.add_option("--model", model_dir, "Hugging Face model directory (default: the random-weights demo model)");
  cli.add_option("--device", device, "cpu or cuda (the GPU runner: weights, activations and the KV cache on the GPU)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cli.add_option("--host", sc.host, "address to bind (default 127.0.0.1; 0.0.0.0 for all interfaces)");
  cli.add_option("--port", sc.port, "port (default 8000; 0 = any free port)")->check(CLI::Range(0, 65535));
  cli.add_option("--api-key", sc.api_key, "require 'Authorization: Bearer KEY' on /v1/*");
  cli.add_option("--served-model-name", served_model_name, "model id in the API (default: the model's name)");
  cli.add_option("--kv-cache-gb", ec.kv_cache_gb, "memory for the KV cache in GB")->check(CLI::PositiveNumber);
  cli.add_option("--max-num-seqs", ec.max_num_seqs, "most sequences in a batch")->check(CLI::Range(1, 1 << 20));
  cli.add_option("--max-num-batched-tokens", ec.max_num_batched_tokens, "token budget per step")
      ->check(CLI::Range(1, 1 << 24));
  cli.add_option("--max-model-len", ec.max_model_len, "prompt + completion limit (default: the model's)")
      ->check(CLI::NonNegativeNumber);
  cli.add_option("--block-size", ec.block_size, "tokens per KV block")->check(CLI::Range(1, 1024));
  cli.add_flag("--no-prefix-caching", no_prefix_caching, "disable prefix caching");
  cli.add_option("--shutdown-timeout", shutdown_timeout_s,
                 "seconds running requests get to finish after SIGTERM (default 30)")
      ->check(CLI::NonNegativeNumber);
  cli.add_option("--reasoning", reasoning, "split <think> output into reasoning_content: auto|on|off")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  cli.add_option("--http-threads", sc.num_threads, "HTTP worker threads (concurrent connections, default 512)")
      ->check(CLI::Range(8, 1 << 16));
  try {
    cli.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return cli.exit(e);
  }
  ec.enable_prefix_caching = !no_prefix_caching;
  sc.version = DSI_VERSION;

  if (Status s = install_signal_handlers(); !s.ok()) return report_error(s);
  // Bind before loading: a taken port fails at once, and /health answers 503 "loading" meanwhile.
  server::HttpServer http(sc);
  if (Status s = http.bind(); !s.ok()) return report_error(s);
  std::atomic<bool> listener_done{false};
  Status listen_status;
  std::thread listener([&] {
    listen_status = http.listen();
    listener_done.store(true);
  });
  auto stop_listener = [&](const Status& why) {
    http.shutdown(std::chrono::milliseconds(0));
    listener.join();
    return report_error(why);
  };

  auto load = load_serve_model(model_dir, device);
  if (!load.ok()) return stop_listener(load.status());
  ServeModel sm = std::move(load).value();
  server::ModelInfo info;
  info.served_model_name = cli.count("--served-model-name") > 0 ? served_model_name
                           : sm.name.empty()                     ? std::string("dsinfer")
                                                                 : sm.name;
  if (sm.random_weights) info.model_note = "random weights (demo)";
  if (!sm.tokenizer) return stop_listener(Status::NotFound("the model has no tokenizer.json: serve needs one"));
  info.reasoning = reasoning == "on" || (reasoning == "auto" && sm.tokenizer->token_to_id("</think>").has_value());
  const bool random_weights = sm.random_weights;

  auto engine = Engine::create(ec, std::move(sm.model), std::move(sm.tokenizer));
  if (!engine.ok()) return stop_listener(engine.status());
  http.set_engine(engine->get(), info);
  log_info("dsinfer serve: '", info.served_model_name, "'", random_weights ? " (random weights, demo)" : "",
           " on http://", sc.host, ":", http.port(), "/v1 (max_model_len ", (*engine)->max_model_len(), ")");
  std::fprintf(stderr, "dsinfer: serving on http://%s:%d\n", sc.host.c_str(), http.port());
  g_serving = 1;

  const int sig = wait_for_signal(listener_done);
  if (sig < 0) {
    (*engine)->shutdown(std::chrono::milliseconds(0));
    listener.join();
    return report_error(listen_status.ok() ? Status::Internal("the HTTP listener stopped") : listen_status);
  }
  log_info("dsinfer serve: signal ", sig, ": shutting down (grace ", shutdown_timeout_s, " s)");
  http.shutdown(std::chrono::milliseconds(static_cast<int64_t>(std::min(shutdown_timeout_s, 86400.0) * 1000)));
  // Idle keep-alive connections can hold the listener's pool for a while; do not wait on them for long.
  for (int i = 0; i < 300 && !listener_done.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!listener_done.load()) {
    log_info("dsinfer serve: stopped (idle connections dropped)");
    std::fflush(nullptr);
    std::_Exit(0);
  }
  listener.join();
  log_info("dsinfer serve: stopped");
  return 0;
}

}  // namespace dsi::app
