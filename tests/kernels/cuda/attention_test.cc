// Paged attention (GQA over a paged bf16 cache, contiguous f32 K/V), the tensor-core flash prefill kernel (paged,
// contiguous bf16 and f32 K/V) and the paged MLA decode kernel against ref attention over the same values gathered
// into contiguous rows. Block tables are shuffled so that sequences' blocks are neither consecutive nor in order.
// INFO lines time GQA decode at the Llama-3 8B shape and prefill at the DeepSeek-V2-Lite MLA-naive and Llama-3 8B
// shapes, flash against the CUDA-core kernels (not checked).
#include <functional>
#include <numeric>

#include "cuda_test_util.h"
#include "kernels/cuda/cuda_attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"

namespace dsi::cuda_test {
namespace {

struct Seq {
  int64_t start = 0, n = 0;  // chunk: n new tokens at positions start .. start + n - 1
};

// Shuffled block tables for sequences of lengths `lens` ([num_seqs, max_blocks]).
std::vector<int32_t> make_tables(const std::vector<int64_t>& lens, int64_t bs, int64_t* max_blocks,
                                 int64_t* num_blocks) {
  *max_blocks = 0;
  int64_t total = 0;
  for (int64_t l : lens) {
    *max_blocks = std::max(*max_blocks, (l + bs - 1) / bs);
    total += (l + bs - 1) / bs;
  }
  std::vector<int32_t> ids(static_cast<size_t>(total + 3));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng());
  *num_blocks = static_cast<int64_t>(ids.size());
  std::vector<int32_t> tables(lens.size() * *max_blocks, -1);
  size_t next = 0;
  for (size_t s = 0; s < lens.size(); ++s) {
    for (int64_t b = 0; b < (lens[s] + bs - 1) / bs; ++b) tables[s * *max_blocks + b] = ids[next++];
  }
  return tables;
}

// The flash prefill kernel rounds Q, K, V and the probabilities to bf16 (cuda_attention.h); the CUDA-core kernels
// are f32 throughout.
constexpr double kFlashTol = 2e-2, kF32Tol = 2e-5;

// `options` other than the defaults force the earlier kernels (named in the case). Cases the launcher sends to the
// flash prefill kernel are named "[flash]" and checked at its tolerance.
void test_gqa(CudaContext& ctx, const std::vector<Seq>& seqs, int64_t hq, int64_t hkv, int64_t d, int64_t bs,
              bool paged, const cuda::PagedAttentionOptions& options = {}) {
  std::string shape;
  for (const Seq& s : seqs) shape += str_cat(shape.empty() ? "" : ",", s.start, "+", s.n);
  if (shape.size() > 80) shape = str_cat(shape.substr(0, 80), "...(", seqs.size(), " chunks)");
  const std::string forced = str_cat(options.grouped ? "" : " per-head", options.short_splits ? "" : " long-splits",
                                     options.flash_prefill ? "" : " no-flash");
  const std::string name = str_cat("paged_attention ", paged ? "paged" : "contiguous", forced, " hq=", hq,
                                   " hkv=", hkv, " d=", d, " bs=", bs, " chunks={", shape, "}");
  std::vector<int64_t> lens;
  int64_t tokens = 0, max_len = 0;
  for (const Seq& s : seqs) {
    lens.push_back(s.start + s.n);
    tokens += s.n;
    max_len = std::max(max_len, s.start + s.n);
  }
  int64_t max_blocks = 0, num_blocks = 0;
  const auto tables = make_tables(lens, bs, &max_blocks, &num_blocks);
  const int64_t kw = hkv * d, rows = num_blocks * bs;
  const auto k16 = to_bf16(random_f32(rows * kw)), v16 = to_bf16(random_f32(rows * kw));
  const auto kf = from_bf16(k16), vf = from_bf16(v16);
  const auto q = random_f32(tokens * hq * d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  std::vector<int32_t> token_seq, token_pos;
  std::vector<float> want(tokens * hq * d);
  // Contiguous f32 K/V of each sequence (the reference's input; also the contiguous mode's, per sequence).
  int64_t row = 0;
  std::vector<std::vector<float>> seq_k(seqs.size()), seq_v(seqs.size());
  for (size_t s = 0; s < seqs.size(); ++s) {
    seq_k[s].resize(lens[s] * kw);
    seq_v[s].resize(lens[s] * kw);
    for (int64_t p = 0; p < lens[s]; ++p) {
      const int64_t r = int64_t{tables[s * max_blocks + p / bs]} * bs + p % bs;
      std::copy(kf.begin() + r * kw, kf.begin() + (r + 1) * kw, seq_k[s].begin() + p * kw);
      std::copy(vf.begin() + r * kw, vf.begin() + (r + 1) * kw, seq_v[s].begin() + p * kw);
    }
    ref_ops().attention({.q = q.data() + row * hq * d, .k = seq_k[s].data(), .v = seq_v[s].data(),
                         .out = want.data() + row * hq * d, .num_q = seqs[s].n, .kv_len = lens[s],
                         .num_q_heads = hq, .num_kv_heads = hkv, .head_dim = d, .v_dim = d,
                         .q_token_stride = hq * d, .q_head_stride = d, .k_token_stride = kw, .k_head_stride = d,
                         .v_token_stride = kw, .v_head_stride = d, .out_token_stride = hq * d,
                         .out_head_stride = d, .scale = scale});
    for (int64_t i = 0; i < seqs[s].n; ++i) {
      token_seq.push_back(static_cast<int32_t>(s));
      token_pos.push_back(static_cast<int32_t>(seqs[s].start + i));
    }
    row += seqs[s].n;
  }
  auto dq = upload(ctx, q);
  auto dts = upload(ctx, token_seq);
  auto dtp = upload(ctx, token_pos);
  auto dout = upload(ctx, std::vector<float>(want.size(), NAN));
  cuda::PagedAttentionArgs a;
  a.q = dq.get();
  a.q_token_stride = hq * d;
  a.q_head_stride = d;
  a.out = dout.get();
  a.out_token_stride = hq * d;
  a.out_head_stride = d;
  a.num_q_heads = hq;
  a.num_kv_heads = hkv;
  a.head_dim = a.v_dim = d;
  a.scale = scale;
  a.single_sequence = !paged || seqs.size() == 1;  // the multi-query prefill kernel where it applies
  if (paged) {
    auto dk = upload(ctx, k16), dv = upload(ctx, v16);
    auto dt = upload(ctx, tables);
    a.k_pool = dk.get();
    a.v_pool = dv.get();
    a.k_row_width = a.v_row_width = kw;
    a.k_head_stride = a.v_head_stride = d;
    a.block_tables = dt.get();
    a.max_blocks = max_blocks;
    a.block_size = bs;
    a.token_seq = dts.get();
    a.token_pos = dtp.get();
    a.num_tokens = tokens;
    a.max_kv_len = max_len;
    const bool flash = cuda::picks_flash_prefill(a, options);
    CT_TRY(name, cuda::paged_attention(ctx, a, options));
    report(name + (flash ? " [flash]" : ""), rel_max_err(download(ctx, dout, want.size()), want),
           flash ? kFlashTol : kF32Tol);
    return;
  }
  // Contiguous mode: one call per sequence, as the MLA prefill uses it.
  row = 0;
  bool flash = false;
  std::vector<DeviceBuffer<float>> keep;
  for (size_t s = 0; s < seqs.size(); ++s) {
    keep.push_back(upload(ctx, seq_k[s]));
    keep.push_back(upload(ctx, seq_v[s]));
    a.k_f32 = keep[keep.size() - 2].get();
    a.v_f32 = keep.back().get();
    a.k_token_stride = a.v_token_stride = kw;
    a.k_head_stride = a.v_head_stride = d;
    a.q = dq.get() + row * hq * d;
    a.out = dout.get() + row * hq * d;
    a.token_seq = dts.get() + row;
    a.token_pos = dtp.get() + row;
    a.num_tokens = seqs[s].n;
    a.max_kv_len = lens[s];
    flash = flash || cuda::picks_flash_prefill(a, options);
    CT_TRY(name, cuda::paged_attention(ctx, a, options));
    row += seqs[s].n;
  }
  report(name + (flash ? " [flash]" : ""), rel_max_err(download(ctx, dout, want.size()), want),
         flash ? kFlashTol : kF32Tol);
}

// ---- Flash prefill --------------------------------------------------------------------------------------------

enum class KvSource { kPaged, kContiguousBf16, kContiguousF32 };

struct FlashCase {
  std::vector<Seq> seqs;  // contiguous K/V with several: their contexts back to back, placed by kv_starts
  int64_t hq = 0, hkv = 0, d = 0, dv = 0;
  int64_t bs = 16;  // paged only
  KvSource kv = KvSource::kPaged;
  bool chunk_starts = true;  // false: single_sequence (one chunk, no boundaries passed)
};

// The flash prefill kernel on one batch of chunks (checked to be the launcher's pick). Paged: K [rows, hkv * d],
// V [rows, hkv * dv]. Contiguous: K [len, hkv, d] and V at offset dv of [len, hkv, 2 dv] rows (the MLA runner's
// value slice of its expanded [len, heads, nope + v] rows); bf16 values for the bf16 sources, f32 values that bf16
// does not represent for the f32 source.
void test_flash(CudaContext& ctx, const FlashCase& c) {
  const bool paged = c.kv == KvSource::kPaged;
  const char* src = paged ? "paged" : c.kv == KvSource::kContiguousBf16 ? "contiguous-bf16" : "contiguous-f32";
  std::string shape;
  for (const Seq& s : c.seqs) shape += str_cat(shape.empty() ? "" : ",", s.start, "+", s.n);
  const std::string name = str_cat("flash_prefill ", src, " hq=", c.hq, " hkv=", c.hkv, " d=", c.d, "/", c.dv,
                                   paged ? str_cat(" bs=", c.bs) : std::string(),
                                   c.chunk_starts ? "" : " single-sequence", " chunks={", shape, "}");
  const int64_t hq = c.hq, hkv = c.hkv, d = c.d, dv = c.dv, bs = c.bs;
  std::vector<int64_t> lens;
  int64_t tokens = 0, max_len = 0, longest = 0;
  std::vector<int32_t> kv_starts{0};  // contiguous: each sequence's first K/V row
  for (const Seq& s : c.seqs) {
    kv_starts.push_back(static_cast<int32_t>(kv_starts.back() + s.start + s.n));
    lens.push_back(s.start + s.n);
    tokens += s.n;
    max_len = std::max(max_len, s.start + s.n);
    longest = std::max(longest, s.n);
  }
  const auto q = random_f32(tokens * hq * d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  // Host K/V: pools of `rows` rows (paged) or the sequence's positions (contiguous).
  int64_t max_blocks = 0, num_blocks = 0;
  std::vector<int32_t> tables;
  int64_t rows = kv_starts.back(), k_width = hkv * d, v_width = 2 * hkv * dv, v_off = dv, v_head = 2 * dv;
  if (paged) {
    tables = make_tables(lens, bs, &max_blocks, &num_blocks);
    rows = num_blocks * bs;
    v_width = hkv * dv;
    v_off = 0;
    v_head = dv;
  }
  std::vector<float> kf = random_f32(rows * k_width), vf = random_f32(rows * v_width);
  std::vector<uint16_t> k16, v16;
  if (c.kv != KvSource::kContiguousF32) {
    k16 = to_bf16(kf);
    v16 = to_bf16(vf);
    kf = from_bf16(k16);
    vf = from_bf16(v16);
  }
  // Reference per sequence over its keys gathered into [len, hkv, d] and [len, hkv, dv].
  std::vector<float> want(tokens * hq * dv);
  std::vector<int32_t> token_seq, token_pos, chunk_starts{0};
  int64_t row = 0;
  for (size_t s = 0; s < c.seqs.size(); ++s) {
    std::vector<float> sk(lens[s] * hkv * d), sv(lens[s] * hkv * dv);
    for (int64_t p = 0; p < lens[s]; ++p) {
      const int64_t r = paged ? int64_t{tables[s * max_blocks + p / bs]} * bs + p % bs : kv_starts[s] + p;
      for (int64_t h = 0; h < hkv; ++h) {
        std::copy_n(kf.begin() + r * k_width + h * d, d, sk.begin() + (p * hkv + h) * d);
        std::copy_n(vf.begin() + r * v_width + v_off + h * v_head, dv, sv.begin() + (p * hkv + h) * dv);
      }
    }
    ref_ops().attention({.q = q.data() + row * hq * d, .k = sk.data(), .v = sv.data(),
                         .out = want.data() + row * hq * dv, .num_q = c.seqs[s].n, .kv_len = lens[s],
                         .num_q_heads = hq, .num_kv_heads = hkv, .head_dim = d, .v_dim = dv,
                         .q_token_stride = hq * d, .q_head_stride = d, .k_token_stride = hkv * d,
                         .k_head_stride = d, .v_token_stride = hkv * dv, .v_head_stride = dv,
                         .out_token_stride = hq * dv, .out_head_stride = dv, .scale = scale});
    for (int64_t i = 0; i < c.seqs[s].n; ++i) {
      token_seq.push_back(static_cast<int32_t>(s));
      token_pos.push_back(static_cast<int32_t>(c.seqs[s].start + i));
    }
    row += c.seqs[s].n;
    chunk_starts.push_back(static_cast<int32_t>(row));
  }
  auto dq = upload(ctx, q);
  auto dts = upload(ctx, token_seq), dtp = upload(ctx, token_pos), dcs = upload(ctx, chunk_starts);
  auto dks = upload(ctx, kv_starts);
  auto dt = upload(ctx, paged ? tables : std::vector<int32_t>{0});
  auto dk16 = upload(ctx, k16), dv16 = upload(ctx, v16);
  auto dkf = upload(ctx, c.kv == KvSource::kContiguousF32 ? kf : std::vector<float>{});
  auto dvf = upload(ctx, c.kv == KvSource::kContiguousF32 ? vf : std::vector<float>{});
  auto dout = upload(ctx, std::vector<float>(want.size(), NAN));
  cuda::PagedAttentionArgs a;
  a.q = dq.get();
  a.q_token_stride = hq * d;
  a.q_head_stride = d;
  a.k_head_stride = d;
  a.v_head_stride = v_head;
  if (paged) {
    a.k_pool = dk16.get();
    a.v_pool = dv16.get();
    a.k_row_width = k_width;
    a.v_row_width = v_width;
    a.block_tables = dt.get();
    a.max_blocks = max_blocks;
    a.block_size = bs;
  } else {
    if (c.kv == KvSource::kContiguousBf16) {
      a.k_bf16 = dk16.get();
      a.v_bf16 = dv16.get() + v_off;
    } else {
      a.k_f32 = dkf.get();
      a.v_f32 = dvf.get() + v_off;
    }
    a.k_token_stride = k_width;
    a.v_token_stride = v_width;
    if (c.seqs.size() > 1) a.kv_starts = dks.get();
  }
  a.token_seq = dts.get();
  a.token_pos = dtp.get();
  if (c.chunk_starts) {
    a.chunk_starts = dcs.get();
    a.num_chunks = static_cast<int64_t>(c.seqs.size());
    a.max_chunk_tokens = longest;
  } else {
    a.single_sequence = true;
  }
  a.out = dout.get();
  a.out_token_stride = hq * dv;
  a.out_head_stride = dv;
  a.num_tokens = tokens;
  a.num_q_heads = hq;
  a.num_kv_heads = hkv;
  a.head_dim = d;
  a.v_dim = dv;
  a.max_kv_len = max_len;
  a.scale = scale;
  CT_CHECK(name, cuda::picks_flash_prefill(a));
  CT_TRY(name, cuda::paged_attention(ctx, a));
  report(name, rel_max_err(download(ctx, dout, want.size()), want), kFlashTol);
}

// One decode token per sequence, at the end of a context of lens[i] tokens.
std::vector<Seq> decode_batch(const std::vector<int64_t>& lens) {
  std::vector<Seq> seqs;
  for (int64_t l : lens) seqs.push_back({.start = l - 1, .n = 1});
  return seqs;
}

// `batch` context lengths cycling through 1, 17, 64, 65, 500, 4096 (tile edges, a split's tail, long contexts).
std::vector<int64_t> mixed_lens(int64_t batch) {
  constexpr int64_t kLens[] = {1, 17, 64, 65, 500, 4096};
  std::vector<int64_t> lens;
  for (int64_t i = 0; i < batch; ++i) lens.push_back(kLens[(i * 5 + 3) % 6]);
  return lens;
}

// Mean microseconds per call of fn over 20 calls after 3 warm-up calls (cudaEvents on the context's stream).
Status time_calls(CudaContext& ctx, const std::function<Status()>& fn, double* us) {
  constexpr int kWarmup = 3, kIters = 20;
  for (int i = 0; i < kWarmup; ++i) DSI_RETURN_IF_ERROR(fn());
  struct Events {
    cudaEvent_t start = nullptr, stop = nullptr;
    ~Events() {
      if (start != nullptr) cudaEventDestroy(start);
      if (stop != nullptr) cudaEventDestroy(stop);
    }
  } ev;
  DSI_CUDA_RETURN_IF_ERROR(cudaEventCreate(&ev.start));
  DSI_CUDA_RETURN_IF_ERROR(cudaEventCreate(&ev.stop));
  DSI_CUDA_RETURN_IF_ERROR(cudaEventRecord(ev.start, ctx.stream()));
  for (int i = 0; i < kIters; ++i) DSI_RETURN_IF_ERROR(fn());
  DSI_CUDA_RETURN_IF_ERROR(cudaEventRecord(ev.stop, ctx.stream()));
  DSI_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(ev.stop));
  float ms = 0.0f;
  DSI_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, ev.start, ev.stop));
  *us = 1e3 * ms / kIters;
  return Status::Ok();
}

// Info only: decode attention at the Llama-3 8B shape (32 query heads, 8 kv heads, head_dim 128, block size 16),
// `batch` sequences of `ctx_len` tokens each (shuffled blocks); the default kernels, the per-head kernel with the
// short splits, and the per-head kernel with the earlier split rule (the path before the grouped kernel). GB/s
// counts the K and V bytes the attention must read.
void time_llama_decode(CudaContext& ctx, int64_t batch, int64_t ctx_len) {
  constexpr int64_t kHq = 32, kHkv = 8, kD = 128, kBs = 16;
  const std::string name = str_cat("paged_attention timing llama8b batch=", batch, " ctx=", ctx_len);
  const int64_t kw = kHkv * kD, blocks = batch * ((ctx_len + kBs - 1) / kBs), rows = blocks * kBs;
  auto dk = pool_alloc<uint16_t>(ctx.pool(), static_cast<size_t>(rows * kw));
  auto dv = pool_alloc<uint16_t>(ctx.pool(), static_cast<size_t>(rows * kw));
  CT_TRY(name, dk.status());
  CT_TRY(name, dv.status());
  // Every bf16 0x3c3c (about 0.0115): the values do not matter for the time.
  CT_CHECK(name, cudaMemsetAsync(dk->get(), 0x3c, static_cast<size_t>(rows * kw) * 2, ctx.stream()) == cudaSuccess);
  CT_CHECK(name, cudaMemsetAsync(dv->get(), 0x3c, static_cast<size_t>(rows * kw) * 2, ctx.stream()) == cudaSuccess);
  std::vector<int32_t> ids(static_cast<size_t>(blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng());
  std::vector<int32_t> token_seq, token_pos;
  for (int64_t s = 0; s < batch; ++s) {
    token_seq.push_back(static_cast<int32_t>(s));
    token_pos.push_back(static_cast<int32_t>(ctx_len - 1));
  }
  auto dq = upload(ctx, random_f32(batch * kHq * kD));
  auto dt = upload(ctx, ids);  // [batch, blocks / batch]
  auto dts = upload(ctx, token_seq), dtp = upload(ctx, token_pos);
  auto dout = upload(ctx, std::vector<float>(batch * kHq * kD));
  cuda::PagedAttentionArgs a;
  a.q = dq.get();
  a.q_token_stride = kHq * kD;
  a.q_head_stride = kD;
  a.k_pool = dk->get();
  a.v_pool = dv->get();
  a.k_row_width = a.v_row_width = kw;
  a.k_head_stride = a.v_head_stride = kD;
  a.block_tables = dt.get();
  a.max_blocks = blocks / batch;
  a.block_size = kBs;
  a.token_seq = dts.get();
  a.token_pos = dtp.get();
  a.out = dout.get();
  a.out_token_stride = kHq * kD;
  a.out_head_stride = kD;
  a.num_tokens = batch;
  a.num_q_heads = kHq;
  a.num_kv_heads = kHkv;
  a.head_dim = a.v_dim = kD;
  a.max_kv_len = ctx_len;
  a.scale = 1.0f / std::sqrt(static_cast<float>(kD));
  const double bytes = static_cast<double>(batch * ctx_len * kw) * 2 * 2;  // K and V, bf16
  struct Variant {
    const char* label;
    cuda::PagedAttentionOptions options;
  };
  const Variant variants[] = {{"grouped", {}},
                              {"per-head", {.grouped = false}},
                              {"per-head long-splits (before)", {.grouped = false, .short_splits = false}}};
  std::string line;
  for (const Variant& v : variants) {
    double us = 0.0;
    CT_TRY(name, time_calls(ctx, [&] { return cuda::paged_attention(ctx, a, v.options); }, &us));
    line += str_cat(line.empty() ? "" : "; ", v.label, " ");
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.1f us %.0f GB/s", us, bytes / us * 1e-3);
    line += buf;
  }
  std::printf("INFO %s (%.1f MB of K/V): %s\n", name.c_str(), bytes * 1e-6, line.c_str());
}

// Info only: prefill attention, flash against the CUDA-core kernels (values do not matter: memset K/V).
//   DeepSeek-V2-Lite MLA naive: one chunk of 512 tokens, 16 heads, q/k 192, v 128 (contiguous K [512, 16, 192],
//   V the value slice of [512, 16, 256]); flash over bf16 and over f32 K/V, and the multi-query CUDA-core kernel
//   (f32, today's runner path).
//   Llama-3 8B: 8 chunks of 512 tokens (positions 0 .. 511), 32 / 8 heads, head_dim 128, paged (block size 16,
//   shuffled); flash with chunk boundaries, and the grouped per-token kernel (today's runner path for a batch of
//   several sequences).
// TFLOP/s counts the causal work: 2 (d + dv) per visible (query, key) pair and head.
void time_prefill(CudaContext& ctx) {
  const std::string name = "paged_attention timing prefill";
  struct Variant {
    const char* label;
    cuda::PagedAttentionArgs args;
    cuda::PagedAttentionOptions options;
  };
  auto run_variants = [&](const std::string& shape, double flops, const std::vector<Variant>& variants) {
    std::string line;
    for (const Variant& v : variants) {
      double us = 0.0;
      CT_TRY(name, time_calls(ctx, [&] { return cuda::paged_attention(ctx, v.args, v.options); }, &us));
      char buf[128];
      std::snprintf(buf, sizeof(buf), "%s%s %.1f us %.1f TFLOP/s", line.empty() ? "" : "; ", v.label, us,
                    flops / us * 1e-6);
      line += buf;
    }
    std::printf("INFO %s %s: %s\n", name.c_str(), shape.c_str(), line.c_str());
  };
  {  // V2-Lite MLA naive
    constexpr int64_t kT = 512, kH = 16, kD = 192, kV = 128;
    const int64_t kv_w = kH * 2 * kV;
    auto k16 = pool_alloc<uint16_t>(ctx.pool(), static_cast<size_t>(kT * kH * kD));
    auto v16 = pool_alloc<uint16_t>(ctx.pool(), static_cast<size_t>(kT * kv_w));
    auto kf = pool_alloc<float>(ctx.pool(), static_cast<size_t>(kT * kH * kD));
    auto vf = pool_alloc<float>(ctx.pool(), static_cast<size_t>(kT * kv_w));
    CT_TRY(name, k16.status());
    CT_TRY(name, v16.status());
    CT_TRY(name, kf.status());
    CT_TRY(name, vf.status());
    CT_CHECK(name, cudaMemsetAsync(k16->get(), 0x3c, k16->size() * 2, ctx.stream()) == cudaSuccess);
    CT_CHECK(name, cudaMemsetAsync(v16->get(), 0x3c, v16->size() * 2, ctx.stream()) == cudaSuccess);
    CT_CHECK(name, cudaMemsetAsync(kf->get(), 0x3c, kf->size() * 4, ctx.stream()) == cudaSuccess);
    CT_CHECK(name, cudaMemsetAsync(vf->get(), 0x3c, vf->size() * 4, ctx.stream()) == cudaSuccess);
    std::vector<int32_t> pos(kT), seq(kT, 0);
    std::iota(pos.begin(), pos.end(), 0);
    auto dq = upload(ctx, random_f32(kT * kH * kD));
    auto dtp = upload(ctx, pos), dts = upload(ctx, seq);
    auto dout = upload(ctx, std::vector<float>(kT * kH * kV));
    cuda::PagedAttentionArgs a;
    a.q = dq.get();
    a.q_token_stride = kH * kD;
    a.q_head_stride = kD;
    a.k_token_stride = kH * kD;
    a.k_head_stride = kD;
    a.v_token_stride = kv_w;
    a.v_head_stride = 2 * kV;
    a.token_seq = dts.get();
    a.token_pos = dtp.get();
    a.out = dout.get();
    a.out_token_stride = kH * kV;
    a.out_head_stride = kV;
    a.num_tokens = kT;
    a.num_q_heads = a.num_kv_heads = kH;
    a.head_dim = kD;
    a.v_dim = kV;
    a.max_kv_len = kT;
    a.single_sequence = true;
    a.scale = 1.0f / std::sqrt(static_cast<float>(kD));
    cuda::PagedAttentionArgs bf = a, f32 = a;
    bf.k_bf16 = k16->get();
    bf.v_bf16 = v16->get() + kV;
    f32.k_f32 = kf->get();
    f32.v_f32 = vf->get() + kV;
    const double flops = 2.0 * (kD + kV) * kH * (kT * (kT + 1) / 2);
    run_variants("v2-lite mla-naive 1x512 heads=16 d=192/128", flops,
                 {{"flash bf16 K/V", bf, {}}, {"flash f32 K/V", f32, {}},
                  {"multi-query f32 (before)", f32, {.flash_prefill = false}}});
  }
  {  // Llama-3 8B, 8 chunks of 512
    constexpr int64_t kB = 8, kT = 512, kHq = 32, kHkv = 8, kD = 128, kBs = 16;
    const int64_t kw = kHkv * kD, blocks = kB * kT / kBs, rows = blocks * kBs;
    auto dk = pool_alloc<uint16_t>(ctx.pool(), static_cast<size_t>(rows * kw));
    auto dv = pool_alloc<uint16_t>(ctx.pool(), static_cast<size_t>(rows * kw));
    CT_TRY(name, dk.status());
    CT_TRY(name, dv.status());
    CT_CHECK(name, cudaMemsetAsync(dk->get(), 0x3c, dk->size() * 2, ctx.stream()) == cudaSuccess);
    CT_CHECK(name, cudaMemsetAsync(dv->get(), 0x3c, dv->size() * 2, ctx.stream()) == cudaSuccess);
    std::vector<int32_t> ids(static_cast<size_t>(blocks));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng());
    std::vector<int32_t> seq, pos, starts;
    for (int64_t b = 0; b < kB; ++b) {
      starts.push_back(static_cast<int32_t>(b * kT));
      for (int64_t i = 0; i < kT; ++i) {
        seq.push_back(static_cast<int32_t>(b));
        pos.push_back(static_cast<int32_t>(i));
      }
    }
    starts.push_back(static_cast<int32_t>(kB * kT));
    auto dq = upload(ctx, random_f32(kB * kT * kHq * kD));
    auto dt = upload(ctx, ids);  // [kB, kT / kBs]
    auto dts = upload(ctx, seq), dtp = upload(ctx, pos), dcs = upload(ctx, starts);
    auto dout = upload(ctx, std::vector<float>(kB * kT * kHq * kD));
    cuda::PagedAttentionArgs a;
    a.q = dq.get();
    a.q_token_stride = kHq * kD;
    a.q_head_stride = kD;
    a.k_pool = dk->get();
    a.v_pool = dv->get();
    a.k_row_width = a.v_row_width = kw;
    a.k_head_stride = a.v_head_stride = kD;
    a.block_tables = dt.get();
    a.max_blocks = kT / kBs;
    a.block_size = kBs;
    a.token_seq = dts.get();
    a.token_pos = dtp.get();
    a.chunk_starts = dcs.get();
    a.num_chunks = kB;
    a.max_chunk_tokens = kT;
    a.out = dout.get();
    a.out_token_stride = kHq * kD;
    a.out_head_stride = kD;
    a.num_tokens = kB * kT;
    a.num_q_heads = kHq;
    a.num_kv_heads = kHkv;
    a.head_dim = a.v_dim = kD;
    a.max_kv_len = kT;
    a.scale = 1.0f / std::sqrt(static_cast<float>(kD));
    const double flops = 2.0 * (2 * kD) * kHq * kB * (kT * (kT + 1) / 2);
    run_variants("llama8b 8x512 heads=32/8 d=128 bs=16", flops,
                 {{"flash", a, {}}, {"grouped per-token (before)", a, {.flash_prefill = false}}});
  }
}

void test_mla_paged(CudaContext& ctx, int64_t heads, const std::vector<int64_t>& lens, int64_t bs) {
  constexpr int64_t kLat = 576, kRank = 512;
  std::string lens_str;
  for (int64_t l : lens) lens_str += str_cat(lens_str.empty() ? "" : ",", l);
  const std::string name = str_cat("mla_decode paged heads=", heads, " bs=", bs, " lens={", lens_str, "}");
  int64_t max_blocks = 0, num_blocks = 0;
  const auto tables = make_tables(lens, bs, &max_blocks, &num_blocks);
  const auto cache16 = to_bf16(random_f32(num_blocks * bs * kLat));
  const auto cache = from_bf16(cache16);
  const auto batch = static_cast<int64_t>(lens.size());
  const auto q = random_f32(batch * heads * kLat);
  const float scale = 1.0f / std::sqrt(192.0f);
  std::vector<float> want(batch * heads * kRank);
  std::vector<int32_t> lens32;
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<float> kv(lens[b] * kLat);
    for (int64_t p = 0; p < lens[b]; ++p) {
      const int64_t r = int64_t{tables[b * max_blocks + p / bs]} * bs + p % bs;
      std::copy(cache.begin() + r * kLat, cache.begin() + (r + 1) * kLat, kv.begin() + p * kLat);
    }
    ref_ops().attention({.q = q.data() + b * heads * kLat, .k = kv.data(), .v = kv.data(),
                         .out = want.data() + b * heads * kRank, .num_q = 1, .kv_len = lens[b],
                         .num_q_heads = heads, .num_kv_heads = 1, .head_dim = kLat, .v_dim = kRank,
                         .q_token_stride = heads * kLat, .q_head_stride = kLat, .k_token_stride = kLat,
                         .k_head_stride = kLat, .v_token_stride = kLat, .v_head_stride = kLat,
                         .out_token_stride = heads * kRank, .out_head_stride = kRank, .scale = scale});
    lens32.push_back(static_cast<int32_t>(lens[b]));
  }
  auto dq = upload(ctx, q);
  auto dc = upload(ctx, cache16);
  auto dl = upload(ctx, lens32);
  auto dt = upload(ctx, tables);
  auto dout = upload(ctx, std::vector<float>(want.size()));
  cuda::MlaDecodeArgs m;
  m.q = dq.get();
  m.cache = dc.get();
  m.seq_lens = dl.get();
  m.block_tables = dt.get();
  m.max_blocks = max_blocks;
  m.block_size = bs;
  m.out = dout.get();
  m.batch = batch;
  m.num_heads = heads;
  m.max_seq_len = *std::max_element(lens.begin(), lens.end());
  m.scale = scale;
  CT_TRY(name, cuda::mla_decode(ctx, m));
  report(name, rel_max_err(download(ctx, dout, want.size()), want), 2e-2);
}

}  // namespace

void run_attention_tests(CudaContext& ctx) {
  test_gqa(ctx, {{0, 1}}, 4, 4, 64, 16, true);
  test_gqa(ctx, {{0, 7}, {5, 1}, {30, 3}}, 8, 2, 128, 16, true);
  test_gqa(ctx, {{1000, 1}, {3, 1}, {2500, 1}}, 32, 8, 128, 16, true);  // decode, split over the sequence
  test_gqa(ctx, {{0, 130}, {17, 65}}, 12, 2, 64, 8, true);               // prefill chunks with a prefix
  test_gqa(ctx, {{0, 33}}, 14, 2, 96, 32, true);                         // Qwen2-like group of 7
  test_gqa(ctx, {{17, 65}}, 8, 2, 64, 16, true);                         // one chunk after a cached prefix
  test_gqa(ctx, {{900, 37}}, 4, 4, 128, 16, true);                       // long prefix: split + multi-query
  test_gqa(ctx, {{5, 40}, {0, 7}}, 4, 2, 128, 16, false);
  test_gqa(ctx, {{0, 9}, {40, 20}}, 4, 4, 192, 16, false);               // MLA prefill shape (qk 192)
  test_gqa(ctx, {{0, 300}}, 2, 2, 576, 16, false);
  test_gqa(ctx, {{0, 5}, {70, 2}}, 6, 3, 20, 16, true);  // head_dim not a multiple of 8: the scalar kernel
  test_gqa(ctx, {{3, 4}}, 2, 1, 18, 16, false);
  test_gqa(ctx, {{0, 3}, {200, 1}}, 4, 1, 1024, 16, false);  // the widest rows (2 value chunks per thread)
  test_mla_paged(ctx, 16, {1, 37, 600}, 16);
  test_mla_paged(ctx, 128, {4096, 100}, 64);
  // The grouped GQA kernel (paged, group 2 .. 8, head_dim <= 128): Llama-3 8B (32 / 8), Qwen2 7B (28 / 4: a group
  // of 7 padded to 8), groups 2, 3, 5 and 8; batch 1 (up to 64 one-tile splits), 3 (empty splits of the shorter
  // sequences) and 32 (one split or a few).
  for (const int64_t len : {1, 17, 64, 65, 500, 4096}) test_gqa(ctx, decode_batch({len}), 32, 8, 128, 16, true);
  test_gqa(ctx, decode_batch({65, 500, 4096}), 32, 8, 128, 64, true);
  test_gqa(ctx, decode_batch(mixed_lens(32)), 32, 8, 128, 16, true);
  test_gqa(ctx, decode_batch(mixed_lens(32)), 32, 8, 128, 64, true);
  test_gqa(ctx, decode_batch({1, 17, 64, 33, 17, 1, 64, 64, 2, 1, 17, 1, 64, 48, 1, 17,   // at most 64 keys:
                              1, 17, 64, 9, 17, 1, 64, 64, 63, 1, 17, 1, 64, 32, 1, 17}),  // one split
           32, 8, 128, 16, true);
  test_gqa(ctx, decode_batch({4096}), 28, 4, 128, 64, true);
  test_gqa(ctx, decode_batch({1, 500, 65}), 28, 4, 128, 16, true);
  test_gqa(ctx, decode_batch(mixed_lens(32)), 28, 4, 128, 64, true);
  test_gqa(ctx, decode_batch({17, 4096, 64}), 16, 8, 128, 16, true);  // group 2
  test_gqa(ctx, decode_batch(mixed_lens(32)), 64, 8, 128, 16, true);  // group 8
  test_gqa(ctx, decode_batch({500, 1, 65}), 24, 8, 128, 64, true);    // group 3 (padded to 4)
  test_gqa(ctx, decode_batch({65, 4096}), 40, 8, 128, 16, true);      // group 5 (padded to 8)
  test_gqa(ctx, decode_batch({64, 500, 17}), 16, 2, 64, 16, true);    // head_dim 64: lane groups of 8
  test_gqa(ctx, decode_batch({4096, 1}), 8, 4, 64, 64, true);         // group 2, head_dim 64
  test_gqa(ctx, {{0, 17}, {61, 3}, {499, 1}}, 32, 8, 128, 16, true);  // prefill chunks of several sequences
  // The earlier kernels on the same shapes, as the timing below forces them.
  test_gqa(ctx, decode_batch({65, 500, 4096}), 32, 8, 128, 64, true, {.grouped = false});
  test_gqa(ctx, decode_batch(mixed_lens(32)), 28, 4, 128, 16, true, {.grouped = false, .short_splits = false});
  // The multi-query prefill kernel, which the flash kernel replaced on these shapes.
  test_gqa(ctx, {{17, 65}}, 8, 2, 64, 16, true, {.flash_prefill = false});
  test_gqa(ctx, {{900, 37}}, 4, 4, 128, 16, true, {.flash_prefill = false});
  test_gqa(ctx, {{5, 40}, {0, 7}}, 4, 2, 128, 16, false, {.flash_prefill = false});
  // The flash prefill kernel: chunks of several sequences with cached prefixes (a partial tile, a full one, three
  // tiles), head dims 128/128, 64/64, 192/128 (MLA naive), GQA groups 1, 4, 7, block sizes 16 and 64.
  const std::vector<Seq> three = {{0, 17}, {5, 64}, {200, 130}};
  test_flash(ctx, {.seqs = three, .hq = 32, .hkv = 8, .d = 128, .dv = 128, .bs = 16});  // Llama-3 8B: group 4
  test_flash(ctx, {.seqs = three, .hq = 28, .hkv = 4, .d = 128, .dv = 128, .bs = 64});  // Qwen2 7B: group 7
  test_flash(ctx, {.seqs = three, .hq = 4, .hkv = 4, .d = 64, .dv = 64, .bs = 16});     // group 1
  test_flash(ctx, {.seqs = three, .hq = 14, .hkv = 2, .d = 64, .dv = 64, .bs = 64});    // group 7, head_dim 64
  test_flash(ctx, {.seqs = {{0, 100}}, .hq = 32, .hkv = 8, .d = 128, .dv = 128, .bs = 16});
  test_flash(ctx, {.seqs = {{17, 65}}, .hq = 8, .hkv = 2, .d = 128, .dv = 128, .bs = 16, .chunk_starts = false});
  // A decode token (a chunk of one) among prefill chunks; mixed dims.
  test_flash(ctx, {.seqs = {{0, 40}, {99, 1}, {10, 30}, {0, 64}}, .hq = 8, .hkv = 2, .d = 128, .dv = 128, .bs = 16});
  test_flash(ctx, {.seqs = {{0, 64}, {30, 33}}, .hq = 4, .hkv = 1, .d = 192, .dv = 64, .bs = 16});
  test_flash(ctx, {.seqs = {{0, 50}, {7, 20}}, .hq = 4, .hkv = 2, .d = 64, .dv = 128, .bs = 64});
  // After a long cached prefix (positions 4000 .. 4100): keys split over blocks and combined; beside a short chunk
  // whose tiles see no key in the later splits.
  test_flash(ctx, {.seqs = {{4000, 101}}, .hq = 8, .hkv = 2, .d = 128, .dv = 128, .bs = 64});
  test_flash(ctx, {.seqs = {{0, 20}, {4000, 101}}, .hq = 8, .hkv = 2, .d = 64, .dv = 64, .bs = 16});
  // MLA naive: contiguous K and the value slice of [len, heads, 256] rows, bf16 (any chunk size) and f32.
  test_flash(ctx, {.seqs = {{0, 130}}, .hq = 16, .hkv = 16, .d = 192, .dv = 128, .kv = KvSource::kContiguousBf16,
                   .chunk_starts = false});
  test_flash(ctx, {.seqs = {{200, 130}}, .hq = 16, .hkv = 16, .d = 192, .dv = 128, .kv = KvSource::kContiguousF32,
                   .chunk_starts = false});
  test_flash(ctx, {.seqs = {{0, 5}}, .hq = 16, .hkv = 16, .d = 192, .dv = 128, .kv = KvSource::kContiguousBf16,
                   .chunk_starts = false});
  test_flash(ctx, {.seqs = {{4000, 101}}, .hq = 4, .hkv = 4, .d = 192, .dv = 128, .kv = KvSource::kContiguousBf16});
  test_flash(ctx, {.seqs = {{3, 70}}, .hq = 2, .hkv = 2, .d = 64, .dv = 128, .kv = KvSource::kContiguousF32,
                   .chunk_starts = false});
  // A batch of MLA prefills in one call: contexts back to back (kv_starts), a cached prefix, a short chunk, a long
  // one whose keys split.
  test_flash(ctx, {.seqs = {{0, 130}, {0, 512}, {40, 17}, {0, 64}}, .hq = 16, .hkv = 16, .d = 192, .dv = 128,
                   .kv = KvSource::kContiguousBf16});
  test_flash(ctx, {.seqs = {{3000, 70}, {0, 20}}, .hq = 4, .hkv = 4, .d = 192, .dv = 128,
                   .kv = KvSource::kContiguousBf16});
  test_flash(ctx, {.seqs = {{5, 33}, {0, 70}}, .hq = 2, .hkv = 2, .d = 64, .dv = 128, .kv = KvSource::kContiguousF32});
  for (const int64_t batch : {1, 32}) {
    for (const int64_t len : {512, 4096}) time_llama_decode(ctx, batch, len);
  }
  time_prefill(ctx);
}

}  // namespace dsi::cuda_test
