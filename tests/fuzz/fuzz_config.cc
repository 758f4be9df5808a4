// libFuzzer target: arbitrary text as config.json. Checks that parsing never crashes and that an accepted config
// satisfies the range checks the model code relies on (no division by zero, heads divide, experts fit).
#include <cstdint>
#include <string_view>

#include "io/model_config.h"

namespace {
void require(bool cond) {
  if (!cond) __builtin_trap();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = dsi::parse_model_config(text, "fuzz/config.json");
  if (!config.ok()) {
    require(!config.status().message().empty());
    return 0;
  }
  const dsi::ModelConfig& c = *config;
  require(c.vocab_size > 0 && c.hidden_size > 0 && c.num_hidden_layers > 0);
  require(c.num_attention_heads > 0 && c.num_key_value_heads > 0);
  require(c.num_attention_heads % c.num_key_value_heads == 0);
  require(c.rms_norm_eps > 0 && c.rope_theta > 0);
  if (c.is_deepseek()) {
    require(c.moe_layer_freq > 0 && c.kv_lora_rank > 0 && c.qk_rope_head_dim > 0);
    if (c.n_routed_experts > 0) {
      require(c.n_group > 0 && c.n_routed_experts % c.n_group == 0 && c.topk_group <= c.n_group);
      require(c.num_experts_per_tok > 0 && c.num_experts_per_tok <= c.n_routed_experts);
    }
    for (int64_t layer = 0; layer < 4; ++layer) (void)c.is_moe_layer(layer);
  } else {
    require(c.head_dim > 0);
  }
  if (c.quant.fp8) require(c.quant.block_n > 0 && c.quant.block_k > 0);
  return 0;
}
