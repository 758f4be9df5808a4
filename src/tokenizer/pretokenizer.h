// Pre-tokenization: a sequence of regex splits (PCRE2 with UTF + UCP, JIT) over byte ranges of a string.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace dsi::tok {

// A compiled PCRE2 pattern. Thread-safe: each call uses its own match data.
class Regex {
 public:
  static Result<std::shared_ptr<Regex>> compile(const std::string& hf_pattern);
  ~Regex();
  // Calls on_match(start, end) for each non-overlapping match in s[0, len) (the subject ends at len, so
  // lookaheads see the end of the piece). Empty matches are skipped.
  template <class F>
  void for_each_match(std::string_view s, F&& on_match) const;
  const std::string& pattern() const { return pattern_; }

 private:
  Regex() = default;
  bool next_match(std::string_view s, size_t from, size_t& start, size_t& end, void* md) const;
  void* new_match_data() const;
  static void free_match_data(void* md);
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct SplitStep {
  std::shared_ptr<Regex> regex;
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
};

// Pieces are [begin, end) byte ranges of the input string.
struct Piece {
  uint32_t begin;
  uint32_t end;
};

// Applies one split step to every piece, producing the new list of pieces.
void apply_split(const SplitStep& step, std::string_view text, const std::vector<Piece>& in, std::vector<Piece>& out);

template <class F>
void Regex::for_each_match(std::string_view s, F&& on_match) const {
  void* md = new_match_data();
  size_t from = 0, start = 0, end = 0;
  while (from <= s.size() && next_match(s, from, start, end, md)) {
    if (end > start) on_match(start, end);
    if (end > from) {
      from = end;
    } else {
      // Empty match at from: move one character on.
      ++from;
      while (from < s.size() && (static_cast<uint8_t>(s[from]) & 0xC0) == 0x80) ++from;
    }
  }
  free_match_data(md);
}

}  // namespace dsi::tok
