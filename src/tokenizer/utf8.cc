#include "tokenizer/utf8.h"

#include <array>

namespace dsi::tok {

namespace {

// Valid ranges of the second byte for a lead byte (Unicode Table 3-7); other continuation bytes are 80..BF.
bool second_ok(uint8_t lead, uint8_t b) {
  if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;
  if (lead == 0xED) return b >= 0x80 && b <= 0x9F;
  if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;
  if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;
  return b >= 0x80 && b <= 0xBF;
}

int seq_len(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Number of bytes starting at i that form a valid prefix (maximal subpart), at most the sequence length.
int valid_prefix(std::string_view s, size_t i, int* need) {
  uint8_t lead = static_cast<uint8_t>(s[i]);
  int n = seq_len(lead);
  *need = n;
  if (n <= 1) return n;
  int k = 1;
  while (k < n && i + k < s.size()) {
    uint8_t b = static_cast<uint8_t>(s[i + k]);
    bool ok = (k == 1) ? second_ok(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) break;
    ++k;
  }
  return k;
}

struct ByteTables {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 324> to_byte{};
  ByteTables() {
    to_byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      uint32_t cp = keep ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
      to_cp[b] = cp;
      to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteTables& tables() {
  static const ByteTables t;
  return t;
}

}  // namespace

int utf8_valid_len(std::string_view s, size_t i) {
  int need = 0;
  int k = valid_prefix(s, i, &need);
  return (need > 0 && k == need) ? need : 0;
}

int utf8_incomplete_prefix_len(std::string_view s, size_t i) {
  int need = 0;
  int k = valid_prefix(s, i, &need);
  if (need <= 1 || k == need) return 0;
  return (i + k == s.size()) ? k : 0;
}

bool utf8_is_valid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    int n = utf8_valid_len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string utf8_sanitize(std::string_view s) {
  if (utf8_is_valid(s)) return std::string(s);
  std::string out;
  out.reserve(s.size() + 8);
  size_t i = 0;
  while (i < s.size()) {
    int need = 0;
    int k = valid_prefix(s, i, &need);
    if (need > 0 && k == need) {
      out.append(s.data() + i, need);
      i += need;
    } else {
      out += "\xEF\xBF\xBD";
      i += (k > 0 ? k : 1);
    }
  }
  return out;
}

uint32_t utf8_next(std::string_view s, size_t& i) {
  uint8_t b = static_cast<uint8_t>(s[i]);
  if (b < 0x80) {
    ++i;
    return b;
  }
  int n = seq_len(b);
  if (n == 0 || i + n > s.size()) {
    ++i;
    return 0xFFFD;
  }
  uint32_t cp = b & (n == 2 ? 0x1F : n == 3 ? 0x0F : 0x07);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_unicode_space(uint32_t cp) {
  if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return true;
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

uint32_t byte_to_unicode(uint8_t b) { return tables().to_cp[b]; }

int unicode_to_byte(uint32_t cp) { return cp < 324 ? tables().to_byte[cp] : -1; }

std::string byte_level_encode(std::string_view raw) {
  std::string out;
  out.reserve(raw.size() * 2);
  for (char c : raw) utf8_append(out, byte_to_unicode(static_cast<uint8_t>(c)));
  return out;
}

bool byte_level_decode(std::string_view text, std::string& out) {
  std::string tmp;
  tmp.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    int b = unicode_to_byte(utf8_next(text, i));
    if (b < 0) return false;
    tmp += static_cast<char>(b);
  }
  out += tmp;
  return true;
}

}  // namespace dsi::tok
