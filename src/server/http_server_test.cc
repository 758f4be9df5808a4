// The HTTP server end to end over loopback, against the FakeEngine.
#include "server/http_server.h"

#include <gtest/gtest.h>
#include <httplib.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "server/fake_engine_test_util.h"

namespace dsi::server {
namespace {

using json = nlohmann::json;

ModelInfo info() { return {.served_model_name = "ds-test", .model_note = "random weights (demo)"}; }

class ServerFixture {
 public:
  explicit ServerFixture(ServerConfig config, testing::FakeOptions opts = {}, bool with_engine = true)
      : engine_(std::make_unique<testing::FakeEngine>(opts)) {
    config.port = 0;
    config.num_threads = 16;
    server_ = std::make_unique<HttpServer>(config);
    Status s = server_->bind();
    if (!s.ok()) check_failed(__FILE__, __LINE__, "bind", s.to_string());
    if (with_engine) server_->set_engine(engine_.get(), info());
    thread_ = std::thread([this] { (void)server_->listen(); });
  }
  ~ServerFixture() {
    server_->shutdown(std::chrono::milliseconds(100));
    thread_.join();
  }
  httplib::Client client() {
    httplib::Client c("127.0.0.1", server_->port());
    c.set_read_timeout(10, 0);
    return c;
  }
  HttpServer& server() { return *server_; }
  testing::FakeEngine& engine() { return *engine_; }

 private:
  std::unique_ptr<testing::FakeEngine> engine_;
  std::unique_ptr<HttpServer> server_;
  std::thread thread_;
};

ServerConfig config() {
  ServerConfig c;
  c.version = "9.9.9";
  return c;
}


const char* kChat = R"({"model": "ds-test", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})";

TEST(HttpServerTest, ChatNonStreaming) {
  ServerFixture f(config());
  auto c = f.client();
  auto res = c.Post("/v1/chat/completions", kChat, "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200) << res->body;
  json j = json::parse(res->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
  EXPECT_EQ(j["choices"][0]["message"]["content"].get<std::string>().rfind("Hello", 0), 0u);
}

TEST(HttpServerTest, ChatStreamingAndN) {
  ServerFixture f(config());
  auto c = f.client();
  std::string body;
  auto res = c.Post("/v1/chat/completions",
                    R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "n": 2, "stream": true,
                        "stream_options": {"include_usage": true}})",
                    "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  ASSERT_GE(res->body.size(), 14u);
  EXPECT_EQ(res->body.substr(res->body.size() - 14), "data: [DONE]\n\n");
  int finishes[2] = {0, 0};
  bool usage = false;
  size_t pos = 0;
  while ((pos = res->body.find("data: {", pos)) != std::string::npos) {
    const size_t end = res->body.find("\n\n", pos);
    json chunk = json::parse(res->body.substr(pos + 6, end - pos - 6));
    pos = end;
    if (chunk["choices"].empty()) {
      usage = true;
      EXPECT_EQ(chunk["usage"]["completion_tokens"], 6);
      continue;
    }
    const int i = chunk["choices"][0]["index"];
    if (!chunk["choices"][0]["finish_reason"].is_null()) ++finishes[i];
  }
  EXPECT_EQ(finishes[0], 1);
  EXPECT_EQ(finishes[1], 1);
  EXPECT_TRUE(usage);
}

TEST(HttpServerTest, CompletionsAndErrors) {
  ServerFixture f(config());
  auto c = f.client();
  auto res = c.Post("/v1/completions", R"({"prompt": "Once", "max_tokens": 2})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(json::parse(res->body)["object"], "text_completion");

  res = c.Post("/v1/completions", R"({"prompt": "Once", "temperature": 9})", "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 400);
  EXPECT_EQ(json::parse(res->body)["error"]["param"], "temperature");

  res = c.Post("/v1/chat/completions", R"({"model": "nope", "messages": [{"role": "user", "content": "x"}]})",
               "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "model_not_found");

  res = c.Get("/v1/nothing");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 404);
  EXPECT_TRUE(json::parse(res->body)["error"].is_object());
}

TEST(HttpServerTest, InfoRoutes) {
  ServerFixture f(config());
  auto c = f.client();
  auto res = c.Get("/v1/models");
  ASSERT_TRUE(res);
  json m = json::parse(res->body);
  EXPECT_EQ(m["data"][0]["id"], "ds-test");
  EXPECT_EQ(m["data"][0]["dsinfer_note"], "random weights (demo)");
  res = c.Get("/version");
  ASSERT_TRUE(res);
  EXPECT_EQ(json::parse(res->body)["version"], "9.9.9");
  res = c.Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  res = c.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("dsinfer:kv_cache_usage_perc"), std::string::npos);
  f.server().set_fatal_error("rank 3 died");
  res = c.Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
}

TEST(HttpServerTest, HealthIs503WhileLoading) {
  ServerFixture f(config(), {}, /*with_engine=*/false);
  auto c = f.client();
  auto res = c.Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  res = c.Post("/v1/chat/completions", kChat, "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 503);
  f.server().set_engine(&f.engine(), info());
  res = c.Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(HttpServerTest, ApiKey) {
  ServerConfig cfg = config();
  cfg.api_key = "sekret";
  ServerFixture f(cfg);
  auto c = f.client();
  auto res = c.Post("/v1/chat/completions", kChat, "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  EXPECT_EQ(json::parse(res->body)["error"]["code"], "invalid_api_key");
  c.set_bearer_token_auth("wrong");
  res = c.Get("/v1/models");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 401);
  c.set_bearer_token_auth("sekret");
  res = c.Post("/v1/chat/completions", kChat, "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  // Health and metrics stay open for probes.
  httplib::Client open("127.0.0.1", f.server().port());
  res = open.Get("/health");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
}

TEST(HttpServerTest, EngineErrorIsNotSilent) {
  testing::FakeOptions opts;
  opts.fail_after_tokens = 1;
  ServerFixture f(config(), opts);
  auto c = f.client();
  auto res = c.Post("/v1/chat/completions", kChat, "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 500);
  EXPECT_NE(json::parse(res->body)["error"]["message"].get<std::string>().find("fake forward failed"),
            std::string::npos);
  res = c.Post("/v1/chat/completions",
               R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": true})",
               "application/json");
  ASSERT_TRUE(res);
  EXPECT_NE(res->body.find("\"error\""), std::string::npos) << res->body;
  // A failed request is that request's error; the server stays healthy for everyone else (set_fatal_error is
  // for failures of the whole engine, e.g. a dead rank).
  EXPECT_EQ(c.Get("/health")->status, 200);
}

TEST(HttpServerTest, ClientDisconnectAbortsTheRequest) {
  testing::FakeOptions opts;
  opts.delay_per_token = std::chrono::milliseconds(20);
  opts.reply = std::string(400, 'a');
  ServerFixture f(config(), opts);
  auto c = f.client();
  int received = 0;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.body = R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1000, "ignore_eos": true,
                 "stream": true})";
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++received < 5; };
  auto res = c.send(req);  // the receiver cancels after a few chunks: the client closes the connection
  EXPECT_GE(received, 5);
  for (int i = 0; i < 200 && f.engine().aborted_ids().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(f.engine().aborted_ids().size(), 1u);
}

TEST(HttpServerTest, ShutdownFinishesInFlightStreamsWithAnError) {
  testing::FakeOptions opts;
  opts.delay_per_token = std::chrono::milliseconds(10);
  opts.reply = std::string(400, 'a');
  auto f = std::make_unique<ServerFixture>(config(), opts);
  std::string body;
  std::thread t([&] {
    auto c = f->client();
    auto res = c.Post("/v1/chat/completions",
                      R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2000, "stream": true,
                          "ignore_eos": true})",
                      "application/json");
    if (res) body = res->body;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  f->server().shutdown(std::chrono::milliseconds(50));
  t.join();
  EXPECT_TRUE(f->engine().is_shut_down());
  EXPECT_NE(body.find("shutting down"), std::string::npos) << body.substr(0, 300);
  ASSERT_GE(body.size(), 14u);
  EXPECT_EQ(body.substr(body.size() - 14), "data: [DONE]\n\n");
  f.reset();
}

}  // namespace
}  // namespace dsi::server
