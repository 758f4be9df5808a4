#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tokenizer/tokenizer.h"

namespace dsi::tok {
namespace {

const std::string kFixtures = std::string(DSI_SOURCE_DIR) + "/tests/tokenizer/fixtures";

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

TEST(ChatTemplate, FixtureCasesExactRenders) {
  auto cases = nlohmann::ordered_json::parse(read_all(kFixtures + "/template_cases.json"));
  auto cfg = nlohmann::json::parse(read_all(kFixtures + "/deepseek-v3/tokenizer_config.json"));
  std::string bos = cfg["bos_token"]["content"], eos = cfg["eos_token"]["content"];
  ASSERT_GE(cases.size(), 16u);
  for (const auto& c : cases) {
    std::string tmpl = read_all(kFixtures + "/templates/" + c["template"].get<std::string>());
    nlohmann::ordered_json ctx = {{"messages", c["messages"]},
                                  {"add_generation_prompt", c["add_generation_prompt"]},
                                  {"bos_token", bos},
                                  {"eos_token", eos}};
    auto r = render_template_json(tmpl, ctx.dump());
    ASSERT_TRUE(r.ok()) << c["template"] << ": " << r.status().to_string();
    EXPECT_EQ(*r, c["rendered"].get<std::string>()) << c["template"] << " " << c["messages"].dump();
  }
}

TEST(ChatTemplate, ApplyWithTokenizerConfig) {
  auto tok = Tokenizer::load_dir(kFixtures + "/deepseek-v3");
  ASSERT_TRUE(tok.ok());
  auto r = apply_chat_template(**tok, R"({"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true})");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(*r, "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜>");
  EXPECT_FALSE(apply_chat_template(**tok, R"({"messages": 3})").ok());
  EXPECT_FALSE(apply_chat_template(**tok, "not json").ok());
}

}  // namespace
}  // namespace dsi::tok
