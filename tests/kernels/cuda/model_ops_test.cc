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

// The bf16 K and V of the MLA naive prefill against core/dtype's rounding, bit for bit; the buffers' padding
// (one 16-byte chunk past each) must stay untouched.
void test_mla_kv_expand(CudaContext& ctx, int64_t len, int64_t heads, int64_t nope, int64_t rope, int64_t v,
                        int64_t r) {
  const std::string name = str_cat("mla_kv_expand_bf16 len=", len, " heads=", heads, " nope=", nope, " rope=", rope,
                                   " v=", v);
  const int64_t qk = nope + rope, kvw = heads * (nope + v), w = r + rope + 8;  // lat rows with spare columns
  std::vector<float> kv = random_f32(len * kvw), lat = random_f32(len * w);
  kv[0] = NAN;
  const uint16_t pad = 0x1234;
  auto dkv = upload(ctx, kv), dlat = upload(ctx, lat);
  auto dk = upload(ctx, std::vector<uint16_t>(len * heads * qk + 8, pad));
  auto dv = upload(ctx, std::vector<uint16_t>(len * heads * v + 8, pad));
  CT_TRY(name, cuda::mla_kv_expand_bf16(ctx, {.kv = dkv.get(), .lat = dlat.get(), .lat_stride = w, .r = r,
                                              .k = dk.get(), .v = dv.get(), .len = len, .heads = heads,
                                              .nope = nope, .rope_dim = rope, .v_dim = v}));
  const auto k = download(ctx, dk, len * heads * qk + 8), vv = download(ctx, dv, len * heads * v + 8);
  int64_t bad = 0;
  for (int64_t i = 0; i < len; ++i) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t c = 0; c < qk; ++c) {
        const float src = c < nope ? kv[i * kvw + h * (nope + v) + c] : lat[i * w + r + (c - nope)];
        bad += k[(i * heads + h) * qk + c] != f32_to_bf16(src);
      }
      for (int64_t c = 0; c < v; ++c) bad += vv[(i * heads + h) * v + c] != f32_to_bf16(kv[i * kvw + h * (nope + v) + nope + c]);
    }
  }
  for (int j = 0; j < 8; ++j) bad += (k[len * heads * qk + j] != pad) + (vv[len * heads * v + j] != pad);
  report(name + " (mismatched elements)", static_cast<double>(bad), 0.0);
  cuda::MlaKvExpandArgs odd{.kv = dkv.get(), .lat = dlat.get(), .lat_stride = w, .r = r, .k = dk.get(),
                            .v = dv.get(), .len = len, .heads = heads, .nope = nope + 4, .rope_dim = rope, .v_dim = v};
  CT_CHECK(name + " (nope % 8 != 0 refused)", cuda::mla_kv_expand_bf16(ctx, odd).code() == StatusCode::kInvalidArgument);
}

}  // namespace

void run_model_ops_tests(CudaContext& ctx) {
  test_mla_kv_expand(ctx, 512, 16, 128, 64, 128, 512);  // V2-Lite
  test_mla_kv_expand(ctx, 37, 3, 16, 8, 24, 32);        // small and odd

  test_head_matmul(ctx, 1, 16, 512, 128, 0);   // V2-Lite W_UK^T (16 lanes per output)
  test_head_matmul(ctx, 3, 16, 128, 512, 0);   // W_UV (32 lanes, several chunks per lane)
  test_head_matmul(ctx, 2, 8, 32, 32, 0);      // tiny fixtures (4 lanes)
  test_head_matmul(ctx, 5, 3, 17, 8, 0);       // 1 lane per output, odd n
  test_head_matmul(ctx, 2, 4, 33, 264, 8);     // 33 chunks: 32 lanes, a partial second pass
  test_head_matmul(ctx, 2, 4, 20, 30, 2);      // odd k: scalar kernel
  test_head_matmul(ctx, 2, 4, 20, 64, 3);      // unaligned rows: scalar kernel
}

}  // namespace dsi::cuda_test
