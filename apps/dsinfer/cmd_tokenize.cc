// dsinfer tokenize / dsinfer chat-template: JSON-lines front ends to src/tokenizer.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace dsi::app {

namespace {

using json = nlohmann::ordered_json;

std::string dump_line(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

int cmd_tokenize(int argc, char** argv) {
  CLI::App app{
      "Encode JSON lines {\"text\": ...} from stdin to {\"ids\": [...]} lines on stdout (or decode with --decode:\n"
      "{\"ids\": [...]} -> {\"text\": ...}). A line that fails gets {\"error\": ...} and the exit code is 1.",
      "dsinfer tokenize"};
  std::string dir;
  bool add_special = false, decode = false, skip_special = false;
  app.add_option("--tokenizer", dir, "directory with tokenizer.json (and tokenizer_config.json)")->required();
  app.add_flag("--add-special-tokens", add_special, "add BOS/EOS as the tokenizer config says (encode)");
  app.add_flag("--decode", decode, "decode ids to text instead of encoding");
  app.add_flag("--skip-special-tokens", skip_special, "leave special tokens out of decoded text");
  CLI11_PARSE(app, argc, argv);

  auto tok = tok::Tokenizer::load_dir(dir);
  if (!tok.ok()) {
    std::fprintf(stderr, "dsinfer tokenize: %s\n", tok.status().to_string().c_str());
    return 1;
  }
  int rc = 0;
  std::string line;
  size_t line_no = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (line.empty()) continue;
    json out;
    try {
      json in = json::parse(line);
      if (decode) {
        auto ids = in.at("ids").get<std::vector<int32_t>>();
        auto text = (*tok)->decode(ids, {.skip_special_tokens = skip_special});
        if (text.ok()) {
          out["text"] = *text;
        } else {
          out["error"] = text.status().to_string();
        }
      } else {
        out["ids"] = (*tok)->encode(in.at("text").get<std::string>(), {.add_special_tokens = add_special});
      }
    } catch (const std::exception& e) {
      out["error"] = std::string("line ") + std::to_string(line_no) + ": " + e.what();
    }
    if (out.contains("error")) {
      std::fprintf(stderr, "dsinfer tokenize: %s\n", out["error"].get<std::string>().c_str());
      rc = 1;
    }
    std::cout << dump_line(out) << '\n';
  }
  return rc;
}

int cmd_chat_template(int argc, char** argv) {
  CLI::App app{
      "Render the chat template for one JSON object on stdin: {\"messages\": [...], \"add_generation_prompt\": bool,\n"
      "...extra variables (tools, ...)}. bos_token/eos_token come from the tokenizer config.",
      "dsinfer chat-template"};
  std::string dir, template_file;
  bool ids = false;
  app.add_option("--tokenizer", dir, "directory with tokenizer_config.json (chat_template) and tokenizer.json")->required();
  app.add_option("--template", template_file, "use this Jinja file instead of the config's chat_template");
  app.add_flag("--ids", ids, "print {\"ids\": [...]} of the rendered prompt instead of the text");
  CLI11_PARSE(app, argc, argv);

  auto tok = tok::Tokenizer::load_dir(dir);
  if (!tok.ok()) {
    std::fprintf(stderr, "dsinfer chat-template: %s\n", tok.status().to_string().c_str());
    return 1;
  }
  std::string request((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  Result<std::string> rendered = Status::Internal("not rendered");
  if (template_file.empty()) {
    rendered = tok::apply_chat_template(**tok, request);
  } else {
    std::FILE* f = std::fopen(template_file.c_str(), "rb");
    if (f == nullptr) {
      std::fprintf(stderr, "dsinfer chat-template: %s: cannot open\n", template_file.c_str());
      return 1;
    }
    std::string text;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof(buf), f)) > 0;) text.append(buf, n);
    std::fclose(f);
    json ctx;
    try {
      ctx = json::parse(request);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "dsinfer chat-template: request: %s\n", e.what());
      return 1;
    }
    if (!ctx.is_object()) {
      std::fprintf(stderr, "dsinfer chat-template: request must be a JSON object\n");
      return 1;
    }
    if ((*tok)->bos_token() && !ctx.contains("bos_token")) ctx["bos_token"] = *(*tok)->bos_token();
    if ((*tok)->eos_token() && !ctx.contains("eos_token")) ctx["eos_token"] = *(*tok)->eos_token();
    rendered = tok::render_template_json(text, ctx.dump());
  }
  if (!rendered.ok()) {
    std::fprintf(stderr, "dsinfer chat-template: %s\n", rendered.status().to_string().c_str());
    return 1;
  }
  if (ids) {
    json out;
    out["ids"] = (*tok)->encode(*rendered);
    std::cout << dump_line(out) << '\n';
  } else {
    std::cout << *rendered;
  }
  return 0;
}

}  // namespace dsi::app
