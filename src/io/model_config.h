// Hugging Face config.json -> ModelConfig for the supported architectures.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace dsi {

enum class Arch { kDeepseekV3, kDeepseekV2, kQwen2, kLlama };
const char* arch_name(Arch arch);  // "DeepseekV3ForCausalLM", ...

enum class RopeScalingType { kNone, kYarn, kLlama3, kLinear };

struct RopeScaling {
  RopeScalingType type = RopeScalingType::kNone;
  double factor = 1.0;
  int64_t original_max_position_embeddings = 0;
  // yarn
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;          // 1 when absent (the Hugging Face default)
  double mscale_all_dim = 0.0;  // 0 when absent
  // llama3
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
};

enum class ScoringFunc { kSoftmax, kSigmoid };
enum class TopkMethod { kGreedy, kGroupLimitedGreedy, kNoauxTc };

struct QuantConfig {
  bool fp8 = false;  // quant_method "fp8", fmt "e4m3"
  int64_t block_n = 128;
  int64_t block_k = 128;
  // Runtime choice, not from config.json: keep FP8 weights as stored (e4m3 + weight_scale_inv) instead of
  // dequantizing them to f32 at load. Only the GPU runner sets it (the CPU kernels take f32/bf16 weights).
  bool keep_fp8 = false;
};

struct ModelConfig {
  Arch arch = Arch::kLlama;
  std::string model_type;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // GQA models: config head_dim or hidden_size / num_attention_heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // Qwen2: q/k/v bias always (set true by the parser)
  bool mlp_bias = false;
  std::vector<int64_t> bos_token_ids;  // usually one
  std::vector<int64_t> eos_token_ids;  // config may give an int or a list

  // DeepSeek MLA
  int64_t q_lora_rank = 0;  // 0: no q compression (q_proj), as with q_lora_rank null
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  // DeepSeek MoE
  int64_t moe_intermediate_size = 0;
  int64_t n_routed_experts = 0;  // 0: dense model
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = false;
  ScoringFunc scoring_func = ScoringFunc::kSoftmax;
  TopkMethod topk_method = TopkMethod::kGreedy;
  int64_t num_nextn_predict_layers = 0;  // MTP layers (index >= num_hidden_layers): skipped for now

  QuantConfig quant;

  bool is_deepseek() const { return arch == Arch::kDeepseekV3 || arch == Arch::kDeepseekV2; }
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
};

// Parses config.json text. `source` names the file in messages. Unknown architectures, missing required fields
// and wrong types are errors naming the field; values are range-checked (positive sizes, heads divide, ...).
Result<ModelConfig> parse_model_config(std::string_view json_text, const std::string& source);
// Reads DIR/config.json.
Result<ModelConfig> load_model_config(const std::string& model_dir);

}  // namespace dsi
