#include "model/cuda/cuda_model.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string_view>
#include <tuple>

#include "core/log.h"
#include "io/model_config.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_model_ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cuda_sampling.h"
#include "model/cuda/cuda_layers.h"
#include "model/cuda/cuda_upload.h"
#include "model/decoder.h"

namespace dsi {
namespace {

namespace cu = ::dsi::cuda;
using cuda_model::Arena;
using cuda_model::BatchMeta;
using cuda_model::DLayer;
using cuda_model::DLinear;
using cuda_model::DMoe;
using cuda_model::profile_mark;

class CudaDecoderModel final : public Model {
 public:
  CudaDecoderModel(ModelConfig config, std::unique_ptr<CudaContext> ctx)
      : config_(std::move(config)), ctx_(std::move(ctx)), up_(ctx_.get()), arena_(ctx_.get()) {}

  Status init(DecoderParts parts, const CudaModelOptions& options);

  const ModelConfig& config() const override { return config_; }
  void recycle_logits(Tensor logits) override {
    if (logits.dtype() == DType::kF32 && logits.ndim() == 2 && logits.dim(1) == config_.vocab_size) {
      spare_logits_ = std::move(logits);
    }
  }
  KvLayout kv_layout() const override { return layout_; }
  Result<Tensor> forward(const ForwardBatch& batch, KvCache& cache) override;
  Result<std::vector<int64_t>> forward_sampled(const ForwardBatch& batch, KvCache& cache,
                                               std::span<const RowSampling> rows) override;
  bool samples_on_device() const override { return true; }
  void set_mla_mode(MlaMode mode) override {
    for (DLayer& l : layers_) l.mla_attn.mode = mode;
  }

 private:
  Status ensure_kv(const KvCache& cache);
  // Everything up to the logits on the device (logits_, [rows, vocab]); what forward and forward_sampled share.
  struct DeviceLogits {
    const float* logits = nullptr;
    int64_t rows = 0;
    bool decode = false;  // every chunk one token (for the profile's title)
  };
  Result<DeviceLogits> device_forward(const ForwardBatch& batch, KvCache& cache);
  // Embedding .. logits (into logits_) for the batch described by b: the part a CUDA graph captures.
  Status run_layers(const BatchMeta& b, const int64_t* dev_ids, const int32_t* dev_rows, int64_t n_rows);
  uint64_t generation() const { return generation_ + arena_.generation() + ctx_->scratch_generation(); }
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    uint64_t generation = ~uint64_t{0};       // of the captured buffers
    uint64_t eager_generation = ~uint64_t{0};  // an eager run of this shape at that generation came first
    bool failed = false;
  };
  template <class T>
  Result<T*> grow(DeviceBuffer<uint8_t>& buf, int64_t n) {
    const size_t bytes = static_cast<size_t>(n) * sizeof(T);
    if (buf.size() < bytes) {
      // The old block stays valid if the new one cannot be had (the pool is first-fit: try the exact size
      // after the doubled one); once replaced it is freed, which stream order makes safe.
      size_t want = std::max(bytes, 2 * buf.size());
      Result<void*> p = ctx_->pool().alloc(want);
      if (!p.ok() && want > bytes) p = ctx_->pool().alloc(want = bytes);
      if (!p.ok()) return p.status();
      buf = DeviceBuffer<uint8_t>(&ctx_->pool(), static_cast<uint8_t*>(*p), want);
      ++generation_;
    }
    return reinterpret_cast<T*>(buf.get());
  }

  ModelConfig config_;
  std::unique_ptr<CudaContext> ctx_;
  cuda_model::Uploader up_;
  Arena arena_;
  KvLayout layout_;
  const void* embedding_ = nullptr;
  DType embedding_dtype_ = DType::kBF16;
  const float* final_norm_ = nullptr;
  DLinear lm_head_;
  std::vector<DLayer> layers_;
  // KV pools per layer (bf16 rows), sized for kv_blocks_ blocks.
  int64_t kv_blocks_ = 0, kv_block_size_ = 0;
  std::vector<DeviceBuffer<uint8_t>> kv_pools_;
  // Per-forward buffers, grown on demand.
  DeviceBuffer<uint8_t> meta_, x_, x_alt_, normed_, normed_bf16_, branch_, lm_in_, logits_;
  std::vector<uint8_t> host_meta_;
  float* host_logits_ = nullptr;  // pinned staging for the logits download
  size_t host_logits_bytes_ = 0;
  // forward_sampled: per-row params then ids, on the device and in pinned host staging.
  DeviceBuffer<uint8_t> sampling_;
  uint8_t* host_sampling_ = nullptr;
  size_t host_sampling_bytes_ = 0;
  uint64_t generation_ = 0;
  uint64_t graph_replays_ = 0, steps_ = 0;
  bool graphs_enabled_ = true;
  int64_t max_graph_tokens_ = 0;  // decode batches up to this size can be captured
  std::map<std::tuple<int64_t, int64_t, int64_t>, Graph> graphs_;  // (batch, context bucket, table width)
  uint64_t graphs_generation_ = 0;
  Tensor spare_logits_;  // from recycle_logits: reused by the next step of the same shape

 public:
  ~CudaDecoderModel() override {
    for (auto& [k, g] : graphs_) {
      if (g.exec != nullptr) cudaGraphExecDestroy(g.exec);
    }
    if (host_logits_ != nullptr) cudaFreeHost(host_logits_);
    if (host_sampling_ != nullptr) cudaFreeHost(host_sampling_);
    if (steps_ > 0) log_info("cuda model: ", steps_, " steps, ", graph_replays_, " replayed from CUDA graphs");
  }
};

Status CudaDecoderModel::init(DecoderParts parts, const CudaModelOptions& options) {
  layout_ = parts.kv_layout;
  layout_.host_storage = false;
  layout_.elem_bytes = 2;
  graphs_enabled_ = options.cuda_graphs;
  max_graph_tokens_ = 256;
  DSI_ASSIGN_OR_RETURN(embedding_, up_.tensor(parts.embedding));
  embedding_dtype_ = parts.embedding.dtype();
  parts.embedding = Tensor();
  DSI_ASSIGN_OR_RETURN(final_norm_, up_.floats(parts.final_norm));
  DSI_ASSIGN_OR_RETURN(lm_head_, up_.linear({&parts.lm_head}));
  parts.lm_head = Linear();
  for (DecoderLayer& layer : parts.layers) {
    DSI_ASSIGN_OR_RETURN(DLayer d, up_.layer(config_, layer, options));
    layers_.push_back(std::move(d));
    layer = DecoderLayer();  // drop the host copy as soon as it is on the device
  }
  return Status::Ok();
}

Status CudaDecoderModel::ensure_kv(const KvCache& cache) {
  if (cache.num_blocks() <= kv_blocks_ && cache.block_size() == kv_block_size_) return Status::Ok();
  const int64_t bs = cache.block_size();
  const int64_t blocks = std::max(cache.num_blocks(), kv_block_size_ == bs ? 2 * kv_blocks_ : int64_t{0});
  const size_t old_rows = static_cast<size_t>(kv_blocks_ * kv_block_size_);
  const bool keep = kv_block_size_ == bs;
  kv_pools_.resize(layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    DLayer& layer = layers_[l];
    // One pool per layer: the MLA latent rows, or GQA rows of K then V (one KV write per step fills both).
    const int64_t width = layer.mla ? layer.mla_attn.lw() : 2 * layer.gqa.hkv * layer.gqa.d;
    DeviceBuffer<uint8_t>* pool = &kv_pools_[l];
    {
      const size_t bytes = static_cast<size_t>(blocks * bs * width) * 2;
      DSI_ASSIGN_OR_RETURN(void* p, ctx_->pool().alloc(bytes));
      // Zeros, so that rows nobody wrote (a benchmark's reserved context) hold numbers, not stale bits.
      DSI_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p, 0, bytes, ctx_->stream()));
      if (keep && pool->get() != nullptr) {
        DSI_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(p, pool->get(), old_rows * width * 2, cudaMemcpyDeviceToDevice,
                                                 ctx_->stream()));
      }
      ++generation_;
      *pool = DeviceBuffer<uint8_t>(&ctx_->pool(), static_cast<uint8_t*>(p), bytes);
    }
    if (layer.mla) {
      layer.mla_attn.pool = reinterpret_cast<uint16_t*>(kv_pools_[l].get());
    } else {
      layer.gqa.k_pool = reinterpret_cast<uint16_t*>(kv_pools_[l].get());
      layer.gqa.v_pool = layer.gqa.k_pool + layer.gqa.hkv * layer.gqa.d;
    }
  }
  kv_blocks_ = blocks;
  kv_block_size_ = bs;
  return Status::Ok();
}

Result<CudaDecoderModel::DeviceLogits> CudaDecoderModel::device_forward(const ForwardBatch& batch, KvCache& cache) {
  DSI_RETURN_IF_ERROR(validate_batch(config_, batch, cache));
  DSI_RETURN_IF_ERROR(ensure_kv(cache));
  ++steps_;
  CudaContext& ctx = *ctx_;
  const int64_t t = batch.num_tokens(), vocab = config_.vocab_size;
  const auto num_seqs = static_cast<int64_t>(batch.chunks.size());

  // Batch metadata: one host staging buffer, one copy to the device.
  BatchMeta b;
  b.num_tokens = t;
  b.num_seqs = num_seqs;
  b.block_size = cache.block_size();
  b.all_single = true;
  for (const SequenceChunk& c : batch.chunks) {
    b.max_blocks = std::max<int64_t>(b.max_blocks, static_cast<int64_t>(c.block_table.size()));
    b.max_kv_len = std::max(b.max_kv_len, c.start_pos + c.num_tokens);
    b.all_single = b.all_single && c.num_tokens == 1;
    b.any_single = b.any_single || c.num_tokens == 1;
    b.chunk_start.push_back(c.start_pos);
    b.chunk_tokens.push_back(c.num_tokens);
  }
  b.max_blocks = std::max<int64_t>(b.max_blocks, 1);
  // Forced naive MLA expands per chunk with host-side lengths, which a graph would freeze: eager only.
  bool naive_mla = false;
  for (const DLayer& l : layers_) naive_mla = naive_mla || (l.mla && l.mla_attn.mode == MlaMode::kNaive);
  bool moe_on_host = false;  // a MoE layer reads its routing back at this size (not capturable)
  for (const DLayer& l : layers_) moe_on_host = moe_on_host || (l.moe && l.moe_mlp.path(t) == DMoe::Path::kHost);
  const bool graph = graphs_enabled_ && b.all_single && t <= max_graph_tokens_ && !naive_mla && !moe_on_host &&
                     !cuda_model::profiling();
  if (graph) {
    // A fixed shape per (batch, context bucket): the split of the attention kernels and the table width.
    b.max_kv_len = (b.max_kv_len + 255) / 256 * 256;
    b.max_blocks = std::max(b.max_blocks, (b.max_kv_len + b.block_size - 1) / b.block_size);
  }
  std::vector<int32_t> rows;  // rows that need logits
  if (batch.all_logits) {
    for (int64_t i = 0; i < t; ++i) rows.push_back(static_cast<int32_t>(i));
  } else {
    int64_t end = 0;
    for (const SequenceChunk& c : batch.chunks) rows.push_back(static_cast<int32_t>((end += c.num_tokens) - 1));
  }
  const auto n_rows = static_cast<int64_t>(rows.size());
  const size_t off_pos64 = static_cast<size_t>(t) * 8, off_i32 = off_pos64 + static_cast<size_t>(t) * 8;
  const size_t n_i32 = static_cast<size_t>(4 * t + num_seqs * b.max_blocks + n_rows + 2 * (num_seqs + 1));
  host_meta_.assign(off_i32 + n_i32 * 4, 0);
  auto* ids64 = reinterpret_cast<int64_t*>(host_meta_.data());
  auto* pos64 = reinterpret_cast<int64_t*>(host_meta_.data() + off_pos64);
  auto* i32 = reinterpret_cast<int32_t*>(host_meta_.data() + off_i32);
  int32_t *token_pos = i32, *token_seq = i32 + t, *slots = i32 + 2 * t, *seq_lens = i32 + 3 * t;
  int32_t* tables = i32 + 4 * t;
  int32_t* logit_rows = tables + num_seqs * b.max_blocks;
  int64_t row = 0;
  for (int64_t s = 0; s < num_seqs; ++s) {
    const SequenceChunk& c = batch.chunks[s];
    std::copy(c.block_table.begin(), c.block_table.end(), tables + s * b.max_blocks);
    for (int64_t i = 0; i < c.num_tokens; ++i, ++row) {
      const int64_t p = c.start_pos + i;
      ids64[row] = batch.token_ids[row];
      pos64[row] = batch.positions[row];
      token_pos[row] = static_cast<int32_t>(p);
      token_seq[row] = static_cast<int32_t>(s);
      slots[row] = static_cast<int32_t>(c.block_table[p / b.block_size] * b.block_size + p % b.block_size);
      seq_lens[row] = static_cast<int32_t>(p + 1);
    }
  }
  std::copy(rows.begin(), rows.end(), logit_rows);
  int32_t* chunk_starts = logit_rows + n_rows;
  int32_t* kv_starts = chunk_starts + num_seqs + 1;
  for (int64_t s = 0, at = 0, kv = 0; s <= num_seqs; ++s) {
    chunk_starts[s] = static_cast<int32_t>(at);
    kv_starts[s] = static_cast<int32_t>(std::min<int64_t>(kv, INT32_MAX));  // (used only below 2^31 rows)
    if (s < num_seqs) {
      at += batch.chunks[s].num_tokens;
      kv += batch.chunks[s].start_pos + batch.chunks[s].num_tokens;
      b.max_chunk_tokens = std::max(b.max_chunk_tokens, batch.chunks[s].num_tokens);
    }
  }
  DSI_ASSIGN_OR_RETURN(uint8_t* meta, grow<uint8_t>(meta_, static_cast<int64_t>(host_meta_.size())));
  DSI_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(meta, host_meta_.data(), host_meta_.size(), cudaMemcpyHostToDevice,
                                           ctx.stream()));
  const auto* dev_ids = reinterpret_cast<const int64_t*>(meta);
  b.positions = reinterpret_cast<const int64_t*>(meta + off_pos64);
  const auto* d32 = reinterpret_cast<const int32_t*>(meta + off_i32);
  b.token_pos = d32;
  b.token_seq = d32 + t;
  b.slots = d32 + 2 * t;
  b.seq_lens = d32 + 3 * t;
  b.block_tables = d32 + 4 * t;
  const int32_t* dev_rows = b.block_tables + num_seqs * b.max_blocks;
  b.chunk_starts = dev_rows + n_rows;
  b.kv_starts = b.chunk_starts + num_seqs + 1;

  DSI_ASSIGN_OR_RETURN(float* logits, grow<float>(logits_, n_rows * vocab));
  if (graph) {
    // Buffers moved since the graphs were captured: drop them all (also bounds the map).
    if (graphs_generation_ != generation() || graphs_.size() > 256) {
      for (auto& [k, old] : graphs_) {
        if (old.exec != nullptr) cudaGraphExecDestroy(old.exec);
      }
      graphs_.clear();
      graphs_generation_ = generation();
    }
    Graph& g = graphs_[{t, b.max_kv_len, b.max_blocks}];
    if (g.exec != nullptr && g.generation != generation()) {
      cudaGraphExecDestroy(g.exec);  // its buffers moved
      g.exec = nullptr;
    }
    if (g.exec != nullptr) {
      DSI_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(g.exec, ctx.stream()));
      ++graph_replays_;
    } else if (!g.failed && g.eager_generation == generation()) {
      // Second step of this shape with no buffer moved since the first: capture, then replay.
      const uint64_t gen = generation();
      DSI_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(ctx.stream(), cudaStreamCaptureModeThreadLocal));
      const Status st = run_layers(b, dev_ids, dev_rows, n_rows);
      cudaGraph_t captured = nullptr;
      const cudaError_t end = cudaStreamEndCapture(ctx.stream(), &captured);
      if (st.ok() && end == cudaSuccess && generation() == gen &&
          cudaGraphInstantiate(&g.exec, captured, 0) == cudaSuccess) {
        g.generation = gen;
      } else {
        g.failed = true;  // this shape runs eagerly from now on
        g.exec = nullptr;
        log_warn("cuda graph capture of a decode step (batch ", t, ", context bucket ", b.max_kv_len,
                 ") failed, running it eagerly: ", st.ok() ? cudaGetErrorString(end) : st.to_string().c_str());
        (void)cudaGetLastError();
      }
      if (captured != nullptr) cudaGraphDestroy(captured);
      if (g.exec != nullptr) {
        DSI_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(g.exec, ctx.stream()));
      } else {
        DSI_RETURN_IF_ERROR(run_layers(b, dev_ids, dev_rows, n_rows));
      }
    } else {
      DSI_RETURN_IF_ERROR(run_layers(b, dev_ids, dev_rows, n_rows));
      g.eager_generation = generation();
    }
  } else {
    DSI_RETURN_IF_ERROR(run_layers(b, dev_ids, dev_rows, n_rows));
  }
  return DeviceLogits{logits, n_rows, b.all_single};
}

Result<Tensor> CudaDecoderModel::forward(const ForwardBatch& batch, KvCache& cache) {
  DSI_ASSIGN_OR_RETURN(const DeviceLogits d, device_forward(batch, cache));
  CudaContext& ctx = *ctx_;
  const int64_t n_rows = d.rows, vocab = config_.vocab_size;
  const size_t logit_bytes = static_cast<size_t>(n_rows * vocab) * sizeof(float);
  if (host_logits_bytes_ < logit_bytes) {
    const size_t want = std::max(logit_bytes, 2 * host_logits_bytes_);
    if (host_logits_ != nullptr) cudaFreeHost(host_logits_);
    host_logits_ = nullptr;
    host_logits_bytes_ = 0;
    DSI_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&host_logits_), want));
    host_logits_bytes_ = want;
  }
  DSI_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_logits_, d.logits, logit_bytes, cudaMemcpyDeviceToHost, ctx.stream()));
  DSI_RETURN_IF_ERROR(ctx.synchronize());
  Tensor out = spare_logits_.shape() == Shape{n_rows, vocab} ? std::move(spare_logits_)
                                                               : Tensor::uninitialized(DType::kF32, {n_rows, vocab});
  spare_logits_ = Tensor();
  std::memcpy(out.raw(), host_logits_, logit_bytes);
  arena_.reset();
  profile_mark(ctx, "logits_d2h");
  cuda_model::profile_report(d.decode ? "decode step" : "prefill step");
  return out;
}

// Samples where the logits are: the step moves rows x 32 bytes of params up and rows x 4 bytes of ids down
// instead of rows x vocab floats down (and the host sort of each row).
Result<std::vector<int64_t>> CudaDecoderModel::forward_sampled(const ForwardBatch& batch, KvCache& cache,
                                                               std::span<const RowSampling> rows) {
  const int64_t num_rows = batch.all_logits ? batch.num_tokens() : static_cast<int64_t>(batch.chunks.size());
  if (static_cast<int64_t>(rows.size()) != num_rows) {
    return Status::InvalidArgument(str_cat("forward_sampled: ", rows.size(), " sampling rows for ", num_rows,
                                           " logits rows"));
  }
  DSI_ASSIGN_OR_RETURN(const DeviceLogits d, device_forward(batch, cache));
  CudaContext& ctx = *ctx_;
  const size_t params_bytes = rows.size() * sizeof(cu::DeviceSampleParams);
  const size_t bytes = params_bytes + rows.size() * sizeof(int32_t);
  if (sampling_.size() < bytes) {
    // Not grow(): this buffer is outside the captured graphs, so moving it must not invalidate them.
    const size_t want = std::max(bytes, 2 * sampling_.size());
    DSI_ASSIGN_OR_RETURN(void* p, ctx.pool().alloc(want));
    sampling_ = DeviceBuffer<uint8_t>(&ctx.pool(), static_cast<uint8_t*>(p), want);
  }
  if (host_sampling_bytes_ < bytes) {
    const size_t want = std::max(bytes, 2 * host_sampling_bytes_);
    if (host_sampling_ != nullptr) cudaFreeHost(host_sampling_);
    host_sampling_ = nullptr;
    host_sampling_bytes_ = 0;
    DSI_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&host_sampling_), want));
    host_sampling_bytes_ = want;
  }
  auto* params = reinterpret_cast<cu::DeviceSampleParams*>(host_sampling_);
  for (size_t i = 0; i < rows.size(); ++i) {
    const SampleParams& p = rows[i].params;
    params[i] = {.temperature = p.temperature, .top_p = p.top_p, .min_p = p.min_p, .greedy = is_greedy(p) ? 1 : 0,
                 .top_k = p.top_k, .u01 = rows[i].u01};
  }
  auto* dev_params = reinterpret_cast<cu::DeviceSampleParams*>(sampling_.get());
  auto* dev_ids = reinterpret_cast<int32_t*>(sampling_.get() + params_bytes);
  DSI_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dev_params, params, params_bytes, cudaMemcpyHostToDevice, ctx.stream()));
  DSI_RETURN_IF_ERROR(cu::sample_rows(ctx, {.logits = d.logits, .rows = d.rows, .vocab = config_.vocab_size,
                                            .row_stride = config_.vocab_size, .params = dev_params,
                                            .out_ids = dev_ids}));
  auto* host_ids = reinterpret_cast<int32_t*>(host_sampling_ + params_bytes);
  DSI_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_ids, dev_ids, rows.size() * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                           ctx.stream()));
  DSI_RETURN_IF_ERROR(ctx.synchronize());
  arena_.reset();
  profile_mark(ctx, "sample");
  cuda_model::profile_report(d.decode ? "decode step" : "prefill step");
  return std::vector<int64_t>(host_ids, host_ids + rows.size());
}

Status CudaDecoderModel::run_layers(const BatchMeta& b, const int64_t* dev_ids, const int32_t* dev_rows,
                                    int64_t n_rows) {
  CudaContext& ctx = *ctx_;
  const int64_t t = b.num_tokens, h = config_.hidden_size, vocab = config_.vocab_size;
  DSI_ASSIGN_OR_RETURN(float* x, grow<float>(x_, t * h));
  float* const x_main = x;  // the residual stream's buffer (with the GEMV-fused input norm: x_ and x_alt_ in turn)
  DSI_ASSIGN_OR_RETURN(float* normed, grow<float>(normed_, t * h));
  DSI_ASSIGN_OR_RETURN(float* branch, grow<float>(branch_, t * h));
  // The norms also write bf16(normed) where the next layer's GEMM multiplies bf16 activations on cuBLASLt (more than
  // one row, bf16 weights): that GEMM then needs no conversion pass of its own.
  static const bool bf16_norms = [] {
    const char* v = std::getenv("DSI_CUDA_BF16_NORM");
    return v == nullptr || std::string_view(v) != "0";
  }();
  bool any_takes = false;
  for (const DLayer& layer : layers_) {
    any_takes = any_takes || (layer.mla ? layer.mla_attn.takes_bf16_input(t) : layer.gqa.takes_bf16_input(t)) ||
                (layer.moe ? layer.moe_mlp.takes_bf16_input(t) : layer.mlp.takes_bf16_input(t));
  }
  uint16_t* normed_bf16 = nullptr;
  if (bf16_norms && any_takes && t > 1 && h % 8 == 0) {
    DSI_ASSIGN_OR_RETURN(normed_bf16, grow<uint16_t>(normed_bf16_, t * h));
  }
  const auto bf16_for = [&](bool takes) { return takes ? normed_bf16 : nullptr; };
  DSI_RETURN_IF_ERROR(cu::embedding(ctx, {.table = embedding_, .table_dtype = embedding_dtype_, .ids = dev_ids,
                                          .out = x, .num_tokens = t, .vocab = vocab, .d = h}));
  profile_mark(ctx, "embed_meta");
  const auto eps = static_cast<float>(config_.rms_norm_eps);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const DLayer& layer = layers_[l];
    arena_.rewind();
    uint16_t* attn_bf16 = bf16_for(layer.mla ? layer.mla_attn.takes_bf16_input(t) : layer.gqa.takes_bf16_input(t));
    // Layer 0: no residual yet (x is the embedding).
    const float* norm_in = l == 0 ? x : branch;
    float* residual = l == 0 ? nullptr : x;
    if (layer.mla ? layer.mla_attn.fuses_norm(t) : layer.gqa.fuses_norm(t)) {
      // Decode, one row: the input norm inside the first GEMV's launch. Its blocks read x while the new residual
      // is written, so that goes to the other residual buffer, which then holds the residual stream.
      float* h_out = nullptr;
      if (residual != nullptr) {
        DSI_ASSIGN_OR_RETURN(float* alt, grow<float>(x_alt_, t * h));
        h_out = x == x_main ? alt : x_main;
      }
      const cu::GemvNormArgs in_norm{.residual = residual, .w = layer.input_norm, .h = h_out, .eps = eps};
      if (layer.mla) {
        DSI_RETURN_IF_ERROR(layer.mla_attn.forward(ctx, arena_, norm_in, b, branch, nullptr, &in_norm));
      } else {
        DSI_RETURN_IF_ERROR(layer.gqa.forward(ctx, arena_, norm_in, b, branch, nullptr, &in_norm));
      }
      if (h_out != nullptr) x = h_out;
    } else {
      DSI_RETURN_IF_ERROR(cu::rmsnorm_residual(ctx, {.x = norm_in, .residual = residual, .w = layer.input_norm,
                                                     .y = normed, .m = t, .d = h, .eps = eps,
                                                     .y_bf16 = attn_bf16}));
      profile_mark(ctx, "norm");
      if (layer.mla) {
        DSI_RETURN_IF_ERROR(layer.mla_attn.forward(ctx, arena_, normed, b, branch, attn_bf16));
      } else {
        DSI_RETURN_IF_ERROR(layer.gqa.forward(ctx, arena_, normed, b, branch, attn_bf16));
      }
    }
    uint16_t* ffn_bf16 = bf16_for(layer.moe ? layer.moe_mlp.takes_bf16_input(t) : layer.mlp.takes_bf16_input(t));
    const cu::RouterNormArgs post{.branch = branch, .residual = x, .w = layer.post_norm, .normed = normed,
                                  .eps = eps};
    const bool norm_in_router = layer.moe && ffn_bf16 == nullptr && layer.moe_mlp.fuses_norm(t);
    if (!norm_in_router) {
      DSI_RETURN_IF_ERROR(cu::rmsnorm_residual(ctx, {.x = branch, .residual = x, .w = layer.post_norm, .y = normed,
                                                     .m = t, .d = h, .eps = eps, .y_bf16 = ffn_bf16}));
      profile_mark(ctx, "norm");
    }
    arena_.rewind();
    if (layer.moe) {
      DSI_RETURN_IF_ERROR(
          layer.moe_mlp.forward(ctx, arena_, normed, t, branch, ffn_bf16, norm_in_router ? &post : nullptr));
    } else {
      DSI_RETURN_IF_ERROR(layer.mlp.forward(ctx, arena_, normed, t, branch, ffn_bf16));
    }
  }
  DSI_RETURN_IF_ERROR(cu::rmsnorm_residual(ctx, {.x = branch, .residual = x, .w = final_norm_, .y = normed, .m = t,
                                                 .d = h, .eps = eps}));
  DSI_ASSIGN_OR_RETURN(float* lm_in, grow<float>(lm_in_, n_rows * h));
  DSI_RETURN_IF_ERROR(cu::gather_rows(ctx, normed, h, dev_rows, n_rows, h, lm_in, h));
  DSI_ASSIGN_OR_RETURN(float* logits, grow<float>(logits_, n_rows * vocab));
  DSI_RETURN_IF_ERROR(lm_head_.forward(ctx, arena_, lm_in, n_rows, logits));
  profile_mark(ctx, "lm_head");
  return Status::Ok();
}

}  // namespace

bool cuda_available() { return cuda_device_count() > 0; }

Result<std::unique_ptr<Model>> build_cuda_model(const ModelConfig& config, TensorStore& store,
                                                const CudaModelOptions& options) {
  if (!cuda_available()) {
    return Status::Unavailable("no CUDA device is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES); use --device cpu");
  }
  ModelConfig load_config = config;
  load_config.quant.keep_fp8 = config.quant.fp8 && options.fp8_weights;
  DSI_ASSIGN_OR_RETURN(DecoderParts parts, load_decoder_parts(load_config, store, ShardSpec{}));
  size_t pool = options.pool_bytes;
  if (pool == 0) {
    DSI_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
    size_t free_b = 0, total_b = 0;
    DSI_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_b, &total_b));
    pool = free_b / 10 * 9;
  }
  DSI_ASSIGN_OR_RETURN(std::unique_ptr<CudaContext> ctx,
                       CudaContext::create({.device = options.device, .pool_bytes = pool}));
  auto model = std::make_unique<CudaDecoderModel>(config, std::move(ctx));
  DSI_RETURN_IF_ERROR(model->init(std::move(parts), options));
  return std::unique_ptr<Model>(std::move(model));
}

Result<std::unique_ptr<Model>> load_cuda_model(const std::string& model_dir, const CudaModelOptions& options) {
  DSI_ASSIGN_OR_RETURN(ModelConfig config, load_model_config(model_dir));
  DSI_ASSIGN_OR_RETURN(TensorStore store, TensorStore::open(model_dir));
  return build_cuda_model(config, store, options);
}

}  // namespace dsi
