#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "server/fake_engine_test_util.h"
#include "server/openai_protocol.h"

namespace dsi::server {
namespace {

using json = nlohmann::json;

class ParseTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { tok_ = testing::load_test_tokenizer().release(); }
  static void TearDownTestSuite() { delete tok_; }

  ProtocolContext ctx(int64_t max_len = 4096) {
    return {.tokenizer = tok_, .served_model_name = "ds-test", .max_model_len = max_len, .reasoning = false};
  }
  std::optional<ApiError> chat(const std::string& body, ParsedRequest* out = nullptr, int64_t max_len = 4096) {
    ParsedRequest tmp;
    return parse_request(Endpoint::kChatCompletions, body, ctx(max_len), out ? out : &tmp);
  }
  std::optional<ApiError> completion(const std::string& body, ParsedRequest* out = nullptr) {
    ParsedRequest tmp;
    return parse_request(Endpoint::kCompletions, body, ctx(), out ? out : &tmp);
  }
  // Expects a 400 whose error names `param`; checks the OpenAI error body shape.
  void expect_400(const std::optional<ApiError>& e, const std::string& param) {
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->http_status, 400);
    EXPECT_EQ(e->param, param) << e->message;
    json body = json::parse(error_body(*e));
    ASSERT_TRUE(body["error"].is_object());
    EXPECT_EQ(body["error"]["type"], "invalid_request_error");
    EXPECT_TRUE(body["error"]["message"].is_string());
    EXPECT_TRUE(body["error"].contains("param"));
    EXPECT_TRUE(body["error"].contains("code"));
  }

  static tok::Tokenizer* tok_;
};

tok::Tokenizer* ParseTest::tok_ = nullptr;

const std::string kHello = R"("messages": [{"role": "user", "content": "Hello"}])";

TEST_F(ParseTest, ChatDefaults) {
  ParsedRequest r;
  ASSERT_FALSE(chat("{" + kHello + "}", &r));
  EXPECT_EQ(r.model, "ds-test");
  EXPECT_FALSE(r.stream);
  ASSERT_EQ(r.choices.size(), 1u);
  const GenerationRequest& g = r.choices[0];
  EXPECT_EQ(g.prompt_ids, tok_->encode(r.prompt_text));
  EXPECT_NE(r.prompt_text.find("Hello"), std::string::npos);
  EXPECT_EQ(r.prompt_text.rfind("<｜begin▁of▁sentence｜>", 0), 0u) << r.prompt_text;
  EXPECT_EQ(g.max_tokens, 4096 - r.prompt_tokens);  // chat default: the rest of the context
  EXPECT_EQ(g.top_logprobs, -1);
  EXPECT_EQ(g.sampling.temperature, 0.0f);
  EXPECT_FALSE(g.seed.has_value());
}

TEST_F(ParseTest, ChatAllOptions) {
  ParsedRequest r;
  auto e = chat(R"({"model": "ds-test", "messages": [{"role": "system", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
      {"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"}],
      "stream": true, "stream_options": {"include_usage": true}, "n": 3, "max_completion_tokens": 7,
      "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "stop": ["x", "yz"], "seed": 42,
      "logprobs": true, "top_logprobs": 5, "presence_penalty": 0.5, "frequency_penalty": -0.5,
      "repetition_penalty": 1.1, "ignore_eos": true, "user": "u1"})",
                &r);
  ASSERT_FALSE(e) << e->message;
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.top_logprobs, 5);
  ASSERT_EQ(r.choices.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    const GenerationRequest& g = r.choices[i];
    EXPECT_EQ(g.max_tokens, 7);
    EXPECT_FLOAT_EQ(g.sampling.temperature, 0.7f);
    EXPECT_FLOAT_EQ(g.sampling.top_p, 0.9f);
    EXPECT_EQ(g.sampling.top_k, 40);
    EXPECT_FLOAT_EQ(g.sampling.min_p, 0.05f);
    EXPECT_FLOAT_EQ(g.sampling.presence_penalty, 0.5f);
    EXPECT_FLOAT_EQ(g.sampling.frequency_penalty, -0.5f);
    EXPECT_FLOAT_EQ(g.sampling.repetition_penalty, 1.1f);
    EXPECT_EQ(g.stop, (std::vector<std::string>{"x", "yz"}));
    EXPECT_EQ(g.seed, 42u + i);  // each choice its own seed
    EXPECT_TRUE(g.ignore_eos);
    EXPECT_EQ(g.top_logprobs, 5);
  }
  EXPECT_NE(r.prompt_text.find("a\nb"), std::string::npos);
  EXPECT_NE(r.prompt_text.find("Be brief."), std::string::npos);
}

TEST_F(ParseTest, CompletionPromptForms) {
  ParsedRequest r;
  ASSERT_FALSE(completion(R"({"prompt": "Once upon"})", &r));
  EXPECT_EQ(r.choices[0].prompt_ids, tok_->encode("Once upon", true));
  EXPECT_EQ(r.choices[0].max_tokens, 16);  // OpenAI's completions default
  ASSERT_FALSE(completion(R"({"prompt": ["Once upon"], "max_tokens": 3, "logprobs": 2})", &r));
  EXPECT_EQ(r.choices[0].max_tokens, 3);
  EXPECT_TRUE(r.logprobs);
  EXPECT_EQ(r.choices[0].top_logprobs, 2);
  ASSERT_FALSE(completion(R"({"prompt": [1, 2, 3]})", &r));
  EXPECT_EQ(r.choices[0].prompt_ids, (std::vector<int32_t>{1, 2, 3}));
  ASSERT_FALSE(completion(R"({"prompt": [[5, 6]], "stop": "abc"})", &r));
  EXPECT_EQ(r.choices[0].prompt_ids, (std::vector<int32_t>{5, 6}));
  EXPECT_EQ(r.choices[0].stop, (std::vector<std::string>{"abc"}));
}

TEST_F(ParseTest, BodyErrors) {
  expect_400(chat(""), "");
  expect_400(chat("{"), "");
  expect_400(chat("[1]"), "");
  expect_400(chat(std::string(200, '[') + std::string(200, ']')), "");
  expect_400(chat("{\"messages\": \"\xff\"}"), "");  // invalid UTF-8 is not JSON
}

TEST_F(ParseTest, MessageErrors) {
  expect_400(chat(R"({})"), "messages");
  expect_400(chat(R"({"messages": []})"), "messages");
  expect_400(chat(R"({"messages": {}})"), "messages");
  expect_400(chat(R"({"messages": [1]})"), "messages[0]");
  expect_400(chat(R"({"messages": [{"content": "x"}]})"), "messages[0].role");
  expect_400(chat(R"({"messages": [{"role": 3, "content": "x"}]})"), "messages[0].role");
  expect_400(chat(R"({"messages": [{"role": "wizard", "content": "x"}]})"), "messages[0].role");
  expect_400(chat(R"({"messages": [{"role": "user"}]})"), "messages[0].content");
  expect_400(chat(R"({"messages": [{"role": "user", "content": 5}]})"), "messages[0].content");
  expect_400(chat(R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})"),
             "messages[0].content[0]");
  expect_400(chat(R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})"), "messages[0].content[0]");
  expect_400(chat(R"({"messages": [{"role": "user", "content": ["x"]}]})"), "messages[0].content[0]");
}

TEST_F(ParseTest, OptionErrors) {
  const std::pair<const char*, const char*> cases[] = {
      {R"("stream": "yes")", "stream"},
      {R"("stream_options": {"include_usage": true})", "stream_options"},  // without stream
      {R"("stream": true, "stream_options": 1)", "stream_options"},
      {R"("n": 0)", "n"},
      {R"("n": 17)", "n"},
      {R"("n": 1.5)", "n"},
      {R"("max_tokens": 0)", "max_tokens"},
      {R"("max_tokens": "10")", "max_tokens"},
      {R"("max_completion_tokens": -1)", "max_completion_tokens"},
      {R"("temperature": 2.5)", "temperature"},
      {R"("temperature": -0.1)", "temperature"},
      {R"("temperature": "hot")", "temperature"},
      {R"("top_p": 0)", "top_p"},
      {R"("top_p": 1.01)", "top_p"},
      {R"("top_k": -2)", "top_k"},
      {R"("min_p": 1.5)", "min_p"},
      {R"("stop": 5)", "stop"},
      {R"("stop": ["a", "b", "c", "d", "e"])", "stop"},
      {R"("stop": ["a", 1])", "stop"},
      {R"("seed": "x")", "seed"},
      {R"("seed": 1.5)", "seed"},
      {R"("logprobs": 1)", "logprobs"},
      {R"("top_logprobs": 21, "logprobs": true)", "top_logprobs"},
      {R"("top_logprobs": 2)", "top_logprobs"},  // without logprobs
      {R"("presence_penalty": 2.5)", "presence_penalty"},
      {R"("frequency_penalty": -3)", "frequency_penalty"},
      {R"("repetition_penalty": 0)", "repetition_penalty"},
      {R"("ignore_eos": 1)", "ignore_eos"},
      {R"("logit_bias": {"5": 10})", "logit_bias"},
      {R"("response_format": {"type": "json_object"})", "response_format"},
      {R"("model": 7)", "model"},
      {R"("best_of": 3)", "best_of"},
      {R"("tools": "x")", "tools"},
  };
  for (const auto& [field, param] : cases) {
    SCOPED_TRACE(field);
    expect_400(chat(str_cat("{", kHello, ", ", field, "}")), param);
  }
  expect_400(completion(R"({"prompt": "x", "logprobs": true})"), "logprobs");
  expect_400(completion(R"({"prompt": "x", "logprobs": 21})"), "logprobs");
  expect_400(completion(R"({"prompt": "x", "echo": true})"), "echo");
}

TEST_F(ParseTest, CompletionPromptErrors) {
  expect_400(completion(R"({})"), "prompt");
  expect_400(completion(R"({"prompt": 5})"), "prompt");
  expect_400(completion(R"({"prompt": {"a": 1}})"), "prompt");
  expect_400(completion(R"({"prompt": []})"), "prompt");
  expect_400(completion(R"({"prompt": ["a", "b"]})"), "prompt");
  expect_400(completion(R"({"prompt": [1, "a"]})"), "prompt");
  expect_400(completion(R"({"prompt": [1, 2.5]})"), "prompt[1]");
  expect_400(completion(R"({"prompt": [-1]})"), "prompt");
  expect_400(completion(R"({"prompt": [99999999]})"), "prompt");
}

TEST_F(ParseTest, UnknownModelIs404) {
  auto e = chat(str_cat("{", kHello, R"(, "model": "gpt-4"})"));
  ASSERT_TRUE(e);
  EXPECT_EQ(e->http_status, 404);
  EXPECT_EQ(e->code, "model_not_found");
  EXPECT_NE(e->message.find("gpt-4"), std::string::npos);
}

TEST_F(ParseTest, ContextLengthErrorsNameTheLengths) {
  ParsedRequest ok;
  ASSERT_FALSE(chat("{" + kHello + "}", &ok));
  const int64_t p = ok.prompt_tokens;
  // The prompt alone fills the context.
  auto e = chat("{" + kHello + "}", nullptr, p);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->http_status, 400);
  EXPECT_EQ(e->code, "context_length_exceeded");
  EXPECT_NE(e->message.find(str_cat(p, " tokens")), std::string::npos) << e->message;
  // prompt + max_tokens beyond the limit.
  e = chat(str_cat("{", kHello, R"(, "max_tokens": 100})"), nullptr, p + 10);
  ASSERT_TRUE(e);
  EXPECT_NE(e->message.find(str_cat("maximum context length is ", p + 10)), std::string::npos) << e->message;
  EXPECT_NE(e->message.find(str_cat("requested ", p + 100)), std::string::npos) << e->message;
  // Without max_tokens the completion gets what is left.
  ParsedRequest r;
  ASSERT_FALSE(chat("{" + kHello + "}", &r, p + 10));
  EXPECT_EQ(r.choices[0].max_tokens, 10);
}

TEST_F(ParseTest, ReasoningStartsInsideThinkForR1Prompts) {
  ProtocolContext c = ctx();
  c.reasoning = true;
  ParsedRequest r;
  // An assistant prefix ending in <think> (as R1 templates render) starts inside the reasoning.
  ASSERT_FALSE(parse_request(Endpoint::kChatCompletions, "{" + kHello + "}", c, &r));
  EXPECT_TRUE(r.split_reasoning);
  EXPECT_EQ(r.starts_in_reasoning, r.prompt_text.find("<think>") != std::string::npos);
}

TEST_F(ParseTest, ToolRoleAndDeveloperRole) {
  ParsedRequest r;
  auto e = chat(R"({"messages": [{"role": "developer", "content": "sys"}, {"role": "user", "content": "hi"}]})", &r);
  ASSERT_FALSE(e) << e->message;
  EXPECT_NE(r.prompt_text.find("sys"), std::string::npos);
}

}  // namespace
}  // namespace dsi::server
