// Splits generated text into reasoning_content (inside <think>...</think>) and content, as DeepSeek's API and
// vLLM's deepseek_r1 parser do; also incrementally while streaming. Tags are dropped; text is otherwise kept
// as generated. R1-style templates open <think> in the prompt, so the output starts inside the reasoning
// (ReasoningOptions::starts_in_reasoning); without any </think>, all of such output is reasoning.
#pragma once

#include <string>
#include <string_view>

namespace dsi::tok {

struct ReasoningOptions {
  bool starts_in_reasoning = false;  // the prompt already opened <think> (R1-style templates)
};

struct ReasoningSplit {
  std::string reasoning_content;
  std::string content;
};

ReasoningSplit split_reasoning(std::string_view text, const ReasoningOptions& opts = {});
inline ReasoningSplit split_reasoning(std::string_view text, bool starts_in_reasoning) {  // kept for existing callers
  return split_reasoning(text, ReasoningOptions{.starts_in_reasoning = starts_in_reasoning});
}

// Streaming splitter: push text deltas, get the part of each that is certainly reasoning or content. A partial
// tag at the end of a delta is held back until the next push or finish(). One instance per stream.
class ReasoningStream {
 public:
  explicit ReasoningStream(const ReasoningOptions& opts = {}) : in_reasoning_(opts.starts_in_reasoning) {}
  explicit ReasoningStream(bool starts_in_reasoning) : in_reasoning_(starts_in_reasoning) {}  // existing callers
  ReasoningSplit push(std::string_view delta);
  ReasoningSplit finish();
  bool in_reasoning() const { return in_reasoning_; }

 private:
  bool in_reasoning_;
  std::string held_;
};

}  // namespace dsi::tok
