// The decode fusions and launch machinery: mla_prep against kernels/ref (rmsnorm, rope) with the bf16 rounding of
// the cache; a chain of GEMV, RMSNorm and attention-side kernels run with programmatic dependent launch on and
// off (the results must be bit-identical: PDL may only change timing); the split-k GEMVs giving bit-identical
// results run to run (the last split adds the partials in a fixed order).
#include <cmath>
#include <cstring>

#include "cuda_test_util.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_model_ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ref/ref_moe_route.h"

namespace dsi::cuda_test {
namespace {

uint16_t bf16_round(float f) { return to_bf16(std::vector<float>{f})[0]; }

void test_mla_prep(CudaContext& ctx, int64_t tokens, int64_t heads, int64_t r, int64_t rope, int64_t nope,
                   RopeStyle style) {
  const std::string name = str_cat("mla_prep tokens=", tokens, " heads=", heads, " r=", r, " rope=", rope,
                                   style == RopeStyle::kNeox ? " neox" : " interleaved");
  const int64_t lw = r + rope, lat_stride = lw + 40;  // the latent sits inside a wider row (q | c_kv | k_pe)
  const int64_t qk = nope + rope, q_stride = heads * qk + 24;
  const auto lat = random_f32(tokens * lat_stride, -3.0f, 3.0f);
  const auto w = random_f32(r, 0.5f, 1.5f);
  const auto q = random_f32(tokens * q_stride);
  std::vector<int64_t> pos(tokens);
  std::vector<int32_t> slots(tokens);
  const int64_t rows = tokens + 5;
  for (int64_t t = 0; t < tokens; ++t) {
    pos[t] = (t * 613 + 7) % 4096;
    slots[t] = t == 1 ? -1 : static_cast<int32_t>(rows - 1 - t);  // distinct rows; one padding token (no write)
  }
  std::vector<double> inv_freq(rope / 2);
  for (int64_t i = 0; i < rope / 2; ++i) inv_freq[i] = std::pow(10000.0, -2.0 * i / rope) * 0.9;
  const double attn_factor = 1.13;

  // Reference: ref rmsnorm and rope on host copies, then the bf16 rounding of the cache.
  std::vector<float> lat_ref = lat, q_ref = q;
  ref_ops().rmsnorm({.x = lat_ref.data(), .w = w.data(), .y = lat_ref.data(), .m = tokens, .d = r,
                     .x_stride = lat_stride, .y_stride = lat_stride});
  RopeArgs ra{.x = lat_ref.data() + r, .positions = pos.data(), .num_tokens = tokens, .num_heads = 1,
              .token_stride = lat_stride, .head_stride = lat_stride, .rot_dim = rope, .inv_freq = inv_freq.data(),
              .attn_factor = attn_factor, .style = style};
  ref_ops().rope(ra);
  ra.x = q_ref.data() + nope;
  ra.num_heads = heads;
  ra.token_stride = q_stride;
  ra.head_stride = qk;
  ref_ops().rope(ra);
  const std::vector<uint16_t> pool0 = to_bf16(random_f32(rows * lw));
  std::vector<float> want_pool = from_bf16(pool0);
  const int64_t qls = heads * lw;  // q_lat token stride
  const std::vector<float> q_lat0 = random_f32(tokens * qls);
  std::vector<float> want_q = q_lat0;
  for (int64_t t = 0; t < tokens; ++t) {
    if (slots[t] >= 0) {
      for (int64_t c = 0; c < lw; ++c) {
        want_pool[slots[t] * lw + c] = from_bf16({bf16_round(lat_ref[t * lat_stride + c])})[0];
      }
    }
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < rope; ++i) want_q[t * qls + h * lw + r + i] = q_ref[t * q_stride + h * qk + nope + i];
    }
  }

  auto dlat = upload(ctx, lat), dw = upload(ctx, w), dq = upload(ctx, q), dql = upload(ctx, q_lat0);
  auto dpos = upload(ctx, pos);
  auto dslots = upload(ctx, slots);
  auto dfreq = upload(ctx, inv_freq);
  auto dpool = upload(ctx, pool0);
  CT_TRY(name, cuda::mla_prep(ctx, {.lat = dlat.get(), .lat_stride = lat_stride, .norm_w = dw.get(), .eps = 1e-6f,
                                    .q = dq.get(), .q_token_stride = q_stride, .q_head_stride = qk, .nope = nope,
                                    .q_lat = dql.get(), .q_lat_token_stride = qls, .q_lat_head_stride = lw,
                                    .pool = dpool.get(), .slots = dslots.get(), .positions = dpos.get(),
                                    .inv_freq = dfreq.get(), .attn_factor = attn_factor, .style = style,
                                    .num_tokens = tokens, .heads = heads, .r = r, .rope_dim = rope}));
  // The cache: within one bf16 step (the norm's f32 sum order differs from the reference's); rows of padding
  // tokens and unused rows untouched. q_lat: the rope columns as the reference, the others untouched.
  report(name + " (cache rows)", rel_max_err(from_bf16(download(ctx, dpool, rows * lw)), want_pool), 8e-3);
  report(name + " (q_lat)", rel_max_err(download(ctx, dql, q_lat0.size()), want_q), 1e-6);
}

// mla_prep_absorb (one launch) against mla_prep then head_matmul (the query absorption into q_lat[:, h, :r]): the
// same cache rows and the same q_lat, bit for bit.
void test_mla_prep_absorb(CudaContext& ctx, int64_t tokens, int64_t heads, int64_t r, int64_t rope, int64_t nope) {
  const std::string name = str_cat("mla_prep_absorb tokens=", tokens, " heads=", heads, " r=", r, " rope=", rope,
                                   " nope=", nope);
  const int64_t lw = r + rope, lat_stride = lw + 40, qk = nope + rope, q_stride = heads * qk + 24;
  const int64_t rows = tokens + 3, qls = heads * lw;
  const auto lat = random_f32(tokens * lat_stride, -3.0f, 3.0f), nw = random_f32(r, 0.5f, 1.5f);
  const auto q = random_f32(tokens * q_stride);
  const auto w_uk = to_bf16(random_f32(heads * r * nope, -0.1f, 0.1f));  // [heads, r, nope]
  std::vector<int64_t> pos(tokens);
  std::vector<int32_t> slots(tokens);
  for (int64_t t = 0; t < tokens; ++t) {
    pos[t] = (t * 389 + 11) % 4096;
    slots[t] = static_cast<int32_t>(rows - 1 - t);
  }
  std::vector<double> inv_freq(rope / 2);
  for (int64_t i = 0; i < rope / 2; ++i) inv_freq[i] = std::pow(10000.0, -2.0 * i / rope);
  const auto pool0 = to_bf16(random_f32(rows * lw));
  const auto q_lat0 = random_f32(tokens * qls);
  auto dlat = upload(ctx, lat), dnw = upload(ctx, nw), dq = upload(ctx, q);
  auto dwuk = upload(ctx, w_uk);
  auto dpos = upload(ctx, pos);
  auto dslots = upload(ctx, slots);
  auto dfreq = upload(ctx, inv_freq);
  std::vector<uint16_t> pools[2];
  std::vector<float> q_lats[2];
  for (int fused = 0; fused < 2; ++fused) {
    auto dpool = upload(ctx, pool0);
    auto dql = upload(ctx, q_lat0);
    const cuda::MlaPrepArgs prep{.lat = dlat.get(), .lat_stride = lat_stride, .norm_w = dnw.get(), .eps = 1e-6f,
                                 .q = dq.get(), .q_token_stride = q_stride, .q_head_stride = qk, .nope = nope,
                                 .q_lat = dql.get(), .q_lat_token_stride = qls, .q_lat_head_stride = lw,
                                 .pool = dpool.get(), .slots = dslots.get(), .positions = dpos.get(),
                                 .inv_freq = dfreq.get(), .attn_factor = 1.0, .style = RopeStyle::kInterleaved,
                                 .num_tokens = tokens, .heads = heads, .r = r, .rope_dim = rope};
    const cuda::HeadMatmulArgs hm{.x = dq.get(), .x_token_stride = q_stride, .x_head_stride = qk, .w = dwuk.get(),
                                  .w_dtype = DType::kBF16, .w_head_stride = r * nope, .w_row_stride = nope,
                                  .y = dql.get(), .y_token_stride = qls, .y_head_stride = lw, .num_tokens = tokens,
                                  .num_heads = heads, .n = r, .k = nope};
    if (fused == 1) {
      CT_TRY(name, cuda::mla_prep_absorb(ctx, prep, hm));
    } else {
      CT_TRY(name, cuda::mla_prep(ctx, prep));
      CT_TRY(name, cuda::head_matmul(ctx, hm));
    }
    pools[fused] = download(ctx, dpool, pool0.size());
    q_lats[fused] = download(ctx, dql, q_lat0.size());
  }
  report(name + " cache rows (bits differing, 1 if any)", pools[0] == pools[1] ? 0.0 : 1.0, 0.0);
  report(name + " q_lat (bits differing, 1 if any)",
         std::memcmp(q_lats[0].data(), q_lats[1].data(), q_lats[0].size() * sizeof(float)) == 0 ? 0.0 : 1.0, 0.0);
}

// gemv_bf16_norm (the input norm in the GEMV's launch) against rmsnorm_residual then gemv_bf16: y within 1e-5
// (bit for bit at k 1796..2048, where both norms sum alike), h == branch + residual exactly; without a residual
// rmsnorm(x) alone.
void test_gemv_norm(CudaContext& ctx, int64_t n, int64_t k, bool residual, bool bias) {
  const std::string name =
      str_cat("gemv_bf16_norm n=", n, " k=", k, residual ? " +residual" : "", bias ? " +bias" : "");
  const auto branch = random_f32(k), res = random_f32(k), nw = random_f32(k, 0.5f, 1.5f);
  const auto w = to_bf16(random_f32(n * k, -0.05f, 0.05f));
  const auto b = random_f32(n);
  auto dbranch = upload(ctx, branch), dres = upload(ctx, res), dnw = upload(ctx, nw), dbias = upload(ctx, b);
  auto dw = upload(ctx, w);
  auto dh = upload(ctx, std::vector<float>(k, NAN)), dnormed = upload(ctx, std::vector<float>(k));
  auto dy = upload(ctx, std::vector<float>(n, NAN)), dy_ref = upload(ctx, std::vector<float>(n));
  // Reference path: the separate norm (in place on a copy of the residual), then the GEMV.
  auto dres_ref = upload(ctx, res);
  CT_TRY(name, cuda::rmsnorm_residual(ctx, {.x = dbranch.get(), .residual = residual ? dres_ref.get() : nullptr,
                                            .w = dnw.get(), .y = dnormed.get(), .m = 1, .d = k}));
  MatmulArgs a{.x = dnormed.get(), .w = dw.get(), .w_dtype = DType::kBF16, .bias = bias ? dbias.get() : nullptr,
               .y = dy_ref.get(), .m = 1, .n = n, .k = k};
  CT_TRY(name, cuda::gemv_bf16(ctx, a));
  a.x = dbranch.get();
  a.y = dy.get();
  CT_CHECK(name, cuda::gemv_bf16_norm_fits(a));
  CT_TRY(name, cuda::gemv_bf16_norm(ctx, a, {.residual = residual ? dres.get() : nullptr, .w = dnw.get(),
                                             .h = residual ? dh.get() : nullptr}));
  const auto y = download(ctx, dy, n), y_ref = download(ctx, dy_ref, n);
  report(name + " y", rel_max_err(y, y_ref), 1e-5);
  if (k >= 1796 && k <= 2048) {
    report(name + " y bits differing (1 if any)", std::memcmp(y.data(), y_ref.data(), n * sizeof(float)) ? 1.0 : 0.0,
           0.0);
  }
  if (residual) {
    report(name + " h", rel_max_err(download(ctx, dh, k), download(ctx, dres_ref, k)), 0.0);
    report(name + " residual untouched", rel_max_err(download(ctx, dres, k), res), 0.0);
  }
}

// A decode-like chain: rmsnorm -> GEMV (split k) -> GEMV with SwiGLU input -> rmsnorm with residual; the results
// with PDL off and on must match bit for bit, and so must two runs (split-k sums in a fixed order).
void test_pdl_chain(CudaContext& ctx) {
  const std::string name = "PDL chain (rmsnorm, split-k GEMVs, fused SwiGLU GEMV) on == off, run == run";
  const int64_t d = 2048, inter = 1408;
  const auto x = random_f32(d), nw = random_f32(d, 0.5f, 1.5f);
  const auto w1 = to_bf16(random_f32(2 * inter * d, -0.05f, 0.05f));
  const auto w2 = to_bf16(random_f32(d * inter, -0.05f, 0.05f));
  auto dx = upload(ctx, x), dnw = upload(ctx, nw);
  auto dw1 = upload(ctx, w1), dw2 = upload(ctx, w2);
  auto dres = upload(ctx, std::vector<float>(d, 0.0f));
  auto dh = upload(ctx, std::vector<float>(d)), dgu = upload(ctx, std::vector<float>(2 * inter));
  auto dy = upload(ctx, std::vector<float>(d)), dout = upload(ctx, std::vector<float>(d));
  const auto run = [&](bool pdl) -> Result<std::vector<float>> {
    ctx.set_pdl(pdl);
    DSI_CUDA_RETURN_IF_ERROR(cudaMemcpy(dres.get(), x.data(), d * sizeof(float), cudaMemcpyHostToDevice));
    for (int rep = 0; rep < 3; ++rep) {
      DSI_RETURN_IF_ERROR(cuda::rmsnorm(ctx, {.x = dres.get(), .w = dnw.get(), .y = dh.get(), .m = 1, .d = d}));
      MatmulArgs a{.x = dh.get(), .w = dw1.get(), .w_dtype = DType::kBF16, .y = dgu.get(), .m = 1, .n = 2 * inter,
                   .k = d};
      DSI_RETURN_IF_ERROR(cuda::gemv_bf16(ctx, a));
      MatmulArgs b{.x = dgu.get(), .w = dw2.get(), .w_dtype = DType::kBF16, .y = dy.get(), .m = 1, .n = d,
                   .k = inter};
      DSI_RETURN_IF_ERROR(cuda::gemv_bf16_silu_mul(ctx, b));
      DSI_RETURN_IF_ERROR(cuda::rmsnorm_residual(ctx, {.x = dy.get(), .residual = dres.get(), .w = dnw.get(),
                                                       .y = dout.get(), .m = 1, .d = d}));
    }
    DSI_RETURN_IF_ERROR(ctx.synchronize());
    return download(ctx, dout, d);
  };
  const bool was = ctx.pdl();
  auto off = run(false), on = run(true), on2 = run(true);
  ctx.set_pdl(was);
  CT_TRY(name, off.status());
  CT_TRY(name, on.status());
  CT_TRY(name, on2.status());
  CT_CHECK(name + " (pdl on == off)", std::memcmp(off->data(), on->data(), d * sizeof(float)) == 0);
  CT_CHECK(name + " (run == run)", std::memcmp(on->data(), on2->data(), d * sizeof(float)) == 0);
  std::printf("PASS %s (PDL %s on this device)\n", name.c_str(), was ? "available" : "not available");
  tally().passed++;
}

// The fused router (f32 matmul + routing, one launch) against ref matmul + ref_moe_route; twice in a row (the
// arrival counter must be back at zero after each launch). With the norm: x is rmsnorm(branch + residual) * nw
// (ref), the residual must come back as branch + residual exactly and normed as rmsnorm_residual's output (bit for
// bit where that kernel also runs 256 threads per row: hidden 1796..2048).
void test_router_route(CudaContext& ctx, MoeRouteArgs a, int64_t hidden, const std::string& label,
                       bool with_norm = false) {
  const std::string name = str_cat("moe_router_route ", label, " tokens=", a.num_tokens, " experts=",
                                   a.num_experts, " hidden=", hidden, with_norm ? " +norm" : "");
  auto x = random_f32(a.num_tokens * hidden), w = random_f32(a.num_experts * hidden, -0.1f, 0.1f);
  const auto branch = random_f32(a.num_tokens * hidden), res = random_f32(a.num_tokens * hidden);
  const auto nw = random_f32(hidden, 0.5f, 1.5f);
  std::vector<float> h(branch.size());
  for (size_t i = 0; i < h.size(); ++i) h[i] = branch[i] + res[i];
  if (with_norm) {
    ref_ops().rmsnorm({.x = h.data(), .w = nw.data(), .y = x.data(), .m = a.num_tokens, .d = hidden});
  }
  const auto bias = random_f32(a.num_experts, -0.2f, 0.2f);
  std::vector<float> logits(a.num_tokens * a.num_experts);
  ref_ops().matmul({.x = x.data(), .w = w.data(), .w_dtype = DType::kF32, .y = logits.data(), .m = a.num_tokens,
                    .n = a.num_experts, .k = hidden});
  std::vector<int32_t> want_ids(a.num_tokens * a.top_k);
  std::vector<float> want_w(want_ids.size());
  const bool use_bias = a.method == MoeTopk::kNoauxTc;
  MoeRouteArgs r = a;
  r.logits = logits.data();
  r.bias = use_bias ? bias.data() : nullptr;
  r.expert_ids = want_ids.data();
  r.weights = want_w.data();
  ref_moe_route(r);
  auto dx = upload(ctx, x), dw = upload(ctx, w), dbias = upload(ctx, bias);
  auto dlog = upload(ctx, std::vector<float>(logits.size()));
  auto dids = upload(ctx, std::vector<int32_t>(want_ids.size()));
  auto dwt = upload(ctx, std::vector<float>(want_w.size()));
  r.logits = dlog.get();
  r.bias = use_bias ? dbias.get() : nullptr;
  r.expert_ids = dids.get();
  r.weights = dwt.get();
  auto dbranch = upload(ctx, branch), dres = upload(ctx, res), dnw = upload(ctx, nw);
  auto dnormed = upload(ctx, std::vector<float>(x.size(), NAN));
  // rmsnorm_residual's output on the same inputs (into dx: the plain router's input when !with_norm is unused).
  std::vector<float> separate;
  if (with_norm) {
    auto dres2 = upload(ctx, res);
    CT_TRY(name, cuda::rmsnorm_residual(ctx, {.x = dbranch.get(), .residual = dres2.get(), .w = dnw.get(),
                                              .y = dx.get(), .m = a.num_tokens, .d = hidden}));
    separate = download(ctx, dx, x.size());
  }
  const cuda::RouterNormArgs norm{.branch = dbranch.get(), .residual = dres.get(), .w = dnw.get(),
                                  .normed = dnormed.get()};
  for (int rep = 0; rep < 2; ++rep) {
    if (with_norm) {  // the launch adds branch into it
      DSI_CHECK(cudaMemcpyAsync(dres.get(), res.data(), res.size() * sizeof(float), cudaMemcpyHostToDevice,
                                ctx.stream()) == cudaSuccess);
    }
    // Outputs reset: a launch whose last block never routes (a counter not back at zero) leaves them so.
    DSI_CHECK(cudaMemsetAsync(dids.get(), 0xff, want_ids.size() * sizeof(int32_t), ctx.stream()) == cudaSuccess);
    DSI_CHECK(cudaMemsetAsync(dwt.get(), 0xff, want_w.size() * sizeof(float), ctx.stream()) == cudaSuccess);
    DSI_CHECK(cudaMemsetAsync(dnormed.get(), 0xff, x.size() * sizeof(float), ctx.stream()) == cudaSuccess);
    CT_TRY(name, cuda::moe_router_route(ctx, with_norm ? nullptr : dx.get(), dw.get(), hidden, r,
                                        with_norm ? &norm : nullptr));
    const auto ids = download(ctx, dids, want_ids.size());
    int64_t diff = 0;
    for (size_t i = 0; i < ids.size(); ++i) diff += ids[i] != want_ids[i];
    const std::string run = rep == 0 ? "" : " (second launch)";
    report(name + run + " logits", rel_max_err(download(ctx, dlog, logits.size()), logits), 1e-5);
    report(name + run + " ids (fraction differing)", static_cast<double>(diff) / ids.size(), 0.0);
    report(name + run + " weights", rel_max_err(download(ctx, dwt, want_w.size()), want_w), 1e-5);
    if (!with_norm) continue;
    const auto normed = download(ctx, dnormed, x.size());
    report(name + run + " normed", rel_max_err(normed, x), 1e-5);
    report(name + run + " residual", rel_max_err(download(ctx, dres, res.size()), h), 0.0);
    if (hidden >= 1796 && hidden <= 2048) {
      report(name + run + " normed vs rmsnorm_residual (bits differing)",
             static_cast<double>(std::memcmp(normed.data(), separate.data(), normed.size() * sizeof(float)) != 0),
             0.0);
    }
  }
}

}  // namespace

void run_fused_tests(CudaContext& ctx) {
  test_router_route(ctx, {.num_tokens = 1, .num_experts = 64, .top_k = 6, .scoring = MoeScoring::kSoftmax,
                          .method = MoeTopk::kGreedy}, 2048, "softmax greedy (V2-Lite)");
  test_router_route(ctx, {.num_tokens = 4, .num_experts = 256, .top_k = 8, .n_group = 8, .topk_group = 4,
                          .scoring = MoeScoring::kSigmoid, .method = MoeTopk::kNoauxTc, .norm_topk_prob = true,
                          .routed_scaling_factor = 2.5f}, 7168, "sigmoid noaux_tc (V3)");
  test_router_route(ctx, {.num_tokens = 11, .num_experts = 160, .top_k = 6, .n_group = 8, .topk_group = 3,
                          .scoring = MoeScoring::kSoftmax, .method = MoeTopk::kGroupLimitedGreedy,
                          .norm_topk_prob = true, .routed_scaling_factor = 16.0f}, 132, "softmax group_limited");
  // The post-attention norm in the router's launch: V2-Lite decode (1 and 4 tokens), V3 (one token), a small width.
  test_router_route(ctx, {.num_tokens = 1, .num_experts = 64, .top_k = 6, .scoring = MoeScoring::kSoftmax,
                          .method = MoeTopk::kGreedy}, 2048, "softmax greedy (V2-Lite)", true);
  test_router_route(ctx, {.num_tokens = 4, .num_experts = 64, .top_k = 6, .scoring = MoeScoring::kSoftmax,
                          .method = MoeTopk::kGreedy}, 2048, "softmax greedy (V2-Lite)", true);
  test_router_route(ctx, {.num_tokens = 1, .num_experts = 256, .top_k = 8, .n_group = 8, .topk_group = 4,
                          .scoring = MoeScoring::kSigmoid, .method = MoeTopk::kNoauxTc, .norm_topk_prob = true,
                          .routed_scaling_factor = 2.5f}, 7168, "sigmoid noaux_tc (V3)", true);
  test_router_route(ctx, {.num_tokens = 3, .num_experts = 16, .top_k = 4, .n_group = 4, .topk_group = 2,
                          .scoring = MoeScoring::kSigmoid, .method = MoeTopk::kNoauxTc, .norm_topk_prob = true,
                          .routed_scaling_factor = 2.5f}, 256, "sigmoid noaux_tc (ds3-tiny)", true);
  report("moe_router_route_fits with the norm (V3, 2 tokens: too much shared memory; 1 if wrong)",
         !cuda::moe_router_route_fits(2, 256, 7168, true) && cuda::moe_router_route_fits(2, 256, 7168, false) ? 0.0
                                                                                                               : 1.0,
         0.0);
  test_mla_prep(ctx, 1, 16, 512, 64, 128, RopeStyle::kInterleaved);   // V2-Lite decode
  test_mla_prep(ctx, 7, 128, 512, 64, 128, RopeStyle::kInterleaved);  // V3 heads, several tokens
  test_mla_prep(ctx, 3, 4, 96, 32, 16, RopeStyle::kNeox);             // small fixture widths
  test_gemv_norm(ctx, 3648, 2048, true, false);  // V2-Lite fused_a: [q | latent]
  test_gemv_norm(ctx, 3648, 2048, false, false); // layer 0 (no residual yet)
  test_gemv_norm(ctx, 6144, 4096, true, false);  // Llama-8B qkv
  test_gemv_norm(ctx, 1000, 7168, true, true);   // a V3-wide row, with a bias
  test_gemv_norm(ctx, 37, 256, true, true);      // tiny fixture widths
  test_mla_prep_absorb(ctx, 1, 16, 512, 64, 128);   // V2-Lite decode
  test_mla_prep_absorb(ctx, 4, 128, 512, 64, 128);  // V3 heads, a decode batch
  test_mla_prep_absorb(ctx, 3, 8, 32, 16, 32);      // ds3-tiny widths (4 lanes per output)
  test_mla_prep_absorb(ctx, 2, 4, 32, 16, 12);      // nope 12: not vectorized, the two launches
  test_pdl_chain(ctx);
}

}  // namespace dsi::cuda_test
