// Evaluator of the Jinja subset: renders a parsed Template with a set of global variables. Errors are values:
// the first error is kept (with its line) and evaluation unwinds. Bounded: output size, steps, call depth.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "tokenizer/jinja_ast.h"

namespace dsi::tok::jinja {

struct RenderLimits {
  size_t max_output_bytes = size_t{64} << 20;
  int64_t max_steps = 5'000'000;  // statements, loop iterations and filter element visits
  int max_call_depth = 64;
};

class Evaluator {
 public:
  explicit Evaluator(RenderLimits limits = {}) : limits_(limits) {}
  // globals: variables visible to the template (messages, bos_token, ...). Builtins are added.
  Result<std::string> render(const Template& tmpl, const std::vector<std::pair<std::string, Value>>& globals);

  // For builtins.
  void fail(int line, const std::string& msg);
  bool failed() const { return !err_.ok(); }
  bool step(int line, int64_t n = 1);  // false (and an error) when the step budget is spent
  Value call(const Value& fn, Array& args, KwArgs& kw, int line);
  size_t max_output_bytes() const { return limits_.max_output_bytes; }

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  Flow exec_body(const Body& body, std::string& out);
  Flow exec(const Stmt& s, std::string& out);
  void exec_for(const Stmt& s, std::string& out);
  void exec_set(const Stmt& s, std::string& out);
  Value eval(const Expr& e);
  Value eval_binary(const Expr& e);
  Value eval_compare(const Expr& e);
  Value eval_attr(const Value& obj, const std::string& name, int line);
  Value eval_item(const Value& obj, const Value& key, int line);
  Value eval_slice(const Expr& e);
  Value eval_call(const Expr& e);
  Value make_macro(const Stmt& s);
  Value lookup(const std::string& name) const;
  void assign(const std::string& name, Value v);
  void append(std::string& out, const std::string& s, int line);

  RenderLimits limits_;
  Status err_;
  int64_t steps_ = 0;
  int call_depth_ = 0;
  std::vector<std::vector<std::pair<std::string, Value>>> frames_;
};

// Builtins (jinja_builtins.cc).
Value apply_filter(Evaluator& ev, const std::string& name, const Value& v, Array& args, KwArgs& kw, int line);
bool apply_test(Evaluator& ev, const std::string& name, const Value& v, Array& args, int line);
// Methods on strings, lists and dicts (str.split, dict.items, ...). found=false when obj has no such method.
Value call_method(Evaluator& ev, const Value& obj, const std::string& name, Array& args, KwArgs& kw, int line,
                  bool& found);
// Global functions: range, namespace, dict, raise_exception, strftime_now.
std::vector<std::pair<std::string, Value>> builtin_globals();

}  // namespace dsi::tok::jinja
