#include "model/cuda/cuda_upload.h"

#include <cstring>

#include "kernels/cuda/cuda_check.h"
#include "model/weights.h"

namespace dsi::cuda_model {

Result<void*> Uploader::alloc(size_t bytes) {
  DSI_ASSIGN_OR_RETURN(void* p, ctx_->pool().alloc(std::max<size_t>(bytes, 1)));
  owned_.emplace_back(&ctx_->pool(), static_cast<uint8_t*>(p), bytes);
  return p;
}

Result<void*> Uploader::copy(const void* src, size_t bytes) {
  DSI_ASSIGN_OR_RETURN(void* p, alloc(bytes));
  if (bytes > 0) DSI_CUDA_RETURN_IF_ERROR(cudaMemcpy(p, src, bytes, cudaMemcpyHostToDevice));
  return p;
}

Result<const void*> Uploader::tensor(const Tensor& t) {
  DSI_ASSIGN_OR_RETURN(void* p, copy(t.raw(), t.nbytes()));
  return static_cast<const void*>(p);
}

Result<const float*> Uploader::floats(const Tensor& t) {
  if (t.empty()) return static_cast<const float*>(nullptr);
  if (t.dtype() != DType::kF32) return Status::Internal("upload: expected an f32 vector");
  DSI_ASSIGN_OR_RETURN(void* p, copy(t.raw(), t.nbytes()));
  return static_cast<const float*>(p);
}

namespace {

constexpr int64_t kFp8Block = 128;  // DeepSeek's weight_block_size (load_model_config rejects others)

// An FP8 weight dequantized to bf16 on the host (for layouts the FP8 kernels cannot index).
Tensor fp8_to_bf16(const Linear& l) {
  const int64_t n = l.out_local(), k = l.in_local();
  std::vector<float> f(static_cast<size_t>(n * k));
  dequantize_fp8_blocks(l.weight().data<uint8_t>(), l.weight_scale().data<float>(), n, k, kFp8Block, kFp8Block,
                        f.data());
  Tensor out(DType::kBF16, {n, k});
  auto* d = out.data<uint16_t>();
  for (size_t i = 0; i < f.size(); ++i) d[i] = f32_to_bf16(f[i]);
  return out;
}

}  // namespace

Result<DLinear> Uploader::linear(std::initializer_list<const Linear*> parts, bool as_f32) {
  if (as_f32 && parts.size() == 1 && (*parts.begin())->weight().dtype() == DType::kBF16) {
    const Linear& l = **parts.begin();
    Tensor f = to_f32(l.weight().view());
    DLinear d;
    d.dtype = DType::kF32;
    d.n = l.out_local();
    d.k = l.in_local();
    DSI_ASSIGN_OR_RETURN(d.w, tensor(f));
    DSI_ASSIGN_OR_RETURN(d.bias, floats(l.bias()));
    return d;
  }
  DLinear d;
  const Linear& first = **parts.begin();
  d.dtype = first.weight().dtype();
  d.k = first.in_local();
  bool any_bias = false;
  // FP8 parts stack with their scale rows only if every part but the last ends on a 128-row block; otherwise
  // (and for f32 routers) they are dequantized to bf16 here.
  bool fp8_stacks = d.dtype == DType::kF8E4M3;
  int64_t rows_so_far = 0;
  for (const Linear* l : parts) {
    if (l->weight().dtype() != d.dtype || l->in_local() != d.k) {
      return Status::Internal("upload: fused linears differ in dtype or input width");
    }
    if (rows_so_far % kFp8Block != 0) fp8_stacks = false;
    rows_so_far += l->out_local();
    d.n += l->out_local();
    any_bias = any_bias || !l->bias().empty();
  }
  std::vector<Tensor> dequantized;  // per part, when FP8 does not stack
  if (d.dtype == DType::kF8E4M3 && !fp8_stacks) {
    for (const Linear* l : parts) dequantized.push_back(fp8_to_bf16(*l));
    d.dtype = DType::kBF16;
  }
  const size_t esz = dtype_size(d.dtype), row_bytes = static_cast<size_t>(d.k) * esz;
  DSI_ASSIGN_OR_RETURN(void* w, alloc(static_cast<size_t>(d.n) * row_bytes));
  size_t off = 0;
  size_t index = 0;
  for (const Linear* l : parts) {
    const size_t bytes = static_cast<size_t>(l->out_local()) * row_bytes;
    const void* src = dequantized.empty() ? l->weight().raw() : dequantized[index].raw();
    DSI_CUDA_RETURN_IF_ERROR(cudaMemcpy(static_cast<uint8_t*>(w) + off, src, bytes, cudaMemcpyHostToDevice));
    off += bytes;
    ++index;
  }
  d.w = w;
  if (d.dtype == DType::kF8E4M3) {
    std::vector<float> scales;
    for (const Linear* l : parts) {
      const Tensor& s = l->weight_scale();
      scales.insert(scales.end(), s.data<float>(), s.data<float>() + s.numel());
    }
    DSI_ASSIGN_OR_RETURN(void* s, copy(scales.data(), scales.size() * sizeof(float)));
    d.scale = static_cast<const float*>(s);
  }
  if (any_bias) {
    std::vector<float> bias(static_cast<size_t>(d.n), 0.0f);
    int64_t row = 0;
    for (const Linear* l : parts) {
      if (!l->bias().empty()) std::memcpy(&bias[row], l->bias().data<float>(), l->out_local() * sizeof(float));
      row += l->out_local();
    }
    DSI_ASSIGN_OR_RETURN(void* b, copy(bias.data(), bias.size() * sizeof(float)));
    d.bias = static_cast<const float*>(b);
  }
  return d;
}

Result<DMlp> Uploader::mlp(const GatedMlp& m) {
  DMlp d;
  DSI_ASSIGN_OR_RETURN(d.gate_up, linear({&m.gate(), &m.up()}));
  DSI_ASSIGN_OR_RETURN(d.down, linear({&m.down()}));
  d.inter = m.gate().out_local();
  return d;
}

Result<DRope> Uploader::rope(const RopeParams& p) {
  DRope r;
  DSI_ASSIGN_OR_RETURN(void* f, copy(p.inv_freq.data(), p.inv_freq.size() * sizeof(double)));
  r.inv_freq = static_cast<const double*>(f);
  r.attn_factor = p.attn_factor;
  return r;
}

Result<DMoe> Uploader::moe(const MoeLayer& m, const CudaModelOptions& options) {
  DMoe d;
  if (m.placement().num_local() != m.placement().num_experts()) {
    return Status::Unsupported("the GPU runner holds every routed expert (no expert parallelism yet)");
  }
  DSI_ASSIGN_OR_RETURN(d.router, linear({&m.router()}, /*as_f32=*/true));
  DSI_ASSIGN_OR_RETURN(d.correction_bias, floats(m.correction_bias()));
  d.route = m.route_template();
  d.experts = static_cast<int64_t>(m.experts().size());
  d.device_routing = options.moe_device_routing;
  if (d.experts == 0) return Status::Internal("upload: MoE layer without experts");
  const GatedMlp& e0 = m.experts()[0];
  d.dtype = e0.gate().weight().dtype();
  d.inter = e0.gate().out_local();
  d.hidden = e0.gate().in_local();
  // FP8 experts keep their codes when the up rows start on a scale block (inter % 128 == 0), else go to bf16.
  const bool fp8 = d.dtype == DType::kF8E4M3;
  const bool fp8_kept = fp8 && d.inter % kFp8Block == 0;
  if (fp8 && !fp8_kept) d.dtype = DType::kBF16;
  const int64_t s13 = 2 * d.inter / kFp8Block * ((d.hidden + kFp8Block - 1) / kFp8Block);
  const int64_t s2 = (d.hidden + kFp8Block - 1) / kFp8Block * (d.inter / kFp8Block);
  std::vector<float> scales13, scales2;
  const size_t esz = dtype_size(d.dtype);
  const size_t w13_bytes = static_cast<size_t>(2 * d.inter * d.hidden) * esz;
  const size_t w2_bytes = static_cast<size_t>(d.hidden * d.inter) * esz;
  DSI_ASSIGN_OR_RETURN(void* w13, alloc(w13_bytes * d.experts));
  DSI_ASSIGN_OR_RETURN(void* w2, alloc(w2_bytes * d.experts));
  for (int64_t e = 0; e < d.experts; ++e) {
    const GatedMlp& x = m.experts()[e];
    if (x.gate().weight().dtype() != e0.gate().weight().dtype() ||
        x.down().weight().dtype() != e0.gate().weight().dtype()) {
      return Status::Internal("upload: experts of one layer differ in dtype");
    }
    Tensor g, u, dn;  // bf16 copies of FP8 experts that cannot stay FP8
    if (fp8 && !fp8_kept) {
      g = fp8_to_bf16(x.gate());
      u = fp8_to_bf16(x.up());
      dn = fp8_to_bf16(x.down());
    }
    auto* base13 = static_cast<uint8_t*>(w13) + e * w13_bytes;
    DSI_CUDA_RETURN_IF_ERROR(cudaMemcpy(base13, g.empty() ? x.gate().weight().raw() : g.raw(), w13_bytes / 2,
                                        cudaMemcpyHostToDevice));
    DSI_CUDA_RETURN_IF_ERROR(cudaMemcpy(base13 + w13_bytes / 2, u.empty() ? x.up().weight().raw() : u.raw(),
                                        w13_bytes / 2, cudaMemcpyHostToDevice));
    DSI_CUDA_RETURN_IF_ERROR(cudaMemcpy(static_cast<uint8_t*>(w2) + e * w2_bytes,
                                        dn.empty() ? x.down().weight().raw() : dn.raw(), w2_bytes,
                                        cudaMemcpyHostToDevice));
    if (fp8_kept) {
      for (const Tensor* s : {&x.gate().weight_scale(), &x.up().weight_scale()}) {
        scales13.insert(scales13.end(), s->data<float>(), s->data<float>() + s->numel());
      }
      const Tensor& s = x.down().weight_scale();
      scales2.insert(scales2.end(), s.data<float>(), s.data<float>() + s.numel());
    }
  }
  d.w13 = w13;
  d.w2 = w2;
  if (fp8_kept) {
    if (static_cast<int64_t>(scales13.size()) != s13 * d.experts ||
        static_cast<int64_t>(scales2.size()) != s2 * d.experts) {
      return Status::Internal("upload: FP8 expert scales have unexpected sizes");
    }
    DSI_ASSIGN_OR_RETURN(void* p13, copy(scales13.data(), scales13.size() * sizeof(float)));
    DSI_ASSIGN_OR_RETURN(void* p2, copy(scales2.data(), scales2.size() * sizeof(float)));
    d.w13_scale = static_cast<const float*>(p13);
    d.w2_scale = static_cast<const float*>(p2);
  }
  d.has_shared = m.has_shared();
  if (d.has_shared) {
    DSI_ASSIGN_OR_RETURN(d.shared, mlp(m.shared()));
  }
  return d;
}

Result<DLayer> Uploader::layer(const ModelConfig& config, const DecoderLayer& layer, const CudaModelOptions& options) {
  DLayer d;
  DSI_ASSIGN_OR_RETURN(d.input_norm, floats(layer.input_norm));
  DSI_ASSIGN_OR_RETURN(d.post_norm, floats(layer.post_attention_norm));
  if (const auto* mla = std::get_if<MlaAttention>(&layer.attention)) {
    d.mla = true;
    DMla& a = d.mla_attn;
    a.q_lora = mla->has_q_lora();
    if (a.q_lora) {
      DSI_ASSIGN_OR_RETURN(a.fused_a, linear({&mla->q_a(), &mla->kv_a()}));
      DSI_ASSIGN_OR_RETURN(a.q_a_norm, floats(mla->q_a_norm()));
      DSI_ASSIGN_OR_RETURN(a.q_b, linear({&mla->q_b()}));
      a.q_lora_rank = mla->q_a().out_local();
    } else {
      DSI_ASSIGN_OR_RETURN(a.fused_a, linear({&mla->q(), &mla->kv_a()}));
    }
    DSI_ASSIGN_OR_RETURN(a.kv_a_norm, floats(mla->kv_a_norm()));
    if (config.quant.fp8 && options.fp8_weights && mla->kv_b().weight().dtype() == DType::kF32) {
      // FP8 checkpoints: kv_b comes dequantized (f32); hold it (and W_UK^T below) in bf16, not 4 bytes a weight.
      const Tensor& wf = mla->kv_b().weight();
      Tensor wb(DType::kBF16, wf.shape());
      for (int64_t i = 0; i < wf.numel(); ++i) wb.data<uint16_t>()[i] = f32_to_bf16(wf.data<float>()[i]);
      DSI_ASSIGN_OR_RETURN(a.kv_b.w, tensor(wb));
      a.kv_b.dtype = DType::kBF16;
      a.kv_b.n = mla->kv_b().out_local();
      a.kv_b.k = mla->kv_b().in_local();
      DSI_ASSIGN_OR_RETURN(a.kv_b.bias, floats(mla->kv_b().bias()));
    } else {
      DSI_ASSIGN_OR_RETURN(a.kv_b, linear({&mla->kv_b()}));
    }
    DSI_ASSIGN_OR_RETURN(a.o, linear({&mla->o()}));
    DSI_ASSIGN_OR_RETURN(a.rope, rope(mla->rope()));
    a.heads = mla->num_heads();
    a.nope = mla->nope_dim();
    a.rope_dim = mla->rope_dim();
    a.v = mla->v_dim();
    a.r = mla->kv_lora_rank();
    a.eps = mla->norm_eps();
    a.scale = mla->scale();
    a.mode = options.mla_mode;
    // W_UK^T per head in kv_b's dtype (the host copy is f32).
    const Tensor& wt = mla->w_uk_t();
    if (a.kv_b.dtype == DType::kBF16) {
      std::vector<uint16_t> bf(static_cast<size_t>(wt.numel()));
      const float* src = wt.data<float>();
      for (size_t i = 0; i < bf.size(); ++i) bf[i] = f32_to_bf16(src[i]);
      DSI_ASSIGN_OR_RETURN(void* p, copy(bf.data(), bf.size() * 2));
      a.w_uk_t = p;
    } else {
      DSI_ASSIGN_OR_RETURN(a.w_uk_t, tensor(wt));
    }
  } else {
    const auto& g = std::get<GqaAttention>(layer.attention);
    DGqa& a = d.gqa;
    DSI_ASSIGN_OR_RETURN(a.qkv, linear({&g.q(), &g.k(), &g.v()}));
    DSI_ASSIGN_OR_RETURN(a.o, linear({&g.o()}));
    DSI_ASSIGN_OR_RETURN(a.rope, rope(g.rope()));
    a.hq = g.num_heads();
    a.hkv = g.num_kv_heads();
    a.d = g.head_dim();
    a.scale = g.scale();
  }
  if (const auto* moe_layer = std::get_if<MoeLayer>(&layer.mlp)) {
    d.moe = true;
    DSI_ASSIGN_OR_RETURN(d.moe_mlp, moe(*moe_layer, options));
  } else {
    DSI_ASSIGN_OR_RETURN(d.mlp, mlp(std::get<GatedMlp>(layer.mlp)));
  }
  return d;
}

}  // namespace dsi::cuda_model
