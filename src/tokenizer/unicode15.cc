#include "tokenizer/unicode15.h"

namespace dsi::tok {

namespace {

// Code points added in Unicode 15.0, by general category (from the Unicode 15.0 release; CJK Ext H, Kawi,
// Nag Mundari, Kaktovik numerals, Cyrillic Ext-D, Egyptian hieroglyph format additions, emoji 15.0).
const char* extra_ranges(char cat) {
  switch (cat) {
    case 'L':
      return R"(\x{1123F}-\x{11240}\x{11F02}\x{11F04}-\x{11F10}\x{11F12}-\x{11F33}\x{1342F}\x{13441}-\x{13446})"
             R"(\x{1DF25}-\x{1DF2A}\x{1E030}-\x{1E06D}\x{1E4D0}-\x{1E4EB}\x{2B739}\x{31350}-\x{323AF})";
    case 'M':
      return R"(\x{0CF3}\x{0ECE}\x{10EFD}-\x{10EFF}\x{11241}\x{11F00}-\x{11F01}\x{11F03}\x{11F34}-\x{11F3A})"
             R"(\x{11F3E}-\x{11F42}\x{13440}\x{13447}-\x{13455}\x{1E08F}\x{1E4EC}-\x{1E4EF})";
    case 'N': return R"(\x{11F50}-\x{11F59}\x{1D2C0}-\x{1D2D3}\x{1E4F0}-\x{1E4F9})";
    case 'P': return R"(\x{11B00}-\x{11B09}\x{11F43}-\x{11F4F})";
    case 'S':
      return R"(\x{1F6DC}\x{1F774}-\x{1F776}\x{1F77B}-\x{1F77F}\x{1F7D9}\x{1FA75}-\x{1FA77}\x{1FA87}-\x{1FA88})"
             R"(\x{1FAAD}-\x{1FAAF}\x{1FABB}-\x{1FABD}\x{1FABF}\x{1FACE}-\x{1FACF}\x{1FADA}-\x{1FADB}\x{1FAE8})"
             R"(\x{1FAF7}-\x{1FAF8})";
    default: return nullptr;
  }
}

}  // namespace

std::string augment_unicode15(const std::string& p) {
  std::string out;
  out.reserve(p.size() * 2);
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      // \p{X} with a one-letter category we extend (negated \P and long names are left alone).
      if (p[i + 1] == 'p' && i + 4 < p.size() && p[i + 2] == '{' && p[i + 4] == '}' && extra_ranges(p[i + 3])) {
        const char* extra = extra_ranges(p[i + 3]);
        std::string prop = p.substr(i, 5);
        out += in_class ? prop + extra : "[" + prop + extra + "]";
        i += 4;
        continue;
      }
      out += c;
      out += p[++i];
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' right after '[' or '[^' is a literal.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

}  // namespace dsi::tok
