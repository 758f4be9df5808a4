// Kernels that read DeepSeek's FP8 weights (e4m3 codes + 128x128 block scales) directly: gemv_fp8,
// gemm_fp8_weight_only and the fp8 path of moe_experts_gemv, against host references in double on the dequantized
// weights (code value * block scale). Codes are uniform over all finite e4m3 codes (subnormals to +-448, both
// signs); scales vary per block by a factor up to 16, so a wrong block index shows as a large error.
// Also: every finite code decodes exactly (in each of the 16 byte positions of a load), and timing lines
// ("INFO ...", weight bytes per second) for the decode GEMV on DeepSeek-V3 shapes.
#include <cmath>
#include <cstring>
#include <numeric>
#include <type_traits>

#include "cuda_test_util.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_fp8.h"
#include "kernels/cuda/cuda_moe.h"

namespace dsi::cuda_test {
namespace {

constexpr uint8_t kFp8NaN = 0x7f;

bool is_nan_code(uint8_t c) { return (c & 0x7f) == 0x7f; }

std::vector<uint8_t> random_codes(size_t n) {
  std::vector<uint8_t> v(n);
  for (auto& c : v) {
    do {
      c = static_cast<uint8_t>(rng()() & 0xff);
    } while (is_nan_code(c));
  }
  return v;
}

// Block scales base * 2^u, u uniform in [-2, 2].
std::vector<float> random_scales(size_t n, float base) {
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> v(n);
  for (float& s : v) s = base * std::exp2(dist(rng()));
  return v;
}

// The value of each code (core/dtype's table), in double.
const std::vector<double>& fp8_values() {
  static const std::vector<double> table = [] {
    std::vector<double> t(256);
    for (int c = 0; c < 256; ++c) t[c] = fp8e4m3_to_f32(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

// w[r, c] = code * scale[r / 128, c / 128], in double.
struct Fp8Matrix {
  const uint8_t* codes;
  const float* scale;
  int64_t rows, cols;
  double at(int64_t r, int64_t c) const {
    const int64_t kb = (cols + 127) / 128;
    return fp8_values()[codes[r * cols + c]] * double{scale[(r / 128) * kb + c / 128]};
  }
};

// ---- gemv_fp8 / gemm_fp8_weight_only -------------------------------------------------------------------------

enum class Fp8Path { kGemv, kGemm };

struct Fp8MatmulCase {
  int64_t m, n, k;
  Fp8Path path = Fp8Path::kGemv;
  bool bias = false, accumulate = false;
  int64_t x_pad = 0, y_pad = 0;  // extra row stride
  bool misalign_w = false;       // w one byte past a 16-byte boundary (GEMV falls back to the tiled kernel)
  bool silu_mul = false;         // x rows are gate | up (2k wide); the input is silu(gate) * up
};

void test_fp8_matmul(CudaContext& ctx, const Fp8MatmulCase& c) {
  const char* path = c.path == Fp8Path::kGemv ? "gemv_fp8" : "gemm_fp8_weight_only";
  const std::string name = str_cat(path, " m=", c.m, " n=", c.n, " k=", c.k, c.bias ? " +bias" : "",
                                   c.accumulate ? " +acc" : "", c.x_pad || c.y_pad ? " strided" : "",
                                   c.misalign_w ? " misaligned-w" : "", c.silu_mul ? " silu_mul" : "");
  const int64_t xs = (c.silu_mul ? 2 * c.k : c.k) + c.x_pad, ys = c.n + c.y_pad;
  const int64_t nb = (c.n + 127) / 128, kb = (c.k + 127) / 128;
  const auto x = random_f32(c.m * xs);
  std::vector<float> xin = x;  // the matmul's input
  if (c.silu_mul) {
    for (int64_t i = 0; i < c.m; ++i) {
      for (int64_t kk = 0; kk < c.k; ++kk) {
        const float g = x[i * xs + kk], u = x[i * xs + c.k + kk];
        xin[i * xs + kk] = g / (1.0f + std::exp(-g)) * u;
      }
    }
  }
  const auto w = random_codes(c.n * c.k);
  const auto scale = random_scales(nb * kb, 1e-3f);
  const auto bias = random_f32(c.n);
  const auto y0 = random_f32(c.m * ys);

  std::vector<float> want = y0;
  const Fp8Matrix wm{w.data(), scale.data(), c.n, c.k};
  std::vector<double> wrow(c.k);
  for (int64_t j = 0; j < c.n; ++j) {
    for (int64_t kk = 0; kk < c.k; ++kk) wrow[kk] = wm.at(j, kk);
    for (int64_t i = 0; i < c.m; ++i) {
      double s = c.bias ? double{bias[j]} : 0.0;
      for (int64_t kk = 0; kk < c.k; ++kk) s += double{xin[i * xs + kk]} * wrow[kk];
      want[i * ys + j] = static_cast<float>(c.accumulate ? s + y0[i * ys + j] : s);
    }
  }

  std::vector<uint8_t> w_host(w);
  if (c.misalign_w) w_host.insert(w_host.begin(), 0);
  auto dx = upload(ctx, x), dscale = upload(ctx, scale), dbias = upload(ctx, bias), dy = upload(ctx, y0);
  auto dw = upload(ctx, w_host);
  const cuda::GemvFp8Args a{.x = dx.get(), .w = dw.get() + (c.misalign_w ? 1 : 0), .w_scale = dscale.get(),
                            .bias = c.bias ? dbias.get() : nullptr, .y = dy.get(), .m = c.m, .n = c.n, .k = c.k,
                            .x_stride = xs, .y_stride = ys, .accumulate = c.accumulate,
                            .silu_mul = c.silu_mul};
  CT_TRY(name, c.path == Fp8Path::kGemv ? cuda::gemv_fp8(ctx, a) : cuda::gemm_fp8_weight_only(ctx, a));
  const auto got = download(ctx, dy, c.m * ys);
  // f32 products and sums against double; the padding between rows must be untouched.
  bool pad_ok = true;
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = c.n; j < ys; ++j) pad_ok = pad_ok && std::memcmp(&got[i * ys + j], &y0[i * ys + j], 4) == 0;
  }
  CT_CHECK(name + " (row padding of y)", pad_ok);
  report(name, rel_max_err(got, want), 2e-5);
}

// Row r = p * 254 + i holds finite code i (0..253 over 0x00..0x7e, 0x80..0xfe) at column p (0..15) and zeros
// elsewhere; x = 1 and the scale of row block b is 2^(b % 5 - 2): y[r] must be the code's value times the scale,
// bit for bit. k = 16 (the GEMV's vector path: column p is byte p of one 16-byte load) and k = 17 (the tiled
// kernel).
void test_fp8_codes_exact(CudaContext& ctx, int64_t k) {
  const std::string name = str_cat("gemv_fp8 every finite code exact, k=", k);
  std::vector<uint8_t> codes;
  for (int c = 0; c < 256; ++c) {
    if (!is_nan_code(static_cast<uint8_t>(c))) codes.push_back(static_cast<uint8_t>(c));
  }
  const int64_t num_codes = static_cast<int64_t>(codes.size()), n = 16 * num_codes;
  const int64_t nb = (n + 127) / 128, kb = (k + 127) / 128;
  std::vector<uint8_t> w(n * k, 0);
  std::vector<float> scale(nb * kb), want(n);
  for (int64_t b = 0; b < nb; ++b) {
    for (int64_t j = 0; j < kb; ++j) scale[b * kb + j] = std::ldexp(1.0f, static_cast<int>(b % 5) - 2);
  }
  for (int64_t r = 0; r < n; ++r) {
    const uint8_t code = codes[r % num_codes];
    w[r * k + r / num_codes] = code;
    want[r] = fp8e4m3_to_f32(code) * scale[(r / 128) * kb];
  }
  auto dx = upload(ctx, std::vector<float>(k, 1.0f)), dscale = upload(ctx, scale);
  auto dw = upload(ctx, w);
  auto dy = upload(ctx, std::vector<float>(n, NAN));
  CT_TRY(name, cuda::gemv_fp8(ctx, {.x = dx.get(), .w = dw.get(), .w_scale = dscale.get(), .y = dy.get(), .m = 1,
                                    .n = n, .k = k}));
  const auto got = download(ctx, dy, n);
  int64_t wrong = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (!(got[r] == want[r])) {  // -0 and +0 compare equal: the sum of a -0 product and +0 is +0
      if (wrong < 5) {
        std::printf("  row %ld code 0x%02x column %ld: got %.9g want %.9g\n", static_cast<long>(r),
                    codes[r % num_codes], static_cast<long>(r / num_codes), got[r], want[r]);
      }
      ++wrong;
    }
  }
  report(name + " (fraction wrong)", static_cast<double>(wrong) / static_cast<double>(n), 0.0);
}

void test_fp8_matmul_args(CudaContext& ctx) {
  const std::string name = "gemv_fp8 / gemm_fp8_weight_only argument checks";
  const cuda::GemvFp8Args ok{.m = 1, .n = 8, .k = 16};
  cuda::GemvFp8Args a = ok;
  a.k = -1;
  CT_CHECK(name, cuda::gemv_fp8(ctx, a).code() == StatusCode::kInvalidArgument);
  CT_CHECK(name, cuda::gemm_fp8_weight_only(ctx, a).code() == StatusCode::kInvalidArgument);
  CT_CHECK(name, cuda::gemv_fp8(ctx, ok).code() == StatusCode::kInvalidArgument);  // null pointers
  a = ok;
  a.x_stride = 8;  // < k
  CT_CHECK(name, cuda::gemv_fp8(ctx, a).code() == StatusCode::kInvalidArgument);
  a = ok;
  a.m = 0;  // nothing to do
  CT_CHECK(name, cuda::gemv_fp8(ctx, a).ok() && cuda::gemm_fp8_weight_only(ctx, a).ok());
  std::printf("PASS %s\n", name.c_str());
  tally().passed++;
}

// Decode GEMV bandwidth (m = 1). Weights: code 0x38 (1.0) everywhere, scales 1; enough copies to cycle through
// that the weights come from HBM, not L2. The timed calls are replayed from a CUDA graph so that host launch
// overhead does not hide the kernel time of the small shapes (direct calls if the capture fails).
void time_gemv_fp8(CudaContext& ctx, int64_t n, int64_t k) {
  const size_t bytes = static_cast<size_t>(n * k);
  const int copies = static_cast<int>(std::max<size_t>(1, (size_t{256} << 20) / bytes));
  auto w = pool_alloc<uint8_t>(ctx.pool(), bytes * copies);
  if (!w.ok()) {
    std::printf("INFO gemv_fp8 timing n=%ld k=%ld skipped: %s\n", static_cast<long>(n), static_cast<long>(k),
                w.status().to_string().c_str());
    return;
  }
  DSI_CHECK(cudaMemsetAsync(w->get(), 0x38, bytes * copies, ctx.stream()) == cudaSuccess);
  auto scale = upload(ctx, std::vector<float>(((n + 127) / 128) * ((k + 127) / 128), 1.0f));
  auto x = upload(ctx, random_f32(k));
  auto y = upload(ctx, std::vector<float>(n));
  constexpr int kIters = 50;
  const auto calls = [&] {
    Status st = Status::Ok();
    for (int i = 0; i < kIters && st.ok(); ++i) {
      st = cuda::gemv_fp8(ctx, {.x = x.get(), .w = w->get() + (i % copies) * bytes, .w_scale = scale.get(),
                                .y = y.get(), .m = 1, .n = n, .k = k});
    }
    return st;
  };
  DSI_CHECK(calls().ok());  // warm-up
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  bool graphed = cudaStreamBeginCapture(ctx.stream(), cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  if (graphed) {
    const bool called = calls().ok();
    graphed = cudaStreamEndCapture(ctx.stream(), &graph) == cudaSuccess && called &&
              cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess &&
              cudaGraphLaunch(exec, ctx.stream()) == cudaSuccess;  // warm-up
  }
  cudaGetLastError();  // a failed capture falls back to direct calls
  cudaEvent_t start, stop;
  DSI_CHECK(cudaEventCreate(&start) == cudaSuccess && cudaEventCreate(&stop) == cudaSuccess);
  DSI_CHECK(cudaEventRecord(start, ctx.stream()) == cudaSuccess);
  DSI_CHECK(graphed ? cudaGraphLaunch(exec, ctx.stream()) == cudaSuccess : calls().ok());
  DSI_CHECK(cudaEventRecord(stop, ctx.stream()) == cudaSuccess);
  DSI_CHECK(cudaEventSynchronize(stop) == cudaSuccess);
  float ms = 0.0f;
  DSI_CHECK(cudaEventElapsedTime(&ms, start, stop) == cudaSuccess);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (exec != nullptr) cudaGraphExecDestroy(exec);
  if (graph != nullptr) cudaGraphDestroy(graph);
  const double us = 1e3 * ms / kIters;
  std::printf("INFO gemv_fp8 m=1 n=%ld k=%ld: %.1f us, %.0f GB/s of weight bytes%s\n", static_cast<long>(n),
              static_cast<long>(k), us, static_cast<double>(bytes) / (us * 1e3), graphed ? "" : " (direct calls)");
}

// ---- moe_experts_gemv with fp8 weights ---------------------------------------------------------------------

struct MoeFp8Case {
  int64_t tokens, top_k, experts, hidden, inter;
  bool skips = true;  // route some pairs to -1 and to num_experts
  int64_t n_shared = 0;  // shared experts folded in (an MLP of n_shared * inter rows); out starts as NaN
  int down_split = 0;    // warps per output row of the down kernel (0: its pick)
};

struct MoeFp8Inputs {
  std::vector<float> x, weights, out0;
  std::vector<int32_t> ids;
  std::vector<uint8_t> w13, w2;  // NaN codes for experts that no pair chose
  std::vector<float> s13, s2;    // NaN scales for those experts
  std::vector<uint8_t> sw13, sw2;  // shared MLP [2 S, hidden], [hidden, S]
  std::vector<float> ss13, ss2;
};

// Distinct experts per token; token 1 reuses token 0's first expert; with skips, the last pair is -1 and
// (top_k > 2) token 0's second pair is num_experts (out of range). As moe_experts_test.cc.
std::vector<int32_t> make_moe_ids(const MoeFp8Case& c) {
  std::vector<int32_t> ids(c.tokens * c.top_k);
  std::vector<int32_t> perm(c.experts);
  for (int64_t t = 0; t < c.tokens; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng());
    std::copy(perm.begin(), perm.begin() + c.top_k, ids.begin() + t * c.top_k);
  }
  if (c.tokens > 1) {
    int32_t* tok1 = ids.data() + c.top_k;
    int32_t* same = std::find(tok1, tok1 + c.top_k, ids[0]);
    if (same != tok1 + c.top_k) {
      std::swap(*same, tok1[0]);
    } else {
      tok1[0] = ids[0];
    }
  }
  if (c.skips && ids.size() > 1) ids.back() = -1;
  if (c.skips && c.top_k > 2) ids[1] = static_cast<int32_t>(c.experts);
  return ids;
}

int64_t blocks(int64_t n) { return (n + 127) / 128; }

MoeFp8Inputs make_moe_inputs(const MoeFp8Case& c) {
  MoeFp8Inputs in;
  in.ids = make_moe_ids(c);
  in.x = random_f32(c.tokens * c.hidden);
  in.weights = random_f32(c.tokens * c.top_k, 0.0f, 1.0f);
  in.out0 = c.n_shared > 0 ? std::vector<float>(c.tokens * c.hidden, NAN) : random_f32(c.tokens * c.hidden);
  const int64_t e13 = 2 * c.inter * c.hidden, e2 = c.hidden * c.inter;
  const int64_t es13 = blocks(2 * c.inter) * blocks(c.hidden), es2 = blocks(c.hidden) * blocks(c.inter);
  in.w13.assign(c.experts * e13, kFp8NaN);
  in.w2.assign(c.experts * e2, kFp8NaN);
  in.s13.assign(c.experts * es13, NAN);
  in.s2.assign(c.experts * es2, NAN);
  std::vector<bool> chosen(c.experts, false);
  for (int32_t e : in.ids) {
    if (e >= 0 && e < c.experts) chosen[e] = true;
  }
  // Uniform codes have an rms value near 50: these scales keep g, u and each expert's contribution near 1.
  const float b13 = 1.0f / (30.0f * std::sqrt(static_cast<float>(c.hidden)));
  const float b2 = 1.0f / (30.0f * std::sqrt(static_cast<float>(c.inter)));
  for (int64_t e = 0; e < c.experts; ++e) {
    if (!chosen[e]) continue;
    const auto w13 = random_codes(e13), w2 = random_codes(e2);
    const auto s13 = random_scales(es13, b13), s2 = random_scales(es2, b2);
    std::copy(w13.begin(), w13.end(), in.w13.begin() + e * e13);
    std::copy(w2.begin(), w2.end(), in.w2.begin() + e * e2);
    std::copy(s13.begin(), s13.end(), in.s13.begin() + e * es13);
    std::copy(s2.begin(), s2.end(), in.s2.begin() + e * es2);
  }
  const int64_t S = c.n_shared * c.inter;
  in.sw13 = random_codes(2 * S * c.hidden);
  in.sw2 = random_codes(c.hidden * S);
  in.ss13 = random_scales(blocks(2 * S) * blocks(c.hidden), b13);
  in.ss2 = random_scales(blocks(c.hidden) * blocks(S), 1.0f / (30.0f * std::sqrt(static_cast<float>(S + 1))));
  return in;
}

// out[n] = scale * (silu(x W13[0:I]^T) * (x W13[I:2I]^T)) W2^T (+ out[n] when add) for one token, in double.
void swiglu_mlp(const float* x, const Fp8Matrix& w13, const Fp8Matrix& w2, double scale, bool add, double* out) {
  const int64_t H = w13.cols, I = w13.rows / 2;
  std::vector<double> h(I);
  for (int64_t i = 0; i < I; ++i) {
    double g = 0.0, u = 0.0;
    for (int64_t k = 0; k < H; ++k) {
      g += w13.at(i, k) * x[k];
      u += w13.at(I + i, k) * x[k];
    }
    h[i] = g / (1.0 + std::exp(-g)) * u;
  }
  for (int64_t n = 0; n < H; ++n) {
    double d = 0.0;
    for (int64_t i = 0; i < I; ++i) d += w2.at(n, i) * h[i];
    out[n] = (add ? out[n] : 0.0) + scale * d;
  }
}

// out0 + the formula of cuda_moe.h on the dequantized weights, in double (the shared MLP replaces out0).
std::vector<float> moe_reference(const MoeFp8Case& c, const MoeFp8Inputs& in) {
  std::vector<double> out(in.out0.begin(), in.out0.end());
  const int64_t H = c.hidden, I = c.inter, S = c.n_shared * c.inter;
  for (int64_t t = 0; t < c.tokens; ++t) {
    const float* x = in.x.data() + t * H;
    if (S > 0) {
      swiglu_mlp(x, {in.sw13.data(), in.ss13.data(), 2 * S, H}, {in.sw2.data(), in.ss2.data(), H, S}, 1.0, false,
                 out.data() + t * H);
    }
    for (int64_t j = 0; j < c.top_k; ++j) {
      const int32_t e = in.ids[t * c.top_k + j];
      if (e < 0 || e >= c.experts) continue;
      const Fp8Matrix w13{in.w13.data() + e * 2 * I * H, in.s13.data() + e * blocks(2 * I) * blocks(H), 2 * I, H};
      const Fp8Matrix w2{in.w2.data() + e * H * I, in.s2.data() + e * blocks(H) * blocks(I), H, I};
      swiglu_mlp(x, w13, w2, in.weights[t * c.top_k + j], true, out.data() + t * H);
    }
  }
  return std::vector<float>(out.begin(), out.end());
}

void test_moe_experts_fp8(CudaContext& ctx, const MoeFp8Case& c) {
  const std::string name = str_cat("moe_experts_gemv fp8 tokens=", c.tokens, " top_k=", c.top_k, " experts=",
                                   c.experts, " hidden=", c.hidden, " inter=", c.inter, c.skips ? " +skips" : "",
                                   c.n_shared > 0 ? str_cat(" +", c.n_shared, " shared") : std::string(),
                                   c.down_split > 0 ? str_cat(" split=", c.down_split) : std::string());
  constexpr double kTol = 1e-3;
  const MoeFp8Inputs in = make_moe_inputs(c);
  const auto want = moe_reference(c, in);
  const size_t out_n = c.tokens * c.hidden;

  auto dx = upload(ctx, in.x), dw = upload(ctx, in.weights), dout = upload(ctx, in.out0);
  auto dids = upload(ctx, in.ids);
  auto dw13 = upload(ctx, in.w13), dw2 = upload(ctx, in.w2);
  auto ds13 = upload(ctx, in.s13), ds2 = upload(ctx, in.s2);
  auto dh = upload(ctx, std::vector<float>(c.tokens * (c.top_k + c.n_shared) * c.inter, NAN));
  const auto or_pad = [](const auto& v) { return v.empty() ? std::decay_t<decltype(v)>(16) : v; };
  auto dsw13 = upload(ctx, or_pad(in.sw13)), dsw2 = upload(ctx, or_pad(in.sw2));
  auto dss13 = upload(ctx, or_pad(in.ss13)), dss2 = upload(ctx, or_pad(in.ss2));
  cuda::MoeExpertsArgs a{.x = dx.get(), .ids = dids.get(), .weights = dw.get(), .w13 = dw13.get(),
                         .w2 = dw2.get(), .h = dh.get(), .out = dout.get(), .num_tokens = c.tokens,
                         .top_k = c.top_k, .num_experts = c.experts, .hidden = c.hidden, .inter = c.inter,
                         .w_dtype = DType::kF8E4M3, .w13_scale = ds13.get(), .w2_scale = ds2.get()};
  a.down_split = c.down_split;
  if (c.n_shared > 0) {
    a.shared_w13 = dsw13.get();
    a.shared_w2 = dsw2.get();
    a.shared_w13_scale = dss13.get();
    a.shared_w2_scale = dss2.get();
    a.n_shared = c.n_shared;
  }
  CT_TRY(name, cuda::moe_experts_gemv(ctx, a));
  const auto got = download(ctx, dout, out_n);
  report(name, rel_max_err(got, want), kTol);

  // Same inputs again: no atomics, so the same bits.
  DSI_CHECK(cudaMemcpyAsync(dout.get(), in.out0.data(), out_n * sizeof(float), cudaMemcpyHostToDevice,
                            ctx.stream()) == cudaSuccess);
  CT_TRY(name, cuda::moe_experts_gemv(ctx, a));
  const auto again = download(ctx, dout, out_n);
  int64_t diff = 0;
  for (size_t i = 0; i < out_n; ++i) diff += std::memcmp(&again[i], &got[i], sizeof(float)) != 0;
  report(name + " rerun (fraction of bits differing)", static_cast<double>(diff) / static_cast<double>(out_n), 0.0);
}

void test_moe_experts_fp8_args(CudaContext& ctx) {
  const std::string name = "moe_experts_gemv fp8 argument checks";
  auto buf = upload(ctx, std::vector<float>(256));
  float* p = buf.get();
  const cuda::MoeExpertsArgs ok{.x = p, .ids = reinterpret_cast<const int32_t*>(p), .weights = p, .w13 = p,
                                .w2 = p, .h = p, .out = p, .num_tokens = 1, .top_k = 2, .num_experts = 4,
                                .hidden = 16, .inter = 8, .w_dtype = DType::kF8E4M3};
  cuda::MoeExpertsArgs a = ok;
  const std::string msg = cuda::moe_experts_gemv(ctx, a).message();
  CT_CHECK(name, cuda::moe_experts_gemv(ctx, a).code() == StatusCode::kInvalidArgument);  // no scales
  CT_CHECK(name, msg.find("w13_scale") != std::string::npos);
  a.w_dtype = DType::kF32;
  CT_CHECK(name, cuda::moe_experts_gemv(ctx, a).code() == StatusCode::kUnsupported);
  std::printf("PASS %s\n", name.c_str());
  tally().passed++;
}

}  // namespace

void run_fp8_weights_tests(CudaContext& ctx) {
  test_fp8_matmul_args(ctx);
  test_fp8_codes_exact(ctx, 16);
  test_fp8_codes_exact(ctx, 17);

  // Decode GEMV: partial n and k blocks (300 x 208: last k block 80 wide), kv_a_proj-like 576 x 7168, a 1408-wide
  // k (11 blocks, not a whole number of 512-wide warp steps), 1360 (partial last block), V3 o_proj-like.
  for (int64_t m : {1, 2, 3, 4, 16}) {
    test_fp8_matmul(ctx, {.m = m, .n = 300, .k = 208});
    test_fp8_matmul(ctx, {.m = m, .n = 576, .k = 7168});
    test_fp8_matmul(ctx, {.m = m, .n = 2048, .k = 1408});
    test_fp8_matmul(ctx, {.m = m, .n = 7168, .k = 2048});
  }
  test_fp8_matmul(ctx, {.m = 1, .n = 1000, .k = 1360, .bias = true});
  // SwiGLU input formed in the GEMV (the V3 MLP down projection: k = 18432; shared expert k = 2048).
  test_fp8_matmul(ctx, {.m = 1, .n = 7168, .k = 18432, .silu_mul = true});
  test_fp8_matmul(ctx, {.m = 4, .n = 300, .k = 2048, .bias = true, .x_pad = 16, .silu_mul = true});
  test_fp8_matmul(ctx, {.m = 3, .n = 130, .k = 208, .silu_mul = true});
  test_fp8_matmul(ctx, {.m = 1, .n = 64, .k = 16384, .accumulate = true});  // few rows: the long k is split
  test_fp8_matmul(ctx, {.m = 4, .n = 129, .k = 10944, .bias = true, .accumulate = true});
  test_fp8_matmul(ctx, {.m = 7, .n = 300, .k = 2048, .accumulate = true, .x_pad = 8, .y_pad = 3});
  test_fp8_matmul(ctx, {.m = 3, .n = 520, .k = 4096, .bias = true, .x_pad = 5, .y_pad = 1});
  // Fallbacks to the tiled kernel: k % 16 != 0, misaligned w, m > 16.
  test_fp8_matmul(ctx, {.m = 1, .n = 300, .k = 200, .bias = true});
  test_fp8_matmul(ctx, {.m = 3, .n = 33, .k = 1001, .accumulate = true});
  test_fp8_matmul(ctx, {.m = 2, .n = 257, .k = 512, .misalign_w = true});
  test_fp8_matmul(ctx, {.m = 17, .n = 100, .k = 512, .bias = true});

  // The tiled GEMM for any shape.
  for (int64_t m : {1, 17, 77, 130}) {
    test_fp8_matmul(ctx, {.m = m, .n = 300, .k = 200, .path = Fp8Path::kGemm});
    test_fp8_matmul(ctx, {.m = m, .n = 576, .k = 1000, .path = Fp8Path::kGemm, .bias = true, .accumulate = true,
                          .x_pad = 3, .y_pad = 2});
  }
  test_fp8_matmul(ctx, {.m = 130, .n = 1536, .k = 2048, .path = Fp8Path::kGemm});

  // MoE experts: the bf16 tests' shapes. hidden % 16 == 0 runs 16-byte loads in gate/up (else 8), inter % 16 == 0
  // in down; inter % 128 != 0 puts the first up rows in the last gate rows' scale block.
  test_moe_experts_fp8_args(ctx);
  test_moe_experts_fp8(ctx, {.tokens = 1, .top_k = 6, .experts = 32, .hidden = 2048, .inter = 1408});
  test_moe_experts_fp8(ctx, {.tokens = 4, .top_k = 6, .experts = 16, .hidden = 2048, .inter = 1408, .skips = false});
  test_moe_experts_fp8(ctx, {.tokens = 2, .top_k = 6, .experts = 16, .hidden = 2048, .inter = 704});
  test_moe_experts_fp8(ctx, {.tokens = 3, .top_k = 8, .experts = 16, .hidden = 7168, .inter = 256});
  test_moe_experts_fp8(ctx, {.tokens = 2, .top_k = 8, .experts = 16, .hidden = 512, .inter = 2048});
  test_moe_experts_fp8(ctx, {.tokens = 2, .top_k = 16, .experts = 32, .hidden = 256, .inter = 1600});
  test_moe_experts_fp8(ctx, {.tokens = 5, .top_k = 2, .experts = 4, .hidden = 64, .inter = 40});
  test_moe_experts_fp8(ctx, {.tokens = 1, .top_k = 1, .experts = 1, .hidden = 8, .inter = 8});
  test_moe_experts_fp8(ctx, {.tokens = 7, .top_k = 3, .experts = 5, .hidden = 24, .inter = 16});
  test_moe_experts_fp8(ctx, {.tokens = 4, .top_k = 6, .experts = 64, .hidden = 520, .inter = 264});
  test_moe_experts_fp8(ctx, {.tokens = 2, .top_k = 64, .experts = 64, .hidden = 16, .inter = 8});
  // Shared experts folded in: V3's one (inter 2048), two slices of 1408 (the second slice's gate rows start inside
  // a 128-row scale block), 704 (up rows share a scale block with gate rows), 8-byte code loads.
  test_moe_experts_fp8(ctx, {.tokens = 1, .top_k = 8, .experts = 16, .hidden = 7168, .inter = 2048, .n_shared = 1});
  test_moe_experts_fp8(ctx, {.tokens = 3, .top_k = 6, .experts = 16, .hidden = 2048, .inter = 1408, .n_shared = 2});
  test_moe_experts_fp8(ctx, {.tokens = 2, .top_k = 6, .experts = 16, .hidden = 2048, .inter = 704, .n_shared = 3});
  test_moe_experts_fp8(ctx, {.tokens = 7, .top_k = 3, .experts = 5, .hidden = 24, .inter = 40, .n_shared = 2});
  for (int split : {2, 4}) {
    test_moe_experts_fp8(ctx, {.tokens = 1, .top_k = 8, .experts = 16, .hidden = 7168, .inter = 2048, .n_shared = 1,
                               .down_split = split});
    test_moe_experts_fp8(ctx, {.tokens = 1, .top_k = 3, .experts = 5, .hidden = 24, .inter = 40, .n_shared = 2,
                               .down_split = split});
  }

  // Decode GEMV bandwidth on DeepSeek-V3 shapes (info only).
  time_gemv_fp8(ctx, 7168, 2048);
  time_gemv_fp8(ctx, 2048, 7168);
  time_gemv_fp8(ctx, 24576, 1536);
  time_gemv_fp8(ctx, 18432 * 2, 7168);
}

}  // namespace dsi::cuda_test
