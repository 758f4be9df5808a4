// Filters, tests, methods and global functions of the Jinja subset (the ones published chat templates use).
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <ctime>

#include "tokenizer/jinja_eval.h"
#include "tokenizer/utf8.h"

namespace dsi::tok::jinja {

namespace {

bool is_py_space(char32_t c) { return is_unicode_space(c) || c == 0x1c || c == 0x1d || c == 0x1e || c == 0x1f; }

std::string strip(const std::string& s, bool left, bool right, const Value* chars) {
  std::u32string u = to_u32(s);
  std::u32string set = chars && chars->is_string() ? to_u32(chars->s) : std::u32string();
  auto drop = [&](char32_t c) { return chars && chars->is_string() ? set.find(c) != std::u32string::npos : is_py_space(c); };
  size_t b = 0, e = u.size();
  if (left) while (b < e && drop(u[b])) ++b;
  if (right) while (e > b && drop(u[e - 1])) --e;
  return from_u32(u.substr(b, e - b));
}

Value split(const std::string& s, const Value* sep, int64_t maxsplit) {
  Array parts;
  if (sep == nullptr || sep->is_none()) {
    std::u32string u = to_u32(s);
    size_t k = 0;
    while (k < u.size()) {
      while (k < u.size() && is_py_space(u[k])) ++k;
      if (k >= u.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        std::u32string rest = u.substr(k);
        while (!rest.empty() && is_py_space(rest.back())) rest.pop_back();
        parts.push_back(Value::string(from_u32(rest)));
        break;
      }
      size_t e = k;
      while (e < u.size() && !is_py_space(u[e])) ++e;
      parts.push_back(Value::string(from_u32(u.substr(k, e - k))));
      k = e;
    }
    return Value::array(std::move(parts));
  }
  size_t start = 0;
  while (true) {
    size_t p = s.find(sep->s, start);
    if (p == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit)) break;
    parts.push_back(Value::string(s.substr(start, p - start)));
    start = p + sep->s.size();
  }
  parts.push_back(Value::string(s.substr(start)));
  return Value::array(std::move(parts));
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to, int64_t count,
                        size_t limit) {
  if (from.empty()) {
    std::u32string u = to_u32(s);
    std::string out = to;
    for (char32_t c : u) {
      out += from_u32(std::u32string(1, c));
      out += to;
      if (out.size() > limit) break;
    }
    return out;
  }
  std::string out;
  size_t start = 0;
  int64_t n = 0;
  while (true) {
    size_t p = s.find(from, start);
    if (p == std::string::npos || (count >= 0 && n >= count) || out.size() > limit) break;
    out += s.substr(start, p - start) + to;
    start = p + from.size();
    ++n;
  }
  return out + s.substr(start);
}

const Value* arg(Array& args, KwArgs& kw, size_t pos, const char* name) {
  for (auto& [k, v] : kw) {
    if (k == name) return &v;
  }
  return pos < args.size() ? &args[pos] : nullptr;
}

Value items_of(const Value& v) {
  Array out;
  for (const auto& [k, x] : v.obj->items) out.push_back(Value::tuple({Value::string(k), x}));
  return Value::array(std::move(out));
}

Value length_of(Evaluator& ev, const Value& v, int line) {
  switch (v.kind) {
    case Kind::kString: return Value::integer(static_cast<int64_t>(char_length(v.s)));
    case Kind::kArray: return Value::integer(static_cast<int64_t>(v.arr->size()));
    case Kind::kObject: return Value::integer(static_cast<int64_t>(v.obj->items.size()));
    case Kind::kUndefined: return Value::integer(0);
    default: ev.fail(line, str_cat("object of type '", kind_name(v.kind), "' has no len()"));
  }
  return {};
}

Value attr_path(const Value& v, const std::string& path) {
  Value cur = v;
  size_t start = 0;
  while (start <= path.size()) {
    size_t dot = path.find('.', start);
    std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!cur.is_object()) return Value::undefined(part);
    const Value* n = cur.obj->find(part);
    if (!n) return Value::undefined(part);
    cur = *n;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return cur;
}

Value select_like(Evaluator& ev, const std::string& name, const Value& v, Array& args, int line) {
  bool by_attr = name == "selectattr" || name == "rejectattr";
  bool keep_if = name == "select" || name == "selectattr";
  if (!v.is_array()) {
    if (v.is_undefined()) return Value::array();
    ev.fail(line, str_cat("filter '", name, "' needs a list"));
    return {};
  }
  size_t k0 = by_attr ? 1 : 0;
  if (by_attr && (args.empty() || !args[0].is_string())) {
    ev.fail(line, str_cat("filter '", name, "' needs an attribute name"));
    return {};
  }
  Array out;
  for (const auto& item : *v.arr) {
    if (!ev.step(line)) return {};
    Value x = by_attr ? attr_path(item, args[0].s) : item;
    bool r;
    if (args.size() > k0) {
      if (!args[k0].is_string()) {
        ev.fail(line, str_cat("filter '", name, "': test name must be a string"));
        return {};
      }
      Array targs(args.begin() + k0 + 1, args.end());
      r = apply_test(ev, args[k0].s, x, targs, line);
      if (ev.failed()) return {};
    } else {
      r = truthy(x);
    }
    if (r == keep_if) out.push_back(item);
  }
  return Value::array(std::move(out));
}

}  // namespace

Value apply_filter(Evaluator& ev, const std::string& name, const Value& v, Array& args, KwArgs& kw, int line) {
  if (!ev.step(line)) return {};
  if (name == "trim") return v.is_string() ? Value::string(strip(v.s, true, true, arg(args, kw, 0, "chars"))) : Value::string(strip(to_str(v), true, true, nullptr));
  if (name == "length" || name == "count") return length_of(ev, v, line);
  if (name == "string") return Value::string(to_str(v));
  if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
    CaseMode mode = name == "lower"   ? CaseMode::kLower
                    : name == "upper" ? CaseMode::kUpper
                    : name == "title" ? CaseMode::kJinjaTitle
                                      : CaseMode::kCapitalize;
    return Value::string(case_map(to_str(v), mode));
  }
  if (name == "safe" || name == "e" || name == "escape" || name == "forceescape") return v;  // autoescape is off
  if (name == "default" || name == "d") {
    const Value* dflt = arg(args, kw, 0, "default_value");
    const Value* boolean = arg(args, kw, 1, "boolean");
    bool use = v.is_undefined() || (boolean && truthy(*boolean) && !truthy(v));
    return use ? (dflt ? *dflt : Value::string("")) : v;
  }
  if (name == "tojson") {
    const Value* ind = arg(args, kw, 0, "indent");
    int indent = (ind && ind->kind == Kind::kInt) ? static_cast<int>(std::clamp<int64_t>(ind->i, 0, 64)) : -1;
    std::string out;
    if (!to_json(v, indent, false, out)) {
      ev.fail(line, str_cat("tojson: object of type '", kind_name(v.kind), "' is not JSON serializable"));
      return {};
    }
    return Value::string(std::move(out));
  }
  if (name == "join") {
    const Value* sep = arg(args, kw, 0, "d");
    const Value* attr = arg(args, kw, 1, "attribute");
    std::string out;
    if (v.is_array()) {
      for (size_t k = 0; k < v.arr->size(); ++k) {
        if (k && sep) out += to_str(*sep);
        out += to_str(attr && attr->is_string() ? attr_path((*v.arr)[k], attr->s) : (*v.arr)[k]);
        if (out.size() > ev.max_output_bytes()) break;
      }
    } else if (v.is_string()) {
      std::u32string u = to_u32(v.s);
      for (size_t k = 0; k < u.size(); ++k) {
        if (k && sep) out += to_str(*sep);
        out += from_u32(u.substr(k, 1));
      }
    }
    return Value::string(std::move(out));
  }
  if (name == "first" || name == "last") {
    if (v.is_array()) return v.arr->empty() ? Value::undefined(name) : (name == "first" ? v.arr->front() : v.arr->back());
    if (v.is_string()) {
      std::u32string u = to_u32(v.s);
      if (u.empty()) return Value::undefined(name);
      return Value::string(from_u32(u.substr(name == "first" ? 0 : u.size() - 1, 1)));
    }
    return Value::undefined(name);
  }
  if (name == "list") {
    if (v.is_array()) return v;
    Array out;
    if (v.is_string()) for (char32_t c : to_u32(v.s)) out.push_back(Value::string(from_u32(std::u32string(1, c))));
    if (v.is_object()) for (const auto& kv : v.obj->items) out.push_back(Value::string(kv.first));
    return Value::array(std::move(out));
  }
  if (name == "items") {
    if (v.is_object()) return items_of(v);
    if (v.is_undefined()) return Value::array();
    ev.fail(line, "filter 'items' needs a dict");
    return {};
  }
  if (name == "reverse") {
    if (v.is_string()) {
      std::u32string u = to_u32(v.s);
      std::reverse(u.begin(), u.end());
      return Value::string(from_u32(u));
    }
    if (v.is_array()) {
      Array r(v.arr->rbegin(), v.arr->rend());
      return Value::array(std::move(r));
    }
  }
  if (name == "replace" && args.size() >= 2) {
    const Value* cnt = arg(args, kw, 2, "count");
    return Value::string(replace_all(to_str(v), to_str(args[0]), to_str(args[1]),
                                     cnt && cnt->kind == Kind::kInt ? cnt->i : -1, ev.max_output_bytes()));
  }
  if (name == "int") {
    if (v.kind == Kind::kFloat) return Value::integer(static_cast<int64_t>(v.f));
    if (v.kind == Kind::kInt || v.kind == Kind::kBool) return Value::integer(v.kind == Kind::kBool ? v.b : v.i);
    if (v.is_string()) {
      char* end = nullptr;
      std::string t = strip(v.s, true, true, nullptr);
      long long x = std::strtoll(t.c_str(), &end, 10);
      if (end && *end == '\0' && !t.empty()) return Value::integer(x);
    }
    return args.empty() ? Value::integer(0) : args[0];
  }
  if (name == "float") {
    if (v.is_number()) return Value::number(v.as_double());
    if (v.is_string()) {
      char* end = nullptr;
      double x = std::strtod(v.s.c_str(), &end);
      if (end && *end == '\0' && !v.s.empty()) return Value::number(x);
    }
    return args.empty() ? Value::number(0) : args[0];
  }
  if (name == "abs" && v.is_number()) return v.kind == Kind::kFloat ? Value::number(std::fabs(v.f)) : Value::integer(std::llabs(v.kind == Kind::kBool ? v.b : v.i));
  if (name == "round" && v.is_number()) {
    const Value* prec = arg(args, kw, 0, "precision");
    double p = std::pow(10.0, prec && prec->kind == Kind::kInt ? static_cast<double>(prec->i) : 0.0);
    return Value::number(std::round(v.as_double() * p) / p);
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    return select_like(ev, name, v, args, line);
  }
  if (name == "map") {
    if (!v.is_array()) return Value::array();
    const Value* attr = arg(args, kw, 99, "attribute");
    Array out;
    for (const auto& item : *v.arr) {
      if (!ev.step(line)) return {};
      if (attr && attr->is_string()) {
        Value x = attr_path(item, attr->s);
        const Value* dflt = arg(args, kw, 99, "default");
        out.push_back(x.is_undefined() && dflt ? *dflt : x);
      } else if (!args.empty() && args[0].is_string()) {
        Array rest(args.begin() + 1, args.end());
        KwArgs none;
        out.push_back(apply_filter(ev, args[0].s, item, rest, none, line));
      } else {
        ev.fail(line, "filter 'map' needs a filter name or attribute=");
        return {};
      }
    }
    return Value::array(std::move(out));
  }
  if (name == "unique" && v.is_array()) {
    Array out;
    for (const auto& x : *v.arr) {
      if (!ev.step(line)) return {};
      if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return values_equal(x, y); })) out.push_back(x);
    }
    return Value::array(std::move(out));
  }
  if (name == "indent") {
    const Value* w = arg(args, kw, 0, "width");
    const Value* first = arg(args, kw, 1, "first");
    std::string pad = w && w->is_string() ? w->s : std::string(w && w->kind == Kind::kInt ? std::clamp<int64_t>(w->i, 0, 256) : 4, ' ');
    std::string s = to_str(v), out;
    bool at_start = true, is_first = true;
    for (char c : s) {
      if (at_start && c != '\n' && (!is_first || (first && truthy(*first)))) out += pad;
      out += c;
      at_start = c == '\n';
      if (c == '\n') is_first = false;
    }
    return Value::string(out);
  }
  if (name == "sum" && v.is_array()) {
    Value acc = Value::integer(0);
    for (const auto& x : *v.arr) {
      if (!x.is_number()) {
        ev.fail(line, "filter 'sum' needs numbers");
        return {};
      }
      acc = (acc.kind == Kind::kInt && x.kind != Kind::kFloat) ? Value::integer(acc.i + (x.kind == Kind::kBool ? x.b : x.i))
                                                                 : Value::number(acc.as_double() + x.as_double());
    }
    return acc;
  }
  if ((name == "min" || name == "max" || name == "sort") && v.is_array()) {
    Array s = *v.arr;
    bool ok = true;
    if (!ev.step(line, static_cast<int64_t>(s.size()))) return {};
    std::stable_sort(s.begin(), s.end(), [&](const Value& a, const Value& b) { bool o; int c = compare_values(a, b, o); ok = ok && o; return c < 0; });
    if (!ok) {
      ev.fail(line, str_cat("filter '", name, "': values are not comparable"));
      return {};
    }
    const Value* rev = arg(args, kw, 0, "reverse");
    if (name == "sort") {
      if (rev && truthy(*rev)) std::reverse(s.begin(), s.end());
      return Value::array(std::move(s));
    }
    if (s.empty()) return Value::undefined(name);
    return name == "min" ? s.front() : s.back();
  }
  if (name == "dictsort" && v.is_object()) {
    Value items = items_of(v);
    std::stable_sort(items.arr->begin(), items.arr->end(), [](const Value& a, const Value& b) { return (*a.arr)[0].s < (*b.arr)[0].s; });
    return items;
  }
  if (name == "wordcount") return Value::integer(static_cast<int64_t>(split(to_str(v), nullptr, -1).arr->size()));
  ev.fail(line, str_cat("unsupported filter '", name, "' (on ", kind_name(v.kind), ")"));
  return {};
}

bool apply_test(Evaluator& ev, const std::string& name, const Value& v, Array& args, int line) {
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.kind == Kind::kInt || v.kind == Kind::kFloat || v.kind == Kind::kBool;
  if (name == "integer") return v.kind == Kind::kInt;
  if (name == "float") return v.kind == Kind::kFloat;
  if (name == "boolean") return v.kind == Kind::kBool;
  if (name == "true") return v.kind == Kind::kBool && v.b;
  if (name == "false") return v.kind == Kind::kBool && !v.b;
  if (name == "mapping") return v.is_object() && !v.obj->is_namespace;
  if (name == "sequence") return v.is_array() || v.is_string() || (v.is_object() && !v.obj->is_namespace);
  if (name == "iterable") return v.is_array() || v.is_string() || v.is_object() || v.is_undefined();
  if (name == "callable") return v.kind == Kind::kCallable;
  if (name == "lower") return v.is_string() && case_map(v.s, CaseMode::kLower) == v.s;
  if (name == "upper") return v.is_string() && case_map(v.s, CaseMode::kUpper) == v.s;
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (v.kind != Kind::kInt) {
      ev.fail(line, str_cat("test '", name, "' needs an integer"));
      return false;
    }
    if (name == "divisibleby") {
      if (args.empty() || args[0].kind != Kind::kInt || args[0].i == 0) {
        ev.fail(line, "test 'divisibleby' needs a non-zero integer");
        return false;
      }
      return v.i % args[0].i == 0;
    }
    return (v.i % 2 != 0) == (name == "odd");
  }
  if (args.empty()) {
    ev.fail(line, str_cat("unsupported test '", name, "'"));
    return false;
  }
  if (name == "eq" || name == "equalto" || name == "==") return values_equal(v, args[0]);
  if (name == "ne" || name == "!=") return !values_equal(v, args[0]);
  if (name == "sameas") return values_equal(v, args[0]) && v.kind == args[0].kind;
  if (name == "in") {
    if (args[0].is_string() && v.is_string()) return args[0].s.find(v.s) != std::string::npos;
    if (args[0].is_array()) return std::any_of(args[0].arr->begin(), args[0].arr->end(), [&](const Value& x) { return values_equal(v, x); });
    if (args[0].is_object()) return args[0].obj->find(to_str(v)) != nullptr;
    return false;
  }
  if (name == "lt" || name == "gt" || name == "le" || name == "ge" || name == "<" || name == ">" || name == "<=" || name == ">=") {
    bool ok = true;
    int c = compare_values(v, args[0], ok);
    if (!ok) {
      ev.fail(line, str_cat("test '", name, "': values are not comparable"));
      return false;
    }
    if (name == "lt" || name == "<") return c < 0;
    if (name == "gt" || name == ">") return c > 0;
    if (name == "le" || name == "<=") return c <= 0;
    return c >= 0;
  }
  ev.fail(line, str_cat("unsupported test '", name, "'"));
  return false;
}

}  // namespace dsi::tok::jinja
