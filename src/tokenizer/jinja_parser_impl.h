// The recursive-descent parser of the Jinja subset (shared by jinja_parser.cc and jinja_parser_expr.cc).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_lexer.h"

namespace dsi::tok::jinja {

constexpr int kMaxParseDepth = 200;  // nesting of blocks and parentheses
constexpr int kMaxExprDepth = 256;   // depth of an expression tree (bounds evaluation recursion)

class Parser {
 public:
  explicit Parser(std::vector<Token> toks) : t_(std::move(toks)) {}

  Result<std::shared_ptr<const Template>> run() {
    auto tmpl = std::make_shared<Template>();
    std::string end;
    tmpl->body = body({}, end);
    if (!err_.ok()) return err_;
    return std::shared_ptr<const Template>(std::move(tmpl));
  }

 private:
  const Token& cur() const { return t_[p_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(p_ + k, t_.size() - 1)]; }
  bool failed() const { return !err_.ok(); }
  void fail(int line, const std::string& msg) {
    if (err_.ok()) err_ = Status::InvalidArgument(str_cat("template line ", line, ": ", msg));
  }
  bool is_op(const char* op) const { return cur().type == Tok::kOp && cur().text == op; }
  bool is_name(const char* n) const { return cur().type == Tok::kName && cur().text == n; }
  bool accept_op(const char* op) {
    if (!is_op(op)) return false;
    ++p_;
    return true;
  }
  bool accept_name(const char* n) {
    if (!is_name(n)) return false;
    ++p_;
    return true;
  }
  void expect_op(const char* op, const char* where) {
    if (!accept_op(op)) fail(cur().line, str_cat("expected '", op, "' ", where, ", got '", describe(cur()), "'"));
  }
  void expect_block_end(const char* tag) {
    if (cur().type == Tok::kBlockEnd) {
      ++p_;
      return;
    }
    fail(cur().line, str_cat("expected '%}' to end '{% ", tag, " %}', got '", describe(cur()), "'"));
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::kEof: return "end of template";
      case Tok::kBlockEnd: return "%}";
      case Tok::kVarEnd: return "}}";
      case Tok::kBlockBegin: return "{%";
      case Tok::kVarBegin: return "{{";
      case Tok::kText: return "text";
      default: return t.text;
    }
  }
  std::string expect_identifier(const char* where) {
    if (cur().type != Tok::kName) {
      fail(cur().line, str_cat("expected a name ", where, ", got '", describe(cur()), "'"));
      return {};
    }
    return t_[p_++].text;
  }

  // Parses statements until "{% <one of ends> ...": leaves p_ on that name and sets end.
  // Statements (jinja_parser.cc).
  Body body(const std::vector<const char*>& ends, std::string& end);
  std::unique_ptr<Stmt> statement(const std::string& name, int line);

  // Expressions (jinja_parser_expr.cc).
  ExprPtr make(ExprKind k, int line);
  ExprPtr done(ExprPtr n);  // computes the node's depth; fails beyond kMaxExprDepth
  ExprPtr expr(bool allow_cond = true);
  ExprPtr or_expr();
  ExprPtr and_expr();
  ExprPtr not_expr();
  ExprPtr compare();
  ExprPtr binary(int level);
  ExprPtr unary();
  void call_args(Expr& n);
  ExprPtr postfix(ExprPtr e, bool filters);
  bool starts_primary() const;
  ExprPtr subscript(ExprPtr obj, int line);
  ExprPtr primary();

  std::vector<Token> t_;
  size_t p_ = 0;
  int depth_ = 0;
  Status err_;
};

}  // namespace dsi::tok::jinja
