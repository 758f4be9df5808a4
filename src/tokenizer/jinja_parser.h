// Parser for the Jinja subset. Errors name the construct and the line.
#pragma once

#include <memory>
#include <string_view>

#include "core/status.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_lexer.h"

namespace dsi::tok::jinja {

Result<std::shared_ptr<const Template>> parse_template(std::string_view source, const LexOptions& opts = {});

}  // namespace dsi::tok::jinja
