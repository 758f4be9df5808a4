// Response side of openai_protocol.h: engine deltas -> chat.completion / text_completion bodies and SSE chunks
// (chat.completion.chunk: role first, then content / reasoning_content deltas, then finish_reason; an optional
// usage chunk with empty choices; then data: [DONE]).
#include <nlohmann/json.hpp>

#include "server/openai_protocol.h"
#include "tokenizer/tokenizer.h"

namespace dsi::server {

using ojson = nlohmann::ordered_json;

namespace {

std::string dump(const ojson& j) { return j.dump(-1, ' ', false, ojson::error_handler_t::replace); }

ojson bytes_array(const std::string& bytes) {
  ojson arr = ojson::array();
  for (unsigned char c : bytes) arr.push_back(static_cast<int>(c));
  return arr;
}

ojson null_or(const std::string& s) { return s.empty() ? ojson(nullptr) : ojson(s); }

}  // namespace

struct ResponseBuilder::Choice {
  std::optional<tok::ReasoningStream> reasoning;  // streaming split
  bool role_sent = false;
  bool finished = false;
  std::string text;           // all generated text (non-streaming)
  std::string finish_reason;
  int64_t completion_tokens = 0;
  // Logprobs so far: chat {"content": [...]} entries, or completions' parallel arrays.
  ojson chat_logprobs = ojson::array();
  ojson tokens = ojson::array(), token_logprobs = ojson::array(), top_logprobs = ojson::array(),
        text_offset = ojson::array();
  int64_t offset = 0;  // bytes of completion text before the next token (completions text_offset)
};

ResponseBuilder::ResponseBuilder(const ParsedRequest& request, const tok::Tokenizer& tokenizer, std::string id,
                                 int64_t created)
    : request_(request), tokenizer_(tokenizer), id_(std::move(id)), created_(created) {
  for (size_t i = 0; i < request.choices.size(); ++i) {
    auto c = std::make_unique<Choice>();
    if (request.split_reasoning) c->reasoning.emplace(request.starts_in_reasoning);
    choices_.push_back(std::move(c));
  }
}

ResponseBuilder::~ResponseBuilder() = default;

bool ResponseBuilder::all_finished() const {
  for (const auto& c : choices_) {
    if (!c->finished) return false;
  }
  return true;
}

namespace {

// Token text and bytes for logprobs: the raw bytes a token contributes (may be part of a UTF-8 character).
std::string token_text(const tok::Tokenizer& tokenizer, int32_t id) {
  auto bytes = tokenizer.token_bytes(id);
  return bytes.ok() ? *bytes : std::string();
}

ojson usage_object(int64_t prompt, int64_t completion, int64_t cached) {
  ojson u = ojson::object();
  u["prompt_tokens"] = prompt;
  u["completion_tokens"] = completion;
  u["total_tokens"] = prompt + completion;
  u["prompt_tokens_details"] = {{"cached_tokens", cached}};
  return u;
}

}  // namespace

// Updates counters, finish state and logprobs of one choice; returns nothing (the callers format output).
void ResponseBuilder::record(Choice& c, const GenerationDelta& d) {
  c.completion_tokens = std::max(c.completion_tokens, d.completion_tokens);
  cached_tokens_ = std::max(cached_tokens_, d.cached_tokens);
  if (request_.logprobs) {
    for (const TokenLogprob& lp : d.logprobs) {
      const std::string t = token_text(tokenizer_, lp.id);
      const size_t num_top = std::min(lp.top.size(), static_cast<size_t>(std::max(0, request_.top_logprobs)));
      if (request_.endpoint == Endpoint::kChatCompletions) {
        ojson top = ojson::array();
        for (size_t k = 0; k < num_top; ++k) {
          const std::string tt = token_text(tokenizer_, lp.top[k].first);
          top.push_back({{"token", tt}, {"logprob", lp.top[k].second}, {"bytes", bytes_array(tt)}});
        }
        c.chat_logprobs.push_back(
            {{"token", t}, {"logprob", lp.logprob}, {"bytes", bytes_array(t)}, {"top_logprobs", std::move(top)}});
      } else {
        ojson top = ojson::object();
        for (size_t k = 0; k < num_top; ++k) top[token_text(tokenizer_, lp.top[k].first)] = lp.top[k].second;
        c.tokens.push_back(t);
        c.token_logprobs.push_back(lp.logprob);
        c.top_logprobs.push_back(num_top > 0 ? top : ojson(nullptr));
        c.text_offset.push_back(c.offset);
        c.offset += static_cast<int64_t>(t.size());
      }
    }
  }
  if (!d.finished) return;
  c.finished = true;
  c.finish_reason = d.finish_reason;
  if (d.finish_reason == "error" || d.finish_reason == "abort") {
    ApiError e;
    if (d.finish_reason == "error") {
      e.http_status = 500;
      e.type = "internal_server_error";
      e.message = str_cat("the engine failed while generating: ", d.error.empty() ? "unknown error" : d.error);
    } else {
      e.http_status = 503;
      e.type = "service_unavailable";
      e.message = "the request was aborted before it finished (the server is shutting down)";
    }
    if (!error_) error_ = e;
  }
}

std::string ResponseBuilder::stream_delta(int index, const GenerationDelta& d) {
  DSI_CHECK(index >= 0 && index < static_cast<int>(choices_.size()));
  Choice& c = *choices_[index];
  if (c.finished) return "";
  const size_t lp_before = request_.endpoint == Endpoint::kChatCompletions ? c.chat_logprobs.size()
                                                                            : c.tokens.size();
  record(c, d);
  if (error_) return sse_error(*error_);
  const bool chat = request_.endpoint == Endpoint::kChatCompletions;

  auto chunk = [&](ojson delta_or_text, ojson logprobs, const std::string& finish) {
    ojson choice = ojson::object();
    choice["index"] = index;
    if (chat) choice["delta"] = std::move(delta_or_text);
    else choice["text"] = std::move(delta_or_text);
    choice["logprobs"] = std::move(logprobs);
    choice["finish_reason"] = null_or(finish);
    ojson j = ojson::object();
    j["id"] = id_;
    j["object"] = chat ? "chat.completion.chunk" : "text_completion";
    j["created"] = created_;
    j["model"] = request_.model;
    j["choices"] = ojson::array({std::move(choice)});
    if (request_.include_usage) j["usage"] = nullptr;
    return sse_event(dump(j));
  };

  std::string out;
  if (chat && !c.role_sent) {
    c.role_sent = true;
    out += chunk({{"role", "assistant"}, {"content", ""}}, nullptr, "");
  }
  std::string reasoning, content;
  if (c.reasoning) {
    tok::ReasoningSplit s = c.reasoning->push(d.text);
    if (d.finished) {
      tok::ReasoningSplit tail = c.reasoning->finish();
      s.reasoning_content += tail.reasoning_content;
      s.content += tail.content;
    }
    reasoning = std::move(s.reasoning_content);
    content = std::move(s.content);
  } else {
    content = d.text;
  }
  ojson logprobs = nullptr;
  if (request_.logprobs) {
    if (chat && c.chat_logprobs.size() > lp_before) {
      ojson part = ojson::array();
      for (size_t i = lp_before; i < c.chat_logprobs.size(); ++i) part.push_back(c.chat_logprobs[i]);
      logprobs = {{"content", std::move(part)}};
    } else if (!chat && c.tokens.size() > lp_before) {
      logprobs = ojson::object();
      const std::pair<const char*, const ojson*> fields[] = {{"tokens", &c.tokens},
                                                             {"token_logprobs", &c.token_logprobs},
                                                             {"top_logprobs", &c.top_logprobs},
                                                             {"text_offset", &c.text_offset}};
      for (const auto& [key, all] : fields) {
        ojson part = ojson::array();
        for (size_t i = lp_before; i < all->size(); ++i) part.push_back((*all)[i]);
        logprobs[key] = std::move(part);
      }
    }
  }
  if (!reasoning.empty() || !content.empty() || !logprobs.is_null()) {
    if (chat) {
      ojson delta = ojson::object();
      if (!reasoning.empty()) delta["reasoning_content"] = reasoning;
      if (!content.empty() || reasoning.empty()) delta["content"] = content;
      out += chunk(std::move(delta), std::move(logprobs), "");
    } else {
      out += chunk(content, std::move(logprobs), "");
    }
  }
  if (c.finished) out += chunk(chat ? ojson::object() : ojson(""), nullptr, c.finish_reason);
  return out;
}

std::string ResponseBuilder::stream_end() {
  std::string out;
  if (request_.include_usage && !error_) {
    int64_t completion = 0;
    for (const auto& c : choices_) completion += c->completion_tokens;
    ojson j = ojson::object();
    j["id"] = id_;
    j["object"] = request_.endpoint == Endpoint::kChatCompletions ? "chat.completion.chunk" : "text_completion";
    j["created"] = created_;
    j["model"] = request_.model;
    j["choices"] = ojson::array();
    j["usage"] = usage_object(request_.prompt_tokens, completion, cached_tokens_);
    out += sse_event(dump(j));
  }
  out += "data: [DONE]\n\n";
  return out;
}

void ResponseBuilder::add_delta(int index, const GenerationDelta& d) {
  DSI_CHECK(index >= 0 && index < static_cast<int>(choices_.size()));
  Choice& c = *choices_[index];
  if (c.finished) return;
  c.text += d.text;
  record(c, d);
}

std::string ResponseBuilder::final_body() const {
  const bool chat = request_.endpoint == Endpoint::kChatCompletions;
  ojson choices = ojson::array();
  int64_t completion = 0;
  for (size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = *choices_[i];
    completion += c.completion_tokens;
    ojson choice = ojson::object();
    choice["index"] = i;
    if (chat) {
      ojson message = ojson::object();
      message["role"] = "assistant";
      if (request_.split_reasoning) {
        tok::ReasoningSplit s = tok::split_reasoning(c.text, request_.starts_in_reasoning);
        message["content"] = s.content;
        message["reasoning_content"] = s.reasoning_content;
      } else {
        message["content"] = c.text;
      }
      choice["message"] = std::move(message);
      choice["logprobs"] = request_.logprobs ? ojson({{"content", c.chat_logprobs}}) : ojson(nullptr);
    } else {
      choice["text"] = c.text;
      choice["logprobs"] = request_.logprobs ? ojson({{"tokens", c.tokens},
                                                      {"token_logprobs", c.token_logprobs},
                                                      {"top_logprobs", c.top_logprobs},
                                                      {"text_offset", c.text_offset}})
                                             : ojson(nullptr);
    }
    choice["finish_reason"] = null_or(c.finish_reason);
    choices.push_back(std::move(choice));
  }
  ojson j = ojson::object();
  j["id"] = id_;
  j["object"] = chat ? "chat.completion" : "text_completion";
  j["created"] = created_;
  j["model"] = request_.model;
  j["choices"] = std::move(choices);
  j["usage"] = usage_object(request_.prompt_tokens, completion, cached_tokens_);
  return dump(j);
}

std::string sse_event(std::string_view json) { return str_cat("data: ", json, "\n\n"); }

std::string sse_error(const ApiError& error) { return sse_event(error_body(error)); }

std::string models_body(const std::string& served_model_name, int64_t max_model_len, const std::string& note,
                        int64_t created) {
  ojson model = ojson::object();
  model["id"] = served_model_name;
  model["object"] = "model";
  model["created"] = created;
  model["owned_by"] = note.empty() ? "dsinfer" : str_cat("dsinfer: ", note);
  model["root"] = served_model_name;
  model["max_model_len"] = max_model_len;
  if (!note.empty()) model["dsinfer_note"] = note;
  ojson j = ojson::object();
  j["object"] = "list";
  j["data"] = ojson::array({std::move(model)});
  return dump(j);
}

}  // namespace dsi::server
