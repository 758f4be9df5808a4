// libFuzzer target: arbitrary template text parsed and rendered with a fixed chat context, under tight limits
// (steps, output size, call depth), so no input can hang or exhaust memory. Errors are fine; crashes are not.
#include <cstdint>
#include <string>
#include <string_view>

#include "tokenizer/jinja_eval.h"
#include "tokenizer/jinja_parser.h"

namespace {

using dsi::tok::jinja::Value;

std::vector<std::pair<std::string, Value>> context() {
  auto msg = [](const char* role, Value content) {
    Value m = Value::object();
    m.obj->set("role", Value::string(role));
    m.obj->set("content", std::move(content));
    return m;
  };
  Value call = Value::object();
  Value fn = Value::object();
  fn.obj->set("name", Value::string("get_weather"));
  fn.obj->set("arguments", Value::string("{\"city\": \"Beijing\"}"));
  call.obj->set("type", Value::string("function"));
  call.obj->set("function", fn);
  Value tool_msg = msg("assistant", Value::none());
  tool_msg.obj->set("tool_calls", Value::array({call}));
  Value messages = Value::array({msg("system", Value::string("You are helpful.")), msg("user", Value::string("Hi 多机")),
                                 msg("assistant", Value::string("<think>\nx\n</think>\n\n4")), tool_msg,
                                 msg("tool", Value::string("{\"temp\": 3}")), msg("user", Value::string("again"))});
  return {{"messages", messages},
          {"add_generation_prompt", Value::boolean(true)},
          {"bos_token", Value::string("<｜begin▁of▁sentence｜>")},
          {"eos_token", Value::string("<｜end▁of▁sentence｜>")},
          {"tools", Value::array({fn})}};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const auto ctx = context();
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto tmpl = dsi::tok::jinja::parse_template(text);
  if (!tmpl.ok()) return 0;
  dsi::tok::jinja::RenderLimits limits;
  limits.max_output_bytes = 1 << 20;
  limits.max_steps = 200'000;
  limits.max_call_depth = 32;
  dsi::tok::jinja::Evaluator ev(limits);
  auto out = ev.render(**tmpl, ctx);
  (void)out;
  return 0;
}
