// DeepSeek-V3 / R1 and DeepSeek-V2 / V2-Lite: MLA attention, dense MLP in the first layers, then MoE.
#include "model/decoder.h"
#include "model/weights.h"

namespace dsi {

Result<DecoderParts> load_deepseek_parts(const ModelConfig& config, TensorStore& store, const ShardSpec& shard) {
  DecoderParts parts;
  DSI_ASSIGN_OR_RETURN(parts.embedding, load_embedding(store, config));
  const ExpertPlacement placement = ExpertPlacement::contiguous(config.n_routed_experts, shard.world, shard.rank);
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string p = str_cat("model.layers.", l);
    DecoderLayer layer;
    DSI_RETURN_IF_ERROR(load_layer_norms(store, config, p, &layer));
    DSI_ASSIGN_OR_RETURN(MlaAttention attn, MlaAttention::load(store, p + ".self_attn", config, shard));
    if (l == 0) parts.kv_layout = {config.num_hidden_layers, attn.latent_width(), 0};
    layer.attention = std::move(attn);
    if (config.is_moe_layer(l)) {
      DSI_ASSIGN_OR_RETURN(layer.mlp, MoeLayer::load(store, p + ".mlp", config, shard, placement));
    } else {
      DSI_ASSIGN_OR_RETURN(layer.mlp, GatedMlp::load(store, p + ".mlp", config.hidden_size,
                                                     config.intermediate_size, shard, config.quant));
    }
    parts.layers.push_back(std::move(layer));
  }
  DSI_RETURN_IF_ERROR(load_head(store, config, &parts));
  return parts;
}

}  // namespace dsi
