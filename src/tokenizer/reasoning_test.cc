#include "tokenizer/reasoning.h"

#include <gtest/gtest.h>

namespace dsi::tok {
namespace {

TEST(Reasoning, SplitWholeText) {
  auto r = split_reasoning("\nadd\n</think>\n\n4", {.starts_in_reasoning = true});
  EXPECT_EQ(r.reasoning_content, "\nadd\n");
  EXPECT_EQ(r.content, "\n\n4");
  r = split_reasoning("<think>hmm</think>answer");
  EXPECT_EQ(r.reasoning_content, "hmm");
  EXPECT_EQ(r.content, "answer");
  r = split_reasoning("plain answer");
  EXPECT_EQ(r.reasoning_content, "");
  EXPECT_EQ(r.content, "plain answer");
  r = split_reasoning("still thinking", {.starts_in_reasoning = true});
  EXPECT_EQ(r.reasoning_content, "still thinking");
  EXPECT_EQ(r.content, "");
}

TEST(Reasoning, StreamingHoldsPartialTags) {
  std::string text = "<think>a<b</thi</think>xy</th";
  for (size_t chunk = 1; chunk <= 5; ++chunk) {
    ReasoningStream s;
    std::string rc, c;
    for (size_t i = 0; i < text.size(); i += chunk) {
      auto d = s.push(text.substr(i, chunk));
      rc += d.reasoning_content;
      c += d.content;
    }
    auto d = s.finish();
    rc += d.reasoning_content;
    c += d.content;
    EXPECT_EQ(rc, "a<b</thi");
    EXPECT_EQ(c, "xy</th");
  }
  ReasoningStream s({.starts_in_reasoning = true});
  auto d = s.push("ab</");
  EXPECT_EQ(d.reasoning_content, "ab");
  d = s.push("think>c");
  EXPECT_EQ(d.content, "c");
}

}  // namespace
}  // namespace dsi::tok
