// Prometheus text exposition (format 0.0.4) for GET /metrics: engine gauges, counters and latency histograms
// from EngineStats, plus the HTTP server's own counters. Written by hand (no prometheus-cpp in Debian); the unit
// test checks the output with `promtool check metrics`.
// Thread use: ServerCounters is updated from every HTTP handler thread (atomics and one mutex).
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "engine/engine.h"

namespace dsi::server {

class ServerCounters {
 public:
  // A request that finished normally; reason is the OpenAI finish_reason ("stop", "length").
  void count_success(const std::string& finish_reason);
  // A request that did not: "invalid_request" (4xx), "engine_error", "aborted" (shutdown), "client_disconnect".
  void count_failure(const std::string& reason);
  void count_http(const std::string& route, int status);

  struct Snapshot {
    std::map<std::string, uint64_t> success;            // finish_reason -> count
    std::map<std::string, uint64_t> failure;            // reason -> count
    std::map<std::pair<std::string, int>, uint64_t> http;  // (route, status) -> count
  };
  Snapshot snapshot() const;

 private:
  mutable std::mutex mu_;
  Snapshot counts_;
};

// The whole exposition text. model_name becomes the model_name label of every engine series.
std::string render_metrics(const EngineStats& stats, const ServerCounters::Snapshot& server,
                           const std::string& model_name);

}  // namespace dsi::server
