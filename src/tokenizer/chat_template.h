// Chat templates: Hugging Face `apply_chat_template` semantics on top of the Jinja-subset interpreter
// (trim_blocks and lstrip_blocks on, raise_exception, strftime_now, tojson as transformers defines it).
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"

namespace dsi::tok {

namespace jinja {
struct Template;
}

class Tokenizer;

class ChatTemplate {
 public:
  // Parse errors name the construct and the line.
  static Result<ChatTemplate> parse(std::string_view text);
  // context_json: a JSON object whose keys become template variables ("messages", "add_generation_prompt",
  // "bos_token", "tools", ...).
  Result<std::string> render_json(std::string_view context_json) const;

 private:
  std::shared_ptr<const jinja::Template> tmpl_;
};

// Parses and renders in one go.
Result<std::string> render_template_json(std::string_view template_text, std::string_view context_json);

// Renders the tokenizer's chat template for a request {"messages": [...], "add_generation_prompt": bool, ...extra
// variables}; bos_token / eos_token / pad_token come from the tokenizer unless the request sets them.
Result<std::string> apply_chat_template(const Tokenizer& tok, std::string_view request_json);

}  // namespace dsi::tok
