// Normalizers used by the supported tokenizers: none, NFC / NFKC (through ICU when the build has it), Lowercase.
#include <algorithm>

#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

#ifdef DSI_HAVE_ICU
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#endif

namespace dsi::tok {

namespace {

bool all_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<uint8_t>(c) < 0x80; });
}

#ifdef DSI_HAVE_ICU
std::string icu_normalize(const UNormalizer2* norm, std::string_view text) {
  UErrorCode err = U_ZERO_ERROR;
  int32_t n16 = 0;
  u_strFromUTF8(nullptr, 0, &n16, text.data(), static_cast<int32_t>(text.size()), &err);
  err = U_ZERO_ERROR;
  std::u16string src(n16, u'\0');
  u_strFromUTF8(src.data(), n16, nullptr, text.data(), static_cast<int32_t>(text.size()), &err);
  if (U_FAILURE(err)) return std::string(text);
  std::u16string dst(src.size() * 3 + 8, u'\0');
  err = U_ZERO_ERROR;
  int32_t nd = unorm2_normalize(norm, src.data(), n16, dst.data(), static_cast<int32_t>(dst.size()), &err);
  if (U_FAILURE(err)) return std::string(text);
  std::string out(static_cast<size_t>(nd) * 3 + 4, '\0');
  int32_t n8 = 0;
  err = U_ZERO_ERROR;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &n8, dst.data(), nd, &err);
  if (U_FAILURE(err)) return std::string(text);
  out.resize(n8);
  return out;
}
#endif

}  // namespace

bool normalizer_available(NormalizerKind kind) {
#ifdef DSI_HAVE_ICU
  return true;
#else
  return kind == NormalizerKind::kNone || kind == NormalizerKind::kLowercase;
#endif
}

std::string normalize_text(NormalizerKind kind, std::string_view text) {
  switch (kind) {
    case NormalizerKind::kNone:
      return std::string(text);
    case NormalizerKind::kLowercase: {
      std::string out(text);
      if (all_ascii(text)) {
        for (char& c : out) c = static_cast<char>((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
        return out;
      }
#ifdef DSI_HAVE_ICU
      UErrorCode err = U_ZERO_ERROR;
      int32_t n16 = 0;
      u_strFromUTF8(nullptr, 0, &n16, text.data(), static_cast<int32_t>(text.size()), &err);
      err = U_ZERO_ERROR;
      std::u16string src(n16, u'\0');
      u_strFromUTF8(src.data(), n16, nullptr, text.data(), static_cast<int32_t>(text.size()), &err);
      std::u16string dst(src.size() * 3 + 8, u'\0');
      err = U_ZERO_ERROR;
      int32_t nd = u_strToLower(dst.data(), static_cast<int32_t>(dst.size()), src.data(), n16, "", &err);
      if (U_FAILURE(err)) return out;
      std::string res(static_cast<size_t>(nd) * 3 + 4, '\0');
      int32_t n8 = 0;
      err = U_ZERO_ERROR;
      u_strToUTF8(res.data(), static_cast<int32_t>(res.size()), &n8, dst.data(), nd, &err);
      res.resize(n8);
      return res;
#else
      return out;
#endif
    }
    case NormalizerKind::kNfc:
    case NormalizerKind::kNfkc: {
      if (all_ascii(text)) return std::string(text);
#ifdef DSI_HAVE_ICU
      UErrorCode err = U_ZERO_ERROR;
      const UNormalizer2* n = kind == NormalizerKind::kNfc ? unorm2_getNFCInstance(&err) : unorm2_getNFKCInstance(&err);
      if (U_FAILURE(err)) return std::string(text);
      return icu_normalize(n, text);
#else
      return std::string(text);
#endif
    }
  }
  return std::string(text);
}

}  // namespace dsi::tok
