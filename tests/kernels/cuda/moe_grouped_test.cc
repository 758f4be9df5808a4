// MoE routed experts as grouped GEMMs (cuda_moe_grouped.h) against a host reference in double. The reference
// rounds x and h to bf16 as the kernels do, which allows a tight tolerance; a second check against the unrounded
// formula uses a loose one. The error of a case is max |got - want| over the checked rows divided by the rms of the
// experts' part (want - out0), so that out0 does not dilute it.
// Cases: partial tiles in m, n and k; skipped pairs (-1 and num_experts) and a token choosing one expert twice; a
// hot expert with many row tiles beside experts nobody chose (their weights are NaN, so a stray read shows); every
// pair skipped; each tile shape forced; DeepSeek-V2-Lite and V3 widths. The workspace starts as NaN, a rerun must
// match bitwise, and some cases replay a CUDA graph after the ids changed on the device (so the row tiles change).
// FP8 weights (DeepSeek-V3's e4m3 codes with 128x128 block scales): codes uniform over the finite codes (both signs,
// subnormals to +-448), scales varying per block by up to 16x (a wrong block shows), NaN codes and scales for the
// experts nobody chose; the reference uses the dequantized weights bf16(f32(code value * scale)) as the kernels do
// (tolerances: see kTolRoundedFp8). Sizes with k % 16 == 8 (8-byte code copies) and k % 16 == 0, inter % 128 != 0
// (gate and up rows of one tile in different scale rows), partial 128-blocks in both dimensions.
// INFO lines time the V2-Lite 512- and 4096-token batches and V3 batches with bf16 and fp8 weights (not checked).
#include <algorithm>
#include <cstring>
#include <functional>
#include <numeric>

#include "cuda_test_util.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_moe.h"
#include "kernels/cuda/cuda_moe_grouped.h"

namespace dsi::cuda_test {
namespace {

#define GROUPED_CUDA_TRY(name, expr) CT_TRY(name, ::dsi::cuda_status((expr), #expr, __FILE__, __LINE__))

constexpr uint16_t kBf16NaN = 0x7fc0;
// Errors are the largest element error over the rms of the experts' part (stricter than over a row norm). Host
// emulation of the kernels gave at most 1e-3 against the rounded reference and 1.7e-2 against the unrounded one
// (bf16 x and h: about 0.25% rms error per element, and this takes the maximum over thousands of elements).
constexpr double kTolRounded = 5e-3;  // against the reference that rounds x and h to bf16 as the kernels
constexpr double kTolExact = 4e-2;    // against the unrounded formula
// FP8 weights uniform over the codes are heavy-tailed (a few products dominate a sum): one bf16 rounding of h that
// differs between the kernel's f32 sums and the reference's, or the rounding of x and h, moves the largest element
// error more. Host emulation with f32 sums over 80 draws of the FP8 cases: at most 5.8e-3 against the rounded
// reference and 4.4e-2 against the unrounded one. A wrong scale block or a misplaced chunk of codes gives O(0.1-1).
constexpr double kTolRoundedFp8 = 2e-2;
constexpr double kTolExactFp8 = 1e-1;

struct GroupedCase {
  int64_t tokens, top_k, experts, hidden, inter;
  int64_t block_m = 0;       // 0: the launcher's choice
  int gemm_warps = 0;        // 0: the launcher's choice
  cuda::MoeGemmKernel kernel = cuda::MoeGemmKernel::kAuto;
  cuda::MoeGather gather = cuda::MoeGather::kAuto;  // of the reference-checked call and its graph
  int64_t unused = 0;        // the last `unused` experts are chosen by no pair
  int64_t check_every = 1;   // reference rows: tokens t % check_every == 0 (large shapes)
  bool skips = true;         // some pairs routed to -1 and num_experts; token 2 routes one expert twice
  bool hot = false;          // every token routes expert 0: many row tiles for one expert
  bool all_skipped = false;  // every id is -1
  bool graph = false;        // also replay the call from a CUDA graph, with new ids
  bool fp8 = false;          // e4m3 weights with block scales
};

struct GroupedInputs {
  std::vector<float> x, weights, out0;
  std::vector<int32_t> ids;
  std::vector<uint16_t> w13, w2;  // NaN for experts that no pair chose; fp8: the dequantized weights
  std::vector<uint8_t> c13, c2;   // fp8: the codes (NaN codes for experts that no pair chose)
  std::vector<float> s13, s2;     // fp8: the block scales (NaN for experts that no pair chose)
};

// Uniform bf16 values in (-a, a) from a xorshift stream (V2-Lite's experts hold 550M weights: mt19937 is slow).
void fill_bf16(uint16_t* w, size_t n, float a, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const float u = static_cast<float>(s >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    w[i] = f32_to_bf16(a * (2.0f * u - 1.0f));
  }
}

constexpr uint8_t kFp8NaN = 0x7f;

// Uniform finite e4m3 codes, both signs, subnormals to +-448 (the NaN codes 0x7f / 0xff become 0x7e / 0xfe).
void fill_fp8(uint8_t* c, size_t n, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const auto v = static_cast<uint8_t>(s >> 56);
    c[i] = (v & 0x7f) == 0x7f ? v ^ 1 : v;
  }
}

// Block scales base * 2^u, u uniform in [-2, 2].
std::vector<float> random_scales(size_t n, float base) {
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> v(n);
  for (float& s : v) s = base * std::exp2(dist(rng()));
  return v;
}

int64_t blocks128(int64_t n) { return (n + 127) / 128; }

constexpr float kCodeScaleRms = 100.0f * 1.7f * 1.7320508f;  // rms code x rms 2^u x sqrt(3)

// w[r, k] = bf16(f32(code value * scale[r / 128, k / 128])) for a [rows, cols] matrix, as the kernels dequantize.
void dequantize(const uint8_t* codes, const float* scale, int64_t rows, int64_t cols, uint16_t* w) {
  const int64_t kb = blocks128(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < cols; ++k) {
      const float v = fp8e4m3_to_f32(codes[r * cols + k]) * scale[(r / 128) * kb + k / 128];
      w[r * cols + k] = f32_to_bf16(v);
    }
  }
}

// Distinct experts per token among the first experts - unused.
std::vector<int32_t> make_ids(const GroupedCase& c) {
  std::vector<int32_t> ids(c.tokens * c.top_k, -1);
  if (c.all_skipped) return ids;
  const int64_t active = c.experts - c.unused;
  DSI_CHECK(active >= c.top_k, "make_ids: ", active, " active experts for top_k ", c.top_k);
  std::vector<int32_t> perm(active);
  for (int64_t t = 0; t < c.tokens; ++t) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng());
    int32_t* tok = ids.data() + t * c.top_k;
    std::copy(perm.begin(), perm.begin() + c.top_k, tok);
    if (c.hot) {  // expert 0 at position t % top_k
      int32_t* zero = std::find(tok, tok + c.top_k, 0);
      if (zero != tok + c.top_k) {
        std::swap(*zero, tok[t % c.top_k]);
      } else {
        tok[t % c.top_k] = 0;
      }
    }
  }
  if (c.skips) {
    for (size_t p = 5; p < ids.size(); p += 11) ids[p] = -1;
    ids.back() = -1;
    if (ids.size() > 2) ids[1] = static_cast<int32_t>(c.experts);  // out of range: skipped
    if (c.tokens > 2 && c.top_k > 1) ids[2 * c.top_k + 1] = ids[2 * c.top_k];
  }
  return ids;
}

// Each valid id moves to the next chosen expert (cyclically): the same experts, other row counts per expert.
std::vector<int32_t> next_chosen(const std::vector<int32_t>& ids, int64_t experts) {
  std::vector<int32_t> chosen;
  for (int32_t e : ids) {
    if (e >= 0 && e < experts) chosen.push_back(e);
  }
  std::sort(chosen.begin(), chosen.end());
  chosen.erase(std::unique(chosen.begin(), chosen.end()), chosen.end());
  std::vector<int32_t> out = ids;
  for (int32_t& e : out) {
    if (e < 0 || e >= experts) continue;
    const size_t i = std::lower_bound(chosen.begin(), chosen.end(), e) - chosen.begin();
    e = chosen[(i + 1) % chosen.size()];
  }
  return out;
}

GroupedInputs make_inputs(const GroupedCase& c) {
  GroupedInputs in;
  in.ids = make_ids(c);
  in.x = random_f32(c.tokens * c.hidden);
  in.weights = random_f32(c.tokens * c.top_k, 0.0f, 1.0f);
  in.out0 = random_f32(c.tokens * c.hidden);
  // Scales that keep g, u, h and each expert's contribution near 1.
  const int64_t e13 = 2 * c.inter * c.hidden, e2 = c.hidden * c.inter;
  in.w13.assign(c.experts * e13, kBf16NaN);
  in.w2.assign(c.experts * e2, kBf16NaN);
  std::vector<bool> chosen(c.experts, false);
  for (int32_t e : in.ids) {
    if (e >= 0 && e < c.experts) chosen[e] = true;
  }
  const float a13 = 3.0f / std::sqrt(static_cast<float>(c.hidden));
  const float a2 = 3.0f / std::sqrt(static_cast<float>(c.inter));
  if (!c.fp8) {
    for (int64_t e = 0; e < c.experts; ++e) {
      if (!chosen[e]) continue;
      fill_bf16(in.w13.data() + e * e13, e13, a13, rng()());
      fill_bf16(in.w2.data() + e * e2, e2, a2, rng()());
    }
    return in;
  }
  // Codes have an rms value near 100 and 2^u one near 1.7: these bases give the weight rms of the bf16 cases
  // (uniform in (-a, a): a / sqrt(3)).
  const int64_t es13 = blocks128(2 * c.inter) * blocks128(c.hidden), es2 = blocks128(c.hidden) * blocks128(c.inter);
  in.c13.assign(c.experts * e13, kFp8NaN);
  in.c2.assign(c.experts * e2, kFp8NaN);
  in.s13.assign(c.experts * es13, NAN);
  in.s2.assign(c.experts * es2, NAN);
  for (int64_t e = 0; e < c.experts; ++e) {
    if (!chosen[e]) continue;
    fill_fp8(in.c13.data() + e * e13, e13, rng()());
    fill_fp8(in.c2.data() + e * e2, e2, rng()());
    const auto s13 = random_scales(es13, a13 / kCodeScaleRms), s2 = random_scales(es2, a2 / kCodeScaleRms);
    std::copy(s13.begin(), s13.end(), in.s13.begin() + e * es13);
    std::copy(s2.begin(), s2.end(), in.s2.begin() + e * es2);
    dequantize(in.c13.data() + e * e13, s13.data(), 2 * c.inter, c.hidden, in.w13.data() + e * e13);
    dequantize(in.c2.data() + e * e2, s2.data(), c.hidden, c.inter, in.w2.data() + e * e2);
  }
  return in;
}

double bf16_round(double v) { return bf16_to_f32(f32_to_bf16(static_cast<float>(v))); }

struct Reference {
  std::vector<double> rounded, exact;
};

// out0 + the formula of cuda_moe_grouped.h in double for the tokens t % check_every == 0 (other rows stay out0):
// `rounded` rounds x and h to bf16 as the kernels do, `exact` does not.
Reference reference(const GroupedCase& c, const GroupedInputs& in, const std::vector<int32_t>& ids) {
  const int64_t H = c.hidden, I = c.inter;
  Reference r{std::vector<double>(in.out0.begin(), in.out0.end()), std::vector<double>(in.out0.begin(), in.out0.end())};
  std::vector<double> xr(H), hr(I), hx(I);
  for (int64_t t = 0; t < c.tokens; t += c.check_every) {
    const float* x = in.x.data() + t * H;
    for (int64_t k = 0; k < H; ++k) xr[k] = bf16_round(x[k]);
    for (int64_t j = 0; j < c.top_k; ++j) {
      const int32_t e = ids[t * c.top_k + j];
      if (e < 0 || e >= c.experts) continue;
      const uint16_t* w13 = in.w13.data() + e * 2 * I * H;
      for (int64_t i = 0; i < I; ++i) {
        const uint16_t* wg = w13 + i * H;
        const uint16_t* wu = w13 + (I + i) * H;
        double g = 0.0, u = 0.0, gr = 0.0, ur = 0.0;
        for (int64_t k = 0; k < H; ++k) {
          const double a = bf16_to_f32(wg[k]), b = bf16_to_f32(wu[k]);
          g += a * x[k];
          u += b * x[k];
          gr += a * xr[k];
          ur += b * xr[k];
        }
        hx[i] = g / (1.0 + std::exp(-g)) * u;
        hr[i] = bf16_round(gr / (1.0 + std::exp(-gr)) * ur);
      }
      const uint16_t* w2 = in.w2.data() + e * H * I;
      const double wt = in.weights[t * c.top_k + j];
      for (int64_t n = 0; n < H; ++n) {
        double dr = 0.0, dx = 0.0;
        for (int64_t i = 0; i < I; ++i) {
          const double b = bf16_to_f32(w2[n * I + i]);
          dr += b * hr[i];
          dx += b * hx[i];
        }
        r.rounded[t * H + n] += wt * dr;
        r.exact[t * H + n] += wt * dx;
      }
    }
  }
  return r;
}

// max |got - want| over the checked rows / rms over them of want - out0 (the experts' part); NaN counts as inf.
// With nothing routed the rms is 0 and any difference fails.
double contribution_err(const GroupedCase& c, const std::vector<float>& got, const std::vector<double>& want,
                        const std::vector<float>& out0) {
  double max_err = 0.0, sum_sq = 0.0;
  int64_t n = 0;
  for (int64_t t = 0; t < c.tokens; t += c.check_every) {
    for (int64_t k = 0; k < c.hidden; ++k) {
      const int64_t i = t * c.hidden + k;
      const double part = want[i] - out0[i];
      sum_sq += part * part;
      ++n;
      const double e = std::fabs(got[i] - want[i]);
      max_err = std::isnan(e) ? INFINITY : std::max(max_err, e);
    }
  }
  const double rms = std::sqrt(sum_sq / static_cast<double>(std::max<int64_t>(n, 1)));
  return max_err == 0.0 ? 0.0 : max_err / std::max(rms, 1e-30);
}

// Overwrites a device buffer from the host (stream-ordered; abort on failure like upload()).
template <class T>
void copy_to(CudaContext& ctx, DeviceBuffer<T>& buf, const std::vector<T>& host) {
  DSI_CHECK(cudaMemcpyAsync(buf.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice,
                            ctx.stream()) == cudaSuccess);
}

// The workspace filled with 0xff bytes: NaN as bf16 and f32, -1 as int32.
void poison(CudaContext& ctx, DeviceBuffer<uint8_t>& ws) {
  DSI_CHECK(cudaMemsetAsync(ws.get(), 0xff, ws.size(), ctx.stream()) == cudaSuccess);
}

DeviceBuffer<uint8_t> workspace(CudaContext& ctx, size_t bytes) {
  auto buf = pool_alloc<uint8_t>(ctx.pool(), std::max<size_t>(bytes, 1));
  DSI_CHECK(buf.ok(), "workspace: ", buf.status().to_string());
  poison(ctx, *buf);
  return std::move(buf).value();
}

double fraction_differing_bits(const std::vector<float>& a, const std::vector<float>& b) {
  int64_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return static_cast<double>(diff) / static_cast<double>(std::max<size_t>(a.size(), 1));
}

struct GraphHolder {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~GraphHolder() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
};

std::string case_name(const GroupedCase& c) {
  return str_cat("moe_experts_grouped tokens=", c.tokens, " top_k=", c.top_k, " experts=", c.experts, " hidden=",
                 c.hidden, " inter=", c.inter, " block_m=", c.block_m == 0 ? "auto" : std::to_string(c.block_m),
                 c.skips ? " +skips" : "", c.hot ? " +hot" : "", c.unused > 0 ? " +unused" : "",
                 c.all_skipped ? " all-skipped" : "", c.fp8 ? " fp8" : "",
                 c.gemm_warps > 0 ? str_cat(" warps=", c.gemm_warps) : std::string(),
                 c.kernel == cuda::MoeGemmKernel::kWgmma ? " wgmma"
                 : c.kernel == cuda::MoeGemmKernel::kMma ? " mma" : "",
                 c.gather == cuda::MoeGather::kInLoader ? " in-loader"
                 : c.gather == cuda::MoeGather::kCopy   ? " copy" : "");
}

void test_grouped(CudaContext& ctx, const GroupedCase& c) {
  const std::string name = case_name(c);
  const double tol_rounded = c.fp8 ? kTolRoundedFp8 : kTolRounded, tol_exact = c.fp8 ? kTolExactFp8 : kTolExact;
  const GroupedInputs in = make_inputs(c);
  const Reference want = reference(c, in, in.ids);
  const size_t out_n = c.tokens * c.hidden;

  auto dx = upload(ctx, in.x), dw = upload(ctx, in.weights), dout = upload(ctx, in.out0);
  auto dids = upload(ctx, in.ids);
  // bf16 weights, or the fp8 codes and scales (the dequantized bf16 copies stay on the host).
  auto dw13 = upload(ctx, c.fp8 ? std::vector<uint16_t>() : in.w13);
  auto dw2 = upload(ctx, c.fp8 ? std::vector<uint16_t>() : in.w2);
  auto dc13 = upload(ctx, in.c13), dc2 = upload(ctx, in.c2);
  auto ds13 = upload(ctx, in.s13), ds2 = upload(ctx, in.s2);
  const size_t ws_bytes = cuda::moe_grouped_workspace_bytes(c.tokens, c.top_k, c.experts, c.hidden, c.inter);
  auto ws = workspace(ctx, ws_bytes);
  cuda::MoeGroupedArgs a{.x = dx.get(), .ids = dids.get(), .weights = dw.get(), .w13 = dw13.get(),
                         .w2 = dw2.get(), .out = dout.get(), .workspace = ws.get(), .workspace_bytes = ws_bytes,
                         .num_tokens = c.tokens, .top_k = c.top_k, .num_experts = c.experts,
                         .hidden = c.hidden, .inter = c.inter, .block_m = c.block_m};
  a.gemm_warps = c.gemm_warps;
  a.gemm_kernel = c.kernel;
  a.gather = c.gather;
  a.plan = cuda::MoePlanMatch::kMatch;  // the baseline of the ballot comparison below, whatever the environment
  if (c.fp8) {
    a.w13 = dc13.get();
    a.w2 = dc2.get();
    a.w_dtype = DType::kF8E4M3;
    a.w13_scale = ds13.get();
    a.w2_scale = ds2.get();
  }
  CT_TRY(name, cuda::moe_experts_grouped(ctx, a));
  const auto got = download(ctx, dout, out_n);
  // The plan's row of each pair (the workspace's first int32 [pairs]), for the ballot comparison below.
  const size_t plan_bytes = static_cast<size_t>(c.tokens * c.top_k) * sizeof(int32_t);
  const auto ws_head = [&] { return download(ctx, ws, plan_bytes); };
  const auto plan_match = ws_head();
  report(name, contribution_err(c, got, want.rounded, in.out0), tol_rounded);
  report(name + " vs unrounded", contribution_err(c, got, want.exact, in.out0), tol_exact);

  // Same inputs again, from a poisoned workspace: no atomics in any sum, so the same bits.
  copy_to(ctx, dout, in.out0);
  poison(ctx, ws);
  CT_TRY(name, cuda::moe_experts_grouped(ctx, a));
  report(name + " rerun (fraction of bits differing)", fraction_differing_bits(download(ctx, dout, out_n), got), 0.0);

  // Each way of feeding gemm 1 (rows copied into A, or read from x in place through the plan's token of each row;
  // from f32 x or from the caller's bf16 x) gives the same bits.
  auto dxb = upload(ctx, to_bf16(in.x));
  for (const auto gather : {cuda::MoeGather::kCopy, cuda::MoeGather::kInLoader}) {
    for (const bool from_bf16 : {false, true}) {
      cuda::MoeGroupedArgs g = a;
      g.gather = gather;
      if (from_bf16) {
        g.x = nullptr;  // x_bf16 alone must do
        g.x_bf16 = dxb.get();
      }
      const std::string gname = str_cat(name, gather == cuda::MoeGather::kCopy ? " gather=copy" : " gather=in-loader",
                                        from_bf16 ? " x_bf16" : "");
      copy_to(ctx, dout, in.out0);
      poison(ctx, ws);
      CT_TRY(gname, cuda::moe_experts_grouped(ctx, g));
      report(gname + " (fraction of bits differing)", fraction_differing_bits(download(ctx, dout, out_n), got), 0.0);
    }
  }
  // The plan's pair ranking by ballots: the same plan, so the same bits.
  {
    cuda::MoeGroupedArgs g = a;
    g.plan = cuda::MoePlanMatch::kBallot;
    copy_to(ctx, dout, in.out0);
    poison(ctx, ws);
    CT_TRY(name + " plan=ballot", cuda::moe_experts_grouped(ctx, g));
    report(name + " plan=ballot (fraction of bits differing)",
           fraction_differing_bits(download(ctx, dout, out_n), got), 0.0);
    report(name + " plan=ballot rows of the pairs (1 if they differ)", ws_head() == plan_match ? 0.0 : 1.0, 0.0);
  }

  if (!c.graph) return;
  // Capture once, replay with the captured ids, then with other ids written into the same device buffer: the
  // grouping must happen on the device at replay time.
  const std::string gname = name + " graph";
  GraphHolder g;
  GROUPED_CUDA_TRY(gname, cudaStreamBeginCapture(ctx.stream(), cudaStreamCaptureModeThreadLocal));
  const Status captured = cuda::moe_experts_grouped(ctx, a);
  const cudaError_t ended = cudaStreamEndCapture(ctx.stream(), &g.graph);
  CT_TRY(gname, captured);
  GROUPED_CUDA_TRY(gname, ended);
  GROUPED_CUDA_TRY(gname, cudaGraphInstantiate(&g.exec, g.graph, 0));
  copy_to(ctx, dout, in.out0);
  poison(ctx, ws);
  GROUPED_CUDA_TRY(gname, cudaGraphLaunch(g.exec, ctx.stream()));
  report(gname + " replay", contribution_err(c, download(ctx, dout, out_n), want.rounded, in.out0), tol_rounded);

  const std::vector<int32_t> ids2 = next_chosen(in.ids, c.experts);
  const Reference want2 = reference(c, in, ids2);
  copy_to(ctx, dids, ids2);
  copy_to(ctx, dout, in.out0);
  poison(ctx, ws);
  GROUPED_CUDA_TRY(gname, cudaGraphLaunch(g.exec, ctx.stream()));
  report(gname + " replay with new ids", contribution_err(c, download(ctx, dout, out_n), want2.rounded, in.out0),
         tol_rounded);
}

void test_grouped_args(CudaContext& ctx) {
  const std::string name = "moe_experts_grouped argument checks";
  const auto code = [&](const cuda::MoeGroupedArgs& a) { return cuda::moe_experts_grouped(ctx, a).code(); };
  const cuda::MoeGroupedArgs ok{.num_tokens = 1, .top_k = 2, .num_experts = 4, .hidden = 16, .inter = 8};
  cuda::MoeGroupedArgs a = ok;
  a.hidden = 12;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.inter = 0;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.inter = 20;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.top_k = 0;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.num_experts = 0;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.num_experts = 1025;
  CT_CHECK(name, code(a) == StatusCode::kUnsupported);
  a = ok;
  a.block_m = 48;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.num_tokens = -1;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  CT_CHECK(name, cuda::moe_experts_grouped(ctx, ok).message().find("x is null") != std::string::npos);
  a = ok;
  a.num_tokens = 0;  // nothing to do: no pointers needed
  CT_CHECK(name, code(a) == StatusCode::kOk);
  CT_CHECK(name, cuda::moe_grouped_workspace_bytes(0, 2, 4, 16, 8) == 0);

  // Every pointer valid and aligned (the checks run before any launch), then one thing wrong at a time.
  const size_t need = cuda::moe_grouped_workspace_bytes(1, 2, 4, 16, 8);
  auto buf = workspace(ctx, need + 16);
  void* p = buf.get();
  const cuda::MoeGroupedArgs full{.x = static_cast<const float*>(p), .ids = static_cast<const int32_t*>(p),
                                  .weights = static_cast<const float*>(p), .w13 = static_cast<const uint16_t*>(p),
                                  .w2 = static_cast<const uint16_t*>(p), .out = static_cast<float*>(p),
                                  .workspace = p, .workspace_bytes = need - 1, .num_tokens = 1, .top_k = 2,
                                  .num_experts = 4, .hidden = 16, .inter = 8};
  const std::string small = cuda::moe_experts_grouped(ctx, full).message();
  CT_CHECK(name, small.find("workspace of") != std::string::npos);
  a = full;
  a.workspace_bytes = need;
  a.out = static_cast<float*>(p) + 1;  // 4-byte aligned only
  CT_CHECK(name, cuda::moe_experts_grouped(ctx, a).message().find("out is not 16-byte aligned") != std::string::npos);
  // bf16 x in place of x: checked instead of x (which may then be null).
  a = full;
  a.workspace_bytes = need;
  a.x = nullptr;
  a.x_bf16 = static_cast<const uint16_t*>(p) + 4;  // 8-byte aligned only
  CT_CHECK(name, cuda::moe_experts_grouped(ctx, a).message().find("x_bf16 is not 16-byte aligned") !=
                     std::string::npos);
  // FP8: scales required; other weight types refused.
  a = full;
  a.workspace_bytes = need;
  a.w_dtype = DType::kF8E4M3;
  a.w13_scale = static_cast<const float*>(p);
  const Status no_scale = cuda::moe_experts_grouped(ctx, a);
  CT_CHECK(name, no_scale.code() == StatusCode::kInvalidArgument);
  CT_CHECK(name, no_scale.message().find("w2_scale") != std::string::npos);
  a.w_dtype = DType::kF32;
  CT_CHECK(name, code(a) == StatusCode::kUnsupported);
  // wgmma: bf16 weights or FP8 ones with hidden and inter multiples of 16, and 64- or 128-row tiles only.
  a = full;
  a.workspace_bytes = need;
  a.gemm_kernel = cuda::MoeGemmKernel::kWgmma;
  a.block_m = 32;
  const Status wg32 = cuda::moe_experts_grouped(ctx, a);
  CT_CHECK(name, wg32.code() == StatusCode::kUnsupported && wg32.message().find("wgmma") != std::string::npos);
  a.block_m = 128;
  a.w_dtype = DType::kF8E4M3;
  a.w13_scale = a.w2_scale = static_cast<const float*>(p);
  CT_CHECK(name, code(a) == StatusCode::kUnsupported);
  std::printf("PASS %s\n", name.c_str());
  tally().passed++;
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

// Info only: DeepSeek-V2-Lite experts (all 64 chosen, no skips), a decode-sized batch of 512 tokens and a prefill
// of 4096, for the launcher's tile choice and each forced one; the decode GEMV on the 512 tokens for comparison.
void time_grouped(CudaContext& ctx) {
  constexpr int64_t kHidden = 2048, kInter = 1408, kExperts = 64, kTopK = 6;
  std::vector<uint16_t> w13(kExperts * 2 * kInter * kHidden), w2(kExperts * kHidden * kInter);
  fill_bf16(w13.data(), w13.size(), 3.0f / std::sqrt(static_cast<float>(kHidden)), rng()());
  fill_bf16(w2.data(), w2.size(), 3.0f / std::sqrt(static_cast<float>(kInter)), rng()());
  auto dw13 = upload(ctx, w13), dw2 = upload(ctx, w2);
  for (const int64_t tokens : {512, 4096}) {
    const GroupedCase c{.tokens = tokens, .top_k = kTopK, .experts = kExperts, .hidden = kHidden, .inter = kInter,
                        .skips = false};
    auto dx = upload(ctx, random_f32(tokens * kHidden)), dout = upload(ctx, random_f32(tokens * kHidden));
    auto dw = upload(ctx, random_f32(tokens * kTopK, 0.0f, 1.0f));
    auto dids = upload(ctx, make_ids(c));
    const size_t ws_bytes = cuda::moe_grouped_workspace_bytes(tokens, kTopK, kExperts, kHidden, kInter);
    auto ws = workspace(ctx, ws_bytes);
    const double flops = 6.0 * static_cast<double>(tokens * kTopK) * kHidden * kInter;
    // warps -1: wgmma.
    for (const auto& [bm, warps] :
         {std::pair{0, 0}, {32, 0}, {64, 8}, {64, 4}, {64, -1}, {128, 8}, {128, 4}, {128, -1}}) {
      const std::string name = str_cat("moe_experts_grouped timing V2-Lite tokens=", tokens, " top_k=", kTopK,
                                       " block_m=", bm == 0 ? "auto" : std::to_string(bm),
                                       warps > 0 ? str_cat(" warps=", warps) : warps < 0 ? " wgmma" : "");
      cuda::MoeGroupedArgs a{.x = dx.get(), .ids = dids.get(), .weights = dw.get(), .w13 = dw13.get(),
                             .w2 = dw2.get(), .out = dout.get(), .workspace = ws.get(),
                             .workspace_bytes = ws_bytes, .num_tokens = tokens, .top_k = kTopK,
                             .num_experts = kExperts, .hidden = kHidden, .inter = kInter, .block_m = bm};
      a.gemm_warps = std::max(warps, 0);
      a.gemm_kernel = warps < 0 ? cuda::MoeGemmKernel::kWgmma
                      : warps > 0 ? cuda::MoeGemmKernel::kMma : cuda::MoeGemmKernel::kAuto;
      double us = 0.0;
      CT_TRY(name, time_calls(ctx, [&] { return cuda::moe_experts_grouped(ctx, a); }, &us));
      std::printf("INFO %s: %.1f us/call, %.1f TFLOP/s\n", name.c_str(), us, flops / us * 1e-6);
    }
    // The launcher's tiles with each gather: rows copied, read in place from f32 x (converted here), from bf16 x.
    auto dxb = upload(ctx, to_bf16(random_f32(tokens * kHidden)));
    for (const int form : {0, 1, 2, 3}) {
      const std::string name = str_cat("moe_experts_grouped timing V2-Lite tokens=", tokens, " top_k=", kTopK,
                                       " block_m=auto gather=", form == 0 || form == 3 ? "copy" : "in-loader",
                                       form == 2 ? " x_bf16" : "", form == 3 ? " plan=ballot" : "");
      cuda::MoeGroupedArgs a{.x = dx.get(), .ids = dids.get(), .weights = dw.get(), .w13 = dw13.get(),
                             .w2 = dw2.get(), .out = dout.get(), .workspace = ws.get(),
                             .workspace_bytes = ws_bytes, .num_tokens = tokens, .top_k = kTopK,
                             .num_experts = kExperts, .hidden = kHidden, .inter = kInter};
      a.gather = form == 0 || form == 3 ? cuda::MoeGather::kCopy : cuda::MoeGather::kInLoader;
      a.plan = form == 3 ? cuda::MoePlanMatch::kBallot : cuda::MoePlanMatch::kMatch;
      if (form == 2) a.x_bf16 = dxb.get();
      double us = 0.0;
      CT_TRY(name, time_calls(ctx, [&] { return cuda::moe_experts_grouped(ctx, a); }, &us));
      std::printf("INFO %s: %.1f us/call, %.1f TFLOP/s\n", name.c_str(), us, flops / us * 1e-6);
    }
    if (tokens != 512) continue;
    const std::string name = str_cat("moe_experts_gemv timing V2-Lite tokens=", tokens, " top_k=", kTopK);
    auto dh = upload(ctx, std::vector<float>(tokens * kTopK * kInter));
    const cuda::MoeExpertsArgs g{.x = dx.get(), .ids = dids.get(), .weights = dw.get(), .w13 = dw13.get(),
                                 .w2 = dw2.get(), .h = dh.get(), .out = dout.get(), .num_tokens = tokens,
                                 .top_k = kTopK, .num_experts = kExperts, .hidden = kHidden, .inter = kInter};
    double us = 0.0;
    CT_TRY(name, time_calls(ctx, [&] { return cuda::moe_experts_gemv(ctx, g); }, &us));
    std::printf("INFO %s: %.1f us/call, %.1f TFLOP/s\n", name.c_str(), us, flops / us * 1e-6);
  }
}

// Info only: DeepSeek-V3 experts (hidden 7168, inter 2048, top_k 8), bf16 against fp8 weights at the launcher's tile
// choice. 32 experts (all chosen) keep the host's setup short; the rows per expert of 64 / 512 / 4096 tokens here
// are those of 512 / 4096 / 32768 tokens over V3's 256 experts.
void time_grouped_v3(CudaContext& ctx) {
  constexpr int64_t kHidden = 7168, kInter = 2048, kExperts = 32, kTopK = 8;
  const int64_t e13 = 2 * kInter * kHidden, e2 = kHidden * kInter;
  const float a13 = 3.0f / std::sqrt(static_cast<float>(kHidden)), a2 = 3.0f / std::sqrt(static_cast<float>(kInter));
  std::vector<uint16_t> w(kExperts * e13);
  fill_bf16(w.data(), w.size(), a13, rng()());
  auto dw13 = upload(ctx, w);
  w.resize(kExperts * e2);
  fill_bf16(w.data(), w.size(), a2, rng()());
  auto dw2 = upload(ctx, w);
  w = {};
  std::vector<uint8_t> codes(kExperts * e13);
  fill_fp8(codes.data(), codes.size(), rng()());
  auto dc13 = upload(ctx, codes);
  codes.resize(kExperts * e2);
  fill_fp8(codes.data(), codes.size(), rng()());
  auto dc2 = upload(ctx, codes);
  codes = {};
  auto ds13 = upload(ctx, random_scales(kExperts * blocks128(2 * kInter) * blocks128(kHidden), a13 / kCodeScaleRms));
  auto ds2 = upload(ctx, random_scales(kExperts * blocks128(kHidden) * blocks128(kInter), a2 / kCodeScaleRms));
  for (const int64_t tokens : {64, 512, 4096}) {
    const GroupedCase c{.tokens = tokens, .top_k = kTopK, .experts = kExperts, .hidden = kHidden, .inter = kInter,
                        .skips = false};
    auto dx = upload(ctx, random_f32(tokens * kHidden)), dout = upload(ctx, random_f32(tokens * kHidden));
    auto dw = upload(ctx, random_f32(tokens * kTopK, 0.0f, 1.0f));
    auto dids = upload(ctx, make_ids(c));
    const size_t ws_bytes = cuda::moe_grouped_workspace_bytes(tokens, kTopK, kExperts, kHidden, kInter);
    auto ws = workspace(ctx, ws_bytes);
    const double flops = 6.0 * static_cast<double>(tokens * kTopK) * kHidden * kInter;
    // warps -1: wgmma (128-row tiles).
    for (const auto& [fp8, warps] :
         {std::pair{false, 8}, {false, 4}, {false, -1}, {true, 8}, {true, 4}, {true, -1}}) {
      const std::string name = str_cat("moe_experts_grouped timing V3 tokens=", tokens, " top_k=", kTopK,
                                       " experts=", kExperts, fp8 ? " fp8" : " bf16",
                                       warps > 0 ? str_cat(" warps=", warps) : std::string(" wgmma"));
      cuda::MoeGroupedArgs a{.x = dx.get(), .ids = dids.get(), .weights = dw.get(), .w13 = dw13.get(),
                             .w2 = dw2.get(), .out = dout.get(), .workspace = ws.get(), .workspace_bytes = ws_bytes,
                             .num_tokens = tokens, .top_k = kTopK, .num_experts = kExperts, .hidden = kHidden,
                             .inter = kInter};
      a.gemm_warps = std::max(warps, 0);
      a.gemm_kernel = warps < 0 ? cuda::MoeGemmKernel::kWgmma : cuda::MoeGemmKernel::kMma;
      if (warps < 0) {
        a.block_m = 128;
        if (tokens * kTopK / kExperts < 64) continue;  // mostly padding at 128 rows
      }
      if (fp8) {
        a.w13 = dc13.get();
        a.w2 = dc2.get();
        a.w_dtype = DType::kF8E4M3;
        a.w13_scale = ds13.get();
        a.w2_scale = ds2.get();
      }
      double us = 0.0;
      CT_TRY(name, time_calls(ctx, [&] { return cuda::moe_experts_grouped(ctx, a); }, &us));
      const double weight_bytes = static_cast<double>(kExperts * (e13 + e2)) * (fp8 ? 1.0 : 2.0);
      std::printf("INFO %s (%ld rows per expert): %.1f us/call, %.1f TFLOP/s, all weights once = %.0f GB/s\n",
                  name.c_str(), static_cast<long>(tokens * kTopK / kExperts), us, flops / us * 1e-6,
                  weight_bytes / us * 1e-3);
    }
  }
}

}  // namespace

void run_moe_grouped_tests(CudaContext& ctx) {
  test_grouped_args(ctx);
  // Partial tiles everywhere: hidden 72 (a k tile and a part; 72 of 128 columns), inter 40 (40 of 64 columns).
  test_grouped(ctx, {.tokens = 1, .top_k = 3, .experts = 5, .hidden = 72, .inter = 40});
  test_grouped(ctx, {.tokens = 7, .top_k = 3, .experts = 5, .hidden = 72, .inter = 40, .graph = true});
  test_grouped(ctx, {.tokens = 33, .top_k = 3, .experts = 5, .hidden = 72, .inter = 40});
  // A hot expert (every token) beside experts nobody chose, with each tile shape.
  for (const int64_t bm : {32, 64, 128}) {
    test_grouped(ctx, {.tokens = 33, .top_k = 3, .experts = 9, .hidden = 72, .inter = 40, .block_m = bm,
                       .unused = 3, .hot = true});
  }
  // Both warp counts of the 64- and 128-row tiles, bf16 and FP8.
  for (const int64_t bm : {64, 128}) {
    for (const int warps : {4, 8}) {
      test_grouped(ctx, {.tokens = 300, .top_k = 6, .experts = 8, .hidden = 264, .inter = 200, .block_m = bm,
                         .gemm_warps = warps, .hot = true, .graph = true});
      test_grouped(ctx, {.tokens = 300, .top_k = 8, .experts = 16, .hidden = 208, .inter = 272, .block_m = bm,
                         .gemm_warps = warps, .unused = 4, .check_every = 3, .hot = true, .fp8 = true});
      test_grouped(ctx, {.tokens = 33, .top_k = 3, .experts = 9, .hidden = 520, .inter = 264, .block_m = bm,
                         .gemm_warps = warps, .unused = 3, .hot = true, .fp8 = true});
    }
  }
  // wgmma at both tile heights: partial tiles in m, n (inter 200 of 128-column halves, hidden 264 of 256 columns)
  // and k (264 = 4 x 64 + 8), a hot expert beside unused ones, graph replays with new ids; one and several
  // k tiles; V2-Lite and V3 widths.
  for (const int64_t bm : {64, 128}) {
    constexpr auto kW = cuda::MoeGemmKernel::kWgmma;
    test_grouped(ctx, {.tokens = 300, .top_k = 6, .experts = 8, .hidden = 264, .inter = 200, .block_m = bm,
                       .kernel = kW, .hot = true, .graph = true});
    test_grouped(ctx, {.tokens = 33, .top_k = 3, .experts = 9, .hidden = 72, .inter = 40, .block_m = bm,
                       .kernel = kW, .unused = 3, .hot = true});
    test_grouped(ctx, {.tokens = 1, .top_k = 1, .experts = 1, .hidden = 8, .inter = 8, .block_m = bm, .kernel = kW,
                       .skips = false});
    test_grouped(ctx, {.tokens = 700, .top_k = 6, .experts = 16, .hidden = 2048, .inter = 1408, .block_m = bm,
                       .kernel = kW, .unused = 2, .check_every = 16});
    test_grouped(ctx, {.tokens = 160, .top_k = 8, .experts = 10, .hidden = 7168, .inter = 2048, .block_m = bm,
                       .kernel = kW, .check_every = 8});
    // FP8 weights (k % 16 == 0): 16-byte code copies, partial 128-blocks in both dimensions (hidden 400, inter 144:
    // gate and up rows of one tile in different scale rows), NaN codes and scales of unused experts, graph replays.
    test_grouped(ctx, {.tokens = 300, .top_k = 8, .experts = 16, .hidden = 208, .inter = 272, .block_m = bm,
                       .kernel = kW, .unused = 4, .check_every = 3, .hot = true, .graph = true, .fp8 = true});
    test_grouped(ctx, {.tokens = 40, .top_k = 4, .experts = 6, .hidden = 400, .inter = 144, .block_m = bm,
                       .kernel = kW, .unused = 1, .hot = true, .fp8 = true});
    test_grouped(ctx, {.tokens = 1, .top_k = 1, .experts = 1, .hidden = 16, .inter = 16, .block_m = bm, .kernel = kW,
                       .skips = false, .fp8 = true});
    test_grouped(ctx, {.tokens = 160, .top_k = 8, .experts = 10, .hidden = 7168, .inter = 2048, .block_m = bm,
                       .kernel = kW, .check_every = 8, .fp8 = true});
  }
  // Several row tiles per expert (about 225 rows; the hot one 300), partial k tiles (264 = 33 x 8, 200), with each
  // tile shape; the graph replays move the hot expert, so the row tiles of every expert change.
  for (const int64_t bm : {0, 32, 64, 128}) {
    test_grouped(ctx, {.tokens = 300, .top_k = 6, .experts = 8, .hidden = 264, .inter = 200, .block_m = bm,
                       .hot = true, .graph = bm == 0 || bm == 32});
  }
  // Graph replays with new ids while gemm 1 reads x in place: the rows' tokens come from the replayed plan.
  for (const int64_t bm : {32, 128}) {
    test_grouped(ctx, {.tokens = 300, .top_k = 6, .experts = 8, .hidden = 264, .inter = 200, .block_m = bm,
                       .gather = cuda::MoeGather::kInLoader, .hot = true, .graph = true});
  }
  test_grouped(ctx, {.tokens = 300, .top_k = 8, .experts = 16, .hidden = 208, .inter = 272, .block_m = 128,
                     .kernel = cuda::MoeGemmKernel::kWgmma, .gather = cuda::MoeGather::kInLoader, .unused = 4,
                     .check_every = 3, .hot = true, .graph = true, .fp8 = true});
  // Nothing routed: out unchanged (every expert NaN). The smallest problem. The plan's 1024 experts, mostly unchosen.
  // A large top_k.
  test_grouped(ctx, {.tokens = 5, .top_k = 2, .experts = 4, .hidden = 16, .inter = 8, .all_skipped = true});
  test_grouped(ctx, {.tokens = 1, .top_k = 1, .experts = 1, .hidden = 8, .inter = 8, .skips = false});
  test_grouped(ctx, {.tokens = 9, .top_k = 8, .experts = 1024, .hidden = 64, .inter = 32, .graph = true});
  test_grouped(ctx, {.tokens = 20, .top_k = 16, .experts = 32, .hidden = 40, .inter = 24});
  // DeepSeek-V2-Lite decode-sized batches (reference on sampled tokens) and V3 widths with few experts.
  test_grouped(ctx, {.tokens = 64, .top_k = 6, .experts = 64, .hidden = 2048, .inter = 1408, .check_every = 8});
  test_grouped(ctx, {.tokens = 512, .top_k = 6, .experts = 64, .hidden = 2048, .inter = 1408, .check_every = 32});
  test_grouped(ctx, {.tokens = 3, .top_k = 4, .experts = 6, .hidden = 7168, .inter = 2048});

  // FP8 weights. hidden 72 / 520 and inter 40 / 264: k % 16 == 8 (8-byte code copies); 520 and 264 end in a partial
  // 128-block, and inter 264 puts the gate and up rows of one tile in different scale rows. hidden 208 and inter 272:
  // 16-byte copies (272 % 128 != 0 as well). Each tile shape; hot experts beside unused ones (NaN codes and scales).
  test_grouped(ctx, {.tokens = 1, .top_k = 3, .experts = 5, .hidden = 72, .inter = 40, .fp8 = true});
  test_grouped(ctx, {.tokens = 7, .top_k = 3, .experts = 5, .hidden = 72, .inter = 40, .graph = true, .fp8 = true});
  test_grouped(ctx, {.tokens = 33, .top_k = 4, .experts = 9, .hidden = 520, .inter = 264, .fp8 = true});
  for (const int64_t bm : {32, 64, 128}) {
    test_grouped(ctx, {.tokens = 33, .top_k = 3, .experts = 9, .hidden = 520, .inter = 264, .block_m = bm,
                       .unused = 3, .hot = true, .fp8 = true});
  }
  for (const int64_t bm : {0, 32, 64, 128}) {
    test_grouped(ctx, {.tokens = 300, .top_k = 8, .experts = 16, .hidden = 208, .inter = 272, .block_m = bm,
                       .unused = 4, .check_every = 3, .hot = true, .graph = bm == 0, .fp8 = true});
  }
  test_grouped(ctx, {.tokens = 300, .top_k = 6, .experts = 12, .hidden = 72, .inter = 264, .check_every = 2,
                     .fp8 = true});
  test_grouped(ctx, {.tokens = 33, .top_k = 8, .experts = 16, .hidden = 520, .inter = 40, .unused = 5, .fp8 = true});
  test_grouped(ctx, {.tokens = 5, .top_k = 2, .experts = 4, .hidden = 16, .inter = 8, .all_skipped = true,
                     .fp8 = true});
  test_grouped(ctx, {.tokens = 1, .top_k = 1, .experts = 1, .hidden = 8, .inter = 8, .skips = false, .fp8 = true});
  // DeepSeek-V3 widths (16-byte copies, whole 128-blocks) with few experts: a decode step and a 64-token batch.
  test_grouped(ctx, {.tokens = 3, .top_k = 8, .experts = 10, .hidden = 7168, .inter = 2048, .unused = 2,
                     .fp8 = true});
  test_grouped(ctx, {.tokens = 64, .top_k = 8, .experts = 12, .hidden = 7168, .inter = 2048, .check_every = 16,
                     .fp8 = true});
  time_grouped(ctx);
  time_grouped_v3(ctx);
}

}  // namespace dsi::cuda_test
