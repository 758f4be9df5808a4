#include "engine/stop_matcher.h"

#include <gtest/gtest.h>

namespace dsi {
namespace {

TEST(StopMatcher, NoStopsPassesThrough) {
  StopMatcher m({});
  EXPECT_EQ(m.push("abc"), "abc");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, StopAcrossChunksIsCutAndNotEmitted) {
  StopMatcher m({"END"});
  std::string out = m.push("hello E");
  out += m.push("N");
  EXPECT_FALSE(m.stopped());
  out += m.push("D and more");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(out, "hello ");
  EXPECT_EQ(m.push("x"), "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, HeldTailIsReleasedWhenItCannotMatch) {
  StopMatcher m({"\n\n", "###"});
  std::string out = m.push("ab#");
  out += m.push("#x");
  out += m.flush();
  EXPECT_EQ(out, "ab##x");
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcher, EarliestStopWins) {
  StopMatcher m({"cd", "b"});
  EXPECT_EQ(m.push("abcd"), "a");
}

TEST(StopMatcher, NeverSplitsUtf8) {
  StopMatcher m({"zzzz"});
  std::string out = m.push("a\xC3\xA9\xC3\xA9");  // a é é
  // 3 bytes are held back; the cut would fall inside the first é, so it moves back before it.
  EXPECT_EQ(out, "a");
  out += m.flush();
  EXPECT_EQ(out, "a\xC3\xA9\xC3\xA9");
}

}  // namespace
}  // namespace dsi
