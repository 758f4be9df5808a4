// Per-head matmuls of the GPU runner (MLA absorption: W_UK^T and W_UV per head) against a host reference in
// double: the vectorized kernel (k % 8 == 0, several sub-warp widths) and the scalar fallback (odd k, unaligned
// rows), with strided x and y; y's untouched padding must stay as it was.
#include "cuda_test_util.h"
#include "kernels/cuda/cuda_model_ops.h"

namespace dsi::cuda_test {
namespace {

void test_head_matmul(CudaContext& ctx, int64_t tokens, int64_t heads, int64_t n, int64_t k, int64_t w_row_pad) {
  const std::string name = str_cat("head_matmul t=", tokens, " h=", heads, " n=", n, " k=", k, " row_pad=", w_row_pad);
  const int64_t x_head = k + 4, x_tok = heads * x_head;           // strided x
  const int64_t w_row = k + w_row_pad, w_head = n * w_row + 8;     // strided w
  const int64_t y_head = n + 3, y_tok = heads * y_head;            // strided y with padding
  std::vector<float> x = random_f32(tokens * x_tok);
  std::vector<uint16_t> w = to_bf16(random_f32(heads * w_head));
  std::vector<float> y0 = random_f32(tokens * y_tok);
  auto dx = upload(ctx, x);
  auto dw = upload(ctx, w);
  auto dy = upload(ctx, y0);
  CT_TRY(name, cuda::head_matmul(ctx, {.x = dx.get(), .x_token_stride = x_tok, .x_head_stride = x_head,
                                       .w = dw.get(), .w_dtype = DType::kBF16, .w_head_stride = w_head,
                                       .w_row_stride = w_row, .y = dy.get(), .y_token_stride = y_tok,
                                       .y_head_stride = y_head, .num_tokens = tokens, .num_heads = heads, .n = n,
                                       .k = k}));
  std::vector<float> got = download(ctx, dy, y0.size());
  std::vector<float> want = y0;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t c = 0; c < k; ++c) {
          s += double{x[t * x_tok + h * x_head + c]} * bf16_to_f32(w[h * w_head + j * w_row + c]);
        }
        want[t * y_tok + h * y_head + j] = static_cast<float>(s);
      }
    }
  }
  report(name, rel_max_err(got, want), 1e-5);
}

}  // namespace

void run_model_ops_tests(CudaContext& ctx) {
  test_head_matmul(ctx, 1, 16, 512, 128, 0);   // V2-Lite W_UK^T (16 lanes per output)
  test_head_matmul(ctx, 3, 16, 128, 512, 0);   // W_UV (32 lanes, several chunks per lane)
  test_head_matmul(ctx, 2, 8, 32, 32, 0);      // tiny fixtures (4 lanes)
  test_head_matmul(ctx, 5, 3, 17, 8, 0);       // 1 lane per output, odd n
  test_head_matmul(ctx, 2, 4, 33, 264, 8);     // 33 chunks: 32 lanes, a partial second pass
  test_head_matmul(ctx, 2, 4, 20, 30, 2);      // odd k: scalar kernel
  test_head_matmul(ctx, 2, 4, 20, 64, 3);      // unaligned rows: scalar kernel
}

}  // namespace dsi::cuda_test
