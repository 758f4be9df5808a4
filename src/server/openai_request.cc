// Request side of openai_protocol.h: JSON body -> validated ParsedRequest, or an OpenAI-style error.
#include <nlohmann/json.hpp>

#include "server/openai_protocol.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace dsi::server {

// ordered: the chat template sees keys in the order the client sent them (tojson of tool definitions must match
// Hugging Face, which keeps insertion order).
using json = nlohmann::ordered_json;

namespace {

constexpr int kMaxN = 16;
constexpr int kMaxTopLogprobs = 20;
constexpr size_t kMaxStop = 4;
constexpr int kMaxJsonDepth = 64;

// nlohmann's dump is recursive, so deeply nested bodies are refused before parsing.
bool nesting_too_deep(std::string_view body) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

const char* type_name(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "integer";
  if (v.is_number()) return "number";
  if (v.is_string()) return "string";
  if (v.is_array()) return "array";
  return "object";
}

ApiError wrong_type(const std::string& param, const char* expected, const json& v) {
  return bad_request(str_cat("'", param, "' must be ", expected, ", got ", type_name(v)), param);
}

// Field readers: absent or null leaves *out unchanged and returns no error.
std::optional<ApiError> read_bool(const json& body, const char* key, bool* out) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) return wrong_type(key, "a boolean", *it);
  *out = it->get<bool>();
  return std::nullopt;
}

std::optional<ApiError> read_number(const json& body, const char* key, double lo, double hi, bool lo_open,
                                    double* out, bool* present = nullptr) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) return wrong_type(key, "a number", *it);
  const double v = it->get<double>();
  if (!(lo_open ? v > lo : v >= lo) || !(v <= hi)) {
    return bad_request(str_cat("'", key, "' must be in ", lo_open ? "(" : "[", lo, ", ", hi, "], got ", v), key);
  }
  *out = v;
  if (present) *present = true;
  return std::nullopt;
}

std::optional<ApiError> read_int(const json& body, const char* key, int64_t lo, int64_t hi, int64_t* out,
                                 bool* present = nullptr) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return std::nullopt;
  int64_t v = 0;
  if (it->is_number_unsigned()) {
    const uint64_t u = it->get<uint64_t>();
    v = u > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : static_cast<int64_t>(u);
  } else if (it->is_number_integer()) {
    v = it->get<int64_t>();
  } else {
    return wrong_type(key, "an integer", *it);
  }
  if (v < lo || v > hi) return bad_request(str_cat("'", key, "' must be in [", lo, ", ", hi, "], got ", v), key);
  *out = v;
  if (present) *present = true;
  return std::nullopt;
}

// content: a string, null, or an array of {"type": "text", "text": "..."} parts (joined with "\n").
std::optional<ApiError> read_content(const json& msg, size_t index, bool null_ok, std::string* out) {
  const std::string param = str_cat("messages[", index, "].content");
  auto it = msg.find("content");
  if (it == msg.end() || it->is_null()) {
    if (null_ok) return std::nullopt;
    return bad_request(str_cat("'", param, "' is required"), param);
  }
  if (it->is_string()) {
    *out = it->get<std::string>();
    return std::nullopt;
  }
  if (!it->is_array()) return wrong_type(param, "a string or an array of content parts", *it);
  std::string text;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& part = (*it)[i];
    const std::string pp = str_cat(param, "[", i, "]");
    if (!part.is_object()) return wrong_type(pp, "an object", part);
    auto type = part.find("type");
    if (type == part.end() || !type->is_string()) return bad_request(str_cat("'", pp, ".type' must be a string"), pp);
    if (type->get<std::string>() != "text") {
      return bad_request(str_cat("'", pp, ".type' is '", type->get<std::string>(),
                                 "': only text content parts are supported"), pp);
    }
    auto t = part.find("text");
    if (t == part.end() || !t->is_string()) return bad_request(str_cat("'", pp, ".text' must be a string"), pp);
    if (i > 0) text += "\n";
    text += t->get<std::string>();
  }
  *out = std::move(text);
  return std::nullopt;
}

// Validates messages and renders them through the tokenizer's chat template.
std::optional<ApiError> render_chat(const json& body, const ProtocolContext& ctx, std::string* prompt) {
  auto it = body.find("messages");
  if (it == body.end()) return bad_request("'messages' is required", "messages");
  if (!it->is_array()) return wrong_type("messages", "an array", *it);
  if (it->empty()) return bad_request("'messages' must contain at least one message", "messages");
  json messages = json::array();
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string param = str_cat("messages[", i, "]");
    if (!m.is_object()) return wrong_type(param, "an object", m);
    auto role_it = m.find("role");
    if (role_it == m.end()) return bad_request(str_cat("'", param, ".role' is required"), param + ".role");
    if (!role_it->is_string()) return wrong_type(param + ".role", "a string", *role_it);
    std::string role = role_it->get<std::string>();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      return bad_request(str_cat("'", param, ".role' is '", role,
                                 "': expected one of 'system', 'user', 'assistant', 'tool'"), param + ".role");
    }
    json out = {{"role", role}};
    const bool has_tool_calls = m.contains("tool_calls") && m["tool_calls"].is_array() && !m["tool_calls"].empty();
    std::string content;
    if (auto err = read_content(m, i, role == "assistant" && has_tool_calls, &content)) return err;
    out["content"] = content;
    if (role == "assistant" && m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      if (!m["tool_calls"].is_array()) return wrong_type(param + ".tool_calls", "an array", m["tool_calls"]);
      out["tool_calls"] = m["tool_calls"];
    }
    if (role == "tool" && m.contains("tool_call_id") && m["tool_call_id"].is_string()) {
      out["tool_call_id"] = m["tool_call_id"];
    }
    if (m.contains("name") && m["name"].is_string()) out["name"] = m["name"];
    messages.push_back(std::move(out));
  }
  json context = json::object();
  if (auto kw = body.find("chat_template_kwargs"); kw != body.end() && !kw->is_null()) {
    if (!kw->is_object()) return wrong_type("chat_template_kwargs", "an object", *kw);
    for (auto& [k, v] : kw->items()) context[k] = v;
  }
  bool add_generation_prompt = true;
  if (auto err = read_bool(body, "add_generation_prompt", &add_generation_prompt)) return err;
  context["messages"] = std::move(messages);
  context["add_generation_prompt"] = add_generation_prompt;
  if (auto tools = body.find("tools"); tools != body.end() && !tools->is_null()) {
    if (!tools->is_array()) return wrong_type("tools", "an array", *tools);
    if (!tools->empty()) context["tools"] = *tools;
  }
  auto rendered = tok::apply_chat_template(*ctx.tokenizer,
                                           context.dump(-1, ' ', false, json::error_handler_t::replace));
  if (!rendered.ok()) return bad_request(str_cat("chat template: ", rendered.status().message()), "messages");
  *prompt = std::move(rendered).value();
  return std::nullopt;
}

// Completions prompt: a string, a token id array, or a one-element array of either.
std::optional<ApiError> read_prompt(const json& body, const ProtocolContext& ctx, std::string* text,
                                    std::vector<int32_t>* ids) {
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) return bad_request("'prompt' is required", "prompt");
  const json* p = &*it;
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) p = &(*p)[0];
  if (p->is_string()) {
    *text = p->get<std::string>();
    *ids = ctx.tokenizer->encode(*text, /*add_special_tokens=*/true);
    return std::nullopt;
  }
  if (!p->is_array()) return wrong_type("prompt", "a string or an array of token ids", *p);
  const int64_t vocab = static_cast<int64_t>(ctx.tokenizer->vocab_size());
  for (size_t i = 0; i < p->size(); ++i) {
    const json& v = (*p)[i];
    if (v.is_string() || v.is_array()) {
      return bad_request("batched prompts are not supported: send one prompt per request", "prompt");
    }
    if (!v.is_number_integer() && !v.is_number_unsigned()) {
      return wrong_type(str_cat("prompt[", i, "]"), "an integer token id", v);
    }
    const int64_t id = v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX ? INT64_MAX : v.get<int64_t>();
    if (id < 0 || id >= vocab) {
      return bad_request(str_cat("prompt[", i, "] = ", id, " is not a token id (vocabulary size ", vocab, ")"),
                         "prompt");
    }
    ids->push_back(static_cast<int32_t>(id));
  }
  return std::nullopt;
}

std::optional<ApiError> read_stop(const json& body, std::vector<std::string>* stop) {
  auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) {
    if (!it->get<std::string>().empty()) stop->push_back(it->get<std::string>());
    return std::nullopt;
  }
  if (!it->is_array()) return wrong_type("stop", "a string or an array of strings", *it);
  if (it->size() > kMaxStop) return bad_request(str_cat("'stop' has ", it->size(), " entries; at most 4"), "stop");
  for (const json& s : *it) {
    if (!s.is_string()) return wrong_type("stop", "an array of strings", s);
    if (!s.get<std::string>().empty()) stop->push_back(s.get<std::string>());
  }
  return std::nullopt;
}

std::optional<ApiError> read_sampling(const json& body, Endpoint endpoint, ParsedRequest* out,
                                      GenerationRequest* g) {
  double v = 0;
  bool set = false;
  if (auto e = read_number(body, "temperature", 0, 2, false, &v, &set)) return e;
  if (set) g->sampling.temperature = static_cast<float>(v);
  set = false;
  if (auto e = read_number(body, "top_p", 0, 1, true, &v, &set)) return e;
  if (set) g->sampling.top_p = static_cast<float>(v);
  set = false;
  if (auto e = read_number(body, "min_p", 0, 1, false, &v, &set)) return e;
  if (set) g->sampling.min_p = static_cast<float>(v);
  set = false;
  if (auto e = read_number(body, "presence_penalty", -2, 2, false, &v, &set)) return e;
  if (set) g->sampling.presence_penalty = static_cast<float>(v);
  set = false;
  if (auto e = read_number(body, "frequency_penalty", -2, 2, false, &v, &set)) return e;
  if (set) g->sampling.frequency_penalty = static_cast<float>(v);
  set = false;
  if (auto e = read_number(body, "repetition_penalty", 0, 2, true, &v, &set)) return e;
  if (set) g->sampling.repetition_penalty = static_cast<float>(v);
  int64_t top_k = 0;
  if (auto e = read_int(body, "top_k", -1, 1 << 30, &top_k)) return e;
  g->sampling.top_k = top_k < 0 ? 0 : top_k;

  int64_t seed = 0;
  bool has_seed = false;
  if (auto e = read_int(body, "seed", INT64_MIN, INT64_MAX, &seed, &has_seed)) return e;
  if (has_seed) g->seed = static_cast<uint64_t>(seed);
  if (auto e = read_bool(body, "ignore_eos", &g->ignore_eos)) return e;
  if (auto e = read_stop(body, &g->stop)) return e;
  if (auto it = body.find("stop_token_ids"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) return wrong_type("stop_token_ids", "an array of integers", *it);
    for (const json& id : *it) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return bad_request("'stop_token_ids' must be an array of token ids", "stop_token_ids");
      }
      g->stop_token_ids.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
  }

  // logprobs: a boolean + top_logprobs for chat; an integer (the number of alternatives) for completions.
  if (endpoint == Endpoint::kChatCompletions) {
    if (auto e = read_bool(body, "logprobs", &out->logprobs)) return e;
    int64_t top = 0;
    bool top_set = false;
    if (auto e = read_int(body, "top_logprobs", 0, kMaxTopLogprobs, &top, &top_set)) return e;
    if (top_set && !out->logprobs && top > 0) {
      return bad_request("'top_logprobs' requires 'logprobs' to be true", "top_logprobs");
    }
    out->top_logprobs = static_cast<int>(top);
  } else {
    auto it = body.find("logprobs");
    if (it != body.end() && it->is_boolean()) return wrong_type("logprobs", "an integer", *it);
    int64_t top = 0;
    bool top_set = false;
    if (auto e = read_int(body, "logprobs", 0, kMaxTopLogprobs, &top, &top_set)) return e;
    out->logprobs = top_set;
    out->top_logprobs = static_cast<int>(top);
  }
  g->top_logprobs = out->logprobs ? out->top_logprobs : -1;

  if (auto it = body.find("logit_bias"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return wrong_type("logit_bias", "an object", *it);
    if (!it->empty()) return bad_request("'logit_bias' is not supported", "logit_bias");
  }
  if (auto it = body.find("response_format"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return wrong_type("response_format", "an object", *it);
    auto t = it->find("type");
    if (t == it->end() || !t->is_string() || t->get<std::string>() != "text") {
      return bad_request("'response_format' supports only {\"type\": \"text\"}", "response_format");
    }
  }
  bool echo = false;
  if (auto e = read_bool(body, "echo", &echo)) return e;
  if (echo) return bad_request("'echo' is not supported", "echo");
  return std::nullopt;
}

bool ends_in_think(const std::string& prompt) {
  size_t end = prompt.size();
  while (end > 0 && (prompt[end - 1] == '\n' || prompt[end - 1] == ' ' || prompt[end - 1] == '\r')) --end;
  static constexpr std::string_view kThink = "<think>";
  return end >= kThink.size() && std::string_view(prompt).substr(end - kThink.size(), kThink.size()) == kThink;
}

}  // namespace

ApiError bad_request(std::string message, std::string param) {
  ApiError e;
  e.message = std::move(message);
  e.param = std::move(param);
  return e;
}

std::string error_body(const ApiError& error) {
  json body = {{"error",
                {{"message", error.message},
                 {"type", error.type},
                 {"param", error.param.empty() ? json(nullptr) : json(error.param)},
                 {"code", error.code.empty() ? json(nullptr) : json(error.code)}}}};
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<ApiError> parse_request(Endpoint endpoint, std::string_view text, const ProtocolContext& ctx,
                                      ParsedRequest* out) {
  DSI_CHECK(ctx.tokenizer != nullptr);
  *out = ParsedRequest();
  out->endpoint = endpoint;
  if (nesting_too_deep(text)) return bad_request("request body is nested too deeply");
  json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return bad_request("request body is not valid JSON");
  if (!body.is_object()) return bad_request(str_cat("request body must be a JSON object, got ", type_name(body)));

  out->model = ctx.served_model_name;
  if (auto it = body.find("model"); it != body.end() && !it->is_null()) {
    if (!it->is_string()) return wrong_type("model", "a string", *it);
    if (it->get<std::string>() != ctx.served_model_name) {
      ApiError e;
      e.http_status = 404;
      e.message = str_cat("The model '", it->get<std::string>(), "' does not exist. This server serves '",
                          ctx.served_model_name, "'.");
      e.param = "model";
      e.code = "model_not_found";
      return e;
    }
  }

  if (auto e = read_bool(body, "stream", &out->stream)) return e;
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return wrong_type("stream_options", "an object", *it);
    if (!out->stream) return bad_request("'stream_options' is only allowed when 'stream' is true", "stream_options");
    if (auto e = read_bool(*it, "include_usage", &out->include_usage)) return e;
  }
  int64_t n = 1;
  if (auto e = read_int(body, "n", 1, kMaxN, &n)) return e;
  int64_t best_of = n;
  if (auto e = read_int(body, "best_of", 1, kMaxN, &best_of)) return e;
  if (best_of != n) return bad_request("'best_of' other than 'n' is not supported", "best_of");

  GenerationRequest g;
  if (auto e = read_sampling(body, endpoint, out, &g)) return e;

  int64_t max_tokens = 0;
  bool max_set = false;
  if (auto e = read_int(body, "max_tokens", 1, INT64_MAX, &max_tokens, &max_set)) return e;
  if (endpoint == Endpoint::kChatCompletions) {
    if (auto e = read_int(body, "max_completion_tokens", 1, INT64_MAX, &max_tokens, &max_set)) return e;
  }

  std::vector<int32_t> ids;
  if (endpoint == Endpoint::kChatCompletions) {
    if (auto e = render_chat(body, ctx, &out->prompt_text)) return e;
    ids = ctx.tokenizer->encode(out->prompt_text, /*add_special_tokens=*/false);  // the template adds BOS
    out->split_reasoning = ctx.reasoning;
    out->starts_in_reasoning = ctx.reasoning && ends_in_think(out->prompt_text);
  } else {
    if (auto e = read_prompt(body, ctx, &out->prompt_text, &ids)) return e;
  }
  if (ids.empty()) return bad_request("the prompt is empty", endpoint == Endpoint::kCompletions ? "prompt" : "messages");

  const int64_t num_prompt = static_cast<int64_t>(ids.size());
  const int64_t limit = ctx.max_model_len;
  const char* prompt_param = endpoint == Endpoint::kChatCompletions ? "messages" : "prompt";
  if (limit > 0 && num_prompt >= limit) {
    ApiError e = bad_request(str_cat("This model's maximum context length is ", limit,
                                     " tokens. However, your prompt has ", num_prompt,
                                     " tokens, leaving no room for the completion. Please shorten the prompt."),
                             prompt_param);
    e.code = "context_length_exceeded";
    return e;
  }
  if (!max_set) {
    max_tokens = endpoint == Endpoint::kCompletions ? 16 : (limit > 0 ? limit - num_prompt : 4096);
    if (limit > 0) max_tokens = std::min(max_tokens, limit - num_prompt);
  } else if (limit > 0 && max_tokens > limit - num_prompt) {
    ApiError e = bad_request(str_cat("This model's maximum context length is ", limit,
                                     " tokens. However, you requested ", num_prompt + max_tokens, " tokens (",
                                     num_prompt, " in the ", prompt_param, ", ", max_tokens,
                                     " in the completion). Please reduce the length of the ", prompt_param,
                                     " or completion."),
                             prompt_param);
    e.code = "context_length_exceeded";
    return e;
  }
  g.max_tokens = max_tokens;
  g.prompt_ids = std::move(ids);
  out->prompt_tokens = num_prompt;

  for (int64_t i = 0; i < n; ++i) {
    GenerationRequest choice = g;
    if (g.seed) choice.seed = *g.seed + static_cast<uint64_t>(i);
    out->choices.push_back(std::move(choice));
  }
  return std::nullopt;
}

}  // namespace dsi::server
