// Fuzzes the OpenAI request parser + validator (no network): arbitrary bodies must give a ParsedRequest or an
// ApiError, never a crash, a hang or an exception; a parsed request must satisfy the limits it promises.
// The first byte picks the endpoint; the rest is the body. A valid request is also turned into a response.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/openai_protocol.h"
#include "tokenizer/tokenizer.h"

#ifndef DSI_SOURCE_DIR
#define DSI_SOURCE_DIR "."
#endif

namespace {

const dsi::tok::Tokenizer& tokenizer() {
  static const dsi::tok::Tokenizer* t = [] {
    auto r = dsi::tok::Tokenizer::load_dir(std::string(DSI_SOURCE_DIR) + "/tests/tokenizer/fixtures/deepseek-v3");
    if (!r.ok()) dsi::check_failed(__FILE__, __LINE__, "tokenizer fixture loads", r.status().to_string());
    return std::move(r).value().release();
  }();
  return *t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  using namespace dsi::server;
  const Endpoint endpoint = data[0] & 1 ? Endpoint::kCompletions : Endpoint::kChatCompletions;
  const std::string body(reinterpret_cast<const char*>(data + 1), size - 1);
  ProtocolContext ctx{.tokenizer = &tokenizer(), .served_model_name = "m", .max_model_len = 512,
                      .reasoning = (data[0] & 2) != 0};
  ParsedRequest req;
  if (auto err = parse_request(endpoint, body, ctx, &req)) {
    DSI_CHECK(err->http_status == 400 || err->http_status == 404);
    DSI_CHECK(!error_body(*err).empty());
    return 0;
  }
  DSI_CHECK(!req.choices.empty() && req.choices.size() <= 16);
  for (const dsi::GenerationRequest& g : req.choices) {
    DSI_CHECK(!g.prompt_ids.empty());
    DSI_CHECK(g.max_tokens >= 1);
    DSI_CHECK(static_cast<int64_t>(g.prompt_ids.size()) + g.max_tokens <= ctx.max_model_len);
    DSI_CHECK(g.stop.size() <= 4);
    DSI_CHECK(g.top_logprobs >= -1 && g.top_logprobs <= 20);
    for (int32_t id : g.prompt_ids) DSI_CHECK(id >= 0 && static_cast<size_t>(id) < tokenizer().vocab_size());
  }
  // Echo the prompt's first tokens back as a response, with logprobs, through both output paths.
  ResponseBuilder builder(req, tokenizer(), "id", 0);
  for (size_t i = 0; i < req.choices.size(); ++i) {
    dsi::GenerationDelta d;
    const auto& ids = req.choices[i].prompt_ids;
    d.token_ids.assign(ids.begin(), ids.begin() + std::min<size_t>(ids.size(), 4));
    for (int32_t id : d.token_ids) d.logprobs.push_back({.id = id, .logprob = -1, .top = {{id, -1}}});
    auto text = tokenizer().decode(d.token_ids);
    d.text = text.ok() ? *text : "";
    d.finished = true;
    d.finish_reason = "stop";
    d.completion_tokens = static_cast<int64_t>(d.token_ids.size());
    if (req.stream) (void)builder.stream_delta(static_cast<int>(i), d);
    else builder.add_delta(static_cast<int>(i), d);
  }
  (void)(req.stream ? builder.stream_end() : builder.final_body());
  return 0;
}
