// GEMV (ours), cuBLASLt bf16 / f32 GEMMs and the matmul dispatcher against ref matmul.
#include <cmath>

#include "cuda_test_util.h"
#include "kernels/cuda/cuda_ops.h"

namespace dsi::cuda_test {
namespace {

enum class Path { kDispatch, kGemv, kCublas };

struct MatmulCase {
  int64_t m, n, k;
  DType w_dtype = DType::kBF16;
  Path path = Path::kDispatch;
  bool bias = false, accumulate = false;
  int64_t x_pad = 0, y_pad = 0;  // extra row stride
  bool silu_mul = false;          // gemv_bf16_silu_mul: x rows are gate | up (2k wide)
};

void test_matmul(CudaContext& ctx, const MatmulCase& c) {
  const char* path = c.path == Path::kGemv ? "gemv" : c.path == Path::kCublas ? "cublaslt" : "dispatch";
  const std::string name = str_cat("matmul ", path, " w=", dtype_name(c.w_dtype), " m=", c.m, " n=", c.n, " k=", c.k,
                                   c.bias ? " +bias" : "", c.accumulate ? " +acc" : "",
                                   c.x_pad || c.y_pad ? " strided" : "", c.silu_mul ? " silu_mul" : "");
  const int64_t xs = (c.silu_mul ? 2 * c.k : c.k) + c.x_pad, ys = c.n + c.y_pad;
  const auto x = random_f32(c.m * xs, c.silu_mul ? -4.0f : -1.0f, c.silu_mul ? 4.0f : 1.0f);
  // The matmul's input: x itself, or silu(gate) * up (f32, as the kernels form it).
  std::vector<float> xin = x;
  if (c.silu_mul) {
    for (int64_t i = 0; i < c.m; ++i) {
      for (int64_t kk = 0; kk < c.k; ++kk) {
        const float g = x[i * xs + kk], u = x[i * xs + c.k + kk];
        xin[i * xs + kk] = g / (1.0f + std::exp(-g)) * u;
      }
    }
  }
  const auto w32 = random_f32(c.n * c.k);
  const auto w16 = to_bf16(w32);
  const auto bias = random_f32(c.n);
  const auto y0 = random_f32(c.m * ys);
  std::vector<float> want = y0;
  const void* hw = c.w_dtype == DType::kBF16 ? static_cast<const void*>(w16.data()) : w32.data();
  MatmulArgs a{.x = xin.data(), .w = hw, .w_dtype = c.w_dtype, .bias = c.bias ? bias.data() : nullptr,
               .y = want.data(), .m = c.m, .n = c.n, .k = c.k, .x_stride = xs, .y_stride = ys,
               .accumulate = c.accumulate};
  ref_ops().matmul(a);
  auto dx = upload(ctx, x), dbias = upload(ctx, bias), dy = upload(ctx, y0);
  auto dw32 = upload(ctx, w32);
  auto dw16 = upload(ctx, w16);
  a.x = dx.get();
  a.w = c.w_dtype == DType::kBF16 ? static_cast<const void*>(dw16.get()) : dw32.get();
  a.bias = c.bias ? dbias.get() : nullptr;
  a.y = dy.get();
  Status st = c.silu_mul                 ? cuda::gemv_bf16_silu_mul(ctx, a)
              : c.path == Path::kGemv   ? cuda::gemv_bf16(ctx, a)
              : c.path == Path::kCublas ? cuda::gemm_cublaslt(ctx, a)
                                        : cuda::matmul(ctx, a);
  CT_TRY(name, st);
  auto got = download(ctx, dy, c.m * ys);
  // bf16 weights with f32 activations: exact products, f32 sums (gemv); cuBLASLt rounds activations to bf16.
  const bool rounds_x = c.w_dtype == DType::kBF16 && (c.path == Path::kCublas || (c.path == Path::kDispatch && c.m > 1));
  report(name, rel_max_err(got, want), rounds_x ? 1e-2 : 2e-5);
}

void test_gemm_bf16(CudaContext& ctx, int64_t m, int64_t n, int64_t k, DType y_dtype) {
  const std::string name = str_cat("gemm_bf16 (bf16 x) m=", m, " n=", n, " k=", k, " y=", dtype_name(y_dtype));
  const auto x = to_bf16(random_f32(m * k)), w = to_bf16(random_f32(n * k));
  const auto xf = from_bf16(x);
  std::vector<float> want(m * n);
  ref_ops().matmul({.x = xf.data(), .w = w.data(), .w_dtype = DType::kBF16, .y = want.data(), .m = m, .n = n, .k = k});
  auto dx = upload(ctx, x), dw = upload(ctx, w);
  auto dy32 = upload(ctx, std::vector<float>(m * n));
  auto dy16 = upload(ctx, std::vector<uint16_t>(m * n));
  void* y = y_dtype == DType::kF32 ? static_cast<void*>(dy32.get()) : dy16.get();
  CT_TRY(name, cuda::gemm_bf16(ctx, {.x = dx.get(), .w = dw.get(), .y = y, .y_dtype = y_dtype, .m = m, .n = n, .k = k}));
  const auto got = y_dtype == DType::kF32 ? download(ctx, dy32, m * n) : from_bf16(download(ctx, dy16, m * n));
  report(name, rel_max_err(got, want), y_dtype == DType::kF32 ? 1e-5 : 8e-3);
}

}  // namespace

void run_gemm_tests(CudaContext& ctx) {
  for (int64_t m : {1, 2, 3, 5, 8, 11, 16}) test_matmul(ctx, {.m = m, .n = 257, .k = 1000, .path = Path::kGemv});
  test_matmul(ctx, {.m = 1, .n = 64, .k = 8192, .path = Path::kGemv});
  // m = 1: whole rows per block (8, 4, 2 or 1 of them), k split over the threads, several rounds for long k.
  test_matmul(ctx, {.m = 1, .n = 3648, .k = 2048, .path = Path::kGemv});
  test_matmul(ctx, {.m = 1, .n = 100, .k = 20000, .path = Path::kGemv, .bias = true, .accumulate = true});
  test_matmul(ctx, {.m = 1, .n = 5, .k = 64, .path = Path::kGemv, .bias = true});
  test_matmul(ctx, {.m = 1, .n = 40000, .k = 1408, .path = Path::kGemv});
  test_matmul(ctx, {.m = 4, .n = 1000, .k = 264, .path = Path::kGemv, .bias = true});
  test_matmul(ctx, {.m = 7, .n = 300, .k = 2048, .path = Path::kGemv, .accumulate = true, .x_pad = 8, .y_pad = 3});
  test_matmul(ctx, {.m = 16, .n = 129, .k = 10944, .path = Path::kGemv, .bias = true, .accumulate = true});
  test_matmul(ctx, {.m = 3, .n = 33, .k = 1001, .path = Path::kGemv});  // k % 8 != 0: the simple kernel
  test_matmul(ctx, {.m = 20, .n = 65, .k = 256, .path = Path::kGemv});  // m > 16: the simple kernel
  test_matmul(ctx, {.m = 17, .n = 257, .k = 1000, .path = Path::kCublas});
  test_matmul(ctx, {.m = 64, .n = 512, .k = 2048, .path = Path::kCublas, .bias = true});
  test_matmul(ctx, {.m = 300, .n = 1000, .k = 512, .path = Path::kCublas, .accumulate = true, .x_pad = 8, .y_pad = 4});
  test_matmul(ctx, {.m = 2, .n = 100, .k = 512, .path = Path::kCublas});
  test_matmul(ctx, {.m = 33, .n = 70, .k = 130, .w_dtype = DType::kF32, .path = Path::kDispatch, .bias = true});
  // f32 weights at decode sizes (the MoE router): our f32 GEMV through the dispatcher.
  test_matmul(ctx, {.m = 1, .n = 64, .k = 2048, .w_dtype = DType::kF32, .path = Path::kDispatch});
  test_matmul(ctx, {.m = 4, .n = 256, .k = 7168, .w_dtype = DType::kF32, .path = Path::kDispatch, .bias = true,
                    .accumulate = true, .x_pad = 4, .y_pad = 3});
  test_matmul(ctx, {.m = 3, .n = 16, .k = 132, .w_dtype = DType::kF32, .path = Path::kDispatch, .x_pad = 2});
  test_matmul(ctx, {.m = 5, .n = 2048, .k = 2048, .path = Path::kDispatch});
  test_matmul(ctx, {.m = 40, .n = 96, .k = 4096, .path = Path::kDispatch});
  // The MLP's down projection with the SwiGLU product formed in the GEMV (V2-Lite shared experts, odd shapes,
  // the simple kernel at k % 8 != 0, several splits of k).
  test_matmul(ctx, {.m = 1, .n = 2048, .k = 2816, .path = Path::kGemv, .silu_mul = true});
  test_matmul(ctx, {.m = 1, .n = 257, .k = 1000, .path = Path::kGemv, .bias = true, .x_pad = 8, .silu_mul = true});
  test_matmul(ctx, {.m = 3, .n = 100, .k = 10944, .path = Path::kGemv, .silu_mul = true});
  test_matmul(ctx, {.m = 2, .n = 33, .k = 1001, .path = Path::kGemv, .silu_mul = true});
  test_gemm_bf16(ctx, 128, 256, 512, DType::kF32);
  test_gemm_bf16(ctx, 77, 520, 1024, DType::kBF16);
}

}  // namespace dsi::cuda_test
