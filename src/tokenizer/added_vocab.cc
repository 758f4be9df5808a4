// Added-token matching, following Hugging Face's AddedVocabulary::find_matches (aho-corasick LeftmostLongest).
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace dsi::tok {

namespace {

bool is_word_char(uint32_t cp) {
  // Rust's char::is_alphanumeric() || '_' (ASCII exactly; other scripts approximated as letters).
  if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
  return !is_unicode_space(cp) && cp >= 0xC0;
}

uint32_t last_cp(std::string_view s) {
  size_t i = s.size();
  while (i > 0 && (static_cast<uint8_t>(s[i - 1]) & 0xC0) == 0x80) --i;
  if (i > 0) --i;
  size_t j = i;
  return utf8_next(s, j);
}

}  // namespace

void AddedTokenMatcher::build(const std::vector<AddedToken>& tokens, const std::vector<int>& which) {
  nodes_.assign(1, Node{});
  for (int idx : which) {
    const std::string& c = tokens[idx].content;
    if (c.empty()) continue;
    int32_t node = 0;
    for (char ch : c) {
      uint8_t b = static_cast<uint8_t>(ch);
      int32_t next = -1;
      for (const auto& [k, v] : nodes_[node].children) {
        if (k == b) next = v;
      }
      if (next < 0) {
        next = static_cast<int32_t>(nodes_.size());
        nodes_[node].children.push_back({b, next});
        nodes_.push_back(Node{});
      }
      node = next;
    }
    if (nodes_[node].token < 0) nodes_[node].token = idx;
    first_byte_[static_cast<uint8_t>(c[0])] = true;
  }
}

int AddedTokenMatcher::longest_at(std::string_view text, size_t i, size_t& len) const {
  int best = -1;
  int32_t node = 0;
  for (size_t k = i; k < text.size(); ++k) {
    uint8_t b = static_cast<uint8_t>(text[k]);
    int32_t next = -1;
    for (const auto& [c, v] : nodes_[node].children) {
      if (c == b) {
        next = v;
        break;
      }
    }
    if (next < 0) break;
    node = next;
    if (nodes_[node].token >= 0) {
      best = nodes_[node].token;
      len = k + 1 - i;
    }
  }
  return best;
}

void AddedTokenMatcher::split(std::string_view text, const std::vector<AddedToken>& tokens,
                              std::vector<Split>& out) const {
  out.clear();
  size_t start_offset = 0;
  if (!empty()) {
    size_t i = 0;
    while (i < text.size()) {
      if (!first_byte_[static_cast<uint8_t>(text[i])]) {
        ++i;
        continue;
      }
      size_t len = 0;
      int tok = longest_at(text, i, len);
      if (tok < 0) {
        ++i;
        continue;
      }
      size_t start = i, stop = i + len;
      i = stop;  // the matcher goes on after the raw match, whatever strip does
      const AddedToken& t = tokens[tok];
      if (t.single_word) {
        bool start_space = start == 0 || !is_word_char(last_cp(text.substr(0, start)));
        bool stop_space = true;
        if (stop < text.size()) {
          size_t j = stop;
          stop_space = !is_word_char(utf8_next(text, j));
        }
        if (!start_space || !stop_space) continue;
      }
      if (t.lstrip) {
        size_t s = start;
        while (s > 0) {
          size_t p = s - 1;
          while (p > 0 && (static_cast<uint8_t>(text[p]) & 0xC0) == 0x80) --p;
          size_t q = p;
          if (!is_unicode_space(utf8_next(text, q))) break;
          s = p;
        }
        start = std::max(s, start_offset);
      }
      if (t.rstrip) {
        while (stop < text.size()) {
          size_t q = stop;
          if (!is_unicode_space(utf8_next(text, q))) break;
          stop = q;
        }
        i = std::max(i, stop);
      }
      if (start_offset < start) out.push_back({-1, start_offset, start});
      out.push_back({tok, start, stop});
      start_offset = stop;
    }
  }
  if (start_offset < text.size()) out.push_back({-1, start_offset, text.size()});
}

}  // namespace dsi::tok
