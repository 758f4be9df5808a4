#include "server/metrics.h"

#include <cmath>
#include <cstdio>

namespace dsi::server {

void ServerCounters::count_success(const std::string& finish_reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_.success[finish_reason];
}

void ServerCounters::count_failure(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_.failure[reason];
}

void ServerCounters::count_http(const std::string& route, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_.http[{route, status}];
}

ServerCounters::Snapshot ServerCounters::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_;
}

namespace {

// Label values escape backslash, double quote and newline.
std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.12g", v);
  return buf;
}

class Writer {
 public:
  explicit Writer(const std::string& model) : labels_(str_cat("model_name=\"", escape_label(model), "\"")) {}

  void header(const std::string& name, const char* type, const char* help) {
    out_ += str_cat("# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  }
  void sample(const std::string& name, double value, const std::string& extra_labels = "") {
    out_ += str_cat(name, "{", labels_, extra_labels.empty() ? "" : ",", extra_labels, "} ", number(value), "\n");
  }
  void gauge(const std::string& name, const char* help, double value) {
    header(name, "gauge", help);
    sample(name, value);
  }
  void counter(const std::string& name, const char* help, double value) {
    header(name, "counter", help);
    sample(name, value);
  }
  // Cumulative _bucket{le} series from per-bucket counts, then _sum and _count.
  void histogram(const std::string& name, const char* help, const HistogramSnapshot& h) {
    header(name, "histogram", help);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < h.bounds.size(); ++i) {
      if (i < h.counts.size()) cumulative += h.counts[i];
      sample(name + "_bucket", static_cast<double>(cumulative), str_cat("le=\"", number(h.bounds[i]), "\""));
    }
    // +Inf holds every observation; use count so the series stays consistent even if counts is short.
    sample(name + "_bucket", static_cast<double>(std::max(h.count, cumulative)), "le=\"+Inf\"");
    sample(name + "_sum", h.sum);
    sample(name + "_count", static_cast<double>(std::max(h.count, cumulative)));
  }
  std::string& out() { return out_; }
  const std::string& labels() const { return labels_; }

 private:
  std::string labels_;
  std::string out_;
};

}  // namespace

std::string render_metrics(const EngineStats& s, const ServerCounters::Snapshot& server,
                           const std::string& model_name) {
  Writer w(model_name);
  w.gauge("dsinfer:num_requests_running", "Number of requests in the running batch.", s.num_running);
  w.gauge("dsinfer:num_requests_waiting", "Number of requests waiting to be scheduled.", s.num_waiting);
  w.gauge("dsinfer:kv_cache_usage_perc", "KV cache usage; 1 means 100 percent.", s.kv_cache_usage);
  w.gauge("dsinfer:kv_cache_capacity_tokens", "KV cache capacity in tokens.", s.kv_cache_tokens);
  w.counter("dsinfer:prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.",
            s.prefix_cache_queries);
  w.counter("dsinfer:prefix_cache_hits_total", "Prompt tokens found in the prefix cache.", s.prefix_cache_hits);
  w.counter("dsinfer:prompt_tokens_total", "Prefill tokens processed.", s.prompt_tokens_total);
  w.counter("dsinfer:generation_tokens_total", "Generated tokens.", s.generation_tokens_total);
  w.counter("dsinfer:num_preemptions_total", "Requests preempted to free KV cache.", s.preemptions_total);
  w.counter("dsinfer:engine_requests_finished_total", "Requests the engine finished, for any reason.",
            s.requests_finished_total);

  w.header("dsinfer:request_success_total", "counter", "Requests that finished normally, by finish reason.");
  for (const char* reason : {"stop", "length"}) {
    auto it = server.success.find(reason);
    w.sample("dsinfer:request_success_total", it == server.success.end() ? 0.0 : static_cast<double>(it->second),
             str_cat("finished_reason=\"", reason, "\""));
  }
  for (const auto& [reason, n] : server.success) {
    if (reason != "stop" && reason != "length") {
      w.sample("dsinfer:request_success_total", static_cast<double>(n),
               str_cat("finished_reason=\"", escape_label(reason), "\""));
    }
  }
  w.header("dsinfer:request_failure_total", "counter",
           "Requests that did not finish normally: invalid_request, engine_error, aborted, client_disconnect.");
  std::map<std::string, uint64_t> failures = server.failure;
  for (const char* reason : {"invalid_request", "engine_error", "aborted", "client_disconnect"}) failures[reason];
  for (const auto& [reason, n] : failures) {
    w.sample("dsinfer:request_failure_total", static_cast<double>(n), str_cat("reason=\"", escape_label(reason), "\""));
  }
  w.header("dsinfer:http_requests_total", "counter", "HTTP requests answered, by route and status code.");
  for (const auto& [key, n] : server.http) {
    w.sample("dsinfer:http_requests_total", static_cast<double>(n),
             str_cat("route=\"", escape_label(key.first), "\",code=\"", key.second, "\""));
  }

  w.histogram("dsinfer:time_to_first_token_seconds", "Time to first token in seconds.", s.time_to_first_token_s);
  w.histogram("dsinfer:time_per_output_token_seconds", "Time per output token (decode) in seconds.",
              s.time_per_output_token_s);
  w.histogram("dsinfer:e2e_request_latency_seconds", "End-to-end request latency in seconds.",
              s.e2e_request_latency_s);
  return std::move(w.out());
}

}  // namespace dsi::server
