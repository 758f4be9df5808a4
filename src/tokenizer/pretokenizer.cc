#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/pretokenizer.h"

#include <pcre2.h>

#include "tokenizer/unicode15.h"

namespace dsi::tok {

Result<std::shared_ptr<Regex>> Regex::compile(const std::string& hf_pattern) {
  std::string pattern = augment_unicode15(hf_pattern);
  int err = 0;
  PCRE2_SIZE err_off = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR buf[256];
    pcre2_get_error_message(err, buf, sizeof(buf));
    return Status::InvalidArgument(str_cat("regex '", hf_pattern, "' at offset ", err_off, ": ",
                                           reinterpret_cast<const char*>(buf)));
  }
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when JIT is unavailable
  std::shared_ptr<Regex> re(new Regex());
  re->pattern_ = hf_pattern;
  re->code_ = code;
  return re;
}

Regex::~Regex() {
  if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

void* Regex::new_match_data() const {
  return pcre2_match_data_create_from_pattern(static_cast<pcre2_code*>(code_), nullptr);
}

void Regex::free_match_data(void* md) { pcre2_match_data_free(static_cast<pcre2_match_data*>(md)); }

bool Regex::next_match(std::string_view s, size_t from, size_t& start, size_t& end, void* md) const {
  auto* m = static_cast<pcre2_match_data*>(md);
  // The input is valid UTF-8 (sanitized on entry), so the UTF check is skipped.
  int rc = pcre2_match(static_cast<pcre2_code*>(code_), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), from,
                       PCRE2_NO_UTF_CHECK, m, nullptr);
  if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
    // JIT stack exhausted on a pathological piece: retry with the interpreter (heap-based backtracking).
    rc = pcre2_match(static_cast<pcre2_code*>(code_), reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), from,
                     PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, m, nullptr);
  }
  if (rc < 0) return false;
  PCRE2_SIZE* ov = pcre2_get_ovector_pointer(m);
  start = ov[0];
  end = ov[1];
  return true;
}

void apply_split(const SplitStep& step, std::string_view text, const std::vector<Piece>& in, std::vector<Piece>& out) {
  out.clear();
  out.reserve(in.size() * 4);
  for (const Piece& p : in) {
    std::string_view s = text.substr(p.begin, p.end - p.begin);
    // (offset, length, is_match) runs covering s.
    struct Run {
      uint32_t b, e;
      bool match;
    };
    std::vector<Run> runs;
    uint32_t prev = 0;
    step.regex->for_each_match(s, [&](size_t b, size_t e) {
      if (b > prev) runs.push_back({prev, static_cast<uint32_t>(b), false});
      runs.push_back({static_cast<uint32_t>(b), static_cast<uint32_t>(e), true});
      prev = static_cast<uint32_t>(e);
    });
    if (prev < s.size()) runs.push_back({prev, static_cast<uint32_t>(s.size()), false});
    if (step.invert) {
      for (auto& r : runs) r.match = !r.match;
    }
    switch (step.behavior) {
      case SplitBehavior::kIsolated:
        for (const auto& r : runs) out.push_back({p.begin + r.b, p.begin + r.e});
        break;
      case SplitBehavior::kRemoved:
        for (const auto& r : runs)
          if (!r.match) out.push_back({p.begin + r.b, p.begin + r.e});
        break;
      case SplitBehavior::kMergedWithPrevious: {
        bool prev_match = false;
        size_t first = out.size();
        for (const auto& r : runs) {
          if (r.match && !prev_match && out.size() > first) {
            out.back().end = p.begin + r.e;
          } else {
            out.push_back({p.begin + r.b, p.begin + r.e});
          }
          prev_match = r.match;
        }
        break;
      }
      case SplitBehavior::kMergedWithNext: {
        bool pending = false;
        for (const auto& r : runs) {
          if (pending && !r.match) {
            out.back().end = p.begin + r.e;
            pending = false;
          } else {
            out.push_back({p.begin + r.b, p.begin + r.e});
            pending = r.match;
          }
        }
        break;
      }
      case SplitBehavior::kContiguous: {
        bool prev_match = false;
        size_t first = out.size();
        for (const auto& r : runs) {
          if (r.match && prev_match && out.size() > first) {
            out.back().end = p.begin + r.e;
          } else {
            out.push_back({p.begin + r.b, p.begin + r.e});
          }
          prev_match = r.match;
        }
        break;
      }
    }
  }
}

}  // namespace dsi::tok
