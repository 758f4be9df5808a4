#include "tokenizer/reasoning.h"

namespace dsi::tok {

namespace {
constexpr std::string_view kOpen = "<think>";
constexpr std::string_view kClose = "</think>";

// Length of the longest suffix of s that is a proper prefix of tag.
size_t partial_tag_suffix(std::string_view s, std::string_view tag) {
  for (size_t n = std::min(s.size(), tag.size() - 1); n > 0; --n) {
    if (s.substr(s.size() - n) == tag.substr(0, n)) return n;
  }
  return 0;
}
}  // namespace

ReasoningSplit ReasoningStream::push(std::string_view delta) {
  std::string buf = held_;
  buf.append(delta.data(), delta.size());
  held_.clear();
  ReasoningSplit out;
  std::string_view rest = buf;
  while (!rest.empty()) {
    std::string_view tag = in_reasoning_ ? kClose : kOpen;
    size_t p = rest.find(tag);
    std::string& dst = in_reasoning_ ? out.reasoning_content : out.content;
    if (p == std::string_view::npos) {
      size_t keep = partial_tag_suffix(rest, tag);
      dst.append(rest.substr(0, rest.size() - keep));
      held_ = std::string(rest.substr(rest.size() - keep));
      break;
    }
    dst.append(rest.substr(0, p));
    rest.remove_prefix(p + tag.size());
    in_reasoning_ = !in_reasoning_;
  }
  return out;
}

ReasoningSplit ReasoningStream::finish() {
  ReasoningSplit out;
  (in_reasoning_ ? out.reasoning_content : out.content) = held_;
  held_.clear();
  return out;
}

ReasoningSplit split_reasoning(std::string_view text, const ReasoningOptions& opts) {
  ReasoningStream s(opts);
  ReasoningSplit a = s.push(text);
  ReasoningSplit b = s.finish();
  a.reasoning_content += b.reasoning_content;
  a.content += b.content;
  return a;
}

}  // namespace dsi::tok
