// dsinfer: one binary, subcommands. See `dsinfer --help`.
#include <cstdio>
#include <cstring>
#include <string>

#include "apps/dsinfer/commands.h"

namespace {

struct Subcommand {
  const char* name;
  int (*run)(int, char**);
  const char* help;
};

const Subcommand kCommands[] = {
    {"serve", dsi::app::cmd_serve, "serve a model over an OpenAI-compatible HTTP API (no --model: a demo model)"},
    {"generate", dsi::app::cmd_generate, "generate tokens from a prompt (greedy by default)"},
    {"check-golden", dsi::app::cmd_check_golden, "compare logits with a reference expected.safetensors"},
    {"bench", dsi::app::cmd_bench, "CPU benchmark on a model shape with random weights, with the memory roofline"},
    {"tokenize", dsi::app::cmd_tokenize, "encode / decode JSON lines with a tokenizer.json"},
    {"chat-template", dsi::app::cmd_chat_template, "render a chat template for a JSON conversation"},
};

void print_usage(FILE* out) {
  std::fprintf(out, "usage: dsinfer <command> [options]   (dsinfer <command> --help for its options)\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-14s %s\n", c.name, c.help);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    print_usage(stdout);
    return 0;
  }
  if (cmd == "--version") {
    std::printf("dsinfer %s\n", DSI_VERSION);
    return 0;
  }
  for (const auto& c : kCommands) {
    if (cmd == c.name) return c.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "dsinfer: unknown command '%s'\n", cmd.c_str());
  print_usage(stderr);
  return 2;
}
