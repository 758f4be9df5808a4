#include "model/model.h"

#include <regex>

#include "model/decoder.h"

namespace dsi {

namespace {

// Tensors a checkpoint may carry that this build deliberately does not use.
bool is_ignorable(const std::string& name, const ModelConfig& config) {
  if (name.find("rotary_emb.inv_freq") != std::string::npos) return true;
  // Multi-token-prediction layers sit at index >= num_hidden_layers; skipped until MTP lands.
  static const std::regex kLayer(R"(^model\.layers\.(\d+)\.)");
  std::smatch m;
  if (std::regex_search(name, m, kLayer)) return std::stoll(m[1].str()) >= config.num_hidden_layers;
  return false;
}

}  // namespace

Result<DecoderParts> load_decoder_parts(const ModelConfig& config, TensorStore& store, const ShardSpec& shard) {
  Result<DecoderParts> parts = config.is_deepseek() ? load_deepseek_parts(config, store, shard)
                                                    : load_llama_parts(config, store, shard);
  if (!parts.ok()) return parts.status();
  std::vector<std::string> unexpected;
  for (const std::string& name : store.unused()) {
    if (!is_ignorable(name, config)) unexpected.push_back(name);
  }
  if (!unexpected.empty()) {
    std::string list;
    for (size_t i = 0; i < unexpected.size() && i < 5; ++i) list += (i ? ", " : "") + unexpected[i];
    if (unexpected.size() > 5) list += str_cat(", ... (", unexpected.size(), " in all)");
    return Status::Corrupt(str_cat("unexpected tensors for ", arch_name(config.arch), ": ", list,
                                   "; the checkpoint does not match its config.json"));
  }
  return parts;
}

Result<std::unique_ptr<Model>> build_model(const ModelConfig& config, TensorStore& store,
                                           const ModelOptions& options) {
  ShardSpec shard;
  if (options.comm) shard = {ShardKind::kReplicated, options.comm->rank(), options.comm->size()};
  DSI_ASSIGN_OR_RETURN(DecoderParts parts, load_decoder_parts(config, store, shard));
  return std::unique_ptr<Model>(new DecoderModel(config, std::move(parts), options));
}

Result<std::vector<int64_t>> Model::forward_sampled(const ForwardBatch& batch, KvCache& cache,
                                                    std::span<const RowSampling> rows) {
  const int64_t num_rows = batch.all_logits ? batch.num_tokens() : static_cast<int64_t>(batch.chunks.size());
  if (static_cast<int64_t>(rows.size()) != num_rows) {
    return Status::InvalidArgument(str_cat("forward_sampled: ", rows.size(), " sampling rows for ", num_rows,
                                           " logits rows"));
  }
  DSI_ASSIGN_OR_RETURN(Tensor logits, forward(batch, cache));
  const int64_t vocab = logits.dim(1);
  std::vector<int64_t> ids;
  ids.reserve(rows.size());
  for (int64_t i = 0; i < num_rows; ++i) {
    const float* row = logits.data<float>() + i * vocab;
    const RowSampling& r = rows[static_cast<size_t>(i)];
    ids.push_back(is_greedy(r.params) ? ref_argmax(row, vocab) : ref_sample(row, vocab, r.params, r.u01));
  }
  recycle_logits(std::move(logits));
  return ids;
}

Result<std::unique_ptr<Model>> load_model(const std::string& model_dir, const ModelOptions& options) {
  DSI_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(model_dir));
  DSI_ASSIGN_OR_RETURN(TensorStore store, TensorStore::open(model_dir));
  return build_model(config, store, options);
}

}  // namespace dsi
