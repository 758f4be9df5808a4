// Expression evaluation of the Jinja-subset evaluator.
#include <cmath>

#include "tokenizer/jinja_eval.h"

namespace dsi::tok::jinja {

namespace {

int64_t as_int(const Value& v) { return v.kind == Kind::kBool ? v.b : v.i; }

}  // namespace

Value Evaluator::eval(const Expr& e) {
  if (failed()) return {};
  switch (e.kind) {
    case ExprKind::kLiteral: return e.literal;
    case ExprKind::kName: return lookup(e.name);
    case ExprKind::kAttr: {
      Value obj = eval(*e.args[0]);
      if (failed()) return {};
      return eval_attr(obj, e.name, e.line);
    }
    case ExprKind::kItem: {
      Value obj = eval(*e.args[0]);
      Value key = eval(*e.args[1]);
      if (failed()) return {};
      return eval_item(obj, key, e.line);
    }
    case ExprKind::kSlice: return eval_slice(e);
    case ExprKind::kCall: return eval_call(e);
    case ExprKind::kFilter: {
      Value v = eval(*e.args[0]);
      Array args;
      for (size_t k = 1; k < e.args.size(); ++k) args.push_back(eval(*e.args[k]));
      KwArgs kw;
      for (size_t k = 0; k < e.kw.size(); ++k) kw.emplace_back(e.kw_names[k], eval(*e.kw[k]));
      if (failed()) return {};
      return apply_filter(*this, e.name, v, args, kw, e.line);
    }
    case ExprKind::kTest: {
      Value v = eval(*e.args[0]);
      Array args;
      for (size_t k = 1; k < e.args.size(); ++k) args.push_back(eval(*e.args[k]));
      if (failed()) return {};
      bool r = apply_test(*this, e.name, v, args, e.line);
      return Value::boolean(e.negated ? !r : r);
    }
    case ExprKind::kNot: {
      Value v = eval(*e.args[0]);
      return Value::boolean(!truthy(v));
    }
    case ExprKind::kNeg: {
      Value v = eval(*e.args[0]);
      if (failed()) return {};
      if (v.kind == Kind::kFloat) return Value::number(-v.f);
      if (v.kind == Kind::kInt || v.kind == Kind::kBool) return Value::integer(-as_int(v));
      fail(e.line, str_cat("bad operand type for unary -: '", kind_name(v.kind), "'"));
      return {};
    }
    case ExprKind::kAnd: {
      Value a = eval(*e.args[0]);
      if (!truthy(a)) return a;
      return eval(*e.args[1]);
    }
    case ExprKind::kOr: {
      Value a = eval(*e.args[0]);
      if (truthy(a)) return a;
      return eval(*e.args[1]);
    }
    case ExprKind::kCond: {
      Value c = eval(*e.args[0]);
      if (failed()) return {};
      if (truthy(c)) return eval(*e.args[1]);
      if (e.args.size() > 2) return eval(*e.args[2]);
      return Value::undefined("conditional expression");
    }
    case ExprKind::kBinary: return eval_binary(e);
    case ExprKind::kCompare: return eval_compare(e);
    case ExprKind::kList:
    case ExprKind::kTuple: {
      Array items;
      for (const auto& a : e.args) items.push_back(eval(*a));
      return e.kind == ExprKind::kTuple ? Value::tuple(std::move(items)) : Value::array(std::move(items));
    }
    case ExprKind::kDict: {
      Value d = Value::object();
      for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
        Value key = eval(*e.args[k]);
        Value val = eval(*e.args[k + 1]);
        d.obj->set(key.is_string() ? key.s : to_str(key), std::move(val));
      }
      return d;
    }
  }
  return {};
}

Value Evaluator::eval_attr(const Value& obj, const std::string& name, int line) {
  if (obj.is_object()) {
    if (const Value* v = obj.obj->find(name)) return *v;
    return Value::undefined(name);
  }
  if (obj.is_undefined()) {
    fail(line, str_cat("'", obj.s.empty() ? "value" : obj.s, "' is undefined (reading attribute '", name, "')"));
    return {};
  }
  return Value::undefined(name);
}

Value Evaluator::eval_item(const Value& obj, const Value& key, int line) {
  if (obj.is_object()) {
    const Value* v = obj.obj->find(key.is_string() ? key.s : to_str(key));
    return v ? *v : Value::undefined(key.is_string() ? key.s : to_str(key));
  }
  if ((obj.is_array() || obj.is_string()) && (key.kind == Kind::kInt || key.kind == Kind::kBool)) {
    int64_t n = obj.is_array() ? static_cast<int64_t>(obj.arr->size()) : static_cast<int64_t>(char_length(obj.s));
    int64_t k = as_int(key);
    if (k < 0) k += n;
    if (k < 0 || k >= n) return Value::undefined("index");
    if (obj.is_array()) return (*obj.arr)[k];
    std::u32string u = to_u32(obj.s);
    return Value::string(from_u32(u.substr(k, 1)));
  }
  if (obj.is_undefined()) {
    fail(line, str_cat("'", obj.s.empty() ? "value" : obj.s, "' is undefined (subscripted with ", repr(key), ")"));
    return {};
  }
  return Value::undefined("item");
}

Value Evaluator::eval_slice(const Expr& e) {
  Value obj = eval(*e.args[0]);
  int64_t part[3] = {0, 0, 1};
  bool has[3];
  for (int j = 0; j < 3; ++j) {
    has[j] = false;
    if (!e.has_slice_part[j]) continue;
    Value v = eval(*e.args[1 + j]);
    if (v.is_none()) continue;
    if (v.kind != Kind::kInt && v.kind != Kind::kBool) {
      fail(e.line, "slice indices must be integers");
      return {};
    }
    part[j] = as_int(v);
    has[j] = true;
  }
  if (failed()) return {};
  if (part[2] == 0) {
    fail(e.line, "slice step cannot be zero");
    return {};
  }
  std::u32string u;
  int64_t n;
  if (obj.is_array()) {
    n = static_cast<int64_t>(obj.arr->size());
  } else if (obj.is_string()) {
    u = to_u32(obj.s);
    n = static_cast<int64_t>(u.size());
  } else {
    fail(e.line, str_cat("'", kind_name(obj.kind), "' object cannot be sliced"));
    return {};
  }
  int64_t step = part[2];
  auto clamp = [&](int64_t v, bool present, int64_t dflt) {
    if (!present) return dflt;
    if (v < 0) v += n;
    if (step > 0) return std::max<int64_t>(0, std::min(v, n));
    return std::max<int64_t>(-1, std::min(v, n - 1));
  };
  int64_t start = clamp(part[0], has[0], step > 0 ? 0 : n - 1);
  int64_t stop = clamp(part[1], has[1], step > 0 ? n : -1);
  Array items;
  std::u32string out;
  for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
    if (obj.is_array()) items.push_back((*obj.arr)[k]);
    else out += u[k];
  }
  return obj.is_array() ? Value::array(std::move(items)) : Value::string(from_u32(out));
}

Value Evaluator::eval_call(const Expr& e) {
  const Expr& callee = *e.args[0];
  Array args;
  for (size_t k = 1; k < e.args.size(); ++k) args.push_back(eval(*e.args[k]));
  KwArgs kw;
  for (size_t k = 0; k < e.kw.size(); ++k) kw.emplace_back(e.kw_names[k], eval(*e.kw[k]));
  if (failed()) return {};
  if (callee.kind == ExprKind::kAttr) {
    Value obj = eval(*callee.args[0]);
    if (failed()) return {};
    if (obj.is_string() || obj.is_array() || (obj.is_object() && !obj.obj->is_namespace)) {
      bool found = false;
      Value r = call_method(*this, obj, callee.name, args, kw, e.line, found);
      if (found || failed()) return r;
    }
    Value fn = eval_attr(obj, callee.name, e.line);
    if (failed()) return {};
    return call(fn, args, kw, e.line);
  }
  Value fn = eval(callee);
  if (failed()) return {};
  return call(fn, args, kw, e.line);
}

Value Evaluator::eval_binary(const Expr& e) {
  Value a = eval(*e.args[0]);
  Value b = eval(*e.args[1]);
  if (failed()) return {};
  const std::string& op = e.name;
  if (op == "~") {
    std::string s = to_str(a) + to_str(b);
    if (s.size() > limits_.max_output_bytes) {
      fail(e.line, "string too long");
      return {};
    }
    return Value::string(std::move(s));
  }
  auto type_error = [&]() {
    if (a.is_undefined() || b.is_undefined()) {
      const Value& u = a.is_undefined() ? a : b;
      fail(e.line, str_cat("'", u.s.empty() ? "value" : u.s, "' is undefined (operand of '", op, "')"));
    } else {
      fail(e.line, str_cat("unsupported operand types for ", op, ": '", kind_name(a.kind), "' and '", kind_name(b.kind), "'"));
    }
    return Value();
  };
  if (op == "+") {
    if (a.is_string() && b.is_string()) {
      if (a.s.size() + b.s.size() > limits_.max_output_bytes) {
        fail(e.line, "string too long");
        return {};
      }
      return Value::string(a.s + b.s);
    }
    if (a.is_array() && b.is_array()) {
      if (!step(e.line, static_cast<int64_t>(a.arr->size() + b.arr->size()))) return {};
      Array r = *a.arr;
      r.insert(r.end(), b.arr->begin(), b.arr->end());
      return Value::array(std::move(r));
    }
  }
  if (op == "*") {
    const Value* seq = a.is_string() || a.is_array() ? &a : (b.is_string() || b.is_array() ? &b : nullptr);
    const Value* cnt = seq == &a ? &b : &a;
    if (seq && (cnt->kind == Kind::kInt || cnt->kind == Kind::kBool)) {
      int64_t n = std::max<int64_t>(0, as_int(*cnt));
      size_t unit = seq->is_string() ? seq->s.size() : seq->arr->size() * 16;
      if (n > 0 && unit > 0 && static_cast<double>(unit) * n > static_cast<double>(limits_.max_output_bytes)) {
        fail(e.line, "repetition result too large");
        return {};
      }
      if (seq->is_string()) {
        std::string r;
        for (int64_t k = 0; k < n; ++k) r += seq->s;
        return Value::string(std::move(r));
      }
      Array r;
      for (int64_t k = 0; k < n; ++k) r.insert(r.end(), seq->arr->begin(), seq->arr->end());
      return Value::array(std::move(r));
    }
  }
  if (!a.is_number() || !b.is_number()) return type_error();
  bool ints = a.kind != Kind::kFloat && b.kind != Kind::kFloat;
  double x = a.as_double(), y = b.as_double();
  int64_t p = ints ? as_int(a) : 0, q = ints ? as_int(b) : 0;
  if (op == "+") return ints ? Value::integer(p + q) : Value::number(x + y);
  if (op == "-") return ints ? Value::integer(p - q) : Value::number(x - y);
  if (op == "*") return ints ? Value::integer(p * q) : Value::number(x * y);
  if (op == "/") {
    if (y == 0) {
      fail(e.line, "division by zero");
      return {};
    }
    return Value::number(x / y);
  }
  if (op == "//" || op == "%") {
    if (y == 0) {
      fail(e.line, op == "//" ? "integer division by zero" : "modulo by zero");
      return {};
    }
    if (ints) {
      int64_t d = p / q, m = p % q;
      if (m != 0 && ((m < 0) != (q < 0))) {
        --d;
        m += q;
      }
      return Value::integer(op == "//" ? d : m);
    }
    double d = std::floor(x / y);
    return Value::number(op == "//" ? d : x - d * y);
  }
  if (op == "**") {
    if (ints && q >= 0) {
      double r = std::pow(static_cast<double>(p), static_cast<double>(q));
      if (std::fabs(r) < 9e18) return Value::integer(static_cast<int64_t>(std::llround(r)));
      fail(e.line, "integer power too large");
      return {};
    }
    return Value::number(std::pow(x, y));
  }
  return type_error();
}

Value Evaluator::eval_compare(const Expr& e) {
  Value a = eval(*e.args[0]);
  Value b = eval(*e.args[1]);
  if (failed()) return {};
  const std::string& op = e.name;
  if (op == "==") return Value::boolean(values_equal(a, b));
  if (op == "!=") return Value::boolean(!values_equal(a, b));
  if (op == "in") {
    bool r = false;
    if (b.is_string()) {
      if (!a.is_string()) {
        fail(e.line, str_cat("'in <string>' requires a string as left operand, not '", kind_name(a.kind), "'"));
        return {};
      }
      r = b.s.find(a.s) != std::string::npos;
    } else if (b.is_array()) {
      for (const auto& x : *b.arr) r = r || values_equal(a, x);
    } else if (b.is_object()) {
      r = b.obj->find(a.is_string() ? a.s : to_str(a)) != nullptr;
    } else if (!b.is_undefined()) {
      fail(e.line, str_cat("argument of type '", kind_name(b.kind), "' is not iterable"));
      return {};
    }
    return Value::boolean(e.negated ? !r : r);
  }
  bool ok = true;
  int c = compare_values(a, b, ok);
  if (!ok) {
    fail(e.line, str_cat("'", op, "' not supported between '", kind_name(a.kind), "' and '", kind_name(b.kind), "'"));
    return {};
  }
  if (op == "<") return Value::boolean(c < 0);
  if (op == ">") return Value::boolean(c > 0);
  if (op == "<=") return Value::boolean(c <= 0);
  return Value::boolean(c >= 0);
}

}  // namespace dsi::tok::jinja
