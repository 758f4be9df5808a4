// RMSNorm (+ residual), RoPE, SiLU-mul, f32_to_bf16 and embedding against kernels/ref.
#include <cmath>
#include <cstring>

#include "cuda_test_util.h"
#include "kernels/cuda/cuda_ops.h"

namespace dsi::cuda_test {
namespace {

void test_rmsnorm(CudaContext& ctx, int64_t m, int64_t d, int64_t stride, bool alias) {
  const std::string name = str_cat("rmsnorm m=", m, " d=", d, " stride=", stride, alias ? " in-place" : "");
  const auto x = random_f32(m * stride, -3.0f, 3.0f), w = random_f32(d, 0.5f, 1.5f);
  std::vector<float> want = x;
  ref_ops().rmsnorm({.x = want.data(), .w = w.data(), .y = want.data(), .m = m, .d = d, .x_stride = stride,
                     .y_stride = stride});
  auto dx = upload(ctx, x), dw = upload(ctx, w);
  auto dy = upload(ctx, std::vector<float>(m * stride, 0.0f));
  float* y = alias ? dx.get() : dy.get();
  CT_TRY(name, cuda::rmsnorm(ctx, {.x = dx.get(), .w = dw.get(), .y = y, .m = m, .d = d, .x_stride = stride,
                                   .y_stride = stride}));
  auto got = download(ctx, alias ? dx : dy, m * stride);
  for (int64_t i = 0; i < m; ++i) {  // compare the normalized columns only
    for (int64_t p = d; p < stride; ++p) got[i * stride + p] = want[i * stride + p] = 0.0f;
  }
  report(name, rel_max_err(got, want), 1e-5);
}

void test_rmsnorm_residual(CudaContext& ctx, int64_t m, int64_t d) {
  const std::string name = str_cat("rmsnorm_residual m=", m, " d=", d);
  const auto x = random_f32(m * d), res = random_f32(m * d), w = random_f32(d, 0.5f, 1.5f);
  std::vector<float> h(m * d), want(m * d);
  for (int64_t i = 0; i < m * d; ++i) h[i] = x[i] + res[i];
  ref_ops().rmsnorm({.x = h.data(), .w = w.data(), .y = want.data(), .m = m, .d = d});
  auto dx = upload(ctx, x), dr = upload(ctx, res), dw = upload(ctx, w);
  auto dy = upload(ctx, std::vector<float>(m * d));
  CT_TRY(name, cuda::rmsnorm_residual(ctx, {.x = dx.get(), .residual = dr.get(), .w = dw.get(), .y = dy.get(),
                                            .m = m, .d = d}));
  const auto y = download(ctx, dy, m * d);
  report(name + " (y)", rel_max_err(y, want), 1e-5);
  report(name + " (residual)", rel_max_err(download(ctx, dr, m * d), h), 0.0);

  // With a bf16 copy of y: the same y and residual, and y_bf16 bit for bit f32_to_bf16 of that y.
  const std::vector<uint16_t> want_bf16 = to_bf16(y);
  auto dr2 = upload(ctx, res);
  auto dyb = upload(ctx, std::vector<uint16_t>(m * d, 0xffffu));
  CT_TRY(name, cuda::rmsnorm_residual(ctx, {.x = dx.get(), .residual = dr2.get(), .w = dw.get(), .y = dy.get(),
                                            .m = m, .d = d, .y_bf16 = dyb.get()}));
  report(name + " +bf16 (y)", rel_max_err(download(ctx, dy, m * d), y), 0.0);
  report(name + " +bf16 (residual)", rel_max_err(download(ctx, dr2, m * d), h), 0.0);
  const auto got_bf16 = download(ctx, dyb, m * d);
  int64_t differ = 0;
  for (int64_t i = 0; i < m * d; ++i) differ += got_bf16[i] != want_bf16[i];
  report(name + " +bf16 (y_bf16 elements differing)", static_cast<double>(differ), 0.0);

  // No residual: y = rmsnorm(x), with its bf16 copy.
  std::vector<float> want_plain(m * d);
  DSI_CHECK(cudaMemsetAsync(dyb.get(), 0xff, m * d * sizeof(uint16_t), ctx.stream()) == cudaSuccess);
  ref_ops().rmsnorm({.x = x.data(), .w = w.data(), .y = want_plain.data(), .m = m, .d = d});
  CT_TRY(name, cuda::rmsnorm_residual(ctx, {.x = dx.get(), .residual = nullptr, .w = dw.get(), .y = dy.get(),
                                            .m = m, .d = d, .y_bf16 = dyb.get()}));
  const auto y_plain = download(ctx, dy, m * d);
  report(name + " no residual (y)", rel_max_err(y_plain, want_plain), 1e-5);
  const std::vector<uint16_t> want_plain_bf16 = to_bf16(y_plain);
  const auto got_plain_bf16 = download(ctx, dyb, m * d);
  differ = 0;
  for (int64_t i = 0; i < m * d; ++i) differ += got_plain_bf16[i] != want_plain_bf16[i];
  report(name + " no residual (y_bf16 elements differing)", static_cast<double>(differ), 0.0);
}

void test_rope(CudaContext& ctx, RopeStyle style, int64_t tokens, int64_t heads, int64_t head_dim, int64_t rot_dim,
               int64_t offset) {
  const std::string name = str_cat("rope ", style == RopeStyle::kNeox ? "neox" : "interleaved", " tokens=", tokens,
                                   " heads=", heads, " rot=", rot_dim, " offset=", offset);
  const int64_t ts = heads * head_dim;
  const auto x = random_f32(tokens * ts);
  std::vector<int64_t> pos(tokens);
  for (int64_t t = 0; t < tokens; ++t) pos[t] = (t * 977 + 13) % 8192;
  std::vector<double> inv_freq(rot_dim / 2);
  for (int64_t i = 0; i < rot_dim / 2; ++i) inv_freq[i] = std::pow(10000.0, -2.0 * i / rot_dim) * 0.7;
  RopeArgs a{.num_tokens = tokens, .num_heads = heads, .token_stride = ts, .head_stride = head_dim,
             .rot_dim = rot_dim, .attn_factor = 1.21, .style = style};
  std::vector<float> want = x;
  a.x = want.data() + offset;
  a.positions = pos.data();
  a.inv_freq = inv_freq.data();
  ref_ops().rope(a);
  auto dx = upload(ctx, x);
  auto dpos = upload(ctx, pos);
  auto dfreq = upload(ctx, inv_freq);
  a.x = dx.get() + offset;
  a.positions = dpos.get();
  a.inv_freq = dfreq.get();
  CT_TRY(name, cuda::rope(ctx, a));
  report(name, rel_max_err(download(ctx, dx, x.size()), want), 1e-6);
}

void test_silu_mul(CudaContext& ctx, int64_t m, int64_t d) {
  const std::string name = str_cat("silu_mul m=", m, " d=", d, " (gate|up rows)");
  const auto gu = random_f32(m * 2 * d, -6.0f, 6.0f);
  std::vector<float> want(m * d);
  ref_ops().silu_mul({.gate = gu.data(), .up = gu.data() + d, .out = want.data(), .m = m, .d = d, .in_stride = 2 * d});
  auto dgu = upload(ctx, gu);
  auto dout = upload(ctx, std::vector<float>(m * d));
  CT_TRY(name, cuda::silu_mul(ctx, {.gate = dgu.get(), .up = dgu.get() + d, .out = dout.get(), .m = m, .d = d,
                                    .in_stride = 2 * d}));
  const auto got = download(ctx, dout, m * d);
  report(name, rel_max_err(got, want), 1e-6);
  if (d % 2 != 0) return;  // (pairs of bf16 per thread)
  // The bf16 output: the f32 kernel's values rounded (core/dtype), bit for bit.
  const std::string bname = str_cat("silu_mul_bf16 m=", m, " d=", d);
  auto dbf = upload(ctx, std::vector<uint16_t>(m * d + 2, 0x1234));
  CT_TRY(bname, cuda::silu_mul_bf16(ctx, {.gate = dgu.get(), .up = dgu.get() + d, .out = nullptr, .m = m, .d = d,
                                          .in_stride = 2 * d}, dbf.get()));
  const auto bf = download(ctx, dbf, m * d + 2);
  int64_t bad = (bf[m * d] != 0x1234) + (bf[m * d + 1] != 0x1234);  // nothing past the end
  for (int64_t i = 0; i < m * d; ++i) bad += bf[i] != f32_to_bf16(got[i]);
  report(bname + " (mismatched elements)", static_cast<double>(bad), 0.0);
}

// f32_to_bf16 (the bf16 GEMMs' activation rounding) bit for bit against core/dtype's rounding, with NaN, infinities
// and ties in the input; rows at a stride (offset: an x not 16-byte aligned takes the scalar kernel); nothing
// written past the m x k output.
void test_f32_to_bf16(CudaContext& ctx, int64_t m, int64_t k, int64_t stride, int64_t offset) {
  const std::string name = str_cat("f32_to_bf16 m=", m, " k=", k, " x_stride=", stride, " offset=", offset);
  auto x = random_f32(m * stride + offset, -3.0f, 3.0f);
  for (size_t i = 0; i < x.size(); i += 97) x[i] = std::nanf("");
  for (size_t i = 13; i < x.size(); i += 101) x[i] = (i % 2 ? -1.0f : 1.0f) * INFINITY;
  for (size_t i = 29; i < x.size(); i += 89) x[i] = 1.0f + 1.0f / 256.0f;  // a tie: rounds to even (1.0)
  auto dx = upload(ctx, x);
  auto dy = upload(ctx, std::vector<uint16_t>(m * k + 4, 0x1234));
  CT_TRY(name, cuda::f32_to_bf16(ctx, dx.get() + offset, dy.get(), m, k, stride));
  const auto y = download(ctx, dy, m * k + 4);
  int64_t bad = 0;
  for (int64_t i = 0; i < 4; ++i) bad += y[m * k + i] != 0x1234;
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const float v = x[offset + r * stride + c];
      const uint16_t want = f32_to_bf16(v), got = y[r * k + c];
      // NaN: any NaN pattern (core/dtype keeps the payload's top bits, the device gives the canonical NaN).
      bad += std::isnan(v) ? (got & 0x7fffu) <= 0x7f80u : got != want;
    }
  }
  report(name + " (mismatched elements)", static_cast<double>(bad), 0.0);
}

void test_embedding(CudaContext& ctx, DType dtype, int64_t vocab, int64_t d, int64_t tokens) {
  const std::string name = str_cat("embedding ", dtype_name(dtype), " vocab=", vocab, " d=", d, " tokens=", tokens);
  const auto table = random_f32(vocab * d);
  const auto table_bf16 = to_bf16(table);
  std::vector<int64_t> ids(tokens);
  for (int64_t t = 0; t < tokens; ++t) ids[t] = (t * 7919 + 3) % vocab;
  std::vector<float> want(tokens * d);
  const void* host_table = dtype == DType::kBF16 ? static_cast<const void*>(table_bf16.data()) : table.data();
  ref_ops().embedding({.table = host_table, .table_dtype = dtype, .ids = ids.data(), .out = want.data(),
                       .num_tokens = tokens, .vocab = vocab, .d = d});
  auto dt32 = upload(ctx, table);
  auto dt16 = upload(ctx, table_bf16);
  auto dids = upload(ctx, ids);
  auto dout = upload(ctx, std::vector<float>(tokens * d));
  const void* dev_table = dtype == DType::kBF16 ? static_cast<const void*>(dt16.get()) : dt32.get();
  CT_TRY(name, cuda::embedding(ctx, {.table = dev_table, .table_dtype = dtype, .ids = dids.get(), .out = dout.get(),
                                     .num_tokens = tokens, .vocab = vocab, .d = d}));
  report(name, rel_max_err(download(ctx, dout, tokens * d), want), 0.0);
}

}  // namespace

void run_elementwise_tests(CudaContext& ctx) {
  test_rmsnorm(ctx, 1, 7, 7, false);
  test_rmsnorm(ctx, 5, 2048, 2048, false);
  test_rmsnorm(ctx, 3, 1000, 1536, false);
  test_rmsnorm(ctx, 4, 7168, 7168, true);
  test_rmsnorm_residual(ctx, 1, 2048);
  test_rmsnorm_residual(ctx, 7, 1001);
  // The vectorized kernel (d % 4 == 0): 1 to 8 float4 chunks per thread, in place, strided, long rows.
  test_rmsnorm(ctx, 2, 4, 4, false);
  test_rmsnorm(ctx, 1, 4096, 4096, true);
  test_rmsnorm(ctx, 6, 512, 576, false);
  test_rmsnorm(ctx, 3, 16384, 16384, false);
  test_rmsnorm(ctx, 2, 32768, 32768, true);
  test_rmsnorm(ctx, 1, 32772, 32772, false);  // beyond 8 chunks per thread: the loop kernel
  test_rmsnorm_residual(ctx, 12, 7168);
  test_rmsnorm_residual(ctx, 1, 4096);
  test_rmsnorm_residual(ctx, 3, 12);
  test_rope(ctx, RopeStyle::kNeox, 5, 3, 128, 128, 0);
  test_rope(ctx, RopeStyle::kNeox, 9, 4, 80, 64, 0);        // partial rotary (Phi-style prefix)
  test_rope(ctx, RopeStyle::kInterleaved, 7, 16, 192, 64, 128);  // MLA: rope on the last 64 dims of q
  test_rope(ctx, RopeStyle::kInterleaved, 33, 1, 576, 64, 512);  // MLA k_pe in the latent cache row
  test_silu_mul(ctx, 1, 11);
  test_silu_mul(ctx, 1, 12);
  test_silu_mul(ctx, 37, 2816);  // V2-Lite's shared experts at a prefill-sized m
  test_silu_mul(ctx, 3, 10944);
  test_f32_to_bf16(ctx, 1, 8, 8, 0);
  test_f32_to_bf16(ctx, 37, 2048, 2048, 0);      // vectorized
  test_f32_to_bf16(ctx, 5, 512, 3648, 1536);     // a slice of wider rows (MLA's latent after q)
  test_f32_to_bf16(ctx, 3, 513, 520, 0);         // k % 4 != 0: scalar
  test_f32_to_bf16(ctx, 4, 64, 64, 1);           // x not 16-byte aligned: scalar
  test_f32_to_bf16(ctx, 70000, 4, 4, 0);         // more rows than one grid dimension holds
  test_embedding(ctx, DType::kBF16, 1000, 777, 9);
  test_embedding(ctx, DType::kF32, 50, 2048, 3);
}

}  // namespace dsi::cuda_test
