// One function per subcommand. Each parses its own flags (CLI11), prints errors to stderr and returns the exit
// code. main.cc only dispatches on the subcommand name.
#pragma once

namespace dsi::app {

// argv[0] is the subcommand name.
int cmd_serve(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_check_golden(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_chat_template(int argc, char** argv);

}  // namespace dsi::app
