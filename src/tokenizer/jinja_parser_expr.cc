// Expression parsing of the Jinja subset (precedence as in Jinja2: or, and, not, comparisons, + -, ~, * / // %,
// **, unary, then postfix . [] () | is).
#include <algorithm>
#include <cstdlib>

#include "tokenizer/jinja_parser_impl.h"

namespace dsi::tok::jinja {

ExprPtr Parser::done(ExprPtr n) {
  if (!n) return n;
  int d = 0;
  for (const auto& a : n->args) {
    if (a) d = std::max(d, a->depth);
  }
  for (const auto& a : n->kw) {
    if (a) d = std::max(d, a->depth);
  }
  n->depth = d + 1;
  if (n->depth > kMaxExprDepth) fail(n->line, "expression nested too deeply");
  return n;
}

ExprPtr Parser::make(ExprKind k, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = k;
  e->line = line;
  return e;
}

ExprPtr Parser::expr(bool allow_cond) {
  if (++depth_ > kMaxParseDepth) {
    fail(cur().line, "expression nested too deeply");
    --depth_;
    return nullptr;
  }
  ExprPtr e = or_expr();
  while (allow_cond && !failed() && is_name("if")) {
    int line = cur().line;
    ++p_;
    auto c = make(ExprKind::kCond, line);
    c->args.push_back(or_expr());  // condition
    c->args.push_back(std::move(e));
    if (accept_name("else")) c->args.push_back(expr());
    e = done(std::move(c));
  }
  --depth_;
  return e;
}

ExprPtr Parser::or_expr() {
  ExprPtr e = and_expr();
  while (!failed() && is_name("or")) {
    auto n = make(ExprKind::kOr, cur().line);
    ++p_;
    n->args.push_back(std::move(e));
    n->args.push_back(and_expr());
    e = done(std::move(n));
  }
  return e;
}
ExprPtr Parser::and_expr() {
  ExprPtr e = not_expr();
  while (!failed() && is_name("and")) {
    auto n = make(ExprKind::kAnd, cur().line);
    ++p_;
    n->args.push_back(std::move(e));
    n->args.push_back(not_expr());
    e = done(std::move(n));
  }
  return e;
}
ExprPtr Parser::not_expr() {
  if (is_name("not")) {
    if (++depth_ > kMaxParseDepth) {
      fail(cur().line, "expression nested too deeply");
      return nullptr;
    }
    auto n = make(ExprKind::kNot, cur().line);
    ++p_;
    n->args.push_back(not_expr());
    --depth_;
    return done(std::move(n));
  }
  return compare();
}
ExprPtr Parser::compare() {
  ExprPtr e = binary(0);
  while (!failed()) {
    std::string op;
    bool neg = false;
    if (cur().type == Tok::kOp && (cur().text == "==" || cur().text == "!=" || cur().text == "<" ||
                                    cur().text == ">" || cur().text == "<=" || cur().text == ">=")) {
      op = cur().text;
      ++p_;
    } else if (is_name("in")) {
      op = "in";
      ++p_;
    } else if (is_name("not") && peek().type == Tok::kName && peek().text == "in") {
      op = "in";
      neg = true;
      p_ += 2;
    } else {
      break;
    }
    auto n = make(ExprKind::kCompare, cur().line);
    n->name = op;
    n->negated = neg;
    n->args.push_back(std::move(e));
    n->args.push_back(binary(0));
    e = done(std::move(n));
  }
  return e;
}
// Levels: 0: + -   1: ~   2: * / // %   3: **
ExprPtr Parser::binary(int level) {
  if (level == 4) return unary();
  static const std::vector<std::vector<const char*>> kOps = {{"+", "-"}, {"~"}, {"*", "/", "//", "%"}, {"**"}};
  ExprPtr e = binary(level + 1);
  while (!failed() && cur().type == Tok::kOp) {
    const char* hit = nullptr;
    for (const char* op : kOps[level]) {
      if (cur().text == op) hit = op;
    }
    if (hit == nullptr) break;
    auto n = make(ExprKind::kBinary, cur().line);
    ++p_;
    n->name = hit;
    n->args.push_back(std::move(e));
    n->args.push_back(binary(level + 1));
    e = done(std::move(n));
  }
  return e;
}
ExprPtr Parser::unary() {
  if (is_op("-") || is_op("+")) {
    if (++depth_ > kMaxParseDepth) {
      fail(cur().line, "expression nested too deeply");
      return nullptr;
    }
    bool neg = is_op("-");
    auto n = make(ExprKind::kNeg, cur().line);
    ++p_;
    n->args.push_back(unary());
    --depth_;
    ExprPtr e = neg ? done(std::move(n)) : std::move(n->args[0]);
    return postfix(std::move(e), true);
  }
  return postfix(primary(), true);
}

void Parser::call_args(Expr& n) {
  // After '(' : positional and keyword arguments until ')'.
  while (!failed() && !is_op(")")) {
    if (cur().type == Tok::kName && peek().type == Tok::kOp && peek().text == "=") {
      n.kw_names.push_back(cur().text);
      p_ += 2;
      n.kw.push_back(expr());
    } else {
      if (!n.kw.empty()) fail(cur().line, "positional argument after keyword argument");
      n.args.push_back(expr());
    }
    if (!accept_op(",")) break;
  }
  expect_op(")", "to close the argument list");
}

ExprPtr Parser::postfix(ExprPtr e, bool filters) {
  while (!failed() && e) {
    int line = cur().line;
    if (accept_op(".")) {
      auto n = make(ExprKind::kAttr, line);
      if (cur().type == Tok::kInt) {
        n->kind = ExprKind::kItem;
        n->args.push_back(std::move(e));
        auto lit = make(ExprKind::kLiteral, line);
        lit->literal = Value::integer(std::atoll(cur().text.c_str()));
        ++p_;
        n->args.push_back(std::move(lit));
        e = done(std::move(n));
        continue;
      }
      n->name = expect_identifier("after '.'");
      n->args.push_back(std::move(e));
      e = done(std::move(n));
    } else if (accept_op("[")) {
      e = subscript(std::move(e), line);
    } else if (accept_op("(")) {
      auto n = make(ExprKind::kCall, line);
      n->args.push_back(std::move(e));
      call_args(*n);
      e = done(std::move(n));
    } else if (filters && accept_op("|")) {
      auto n = make(ExprKind::kFilter, line);
      n->name = expect_identifier("after '|'");
      while (accept_op(".")) n->name += "." + expect_identifier("in a filter name");
      n->args.push_back(std::move(e));
      if (accept_op("(")) call_args(*n);
      e = done(std::move(n));
    } else if (filters && is_name("is")) {
      ++p_;
      auto n = make(ExprKind::kTest, line);
      n->negated = accept_name("not");
      n->name = expect_identifier("after 'is'");
      n->args.push_back(std::move(e));
      if (accept_op("(")) {
        call_args(*n);
      } else if (starts_primary() && !is_name("else") && !is_name("or") && !is_name("and") && !is_name("if") &&
                 !is_name("is") && !is_name("in") && !is_name("not")) {
        n->args.push_back(postfix(primary(), false));
      }
      e = done(std::move(n));
    } else {
      break;
    }
  }
  return e;
}

bool Parser::starts_primary() const {
  Tok k = cur().type;
  return k == Tok::kName || k == Tok::kString || k == Tok::kInt || k == Tok::kFloat ||
         (k == Tok::kOp && (cur().text == "(" || cur().text == "[" || cur().text == "{"));
}

ExprPtr Parser::subscript(ExprPtr obj, int line) {
  ExprPtr parts[3];
  bool has[3] = {false, false, false};
  bool is_slice = false;
  int k = 0;
  while (!failed()) {
    if (is_op(":")) {
      is_slice = true;
      ++p_;
      if (++k > 2) {
        fail(line, "too many ':' in a slice");
        return nullptr;
      }
      continue;
    }
    if (is_op("]")) break;
    parts[k] = expr();
    has[k] = true;
    if (!is_op(":") && !is_op("]")) {
      fail(cur().line, str_cat("expected ']' in a subscript, got '", describe(cur()), "'"));
      return nullptr;
    }
  }
  expect_op("]", "to close a subscript");
  auto n = make(is_slice ? ExprKind::kSlice : ExprKind::kItem, line);
  n->args.push_back(std::move(obj));
  if (!is_slice) {
    if (!has[0]) fail(line, "empty subscript");
    n->args.push_back(std::move(parts[0]));
    return done(std::move(n));
  }
  for (int j = 0; j < 3; ++j) {
    n->has_slice_part[j] = has[j];
    n->args.push_back(has[j] ? std::move(parts[j]) : nullptr);
  }
  return done(std::move(n));
}

ExprPtr Parser::primary() {
  const Token& tk = cur();
  int line = tk.line;
  if (++depth_ > kMaxParseDepth) {
    fail(line, "expression nested too deeply");
    return nullptr;
  }
  ExprPtr e;
  if (tk.type == Tok::kString) {
    e = make(ExprKind::kLiteral, line);
    std::string s;
    while (cur().type == Tok::kString) s += t_[p_++].text;  // adjacent literals concatenate
    e->literal = Value::string(std::move(s));
  } else if (tk.type == Tok::kInt || tk.type == Tok::kFloat) {
    e = make(ExprKind::kLiteral, line);
    e->literal = tk.type == Tok::kInt ? Value::integer(std::strtoll(tk.text.c_str(), nullptr, 10))
                                      : Value::number(std::strtod(tk.text.c_str(), nullptr));
    ++p_;
  } else if (tk.type == Tok::kName) {
    e = make(ExprKind::kLiteral, line);
    const std::string& n = tk.text;
    if (n == "true" || n == "True") e->literal = Value::boolean(true);
    else if (n == "false" || n == "False") e->literal = Value::boolean(false);
    else if (n == "none" || n == "None") e->literal = Value::none();
    else {
      e->kind = ExprKind::kName;
      e->name = n;
    }
    ++p_;
  } else if (accept_op("(")) {
    if (accept_op(")")) {
      e = make(ExprKind::kTuple, line);
    } else {
      e = expr();
      if (is_op(",")) {
        auto tup = make(ExprKind::kTuple, line);
        tup->args.push_back(std::move(e));
        while (accept_op(",") && !is_op(")")) tup->args.push_back(expr());
        e = done(std::move(tup));
      }
      expect_op(")", "to close '('");
    }
  } else if (accept_op("[")) {
    e = make(ExprKind::kList, line);
    while (!failed() && !is_op("]")) {
      e->args.push_back(expr());
      if (!accept_op(",")) break;
    }
    expect_op("]", "to close a list");
  } else if (accept_op("{")) {
    e = make(ExprKind::kDict, line);
    while (!failed() && !is_op("}")) {
      e->args.push_back(expr());
      expect_op(":", "in a dict literal");
      e->args.push_back(expr());
      if (!accept_op(",")) break;
    }
    expect_op("}", "to close a dict");
  } else {
    fail(line, str_cat("unexpected '", describe(tk), "' in an expression"));
  }
  --depth_;
  return done(std::move(e));
}

}  // namespace dsi::tok::jinja
