// Helpers for reading untrusted JSON with nlohmann (internal to src/io).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace dsi {

// A short description of a JSON value for error messages. Bounded in depth and length, because the input may be
// adversarial (nlohmann's dump() and copies recurse once per nesting level, so a deeply nested value would
// overflow the stack).
inline std::string brief_json(const nlohmann::json& j, int depth = 2) {
  constexpr size_t kMaxChars = 80;
  constexpr size_t kMaxItems = 6;
  std::string s;
  if (j.is_array() || j.is_object()) {
    const bool array = j.is_array();
    s += array ? "[" : "{";
    if (depth <= 0) {
      if (!j.empty()) s += "...";
    } else {
      size_t i = 0;
      for (auto it = j.begin(); it != j.end(); ++it, ++i) {
        if (i == kMaxItems) {
          s += ", ...";
          break;
        }
        if (i) s += ", ";
        if (!array) s += nlohmann::json(it.key()).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + ": ";
        s += brief_json(*it, depth - 1);
      }
    }
    s += array ? "]" : "}";
  } else {
    s = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  if (s.size() > kMaxChars) s = s.substr(0, kMaxChars - 3) + "...";
  return s;
}

}  // namespace dsi
