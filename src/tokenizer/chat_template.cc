#include "tokenizer/chat_template.h"

#include <nlohmann/json.hpp>

#include "tokenizer/jinja_eval.h"
#include "tokenizer/jinja_parser.h"
#include "tokenizer/tokenizer.h"

namespace dsi::tok {

namespace {

using json = nlohmann::ordered_json;

jinja::Value from_json(const json& j, int depth) {
  using jinja::Value;
  if (depth > 256) return Value::none();
  switch (j.type()) {
    case json::value_t::null: return Value::none();
    case json::value_t::boolean: return Value::boolean(j.get<bool>());
    case json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case json::value_t::number_unsigned: return Value::integer(static_cast<int64_t>(j.get<uint64_t>()));
    case json::value_t::number_float: return Value::number(j.get<double>());
    case json::value_t::string: return Value::string(j.get<std::string>());
    case json::value_t::array: {
      jinja::Array a;
      a.reserve(j.size());
      for (const auto& x : j) a.push_back(from_json(x, depth + 1));
      return Value::array(std::move(a));
    }
    case json::value_t::object: {
      Value o = Value::object();
      for (auto it = j.begin(); it != j.end(); ++it) o.obj->items.emplace_back(it.key(), from_json(it.value(), depth + 1));
      return o;
    }
    default: return Value::none();
  }
}

Result<json> parse_object(std::string_view text, const char* what) {
  try {
    json j = json::parse(text);
    if (!j.is_object()) return Status::InvalidArgument(str_cat(what, ": expected a JSON object"));
    return j;
  } catch (const std::exception& e) {
    return Status::InvalidArgument(str_cat(what, ": ", e.what()));
  }
}

}  // namespace

Result<ChatTemplate> ChatTemplate::parse(std::string_view text) {
  ChatTemplate t;
  DSI_ASSIGN_OR_RETURN(t.tmpl_, jinja::parse_template(text));
  return t;
}

Result<std::string> ChatTemplate::render_json(std::string_view context_json) const {
  DSI_ASSIGN_OR_RETURN(json ctx, parse_object(context_json, "chat template context"));
  std::vector<std::pair<std::string, jinja::Value>> globals;
  for (auto it = ctx.begin(); it != ctx.end(); ++it) globals.emplace_back(it.key(), from_json(it.value(), 0));
  jinja::Evaluator ev;
  return ev.render(*tmpl_, globals);
}

Result<std::string> render_template_json(std::string_view template_text, std::string_view context_json) {
  DSI_ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::parse(template_text));
  return t.render_json(context_json);
}

Result<std::string> apply_chat_template(const Tokenizer& tok, std::string_view request_json) {
  if (tok.chat_template().empty()) return Status::NotFound("tokenizer_config.json has no chat_template");
  DSI_ASSIGN_OR_RETURN(json req, parse_object(request_json, "chat request"));
  if (!req.contains("messages") || !req["messages"].is_array()) {
    return Status::InvalidArgument("chat request: 'messages' must be a list");
  }
  // transformers passes the special tokens map first, then the caller's variables.
  json ctx = json::object();
  if (tok.bos_token()) ctx["bos_token"] = *tok.bos_token();
  if (tok.eos_token()) ctx["eos_token"] = *tok.eos_token();
  if (tok.pad_token()) ctx["pad_token"] = *tok.pad_token();
  if (!req.contains("add_generation_prompt")) ctx["add_generation_prompt"] = false;
  for (auto it = req.begin(); it != req.end(); ++it) ctx[it.key()] = it.value();
  DSI_ASSIGN_OR_RETURN(ChatTemplate t, ChatTemplate::parse(tok.chat_template()));
  return t.render_json(ctx.dump());
}

}  // namespace dsi::tok
