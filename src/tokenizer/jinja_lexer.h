// Lexer for the Jinja subset: template text, {{ }}, {% %} and {# #} with whitespace control ("-", "+") and
// Hugging Face's environment settings (trim_blocks, lstrip_blocks; the trailing newline of the source dropped).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace dsi::tok::jinja {

enum class Tok : uint8_t { kText, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
  Tok type;
  std::string text;  // text data, name, decoded string literal, number literal or operator
  int line;
};

struct LexOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
  bool keep_trailing_newline = false;
};

Result<std::vector<Token>> lex(std::string_view source, const LexOptions& opts = {});

}  // namespace dsi::tok::jinja
