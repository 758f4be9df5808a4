#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "server/fake_engine_test_util.h"
#include "server/openai_protocol.h"

namespace dsi::server {
namespace {

using json = nlohmann::json;

// Splits SSE text into the JSON payloads of its "data: " events; checks the framing on the way.
std::vector<std::string> sse_payloads(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = text.find("\n\n", pos);
    EXPECT_NE(end, std::string::npos) << "unterminated event: " << text.substr(pos);
    if (end == std::string::npos) break;
    const std::string event = text.substr(pos, end - pos);
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    EXPECT_EQ(event.find('\n'), std::string::npos) << event;
    out.push_back(event.substr(6));
    pos = end + 2;
  }
  return out;
}

class ResponseTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { tok_ = testing::load_test_tokenizer().release(); }
  static void TearDownTestSuite() { delete tok_; }

  ParsedRequest request(Endpoint ep, bool stream, bool usage = false, int n = 1) {
    ParsedRequest r;
    r.endpoint = ep;
    r.model = "ds-test";
    r.stream = stream;
    r.include_usage = usage;
    r.prompt_tokens = 5;
    r.choices.resize(n);
    return r;
  }
  GenerationDelta delta(const std::string& text, int64_t completion, const char* finish = nullptr) {
    GenerationDelta d;
    d.text = text;
    auto ids = tok_->encode(text);
    d.token_ids = ids;
    for (int32_t id : ids) d.logprobs.push_back({.id = id, .logprob = -0.5f, .top = {{id, -0.5f}, {id + 1, -2.f}}});
    d.completion_tokens = completion;
    d.prompt_tokens = 5;
    d.cached_tokens = 2;
    if (finish) {
      d.finished = true;
      d.finish_reason = finish;
    }
    return d;
  }
  static tok::Tokenizer* tok_;
};

tok::Tokenizer* ResponseTest::tok_ = nullptr;

TEST_F(ResponseTest, ChatCompletionShape) {
  ParsedRequest r = request(Endpoint::kChatCompletions, false);
  ResponseBuilder b(r, *tok_, "chatcmpl-1", 1700000000);
  b.add_delta(0, delta("Hello", 1));
  b.add_delta(0, delta(" world", 2, "stop"));
  ASSERT_FALSE(b.error());
  json j = json::parse(b.final_body());
  EXPECT_EQ(j["id"], "chatcmpl-1");
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["created"], 1700000000);
  EXPECT_EQ(j["model"], "ds-test");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hello world");
  EXPECT_FALSE(j["choices"][0]["message"].contains("reasoning_content"));
  EXPECT_TRUE(j["choices"][0]["logprobs"].is_null());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 5);
  EXPECT_EQ(j["usage"]["completion_tokens"], 2);
  EXPECT_EQ(j["usage"]["total_tokens"], 7);
  EXPECT_EQ(j["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
}

TEST_F(ResponseTest, ChatStreamFraming) {
  ParsedRequest r = request(Endpoint::kChatCompletions, true, /*usage=*/true);
  ResponseBuilder b(r, *tok_, "chatcmpl-2", 1);
  std::string text = b.stream_delta(0, delta("Hel", 1));
  text += b.stream_delta(0, delta("lo", 2));
  text += b.stream_delta(0, delta("", 2, "length"));
  text += b.stream_end();
  ASSERT_GE(text.size(), 14u);
  EXPECT_EQ(text.substr(text.size() - 14), "data: [DONE]\n\n");
  auto events = sse_payloads(text);
  ASSERT_EQ(events.size(), 6u);  // role, Hel, lo, finish, usage, [DONE]
  EXPECT_EQ(events.back(), "[DONE]");
  json role = json::parse(events[0]);
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["id"], "chatcmpl-2");
  EXPECT_EQ(role["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(role["choices"][0]["finish_reason"].is_null());
  EXPECT_TRUE(role.contains("usage") && role["usage"].is_null());
  EXPECT_EQ(json::parse(events[1])["choices"][0]["delta"]["content"], "Hel");
  EXPECT_FALSE(json::parse(events[1])["choices"][0]["delta"].contains("role"));
  EXPECT_EQ(json::parse(events[2])["choices"][0]["delta"]["content"], "lo");
  json fin = json::parse(events[3]);
  EXPECT_EQ(fin["choices"][0]["finish_reason"], "length");
  EXPECT_TRUE(fin["choices"][0]["delta"].empty());
  json usage = json::parse(events[4]);
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 2);
  EXPECT_EQ(usage["usage"]["total_tokens"], 7);
}

TEST_F(ResponseTest, NoUsageChunkUnlessAsked) {
  ParsedRequest r = request(Endpoint::kChatCompletions, true);
  ResponseBuilder b(r, *tok_, "x", 1);
  std::string text = b.stream_delta(0, delta("a", 1, "stop"));
  text += b.stream_end();
  auto events = sse_payloads(text);
  ASSERT_EQ(events.size(), 4u);  // role, content, finish, [DONE]
  for (size_t i = 0; i + 1 < events.size(); ++i) EXPECT_FALSE(json::parse(events[i]).contains("usage"));
}

TEST_F(ResponseTest, ReasoningContentNonStreamAndStream) {
  ParsedRequest r = request(Endpoint::kChatCompletions, false);
  r.split_reasoning = true;
  r.starts_in_reasoning = true;
  ResponseBuilder b(r, *tok_, "x", 1);
  b.add_delta(0, delta("Let me think.", 1));
  b.add_delta(0, delta("</think>The answer", 2));
  b.add_delta(0, delta(" is 4.", 3, "stop"));
  json j = json::parse(b.final_body());
  EXPECT_EQ(j["choices"][0]["message"]["reasoning_content"], "Let me think.");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "The answer is 4.");

  r.stream = true;
  ResponseBuilder s(r, *tok_, "y", 1);
  std::string text = s.stream_delta(0, delta("Let me", 1));  // one statement each: + has no evaluation order
  text += s.stream_delta(0, delta(" think.</th", 2));
  text += s.stream_delta(0, delta("ink>The", 3));
  text += s.stream_delta(0, delta(" answer", 4, "stop"));
  text += s.stream_end();
  std::string reasoning, content;
  for (const std::string& p : sse_payloads(text)) {
    if (p == "[DONE]") continue;
    const json d = json::parse(p)["choices"][0]["delta"];
    if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
    if (d.contains("content") && d["content"].is_string()) content += d["content"].get<std::string>();
  }
  EXPECT_EQ(reasoning, "Let me think.");
  EXPECT_EQ(content, "The answer");
}

TEST_F(ResponseTest, ChatLogprobs) {
  ParsedRequest r = request(Endpoint::kChatCompletions, false);
  r.logprobs = true;
  r.top_logprobs = 1;
  ResponseBuilder b(r, *tok_, "x", 1);
  b.add_delta(0, delta("Hi", 1, "stop"));
  json lp = json::parse(b.final_body())["choices"][0]["logprobs"];
  ASSERT_TRUE(lp["content"].is_array());
  ASSERT_EQ(lp["content"].size(), tok_->encode("Hi").size());
  const json& first = lp["content"][0];
  EXPECT_TRUE(first["token"].is_string());
  EXPECT_FLOAT_EQ(first["logprob"].get<float>(), -0.5f);
  EXPECT_TRUE(first["bytes"].is_array());
  EXPECT_EQ(first["bytes"].size(), first["token"].get<std::string>().size());
  ASSERT_EQ(first["top_logprobs"].size(), 1u);  // the request asked for 1 of the 2 the engine gave
  EXPECT_EQ(first["top_logprobs"][0]["token"], first["token"]);
}

TEST_F(ResponseTest, CompletionShapeAndLogprobs) {
  ParsedRequest r = request(Endpoint::kCompletions, false, false, 2);
  r.logprobs = true;
  r.top_logprobs = 2;
  ResponseBuilder b(r, *tok_, "cmpl-1", 1);
  b.add_delta(1, delta(" there", 1, "length"));
  b.add_delta(0, delta("ab", 1));
  b.add_delta(0, delta("cd", 2, "stop"));
  ASSERT_TRUE(b.all_finished());
  json j = json::parse(b.final_body());
  EXPECT_EQ(j["object"], "text_completion");
  ASSERT_EQ(j["choices"].size(), 2u);
  EXPECT_EQ(j["choices"][0]["text"], "abcd");
  EXPECT_EQ(j["choices"][1]["text"], " there");
  EXPECT_EQ(j["choices"][1]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);
  const json& lp = j["choices"][0]["logprobs"];
  const size_t num = tok_->encode("ab").size() + tok_->encode("cd").size();
  ASSERT_EQ(lp["tokens"].size(), num);
  ASSERT_EQ(lp["token_logprobs"].size(), num);
  ASSERT_EQ(lp["top_logprobs"].size(), num);
  ASSERT_EQ(lp["text_offset"].size(), num);
  EXPECT_EQ(lp["text_offset"][0], 0);
  EXPECT_EQ(lp["text_offset"][1], lp["tokens"][0].get<std::string>().size());
  EXPECT_TRUE(lp["top_logprobs"][0].is_object());
  EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
}

TEST_F(ResponseTest, CompletionStreamChunks) {
  ParsedRequest r = request(Endpoint::kCompletions, true);
  ResponseBuilder b(r, *tok_, "cmpl-2", 1);
  std::string text = b.stream_delta(0, delta("ab", 1));
  text += b.stream_delta(0, delta("c", 2, "stop"));
  text += b.stream_end();
  auto events = sse_payloads(text);
  ASSERT_EQ(events.size(), 4u);  // ab, c, finish, [DONE]: no role chunk for completions
  json first = json::parse(events[0]);
  EXPECT_EQ(first["object"], "text_completion");
  EXPECT_EQ(first["choices"][0]["text"], "ab");
  EXPECT_EQ(json::parse(events[2])["choices"][0]["finish_reason"], "stop");
}

TEST_F(ResponseTest, EngineErrorBecomesErrorEvent) {
  ParsedRequest r = request(Endpoint::kChatCompletions, true);
  ResponseBuilder b(r, *tok_, "x", 1);
  GenerationDelta d;
  d.finished = true;
  d.finish_reason = "error";
  d.error = "CUDA out of memory";
  std::string text = b.stream_delta(0, delta("a", 1));
  text += b.stream_delta(0, d);
  text += b.stream_end();
  ASSERT_TRUE(b.error());
  EXPECT_EQ(b.error()->http_status, 500);
  auto events = sse_payloads(text);
  json err = json::parse(events[events.size() - 2]);
  EXPECT_NE(err["error"]["message"].get<std::string>().find("CUDA out of memory"), std::string::npos);
  EXPECT_EQ(events.back(), "[DONE]");

  ParsedRequest r2 = request(Endpoint::kCompletions, false);
  ResponseBuilder b2(r2, *tok_, "y", 1);
  d.finish_reason = "abort";
  b2.add_delta(0, d);
  ASSERT_TRUE(b2.error());
  EXPECT_EQ(b2.error()->http_status, 503);
}

TEST_F(ResponseTest, InvalidUtf8TokenBytesStillMakeValidJson) {
  ParsedRequest r = request(Endpoint::kChatCompletions, false);
  r.logprobs = true;
  ResponseBuilder b(r, *tok_, "x", 1);
  GenerationDelta d = delta("", 1, "stop");
  // Byte-level tokens can be half a UTF-8 character.
  const std::vector<int32_t> ids = tok_->encode("\xe4\xbd\xa0\xe5\xa5\xbd");
  for (int32_t id : ids) d.logprobs.push_back({.id = id, .logprob = -1, .top = {}});
  b.add_delta(0, d);
  EXPECT_NO_THROW(json::parse(b.final_body()));
}

TEST_F(ResponseTest, ModelsBody) {
  json j = json::parse(models_body("ds-test", 4096, "random weights (demo)", 5));
  EXPECT_EQ(j["object"], "list");
  EXPECT_EQ(j["data"][0]["id"], "ds-test");
  EXPECT_EQ(j["data"][0]["object"], "model");
  EXPECT_EQ(j["data"][0]["dsinfer_note"], "random weights (demo)");
  EXPECT_NE(j["data"][0]["owned_by"].get<std::string>().find("random weights"), std::string::npos);
  EXPECT_FALSE(json::parse(models_body("m", 1, "", 5))["data"][0].contains("dsinfer_note"));
}

}  // namespace
}  // namespace dsi::server
