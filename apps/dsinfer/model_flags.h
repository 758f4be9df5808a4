// Flags shared by the subcommands that load a model, and error printing.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "core/status.h"
#include "model/model.h"

namespace dsi::app {

struct ModelFlags {
  std::string model_dir;
  std::string device = "cpu";    // cpu | ref (scalar reference kernels) | cuda (GPU runner, model/cuda)
  std::string mla = "auto";      // auto | naive | absorbed
  std::string fp8 = "keep";      // FP8 checkpoints on the GPU: keep (e4m3 + block scales) | dequantize (f32)
};

void add_model_flags(CLI::App& cli, ModelFlags& flags);
Result<std::unique_ptr<Model>> load_model_from_flags(const ModelFlags& flags);
// Prints "dsinfer: error: ..." to stderr and returns the exit code 1.
int report_error(const Status& status);

}  // namespace dsi::app
