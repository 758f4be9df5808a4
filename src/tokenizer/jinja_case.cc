// Unicode case mapping with Python's semantics (full mappings, ß -> SS), through ICU when the build has it
// (ASCII only otherwise).
#include "tokenizer/jinja_value.h"
#include "tokenizer/utf8.h"

#ifdef DSI_HAVE_ICU
#include <unicode/uchar.h>
#include <unicode/ustring.h>
#endif

namespace dsi::tok::jinja {

namespace {

bool is_cased(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
#ifdef DSI_HAVE_ICU
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_CASED);
#else
  return false;
#endif
}

void map_cp(char32_t c, bool upper, std::string& out) {
  if (c < 0x80) {
    if (upper && c >= 'a' && c <= 'z') c -= 32;
    if (!upper && c >= 'A' && c <= 'Z') c += 32;
    out += static_cast<char>(c);
    return;
  }
#ifdef DSI_HAVE_ICU
  UChar src[2];
  int32_t n = 0;
  UBool err = false;
  U16_APPEND(src, n, 2, static_cast<UChar32>(c), err);
  UChar dst[8];
  UErrorCode st = U_ZERO_ERROR;
  int32_t m = upper ? u_strToUpper(dst, 8, src, n, "", &st) : u_strToLower(dst, 8, src, n, "", &st);
  if (U_SUCCESS(st) && !err) {
    for (int32_t k = 0; k < m;) {
      UChar32 cp;
      U16_NEXT(dst, k, m, cp);
      utf8_append(out, static_cast<uint32_t>(cp));
    }
    return;
  }
#endif
  utf8_append(out, c);
}

}  // namespace

std::string case_map(std::string_view s, CaseMode mode) {
  std::string out;
  out.reserve(s.size());
  bool start = true;
  bool first = true;
  size_t i = 0;
  while (i < s.size()) {
    char32_t c = utf8_next(s, i);
    bool upper = false;
    switch (mode) {
      case CaseMode::kLower: upper = false; break;
      case CaseMode::kUpper: upper = true; break;
      case CaseMode::kCapitalize: upper = first; break;
      case CaseMode::kPythonTitle:
        upper = start;
        start = !is_cased(c);
        break;
      case CaseMode::kJinjaTitle: {
        bool sep = c == '-' || is_unicode_space(c) || c == '(' || c == '{' || c == '[' || c == '<';
        upper = start && !sep;
        start = sep;
        break;
      }
    }
    first = false;
    map_cp(c, upper, out);
  }
  return out;
}

}  // namespace dsi::tok::jinja
