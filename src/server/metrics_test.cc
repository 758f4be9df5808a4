#include "server/metrics.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <sys/wait.h>

namespace dsi::server {
namespace {

EngineStats sample_stats() {
  EngineStats s;
  s.num_running = 3;
  s.num_waiting = 1;
  s.kv_cache_usage = 0.5;
  s.prefix_cache_queries = 100;
  s.prefix_cache_hits = 40;
  s.prompt_tokens_total = 1000;
  s.generation_tokens_total = 200;
  s.time_to_first_token_s = {.bounds = {0.01, 0.1, 1}, .counts = {1, 2, 3, 4}, .sum = 12.5, .count = 10};
  s.time_per_output_token_s = {.bounds = {0.005, 0.05}, .counts = {5, 0, 1}, .sum = 0.2, .count = 6};
  return s;
}

std::string render() {
  ServerCounters c;
  c.count_success("stop");
  c.count_success("stop");
  c.count_success("length");
  c.count_failure("client_disconnect");
  c.count_http("/v1/chat/completions", 200);
  c.count_http("/v1/chat/completions", 400);
  return render_metrics(sample_stats(), c.snapshot(), "model \"x\"");
}

TEST(MetricsTest, SeriesAndCumulativeBuckets) {
  const std::string text = render();
  for (const char* name :
       {"dsinfer:num_requests_running", "dsinfer:num_requests_waiting", "dsinfer:kv_cache_usage_perc",
        "dsinfer:prefix_cache_hits_total", "dsinfer:prefix_cache_queries_total", "dsinfer:prompt_tokens_total",
        "dsinfer:generation_tokens_total", "dsinfer:request_success_total", "dsinfer:time_to_first_token_seconds",
        "dsinfer:time_per_output_token_seconds", "dsinfer:e2e_request_latency_seconds"}) {
    EXPECT_NE(text.find(str_cat("# HELP ", name, " ")), std::string::npos) << name;
    EXPECT_NE(text.find(str_cat("# TYPE ", name, " ")), std::string::npos) << name;
  }
  const std::string l = "model_name=\"model \\\"x\\\"\"";
  EXPECT_NE(text.find("dsinfer:num_requests_running{" + l + "} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("dsinfer:kv_cache_usage_perc{" + l + "} 0.5\n"), std::string::npos);
  EXPECT_NE(text.find("dsinfer:time_to_first_token_seconds_bucket{" + l + ",le=\"0.01\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("dsinfer:time_to_first_token_seconds_bucket{" + l + ",le=\"0.1\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("dsinfer:time_to_first_token_seconds_bucket{" + l + ",le=\"1\"} 6\n"), std::string::npos);
  EXPECT_NE(text.find("dsinfer:time_to_first_token_seconds_bucket{" + l + ",le=\"+Inf\"} 10\n"), std::string::npos);
  EXPECT_NE(text.find("dsinfer:time_to_first_token_seconds_sum{" + l + "} 12.5\n"), std::string::npos);
  EXPECT_NE(text.find("dsinfer:time_to_first_token_seconds_count{" + l + "} 10\n"), std::string::npos);
  EXPECT_NE(text.find("dsinfer:request_success_total{" + l + ",finished_reason=\"stop\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("dsinfer:request_failure_total{" + l + ",reason=\"client_disconnect\"} 1\n"),
            std::string::npos);
  // An empty histogram still has its +Inf bucket, sum and count.
  EXPECT_NE(text.find("dsinfer:e2e_request_latency_seconds_bucket{" + l + ",le=\"+Inf\"} 0\n"), std::string::npos);
}

TEST(MetricsTest, PromtoolAcceptsTheExposition) {
  const std::string promtool = DSI_PROMTOOL;
  ASSERT_TRUE(promtool.find("NOTFOUND") == std::string::npos && access(promtool.c_str(), X_OK) == 0)
      << "promtool is missing: install the Debian package 'prometheus' (scripts/setup.sh)";
  char path[] = "/tmp/dsinfer_metrics_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream(path) << render();
  }
  const std::string cmd = str_cat(promtool, " check metrics < ", path, " 2>&1");
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string output;
  char buf[512];
  while (fgets(buf, sizeof(buf), p)) output += buf;
  const int status = pclose(p);
  std::remove(path);
  // Exit 1 is a parse error. Exit 3 is lint findings; the only one allowed is the ':' in the names, which are
  // `dsinfer:*` on purpose (vLLM's `vllm:*` convention, which dashboards expect).
  ASSERT_TRUE(WIFEXITED(status));
  const int rc = WEXITSTATUS(status);
  EXPECT_TRUE(rc == 0 || rc == 3) << output;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_NE(line.find("metric names should not contain ':'"), std::string::npos) << "promtool: " << line;
  }
}

}  // namespace
}  // namespace dsi::server
