#include "tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"

namespace dsi::tok {
namespace {

const std::string kFixtures = std::string(DSI_SOURCE_DIR) + "/tests/tokenizer/fixtures";

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const Tokenizer& deepseek() {
  static std::unique_ptr<Tokenizer> t = [] {
    auto r = Tokenizer::load_dir(kFixtures + "/deepseek-v3");
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return std::move(r).value();
  }();
  return *t;
}

TEST(Tokenizer, FixtureCasesExactIds) {
  auto cases = nlohmann::json::parse(read_all(kFixtures + "/tokenizer_cases.json"));
  ASSERT_GE(cases.size(), 20u);
  for (const auto& c : cases) {
    std::string text = c["text"];
    std::vector<int32_t> want = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(deepseek().encode(text), want) << "text: " << text;
    auto dec = deepseek().decode(want);
    ASSERT_TRUE(dec.ok());
    EXPECT_EQ(*dec, c["decoded"].get<std::string>());
  }
}

TEST(Tokenizer, SpecialTokensAndBos) {
  const Tokenizer& t = deepseek();
  EXPECT_EQ(t.bos_token().value(), "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(t.bos_id().value(), 0);
  EXPECT_EQ(t.eos_id().value(), 1);
  auto ids = t.encode("Hi", {.add_special_tokens = true});
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(t.encode("<｜end▁of▁sentence｜>"), std::vector<int32_t>{1});
  auto d = t.decode(std::vector<int32_t>{0, 19923, 1}, {.skip_special_tokens = true});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, "Hello");
  EXPECT_FALSE(t.chat_template().empty());
}

TEST(Tokenizer, UnknownIdIsAnErrorNamingTheId) {
  auto d = deepseek().decode(std::vector<int32_t>{19923, 999999});
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("999999"), std::string::npos);
  EXPECT_FALSE(deepseek().decode(std::vector<int32_t>{-1}).ok());
}

TEST(Tokenizer, InvalidUtf8IsReplaced) {
  std::string bad = "ab\xff\xfe" "c\xe4\xbd" "d\xf0\x9f\x98";
  auto ids = deepseek().encode(bad);
  auto d = deepseek().decode(ids);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, utf8_sanitize(bad));
  EXPECT_EQ(*d, "ab\xEF\xBF\xBD\xEF\xBF\xBD" "c\xEF\xBF\xBD" "d\xEF\xBF\xBD");
}

TEST(Tokenizer, RoundTripLongAndOdd) {
  std::string s;
  for (int i = 0; i < 2000; ++i) s += (i % 7 == 0) ? "\n\n   " : "x1234 αβγ 中文 🤖 ";
  s += std::string(5000, ' ') + std::string(3000, '9') + std::string(100, '\n');
  auto d = deepseek().decode(deepseek().encode(s));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, s);
}

TEST(Tokenizer, BadJsonIsAnError) {
  EXPECT_FALSE(Tokenizer::from_json("{", "").ok());
  EXPECT_FALSE(Tokenizer::from_json(R"({"model": {"type": "Unigram"}})", "").ok());
  EXPECT_FALSE(Tokenizer::load_dir("/nonexistent-dir").ok());
  auto r = Tokenizer::from_json(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b c"]}})", "");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("merges[0]"), std::string::npos);
}

TEST(Tokenizer, TinyTokenizerPairMergesAndAddedTokenFlags) {
  // Byte-level alphabet for a-z and space (Ġ); merges in the pair form.
  std::string vocab = "{";
  int id = 0;
  for (char c = 'a'; c <= 'z'; ++c) vocab += str_cat("\"", std::string(1, c), "\": ", id++, ", ");
  vocab += "\"Ġ\": 26, \"ab\": 27, \"abc\": 28, \"Ġab\": 29}";
  std::string tj = str_cat(R"({"model": {"type": "BPE", "vocab": )", vocab,
                           R"(, "merges": [["a", "b"], ["ab", "c"], ["Ġ", "ab"]]},
      "added_tokens": [{"id": 100, "content": "<X>", "special": true, "lstrip": true, "rstrip": true,
                        "normalized": false, "single_word": false}],
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
      "decoder": {"type": "ByteLevel"}})");
  auto r = Tokenizer::from_json(tj, "");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  const Tokenizer& t = **r;
  EXPECT_EQ(t.encode("abc"), (std::vector<int32_t>{28}));
  EXPECT_EQ(t.encode("ab ab"), (std::vector<int32_t>{27, 29}));
  // lstrip/rstrip swallow the spaces around <X>.
  EXPECT_EQ(t.encode("abc  <X>  ab"), (std::vector<int32_t>{28, 100, 27}));
}

}  // namespace
}  // namespace dsi::tok

namespace dsi::tok {
namespace {

std::vector<std::string> matches(const std::string& pattern, const std::string& s) {
  auto re = Regex::compile(pattern);
  EXPECT_TRUE(re.ok());
  std::vector<std::string> out;
  (*re)->for_each_match(s, [&](size_t b, size_t e) { out.push_back(s.substr(b, e - b)); });
  return out;
}

TEST(PreTokenizer, WhitespaceAndCategoriesAsOniguruma) {
  // Hugging Face runs the split regexes with Oniguruma: \s includes U+0085 and excludes U+FEFF (checked against
  // libonig 6.9.8; JavaScript's \s is the other way round, so the npm oracle differs on these two).
  EXPECT_EQ(matches(R"(\s+)", "a\xC2\x85" "b"), std::vector<std::string>{"\xC2\x85"});
  EXPECT_TRUE(matches(R"(\s+)", "a\xEF\xBB\xBF" "b").empty());
  // Unicode 15.0 additions (PCRE2 10.42 knows Unicode 14): U+1F6DC is a symbol, U+31350 (CJK Ext H) a letter.
  EXPECT_EQ(matches(R"(\p{S}+)", "x\xF0\x9F\x9B\x9Cy"), std::vector<std::string>{"\xF0\x9F\x9B\x9C"});
  EXPECT_EQ(matches(R"([^\p{L}]+)", "\xF0\xB1\x8D\x90" "1"), std::vector<std::string>{"1"});
  // Gaps between matches are kept as pieces by apply_split (Isolated).
  SplitStep step{Regex::compile(R"(\p{N}{1,3})").value(), SplitBehavior::kIsolated, false};
  std::string text = "ab12345cd";
  std::vector<Piece> in{{0, static_cast<uint32_t>(text.size())}}, out;
  apply_split(step, text, in, out);
  std::vector<std::string> got;
  for (const auto& p : out) got.push_back(text.substr(p.begin, p.end - p.begin));
  EXPECT_EQ(got, (std::vector<std::string>{"ab", "123", "45", "cd"}));
}

}  // namespace
}  // namespace dsi::tok
