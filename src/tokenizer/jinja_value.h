// Values of the Jinja-subset interpreter, with Python semantics for truthiness, str(), repr(), ==, < and
// json.dumps (as transformers' tojson filter calls it).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsi::tok::jinja {

struct Value;
struct Object;
struct Callable;
using Array = std::vector<Value>;
using KwArgs = std::vector<std::pair<std::string, Value>>;

enum class Kind : uint8_t { kUndefined, kNone, kBool, kInt, kFloat, kString, kArray, kObject, kCallable };

struct Value {
  Kind kind = Kind::kUndefined;
  bool is_tuple = false;  // kArray created as a Python tuple (repr uses parentheses)
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;  // kString: the text; kUndefined: the name that was looked up (for messages)
  std::shared_ptr<Array> arr;
  std::shared_ptr<Object> obj;
  std::shared_ptr<Callable> fn;

  static Value undefined(std::string name = {});
  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value number(double v);
  static Value string(std::string v);
  static Value array(Array v = {});
  static Value tuple(Array v);
  static Value object();
  static Value namespace_object();

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_none() const { return kind == Kind::kNone; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat || kind == Kind::kBool; }
  bool is_array() const { return kind == Kind::kArray; }
  bool is_object() const { return kind == Kind::kObject; }
  double as_double() const { return kind == Kind::kFloat ? f : static_cast<double>(kind == Kind::kBool ? b : i); }
};

struct Object {
  std::vector<std::pair<std::string, Value>> items;  // insertion order, like a Python dict
  bool is_namespace = false;
  const Value* find(std::string_view key) const;
  void set(std::string key, Value v);
};

class Evaluator;
struct Callable {
  std::string name;
  std::function<Value(Evaluator&, Array&, KwArgs&)> call;
};

const char* kind_name(Kind k);
bool truthy(const Value& v);
// Python str(v) (None, True, 1.5, ['a', 1], {'k': 'v'}); undefined is "".
std::string to_str(const Value& v);
std::string repr(const Value& v);
std::string python_float_repr(double d);
bool values_equal(const Value& a, const Value& b);
// Python ordering for numbers, strings and lists; ok=false for unorderable types.
int compare_values(const Value& a, const Value& b, bool& ok);
// json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sort_keys); indent < 0 means None.
bool to_json(const Value& v, int indent, bool sort_keys, std::string& out, int depth = 0);

// Code points of a UTF-8 string (for len(), indexing and slicing by character).
std::u32string to_u32(std::string_view s);
std::string from_u32(std::u32string_view s);
size_t char_length(std::string_view s);

// Python's str.lower / upper / capitalize / title, and Jinja's title filter (jinja_case.cc).
enum class CaseMode { kLower, kUpper, kCapitalize, kPythonTitle, kJinjaTitle };
std::string case_map(std::string_view s, CaseMode mode);

}  // namespace dsi::tok::jinja
