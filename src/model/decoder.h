// The decoder stack shared by every architecture: embedding, N x (norm, attention, residual, norm, MLP or MoE,
// residual), final norm, lm_head. Architecture files (deepseek_v3.cc, llama.cc) decide which layers to load.
#pragma once

#include <memory>
#include <variant>
#include <vector>

#include "model/layers/attention.h"
#include "model/layers/mla.h"
#include "model/layers/moe.h"
#include "model/model.h"

namespace dsi {

struct DecoderLayer {
  Tensor input_norm;  // [hidden] f32
  Tensor post_attention_norm;
  std::variant<GqaAttention, MlaAttention> attention;
  std::variant<GatedMlp, MoeLayer> mlp;
};

// Parts loaded by an architecture file; DecoderModel runs them.
struct DecoderParts {
  Tensor embedding;  // [vocab, hidden], BF16 or F32 (replicated)
  std::vector<DecoderLayer> layers;
  Tensor final_norm;  // [hidden]
  Linear lm_head;     // [vocab, hidden] (replicated for now; vocab-parallel with all_gather under TP)
  KvLayout kv_layout;
};

class DecoderModel final : public Model {
 public:
  DecoderModel(ModelConfig config, DecoderParts parts, const ModelOptions& options);

  const ModelConfig& config() const override { return config_; }
  KvLayout kv_layout() const override { return parts_.kv_layout; }
  Result<Tensor> forward(const ForwardBatch& batch, KvCache& cache) override;
  void set_mla_mode(MlaMode mode) override { mla_mode_ = mode; }

 private:
  ModelConfig config_;
  DecoderParts parts_;
  const Ops* ops_;
  std::unique_ptr<Communicator> owned_comm_;
  Communicator* comm_;
  MlaMode mla_mode_;
};

// Architecture loaders (one file each).
Result<DecoderParts> load_deepseek_parts(const ModelConfig& config, TensorStore& store, const ShardSpec& shard);
Result<DecoderParts> load_llama_parts(const ModelConfig& config, TensorStore& store, const ShardSpec& shard);

// The architecture's parts for `config` (a registry lookup), with the check that the store holds no tensor the
// architecture does not use.
Result<DecoderParts> load_decoder_parts(const ModelConfig& config, TensorStore& store, const ShardSpec& shard);
// The checks every backend runs on a batch: token ids in the vocabulary, positions, chunk sizes, block tables.
Status validate_batch(const ModelConfig& config, const ForwardBatch& batch, const KvCache& cache);

// Shared loading helpers.
Result<Tensor> load_embedding(TensorStore& store, const ModelConfig& config);
Status load_head(TensorStore& store, const ModelConfig& config, DecoderParts* parts);
// input_layernorm and post_attention_layernorm of the layer at `prefix` ("model.layers.N").
Status load_layer_norms(TensorStore& store, const ModelConfig& config, const std::string& prefix, DecoderLayer* layer);

}  // namespace dsi
