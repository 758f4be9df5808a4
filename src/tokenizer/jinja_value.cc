#include "tokenizer/jinja_value.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "tokenizer/utf8.h"

namespace dsi::tok::jinja {

Value Value::undefined(std::string name) {
  Value v;
  v.s = std::move(name);
  return v;
}
Value Value::none() {
  Value v;
  v.kind = Kind::kNone;
  return v;
}
Value Value::boolean(bool x) {
  Value v;
  v.kind = Kind::kBool;
  v.b = x;
  return v;
}
Value Value::integer(int64_t x) {
  Value v;
  v.kind = Kind::kInt;
  v.i = x;
  return v;
}
Value Value::number(double x) {
  Value v;
  v.kind = Kind::kFloat;
  v.f = x;
  return v;
}
Value Value::string(std::string x) {
  Value v;
  v.kind = Kind::kString;
  v.s = std::move(x);
  return v;
}
Value Value::array(Array x) {
  Value v;
  v.kind = Kind::kArray;
  v.arr = std::make_shared<Array>(std::move(x));
  return v;
}
Value Value::tuple(Array x) {
  Value v = array(std::move(x));
  v.is_tuple = true;
  return v;
}
Value Value::object() {
  Value v;
  v.kind = Kind::kObject;
  v.obj = std::make_shared<Object>();
  return v;
}
Value Value::namespace_object() {
  Value v = object();
  v.obj->is_namespace = true;
  return v;
}

const Value* Object::find(std::string_view key) const {
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Object::set(std::string key, Value v) {
  for (auto& [k, old] : items) {
    if (k == key) {
      old = std::move(v);
      return;
    }
  }
  items.emplace_back(std::move(key), std::move(v));
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kUndefined: return "undefined";
    case Kind::kNone: return "none";
    case Kind::kBool: return "bool";
    case Kind::kInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kString: return "string";
    case Kind::kArray: return "list";
    case Kind::kObject: return "dict";
    case Kind::kCallable: return "function";
  }
  return "?";
}

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return false;
    case Kind::kBool: return v.b;
    case Kind::kInt: return v.i != 0;
    case Kind::kFloat: return v.f != 0;
    case Kind::kString: return !v.s.empty();
    case Kind::kArray: return !v.arr->empty();
    case Kind::kObject: return !v.obj->items.empty();
    case Kind::kCallable: return true;
  }
  return false;
}

std::string python_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof(buf), "%.*e", prec - 1, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  // buf is d.ddde[+-]XX with the shortest round-trip digits.
  std::string s(buf);
  size_t e = s.find('e');
  std::string mant = s.substr(0, e);
  int exp = std::atoi(s.c_str() + e + 1);
  bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant) {
    if (c != '.') digits += c;
  }
  while (digits.size() > 1 && digits.back() == '0') digits.pop_back();
  // Assembled in a char buffer (GCC 12 reports false -Wrestrict positives on std::string assembly here).
  char res[64];
  size_t n = 0;
  auto put = [&](char c) {
    if (n + 1 < sizeof(res)) res[n++] = c;
  };
  if (neg) put('-');
  const int nd = static_cast<int>(digits.size());
  if (exp < -4 || exp >= 16) {
    put(digits[0]);
    if (nd > 1) {
      put('.');
      for (int k = 1; k < nd; ++k) put(digits[k]);
    }
    char eb[16];
    int m = std::snprintf(eb, sizeof(eb), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    for (int k = 0; k < m; ++k) put(eb[k]);
  } else if (exp < 0) {
    put('0');
    put('.');
    for (int k = 0; k < -exp - 1; ++k) put('0');
    for (int k = 0; k < nd; ++k) put(digits[k]);
  } else {
    for (int k = 0; k <= exp || k < nd; ++k) {
      if (k == exp + 1) put('.');
      put(k < nd ? digits[k] : '0');
    }
    if (nd <= exp + 1) {
      put('.');
      put('0');
    }
  }
  return std::string(res, n);
}

namespace {

std::string repr_string(const std::string& s) {
  bool has_single = s.find('\'') != std::string::npos;
  bool has_double = s.find('"') != std::string::npos;
  char q = (has_single && !has_double) ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == q || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char b[8];
      std::snprintf(b, sizeof(b), "\\x%02x", c);
      out += b;
    } else {
      out += static_cast<char>(c);
    }
  }
  out += q;
  return out;
}

void json_string(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char b[8];
          std::snprintf(b, sizeof(b), "\\u%04x", c);
          out += b;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

}  // namespace

std::string repr(const Value& v) {
  switch (v.kind) {
    case Kind::kString: return repr_string(v.s);
    case Kind::kArray: {
      std::string out = v.is_tuple ? "(" : "[";
      for (size_t k = 0; k < v.arr->size(); ++k) {
        if (k) out += ", ";
        out += repr((*v.arr)[k]);
      }
      if (v.is_tuple && v.arr->size() == 1) out += ",";
      return out + (v.is_tuple ? ")" : "]");
    }
    case Kind::kObject: {
      if (v.obj->is_namespace) return "<Namespace>";
      std::string out = "{";
      bool first = true;
      for (const auto& [k, x] : v.obj->items) {
        if (!first) out += ", ";
        first = false;
        out += repr_string(k) + ": " + repr(x);
      }
      return out + "}";
    }
    default: return to_str(v);
  }
}

std::string to_str(const Value& v) {
  switch (v.kind) {
    case Kind::kUndefined: return "";
    case Kind::kNone: return "None";
    case Kind::kBool: return v.b ? "True" : "False";
    case Kind::kInt: return std::to_string(v.i);
    case Kind::kFloat: return python_float_repr(v.f);
    case Kind::kString: return v.s;
    case Kind::kCallable: return "<function " + (v.fn ? v.fn->name : std::string()) + ">";
    default: return repr(v);
  }
}

bool values_equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind != Kind::kFloat && b.kind != Kind::kFloat) {
      return (a.kind == Kind::kBool ? a.b : a.i) == (b.kind == Kind::kBool ? b.b : b.i);
    }
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::kUndefined:
    case Kind::kNone: return true;
    case Kind::kString: return a.s == b.s;
    case Kind::kArray:
      if (a.arr->size() != b.arr->size()) return false;
      for (size_t k = 0; k < a.arr->size(); ++k) {
        if (!values_equal((*a.arr)[k], (*b.arr)[k])) return false;
      }
      return true;
    case Kind::kObject:
      if (a.obj == b.obj) return true;
      if (a.obj->is_namespace || b.obj->is_namespace) return false;
      if (a.obj->items.size() != b.obj->items.size()) return false;
      for (const auto& [k, x] : a.obj->items) {
        const Value* y = b.obj->find(k);
        if (y == nullptr || !values_equal(x, *y)) return false;
      }
      return true;
    case Kind::kCallable: return a.fn == b.fn;
    default: return false;
  }
}

int compare_values(const Value& a, const Value& b, bool& ok) {
  ok = true;
  if (a.is_number() && b.is_number()) {
    double x = a.as_double(), y = b.as_double();
    if (a.kind != Kind::kFloat && b.kind != Kind::kFloat) {
      int64_t p = a.kind == Kind::kBool ? a.b : a.i, q = b.kind == Kind::kBool ? b.b : b.i;
      return p < q ? -1 : (p > q ? 1 : 0);
    }
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    int c = a.s.compare(b.s);  // UTF-8 byte order is code point order
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_array() && b.is_array()) {
    size_t n = std::min(a.arr->size(), b.arr->size());
    for (size_t k = 0; k < n; ++k) {
      if (values_equal((*a.arr)[k], (*b.arr)[k])) continue;
      return compare_values((*a.arr)[k], (*b.arr)[k], ok);
    }
    return a.arr->size() < b.arr->size() ? -1 : (a.arr->size() > b.arr->size() ? 1 : 0);
  }
  ok = false;
  return 0;
}

bool to_json(const Value& v, int indent, bool sort_keys, std::string& out, int depth) {
  if (depth > 256) return false;
  auto newline = [&](int d) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<size_t>(indent) * d, ' ');
  };
  switch (v.kind) {
    case Kind::kUndefined: return false;
    case Kind::kNone: out += "null"; return true;
    case Kind::kBool: out += v.b ? "true" : "false"; return true;
    case Kind::kInt: out += std::to_string(v.i); return true;
    case Kind::kFloat:
      if (std::isnan(v.f)) out += "NaN";
      else if (std::isinf(v.f)) out += v.f > 0 ? "Infinity" : "-Infinity";
      else out += python_float_repr(v.f);
      return true;
    case Kind::kString: json_string(v.s, out); return true;
    case Kind::kArray: {
      if (v.arr->empty()) {
        out += "[]";
        return true;
      }
      out += '[';
      for (size_t k = 0; k < v.arr->size(); ++k) {
        if (k) out += indent < 0 ? ", " : ",";
        newline(depth + 1);
        if (!to_json((*v.arr)[k], indent, sort_keys, out, depth + 1)) return false;
      }
      newline(depth);
      out += ']';
      return true;
    }
    case Kind::kObject: {
      if (v.obj->is_namespace) return false;
      if (v.obj->items.empty()) {
        out += "{}";
        return true;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.obj->items) items.push_back(&kv);
      if (sort_keys) std::sort(items.begin(), items.end(), [](auto* x, auto* y) { return x->first < y->first; });
      out += '{';
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += indent < 0 ? ", " : ",";
        newline(depth + 1);
        json_string(items[k]->first, out);
        out += ": ";
        if (!to_json(items[k]->second, indent, sort_keys, out, depth + 1)) return false;
      }
      newline(depth);
      out += '}';
      return true;
    }
    case Kind::kCallable: return false;
  }
  return false;
}

std::u32string to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) out += static_cast<char32_t>(utf8_next(s, i));
  return out;
}

std::string from_u32(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) utf8_append(out, c);
  return out;
}

size_t char_length(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

}  // namespace dsi::tok::jinja
