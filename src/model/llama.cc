// Llama-3 (R1-Distill-Llama) and Qwen2 (R1-Distill-Qwen): GQA attention with neox RoPE, SiLU-gated MLP.
// The two differ only in biases (Qwen2: q/k/v always; Llama: attention_bias, mlp_bias), handled by the layers.
#include "model/decoder.h"
#include "model/weights.h"

namespace dsi {

Result<DecoderParts> load_llama_parts(const ModelConfig& config, TensorStore& store, const ShardSpec& shard) {
  DecoderParts parts;
  DSI_ASSIGN_OR_RETURN(parts.embedding, load_embedding(store, config));
  for (int64_t l = 0; l < config.num_hidden_layers; ++l) {
    const std::string p = str_cat("model.layers.", l);
    DecoderLayer layer;
    DSI_RETURN_IF_ERROR(load_layer_norms(store, config, p, &layer));
    DSI_ASSIGN_OR_RETURN(GqaAttention attn, GqaAttention::load(store, p + ".self_attn", config, shard));
    if (l == 0) parts.kv_layout = {config.num_hidden_layers, attn.k_width(), attn.v_width()};
    layer.attention = std::move(attn);
    DSI_ASSIGN_OR_RETURN(layer.mlp, GatedMlp::load(store, p + ".mlp", config.hidden_size, config.intermediate_size,
                                                   shard, config.quant, config.mlp_bias));
    parts.layers.push_back(std::move(layer));
  }
  DSI_RETURN_IF_ERROR(load_head(store, config, &parts));
  return parts;
}

}  // namespace dsi
