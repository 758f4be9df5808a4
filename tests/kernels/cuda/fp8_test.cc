// Activation quantization (per token, per 128 channels) and the block-scaled FP8 GEMM (cuBLASLt).
// Twin: the host quantization with core/dtype's e4m3 rounding; the GEMM against ref matmul on the dequantized
// operands (so only accumulation and output rounding differ).
#include "cuda_test_util.h"
#include "kernels/cuda/cuda_ops.h"

namespace dsi::cuda_test {
namespace {

void host_quantize(const std::vector<float>& x, int64_t m, int64_t k, std::vector<uint8_t>& q,
                   std::vector<float>& scale) {
  const int64_t kb = (k + 127) / 128;
  q.assign(m * k, 0);
  scale.assign(kb * m, 0.0f);
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t b = 0; b < kb; ++b) {
      float amax = 0.0f;
      for (int64_t c = b * 128; c < std::min(k, b * 128 + 128); ++c) amax = std::max(amax, std::fabs(x[r * k + c]));
      const float s = std::max(amax, 1e-12f) / 448.0f;
      scale[b * m + r] = s;
      for (int64_t c = b * 128; c < std::min(k, b * 128 + 128); ++c) q[r * k + c] = f32_to_fp8e4m3(x[r * k + c] / s);
    }
  }
}

void test_quantize(CudaContext& ctx, int64_t m, int64_t k) {
  const std::string name = str_cat("quantize_fp8 m=", m, " k=", k);
  auto x = random_f32(m * k, -4.0f, 4.0f);
  if (m > 1) std::fill(x.begin() + k, x.begin() + 2 * k, 0.0f);  // an all-zero row
  std::vector<uint8_t> q;
  std::vector<float> s;
  host_quantize(x, m, k, q, s);
  auto dx = upload(ctx, x);
  auto dq = upload(ctx, std::vector<uint8_t>(m * k));
  auto ds = upload(ctx, std::vector<float>(s.size()));
  CT_TRY(name, cuda::quantize_fp8(ctx, {.x = dx.get(), .q = dq.get(), .scale = ds.get(), .m = m, .k = k}));
  const auto gq = download(ctx, dq, q.size());
  const auto gs = download(ctx, ds, s.size());
  int64_t code_diff = 0;
  for (size_t i = 0; i < q.size(); ++i) code_diff += gq[i] != q[i];
  report(name + " scales", rel_max_err(gs, s), 0.0);
  report(name + " codes (fraction differing)", static_cast<double>(code_diff) / q.size(), 0.0);
}

void test_gemm_fp8(CudaContext& ctx, int64_t m, int64_t n, int64_t k, DType y_dtype) {
  const std::string name = str_cat("gemm_fp8 block-scaled m=", m, " n=", n, " k=", k, " y=", dtype_name(y_dtype));
  const int64_t kb = (k + 127) / 128, nb = (n + 127) / 128;
  // Weights: random e4m3 codes (finite) and positive block scales, as a checkpoint stores them.
  std::vector<uint8_t> wq(n * k);
  for (auto& b : wq) {
    b = static_cast<uint8_t>(rng()() & 0xff);
    if ((b & 0x7f) == 0x7f) b = 0;  // no NaN
  }
  const auto w_scale = random_f32(nb * kb, 1e-4f, 2e-3f);
  const auto x = random_f32(m * k, -2.0f, 2.0f);
  auto dx = upload(ctx, x), dws = upload(ctx, w_scale);
  auto dwq = upload(ctx, wq);
  auto dxq = upload(ctx, std::vector<uint8_t>(m * k));
  auto dxs = upload(ctx, std::vector<float>(kb * m));
  auto dy32 = upload(ctx, std::vector<float>(m * n));
  auto dy16 = upload(ctx, std::vector<uint16_t>(m * n));
  CT_TRY(name, cuda::quantize_fp8(ctx, {.x = dx.get(), .q = dxq.get(), .scale = dxs.get(), .m = m, .k = k}));
  void* y = y_dtype == DType::kF32 ? static_cast<void*>(dy32.get()) : dy16.get();
  CT_TRY(name, cuda::gemm_fp8(ctx, {.x = dxq.get(), .x_scale = dxs.get(), .w = dwq.get(), .w_scale = dws.get(),
                                    .y = y, .y_dtype = y_dtype, .m = m, .n = n, .k = k}));
  const auto xq = download(ctx, dxq, m * k);
  const auto xs = download(ctx, dxs, kb * m);
  std::vector<float> xd(m * k), wd(n * k), want(m * n);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < k; ++c) xd[r * k + c] = fp8e4m3_to_f32(xq[r * k + c]) * xs[(c / 128) * m + r];
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) wd[r * k + c] = fp8e4m3_to_f32(wq[r * k + c]) * w_scale[(r / 128) * kb + c / 128];
  ref_ops().matmul({.x = xd.data(), .w = wd.data(), .w_dtype = DType::kF32, .y = want.data(), .m = m, .n = n, .k = k});
  const auto got = y_dtype == DType::kF32 ? download(ctx, dy32, m * n) : from_bf16(download(ctx, dy16, m * n));
  report(name, rel_max_err(got, want), y_dtype == DType::kF32 ? 2e-3 : 8e-3);
}

}  // namespace

void run_fp8_tests(CudaContext& ctx) {
  test_quantize(ctx, 1, 128);
  test_quantize(ctx, 5, 300);  // partial last block
  test_quantize(ctx, 33, 7168);
  test_gemm_fp8(ctx, 1, 256, 512, DType::kBF16);
  test_gemm_fp8(ctx, 5, 576, 512, DType::kBF16);   // n = 4.5 blocks (kv_a_proj)
  test_gemm_fp8(ctx, 77, 300, 512, DType::kF32);   // partial n block, odd m
  test_gemm_fp8(ctx, 77, 300, 384, DType::kF32);   // k/128 = 3: refused (UNSUP)
  test_gemm_fp8(ctx, 32, 300, 512, DType::kF32);   // n % 16 != 0 alone
  test_gemm_fp8(ctx, 16, 320, 1536, DType::kBF16);  // n = 2.5 blocks, k = 1536 (q_lora_rank)
  test_gemm_fp8(ctx, 128, 1536, 1024, DType::kBF16);
  test_gemm_fp8(ctx, 64, 256, 2048, DType::kF32);
  test_gemm_fp8(ctx, 4, 256, 320, DType::kBF16);   // partial k block: refused (UNSUP)
}

}  // namespace dsi::cuda_test
