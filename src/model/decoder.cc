#include "model/decoder.h"

#include <cstring>

#include "model/weights.h"

namespace dsi {

Result<Tensor> load_embedding(TensorStore& store, const ModelConfig& config) {
  const std::string name = "model.embed_tokens.weight";
  DSI_ASSIGN_OR_RETURN(TensorView v, store.get(name, {config.vocab_size, config.hidden_size},
                                               {DType::kBF16, DType::kF32, DType::kF16}));
  if (v.dtype == DType::kF16) return to_f32(v);
  Tensor t(v.dtype, v.shape);
  std::memcpy(t.raw(), v.data, v.nbytes());
  return t;
}

Status load_head(TensorStore& store, const ModelConfig& config, DecoderParts* parts) {
  DSI_ASSIGN_OR_RETURN(parts->final_norm, load_vector(store, "model.norm.weight", config.hidden_size));
  const std::string head = config.tie_word_embeddings ? "model.embed_tokens" : "lm_head";
  // lm_head is never quantized in the published checkpoints.
  DSI_ASSIGN_OR_RETURN(parts->lm_head,
                       Linear::load(store, {head, config.hidden_size, config.vocab_size, {}, false}, QuantConfig{}));
  return Status::Ok();
}

Status load_layer_norms(TensorStore& store, const ModelConfig& config, const std::string& prefix, DecoderLayer* layer) {
  DSI_ASSIGN_OR_RETURN(layer->input_norm, load_vector(store, prefix + ".input_layernorm.weight", config.hidden_size));
  DSI_ASSIGN_OR_RETURN(layer->post_attention_norm,
                       load_vector(store, prefix + ".post_attention_layernorm.weight", config.hidden_size));
  return Status::Ok();
}

DecoderModel::DecoderModel(ModelConfig config, DecoderParts parts, const ModelOptions& options)
    : config_(std::move(config)),
      parts_(std::move(parts)),
      ops_(options.ops ? options.ops : &cpu_ops()),
      comm_(options.comm),
      mla_mode_(options.mla_mode) {
  if (!comm_) {
    owned_comm_ = std::make_unique<SingleProcessCommunicator>();
    comm_ = owned_comm_.get();
  }
}

Status validate_batch(const ModelConfig& config_, const ForwardBatch& batch, const KvCache& cache) {
  const int64_t t_all = batch.num_tokens(), vocab = config_.vocab_size;
  if (t_all == 0) return Status::InvalidArgument("forward: empty batch");
  if (static_cast<int64_t>(batch.positions.size()) != t_all) {
    return Status::InvalidArgument("forward: positions and token_ids differ in length");
  }
  for (int64_t id : batch.token_ids) {
    if (id < 0 || id >= vocab) {
      return Status::OutOfRange(str_cat("token id ", id, " is outside the vocabulary [0, ", vocab, ")"));
    }
  }
  int64_t total = 0;
  for (const SequenceChunk& c : batch.chunks) {
    if (c.num_tokens <= 0 || c.start_pos < 0) {
      return Status::InvalidArgument(str_cat("forward: a chunk of ", c.num_tokens, " tokens at position ", c.start_pos,
                                             " (chunks need at least one token and a position >= 0)"));
    }
    if (c.start_pos + c.num_tokens > config_.max_position_embeddings && config_.max_position_embeddings > 0) {
      return Status::OutOfRange(str_cat("sequence of ", c.start_pos + c.num_tokens,
                                        " positions exceeds max_position_embeddings ",
                                        config_.max_position_embeddings));
    }
    DSI_RETURN_IF_ERROR(cache.check_table(c.block_table, c.start_pos + c.num_tokens));
    total += c.num_tokens;
  }
  if (total != t_all) return Status::InvalidArgument("forward: chunk sizes do not add up to the token count");
  return Status::Ok();
}

Result<Tensor> DecoderModel::forward(const ForwardBatch& batch, KvCache& cache) {
  DSI_RETURN_IF_ERROR(validate_batch(config_, batch, cache));
  const int64_t t_all = batch.num_tokens(), h = config_.hidden_size, vocab = config_.vocab_size;

  const LayerContext ctx{*ops_, *comm_};
  std::vector<float> x(static_cast<size_t>(t_all * h)), normed(x.size()), branch(x.size());  // [t, hidden]
  ops_->embedding({.table = parts_.embedding.raw(), .table_dtype = parts_.embedding.dtype(),
                   .ids = batch.token_ids.data(), .out = x.data(), .num_tokens = t_all, .vocab = vocab, .d = h});
  const float eps = static_cast<float>(config_.rms_norm_eps);
  for (size_t l = 0; l < parts_.layers.size(); ++l) {
    const DecoderLayer& layer = parts_.layers[l];
    ops_->rmsnorm({.x = x.data(), .w = layer.input_norm.data<float>(), .y = normed.data(), .m = t_all, .d = h,
                   .eps = eps});
    if (const auto* mla = std::get_if<MlaAttention>(&layer.attention)) {
      mla->forward(ctx, normed.data(), batch, cache, static_cast<int64_t>(l), mla_mode_, branch.data());
    } else {
      std::get<GqaAttention>(layer.attention).forward(ctx, normed.data(), batch, cache, static_cast<int64_t>(l),
                                                      branch.data());
    }
    DSI_RETURN_IF_ERROR(comm_->all_reduce(branch.data(), t_all * h, ReduceOp::kSum));
    for (size_t i = 0; i < x.size(); ++i) x[i] += branch[i];

    ops_->rmsnorm({.x = x.data(), .w = layer.post_attention_norm.data<float>(), .y = normed.data(), .m = t_all,
                   .d = h, .eps = eps});
    if (const auto* moe = std::get_if<MoeLayer>(&layer.mlp)) {
      moe->forward(ctx, normed.data(), t_all, branch.data());
    } else {
      std::get<GatedMlp>(layer.mlp).forward(ctx, normed.data(), t_all, branch.data());
    }
    DSI_RETURN_IF_ERROR(comm_->all_reduce(branch.data(), t_all * h, ReduceOp::kSum));
    for (size_t i = 0; i < x.size(); ++i) x[i] += branch[i];
  }

  // Rows that need logits: all tokens, or the last token of each chunk.
  std::vector<int64_t> rows;
  if (batch.all_logits) {
    for (int64_t t = 0; t < t_all; ++t) rows.push_back(t);
  } else {
    int64_t end = 0;
    for (const SequenceChunk& c : batch.chunks) rows.push_back((end += c.num_tokens) - 1);
  }
  const auto n = static_cast<int64_t>(rows.size());
  std::vector<float> last(static_cast<size_t>(n * h));
  for (int64_t i = 0; i < n; ++i) std::memcpy(&last[i * h], &x[rows[i] * h], h * sizeof(float));
  ops_->rmsnorm({.x = last.data(), .w = parts_.final_norm.data<float>(), .y = last.data(), .m = n, .d = h,
                 .eps = eps});
  Tensor logits(DType::kF32, {n, vocab});
  parts_.lm_head.forward(ctx, last.data(), n, logits.data<float>());
  return logits;
}

}  // namespace dsi
