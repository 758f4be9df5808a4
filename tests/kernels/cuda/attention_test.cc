// Paged attention (GQA over a paged bf16 cache, contiguous f32 K/V) and the paged MLA decode kernel against ref
// attention over the same values gathered into contiguous rows. Block tables are shuffled so that sequences'
// blocks are neither consecutive nor in order. INFO lines time GQA decode at the Llama-3 8B shape (not checked).
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

// `options` other than the defaults force the earlier kernels (named in the case).
void test_gqa(CudaContext& ctx, const std::vector<Seq>& seqs, int64_t hq, int64_t hkv, int64_t d, int64_t bs,
              bool paged, const cuda::PagedAttentionOptions& options = {}) {
  std::string shape;
  for (const Seq& s : seqs) shape += str_cat(shape.empty() ? "" : ",", s.start, "+", s.n);
  if (shape.size() > 80) shape = str_cat(shape.substr(0, 80), "...(", seqs.size(), " chunks)");
  const std::string forced = str_cat(options.grouped ? "" : " per-head", options.short_splits ? "" : " long-splits");
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
    CT_TRY(name, cuda::paged_attention(ctx, a, options));
    report(name, rel_max_err(download(ctx, dout, want.size()), want), 2e-5);
    return;
  }
  // Contiguous mode: one call per sequence, as the MLA prefill uses it.
  row = 0;
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
    CT_TRY(name, cuda::paged_attention(ctx, a, options));
    row += seqs[s].n;
  }
  report(name, rel_max_err(download(ctx, dout, want.size()), want), 2e-5);
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
  for (const int64_t batch : {1, 32}) {
    for (const int64_t len : {512, 4096}) time_llama_decode(ctx, batch, len);
  }
}

}  // namespace dsi::cuda_test
