#include "tokenizer/detokenizer.h"

#include <gtest/gtest.h>

#include "tokenizer/utf8.h"

namespace dsi::tok {
namespace {

const std::string kDir = std::string(DSI_SOURCE_DIR) + "/tests/tokenizer/fixtures/deepseek-v3";

TEST(StreamDecoder, EmitsCompleteCharactersOnly) {
  auto tok = Tokenizer::load_dir(kDir);
  ASSERT_TRUE(tok.ok());
  std::string text = "emoji 🤖🚀 and ZWJ 👩‍💻 中文 部署 naïve \n end";
  auto ids = (*tok)->encode(text);
  StreamDecoder dec(**tok);
  std::string all;
  for (int32_t id : ids) {
    auto piece = dec.push(id);
    ASSERT_TRUE(piece.ok());
    EXPECT_TRUE(utf8_is_valid(*piece));
    all += *piece;
    // Everything decodable so far has been emitted: the held bytes are an incomplete tail only.
  }
  all += dec.finish();
  EXPECT_EQ(all, text);
  EXPECT_FALSE(dec.push(1 << 30).ok());
}

TEST(StreamDecoder, ByteLevelSplitsAndInvalidBytes) {
  auto tok = Tokenizer::load_dir(kDir);
  ASSERT_TRUE(tok.ok());
  StreamDecoder dec(**tok);
  EXPECT_EQ(dec.push_bytes("a\xF0\x9F"), "a");
  EXPECT_EQ(dec.push_bytes("\xA4"), "");
  EXPECT_EQ(dec.push_bytes("\x96z"), "\xF0\x9F\xA4\x96z");
  EXPECT_EQ(dec.push_bytes("\xFF"), "\xEF\xBF\xBD");
  EXPECT_EQ(dec.push_bytes("\xE4\xBD"), "");
  EXPECT_EQ(dec.push_bytes("d"), "\xEF\xBF\xBD" "d");
  EXPECT_EQ(dec.push_bytes("\xE4"), "");
  EXPECT_EQ(dec.finish(), "\xEF\xBF\xBD");
  // Random byte soup: streaming equals the lossy decode of everything.
  std::string soup;
  uint32_t s = 7;
  for (int i = 0; i < 5000; ++i) {
    s = s * 1103515245 + 12345;
    soup += static_cast<char>((s >> 16) & 0xFF);
  }
  StreamDecoder d2(**tok);
  std::string out;
  for (size_t i = 0; i < soup.size(); i += 1 + i % 3) out += d2.push_bytes(soup.substr(i, 1 + i % 3));
  out += d2.finish();
  EXPECT_EQ(out, utf8_sanitize(soup));
}

}  // namespace
}  // namespace dsi::tok
