#include "tokenizer/jinja_parser.h"

#include "tokenizer/jinja_parser_impl.h"

namespace dsi::tok::jinja {

Body Parser::body(const std::vector<const char*>& ends, std::string& end) {
  Body out;
  if (++depth_ > kMaxParseDepth) {
    fail(cur().line, "blocks nested too deeply");
    return out;
  }
  while (!failed()) {
    const Token& tk = cur();
    if (tk.type == Tok::kEof) {
      if (!ends.empty()) fail(tk.line, str_cat("unexpected end of template: missing '{% ", ends.back(), " %}'"));
      break;
    }
    if (tk.type == Tok::kText) {
      auto s = std::make_unique<Stmt>();
      s->kind = StmtKind::kText;
      s->text = tk.text;
      s->line = tk.line;
      out.push_back(std::move(s));
      ++p_;
    } else if (tk.type == Tok::kVarBegin) {
      ++p_;
      auto s = std::make_unique<Stmt>();
      s->kind = StmtKind::kOutput;
      s->line = tk.line;
      s->exprs.push_back(expr());
      if (failed()) break;
      if (cur().type != Tok::kVarEnd) {
        fail(cur().line, str_cat("expected '}}', got '", describe(cur()), "'"));
        break;
      }
      ++p_;
      out.push_back(std::move(s));
    } else if (tk.type == Tok::kBlockBegin) {
      ++p_;
      if (cur().type != Tok::kName) {
        fail(cur().line, "expected a tag name after '{%'");
        break;
      }
      std::string name = cur().text;
      for (const char* e : ends) {
        if (name == e) {
          end = name;
          ++p_;
          --depth_;
          return out;
        }
      }
      auto s = statement(name, cur().line);
      if (s) out.push_back(std::move(s));
    } else {
      fail(tk.line, str_cat("unexpected '", describe(tk), "'"));
    }
  }
  --depth_;
  return out;
}

std::unique_ptr<Stmt> Parser::statement(const std::string& name, int line) {
  ++p_;
  auto s = std::make_unique<Stmt>();
  s->line = line;
  std::string end;
  if (name == "if") {
    s->kind = StmtKind::kIf;
    s->exprs.push_back(expr());
    expect_block_end("if");
    while (!failed()) {
      s->bodies.push_back(body({"elif", "else", "endif"}, end));
      if (failed()) break;
      if (end == "elif") {
        s->exprs.push_back(expr());
        expect_block_end("elif");
      } else if (end == "else") {
        expect_block_end("else");
        s->bodies.push_back(body({"endif"}, end));
        s->has_else = true;
        expect_block_end("endif");
        break;
      } else {
        expect_block_end("endif");
        break;
      }
    }
  } else if (name == "for") {
    s->kind = StmtKind::kFor;
    do {
      s->targets.push_back(expect_identifier("as a loop variable"));
    } while (!failed() && accept_op(","));
    if (!accept_name("in")) fail(cur().line, "expected 'in' in '{% for %}'");
    s->exprs.push_back(or_expr());
    if (accept_name("if")) s->exprs.push_back(expr(false));
    if (is_name("recursive")) fail(cur().line, "unsupported construct: recursive for loop");
    expect_block_end("for");
    s->bodies.push_back(body({"else", "endfor"}, end));
    if (!failed() && end == "else") {
      expect_block_end("else");
      s->bodies.push_back(body({"endfor"}, end));
      s->has_else = true;
    }
    expect_block_end("endfor");
  } else if (name == "set") {
    s->kind = StmtKind::kSet;
    s->text = expect_identifier("after 'set'");
    if (accept_op(".")) {
      s->attr = expect_identifier("after '.' in 'set'");
    } else if (is_op(",")) {
      s->targets.push_back(s->text);
      while (accept_op(",")) s->targets.push_back(expect_identifier("in 'set' targets"));
    }
    if (accept_op("=")) {
      s->exprs.push_back(expr());
      if (!failed() && is_op(",")) {
        auto tup = std::make_unique<Expr>();
        tup->kind = ExprKind::kTuple;
        tup->line = line;
        tup->args.push_back(std::move(s->exprs[0]));
        while (accept_op(",")) tup->args.push_back(expr());
        s->exprs[0] = done(std::move(tup));
      }
      expect_block_end("set");
    } else {
      if (!s->attr.empty() || !s->targets.empty()) fail(line, "block 'set' takes a single name");
      expect_block_end("set");
      s->kind = StmtKind::kSetBlock;
      s->bodies.push_back(body({"endset"}, end));
      expect_block_end("endset");
    }
  } else if (name == "macro") {
    s->kind = StmtKind::kMacro;
    s->text = expect_identifier("after 'macro'");
    expect_op("(", "after the macro name");
    while (!failed() && !is_op(")")) {
      s->targets.push_back(expect_identifier("as a macro parameter"));
      s->exprs.push_back(accept_op("=") ? expr() : nullptr);
      if (!accept_op(",")) break;
    }
    expect_op(")", "to close the macro parameters");
    expect_block_end("macro");
    s->bodies.push_back(body({"endmacro"}, end));
    expect_block_end("endmacro");
  } else if (name == "break" || name == "continue") {
    s->kind = name == "break" ? StmtKind::kBreak : StmtKind::kContinue;
    expect_block_end(name.c_str());
  } else if (name == "generation") {
    // transformers' AssistantTracker extension: renders its body unchanged.
    s->kind = StmtKind::kBlock;
    expect_block_end("generation");
    s->bodies.push_back(body({"endgeneration"}, end));
    expect_block_end("endgeneration");
  } else {
    fail(line, str_cat("unsupported construct: '{% ", name, " %}'"));
    return nullptr;
  }
  return failed() ? nullptr : std::move(s);
}

Result<std::shared_ptr<const Template>> parse_template(std::string_view source, const LexOptions& opts) {
  DSI_ASSIGN_OR_RETURN(std::vector<Token> toks, lex(source, opts));
  return Parser(std::move(toks)).run();
}

}  // namespace dsi::tok::jinja
