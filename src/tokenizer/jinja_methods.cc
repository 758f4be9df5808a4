// Python methods on str / list / dict values, and the global functions (range, namespace, raise_exception, ...).
#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>

#include "tokenizer/jinja_eval.h"
#include "tokenizer/utf8.h"

namespace dsi::tok::jinja {

namespace {

bool py_space(char32_t c) { return is_unicode_space(c) || (c >= 0x1c && c <= 0x1f); }

std::string strip_chars(const std::string& s, bool left, bool right, const Value* chars) {
  std::u32string u = to_u32(s);
  bool custom = chars && chars->is_string();
  std::u32string set = custom ? to_u32(chars->s) : std::u32string();
  auto drop = [&](char32_t c) { return custom ? set.find(c) != std::u32string::npos : py_space(c); };
  size_t b = 0, e = u.size();
  if (left) while (b < e && drop(u[b])) ++b;
  if (right) while (e > b && drop(u[e - 1])) --e;
  return from_u32(u.substr(b, e - b));
}

Value make_fn(const char* name, std::function<Value(Evaluator&, Array&, KwArgs&)> f) {
  Value v;
  v.kind = Kind::kCallable;
  v.fn = std::make_shared<Callable>();
  v.fn->name = name;
  v.fn->call = std::move(f);
  return v;
}

bool prefix_test(const std::string& s, const Value& p, bool ends) {
  auto one = [&](const std::string& x) {
    if (x.size() > s.size()) return false;
    return ends ? s.compare(s.size() - x.size(), x.size(), x) == 0 : s.compare(0, x.size(), x) == 0;
  };
  if (p.is_string()) return one(p.s);
  if (p.is_array()) return std::any_of(p.arr->begin(), p.arr->end(), [&](const Value& x) { return x.is_string() && one(x.s); });
  return false;
}

}  // namespace

Value call_method(Evaluator& ev, const Value& obj, const std::string& name, Array& args, KwArgs& kw, int line,
                  bool& found) {
  found = true;
  const Value* a0 = args.size() > 0 ? &args[0] : nullptr;
  if (obj.is_string()) {
    const std::string& s = obj.s;
    if (name == "strip") return Value::string(strip_chars(s, true, true, a0));
    if (name == "lstrip") return Value::string(strip_chars(s, true, false, a0));
    if (name == "rstrip") return Value::string(strip_chars(s, false, true, a0));
    if (name == "split" || name == "rsplit") {
      Array f{obj};
      if (a0 && !a0->is_none() && (!a0->is_string() || a0->s.empty())) {
        ev.fail(line, "str.split: separator must be a non-empty string");
        return {};
      }
      int64_t maxsplit = args.size() > 1 && args[1].kind == Kind::kInt ? args[1].i : -1;
      for (auto& [k, v] : kw) {
        if (k == "maxsplit" && v.kind == Kind::kInt) maxsplit = v.i;
      }
      KwArgs none;
      // Reuse the split in the 'split' filter path: implemented here directly.
      Array parts;
      if (!a0 || a0->is_none()) {
        std::u32string u = to_u32(s);
        size_t k = 0;
        while (k < u.size()) {
          while (k < u.size() && py_space(u[k])) ++k;
          if (k >= u.size()) break;
          size_t e = k;
          while (e < u.size() && !py_space(u[e])) ++e;
          parts.push_back(Value::string(from_u32(u.substr(k, e - k))));
          k = e;
        }
        return Value::array(std::move(parts));
      }
      if (name == "rsplit" && maxsplit >= 0) {
        std::vector<std::string> rev;
        size_t end = s.size();
        while (static_cast<int64_t>(rev.size()) < maxsplit) {
          if (end < a0->s.size()) break;
          size_t p = s.rfind(a0->s, end - a0->s.size());
          if (p == std::string::npos) break;
          rev.push_back(s.substr(p + a0->s.size(), end - p - a0->s.size()));
          end = p;
        }
        parts.push_back(Value::string(s.substr(0, end)));
        for (auto it = rev.rbegin(); it != rev.rend(); ++it) parts.push_back(Value::string(*it));
        return Value::array(std::move(parts));
      }
      size_t start = 0;
      while (true) {
        size_t p = s.find(a0->s, start);
        if (p == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit)) break;
        parts.push_back(Value::string(s.substr(start, p - start)));
        start = p + a0->s.size();
      }
      parts.push_back(Value::string(s.substr(start)));
      return Value::array(std::move(parts));
    }
    if (name == "startswith" || name == "endswith") {
      if (!a0) {
        ev.fail(line, str_cat("str.", name, " needs an argument"));
        return {};
      }
      return Value::boolean(prefix_test(s, *a0, name == "endswith"));
    }
    if (name == "upper" || name == "lower" || name == "capitalize") {
      KwArgs none;
      Array noargs;
      return apply_filter(ev, name, obj, noargs, none, line);
    }
    if (name == "title") return Value::string(case_map(s, CaseMode::kPythonTitle));
    if (name == "replace" && args.size() >= 2) {
      KwArgs none;
      return apply_filter(ev, "replace", obj, args, none, line);
    }
    if (name == "find" || name == "rfind" || name == "index" || name == "count") {
      if (!a0 || !a0->is_string()) {
        ev.fail(line, str_cat("str.", name, " needs a string"));
        return {};
      }
      if (name == "count") {
        if (a0->s.empty()) return Value::integer(static_cast<int64_t>(char_length(s) + 1));
        int64_t n = 0;
        for (size_t p = s.find(a0->s); p != std::string::npos; p = s.find(a0->s, p + a0->s.size())) ++n;
        return Value::integer(n);
      }
      size_t p = name == "rfind" ? s.rfind(a0->s) : s.find(a0->s);
      if (p == std::string::npos) {
        if (name == "index") {
          ev.fail(line, "str.index: substring not found");
          return {};
        }
        return Value::integer(-1);
      }
      return Value::integer(static_cast<int64_t>(char_length(s.substr(0, p))));
    }
    if (name == "join") {
      if (!a0 || !a0->is_array()) {
        ev.fail(line, "str.join needs a list");
        return {};
      }
      std::string out;
      for (size_t k = 0; k < a0->arr->size(); ++k) {
        if (k) out += s;
        out += to_str((*a0->arr)[k]);
        if (out.size() > ev.max_output_bytes()) break;
      }
      return Value::string(std::move(out));
    }
    if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" || name == "isupper" ||
        name == "islower") {
      if (s.empty()) return Value::boolean(false);
      bool r = true;
      for (unsigned char c : s) {
        if (name == "isdigit") r = r && std::isdigit(c);
        else if (name == "isalpha") r = r && std::isalpha(c);
        else if (name == "isalnum") r = r && std::isalnum(c);
        else if (name == "isspace") r = r && std::isspace(c);
        else if (name == "isupper") r = r && !std::islower(c);
        else r = r && !std::isupper(c);
      }
      return Value::boolean(r);
    }
    if (name == "splitlines") {
      Array parts;
      size_t start = 0;
      for (size_t k = 0; k < s.size(); ++k) {
        if (s[k] == '\n' || s[k] == '\r') {
          parts.push_back(Value::string(s.substr(start, k - start)));
          if (s[k] == '\r' && k + 1 < s.size() && s[k + 1] == '\n') ++k;
          start = k + 1;
        }
      }
      if (start < s.size()) parts.push_back(Value::string(s.substr(start)));
      return Value::array(std::move(parts));
    }
  } else if (obj.is_object()) {
    if (name == "items" || name == "keys" || name == "values") {
      Array out;
      for (const auto& [k, v] : obj.obj->items) {
        if (name == "items") out.push_back(Value::tuple({Value::string(k), v}));
        else out.push_back(name == "keys" ? Value::string(k) : v);
      }
      return Value::array(std::move(out));
    }
    if (name == "get") {
      if (!a0) {
        ev.fail(line, "dict.get needs a key");
        return {};
      }
      const Value* v = obj.obj->find(a0->is_string() ? a0->s : to_str(*a0));
      if (v) return *v;
      return args.size() > 1 ? args[1] : Value::none();
    }
  } else if (obj.is_array()) {
    if (name == "index" && a0) {
      for (size_t k = 0; k < obj.arr->size(); ++k) {
        if (values_equal((*obj.arr)[k], *a0)) return Value::integer(static_cast<int64_t>(k));
      }
      ev.fail(line, "list.index: value not in list");
      return {};
    }
    if (name == "count" && a0) {
      return Value::integer(std::count_if(obj.arr->begin(), obj.arr->end(), [&](const Value& x) { return values_equal(x, *a0); }));
    }
    if (name == "append" || name == "pop" || name == "extend" || name == "insert" || name == "remove") {
      ev.fail(line, str_cat("list.", name, "() is not allowed (immutable sandbox, as in transformers)"));
      return {};
    }
  }
  found = false;
  return {};
}

std::vector<std::pair<std::string, Value>> builtin_globals() {
  std::vector<std::pair<std::string, Value>> g;
  g.emplace_back("range", make_fn("range", [](Evaluator& ev, Array& args, KwArgs&) -> Value {
    int64_t start = 0, stop = 0, step = 1;
    for (const auto& a : args) {
      if (a.kind != Kind::kInt) {
        ev.fail(0, "range() needs integers");
        return {};
      }
    }
    if (args.size() == 1) stop = args[0].i;
    else if (args.size() >= 2) {
      start = args[0].i;
      stop = args[1].i;
      if (args.size() >= 3) step = args[2].i;
    }
    if (step == 0) {
      ev.fail(0, "range() step must not be zero");
      return {};
    }
    Array out;
    for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
      if (!ev.step(0)) return {};
      out.push_back(Value::integer(k));
    }
    return Value::array(std::move(out));
  }));
  g.emplace_back("namespace", make_fn("namespace", [](Evaluator&, Array& args, KwArgs& kw) -> Value {
    Value ns = Value::namespace_object();
    for (const auto& a : args) {
      if (a.is_object()) for (const auto& [k, v] : a.obj->items) ns.obj->set(k, v);
    }
    for (auto& [k, v] : kw) ns.obj->set(k, v);
    return ns;
  }));
  g.emplace_back("dict", make_fn("dict", [](Evaluator&, Array& args, KwArgs& kw) -> Value {
    Value d = Value::object();
    for (const auto& a : args) {
      if (a.is_object()) for (const auto& [k, v] : a.obj->items) d.obj->set(k, v);
    }
    for (auto& [k, v] : kw) d.obj->set(k, v);
    return d;
  }));
  g.emplace_back("raise_exception", make_fn("raise_exception", [](Evaluator& ev, Array& args, KwArgs&) -> Value {
    ev.fail(0, str_cat("raise_exception: ", args.empty() ? std::string() : to_str(args[0])));
    return {};
  }));
  g.emplace_back("strftime_now", make_fn("strftime_now", [](Evaluator& ev, Array& args, KwArgs&) -> Value {
    std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[256];
    std::string fmt = args.empty() ? "%Y-%m-%d" : to_str(args[0]);
    size_t n = std::strftime(buf, sizeof(buf), fmt.c_str(), &tm);
    return Value::string(std::string(buf, n));
  }));
  return g;
}

}  // namespace dsi::tok::jinja
