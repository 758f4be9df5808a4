#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"

namespace dsi::tok {
namespace {

std::string render(const std::string& t, const std::string& ctx = "{}") {
  auto r = render_template_json(t, ctx);
  return r.ok() ? *r : "ERROR: " + r.status().message();
}

TEST(Jinja, ExpressionsAndFilters) {
  EXPECT_EQ(render("{{ 'a' + 'b' ~ 1 }}"), "ab1");
  EXPECT_EQ(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ 2 ** 10 }} {{ 1 / 2 }}"), "3 -4 1 1024 0.5");
  EXPECT_EQ(render("{{ x | length }} {{ x | tojson }}", R"({"x": [1, "é", null, true, 1.5]})"),
            "5 [1, \"é\", null, true, 1.5]");
  EXPECT_EQ(render("{{ d | tojson }}", R"({"d": {"b": 1, "a": {"c": []}}})"), "{\"b\": 1, \"a\": {\"c\": []}}");
  EXPECT_EQ(render("{{ '  hi  ' | trim }}|{{ 'a,b,,c'.split(',') }}|{{ 'x y  z'.split() | join('-') }}"),
            "hi|['a', 'b', '', 'c']|x-y-z");
  EXPECT_EQ(render("{{ s[1:3] }}{{ s[-1] }}{{ s[::-1] }}", R"({"s": "中文字"})"), "文字字字文中");
  EXPECT_EQ(render("{{ u | default('d') }}{{ none_v is none }}{{ 'x' is string }}", R"({"none_v": null})"), "dTrueTrue");
  EXPECT_EQ(render("{{ 'abc'.startswith('ab') and not 'abc'.endswith('x') }}"), "True");
  EXPECT_EQ(render("{{ 'b' in 'abc' }}{{ 2 not in [1, 2] }}{{ 'k' in {'k': 1} }}"), "TrueFalseTrue");
  EXPECT_EQ(render("{{ 'yes' if 1 < 2 else 'no' }}"), "yes");
  EXPECT_EQ(render("{{ m.content }}{{ m['role'] }}{{ m.missing is defined }}", R"({"m": {"role": "r", "content": "c"}})"),
            "crFalse");
}

TEST(Jinja, StatementsLoopsAndNamespace) {
  EXPECT_EQ(render("{% for x in [1,2,3] %}{{ loop.index }}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}"),
            "11,22,33");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for x in [1,2,3] %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}"), "6");
  EXPECT_EQ(render("{% set x = 1 %}{% for i in [1] %}{% set x = 2 %}{% endfor %}{{ x }}"), "1");
  EXPECT_EQ(render("{% for x in [] %}a{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", R"({"d": {"a": 1, "b": 2}})"), "a=1;b=2;");
  EXPECT_EQ(render("{% for x in [1,2,3,4] %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}"), "12");
  EXPECT_EQ(render("{% if a %}A{% elif b %}B{% else %}C{% endif %}", R"({"b": 1})"), "B");
  EXPECT_EQ(render("{% macro f(x, y='!') %}[{{ x }}{{ y }}]{% endmacro %}{{ f(1) }}{{ f(2, y='?') }}"), "[1!][2?]");
}

TEST(Jinja, WhitespaceControlAsHuggingFace) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks drops indentation before it.
  EXPECT_EQ(render("{% if true %}\n  x\n{% endif %}\n"), "  x\n");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c"), "abc");
  EXPECT_EQ(render("  {% if true %}x{% endif %}"), "x");
  EXPECT_EQ(render("a {{ 'b' }} c\n"), "a b c");
  EXPECT_EQ(render("{# comment #}\nz"), "z");
}

TEST(Jinja, ErrorsNameConstructAndLine) {
  auto r = render_template_json("line1\n{% include 'x' %}", "{}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("line 2"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("include"), std::string::npos);
  r = render_template_json("{{ raise_exception('bad role') }}", "{}");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bad role"), std::string::npos);
  EXPECT_FALSE(render_template_json("{% if x %}", "{}").ok());
  EXPECT_FALSE(render_template_json("{{ x | nosuchfilter }}", "{}").ok());
  EXPECT_FALSE(render_template_json("{{ undefined_thing.attr }}", "{}").ok());
  EXPECT_FALSE(render_template_json("{{ 'a' * 100000000000 }}", "{}").ok());
  EXPECT_FALSE(render_template_json("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "{}").ok());
}

}  // namespace
}  // namespace dsi::tok
