// Rotary embedding parameters from the config: inverse frequencies with the scaling applied (YaRN, llama3,
// linear), the cos/sin attention factor, and DeepSeek's softmax scale correction. Formulas follow
// transformers' modeling_rope_utils and DeepSeek-V3 inference/model.py.
#pragma once

#include <vector>

#include "io/model_config.h"

namespace dsi {

struct RopeParams {
  std::vector<double> inv_freq;  // [rot_dim / 2]
  double attn_factor = 1.0;      // multiplies cos and sin (YaRN)
};

// rot_dim: the rotated width per head (head_dim for Llama/Qwen2, qk_rope_head_dim for DeepSeek).
RopeParams make_rope_params(const ModelConfig& config, int64_t rot_dim);

// yarn_get_mscale: 0.1 * mscale * ln(scale) + 1 for scale > 1, else 1.
double yarn_get_mscale(double scale, double mscale);

// Softmax scale of DeepSeek MLA: qk_head_dim^-0.5, times mscale^2 with YaRN mscale_all_dim (V2 and V3 alike; the
// ds2-tiny golden logits, made by transformers 5.17, need it for V2 too).
double mla_softmax_scale(const ModelConfig& config);

}  // namespace dsi
