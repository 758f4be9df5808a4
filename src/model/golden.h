// Golden check: run a model over the prompts of an expected.safetensors (input_ids.K, prompt_len.K, logits.K,
// made by the reference implementation) and compare logits at every position.
#pragma once

#include <string>
#include <vector>

#include "model/model.h"

namespace dsi {

enum class GoldenMode {
  kIncremental,   // prefill the prompt, then decode the rest one token at a time through the KV cache
  kFullSequence,  // one forward over the whole sequence
  kBatched,       // every prompt in one batch: prompts prefilled together, then decoded together
  kStaggered,     // prompt i prefilled in step i beside decode tokens of the earlier prompts (mixed steps)
};

struct GoldenOptions {
  GoldenMode mode = GoldenMode::kIncremental;
  double tolerance = 1e-4;       // relative error ||logits - ref|| / ||ref|| per prompt
  double gap_threshold = 1e-3;   // greedy tokens must agree where the reference top-2 gap exceeds this
  // ... and exceeds gap_relative x the rms of the reference row: a backend whose logits carry errors of about
  // tolerance x rms (bf16 compute) can only be held to the greedy token where the top two are further apart.
  double gap_relative = 0;
};

struct GoldenPromptResult {
  int index = 0;
  int64_t prompt_len = 0;
  int64_t total_len = 0;
  double rel_err = 0;
  // Where the error sits: the same measure over the prompt's rows (prefill) and the generated ones (decode), and
  // the row with the largest ||row - ref row|| / ||ref row||.
  double prefill_rel_err = 0, decode_rel_err = 0;
  int64_t worst_row = 0;
  double worst_row_err = 0;
  int greedy_agree = 0;  // positions with a wide reference gap where our argmax equals the reference argmax
  int greedy_total = 0;  // positions with a wide reference gap
};

struct GoldenReport {
  std::vector<GoldenPromptResult> prompts;
  double max_rel_err = 0;
  int greedy_agree = 0;
  int greedy_total = 0;
  bool pass = false;
};

Result<GoldenReport> run_golden(Model& model, const std::string& expected_path, const GoldenOptions& options);

}  // namespace dsi
