// MoE routed experts for decode (expert ids on the device) against a host reference in double that computes the
// formula of cuda_moe.h. Each case checks: skipped pairs (id -1 and id num_experts), one expert chosen by two
// tokens, accumulation into a non-zero out, and no stray reads: the experts nobody chose hold NaN weights and
// h starts as NaN (a skipped pair's h is never written, so it must never be read). A rerun from the same out
// must match bitwise, and some cases capture the call in a CUDA graph and replay it after changing the ids on
// the device.
#include <cstring>
#include <numeric>

#include "cuda_test_util.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_moe.h"

namespace dsi::cuda_test {
namespace {

#define MOE_CUDA_TRY(name, expr) CT_TRY(name, ::dsi::cuda_status((expr), #expr, __FILE__, __LINE__))

constexpr uint16_t kBf16NaN = 0x7fc0;

struct MoeCase {
  int64_t tokens, top_k, experts, hidden, inter;
  bool skips = true;   // route some pairs to -1 and to num_experts
  bool graph = false;  // also replay the call from a CUDA graph, with new ids
  int64_t n_shared = 0;  // shared experts folded in: an MLP of n_shared * inter rows; out starts as NaN
  int down_split = 0;    // warps per output row of the down kernel (0: its pick)
};

struct MoeInputs {
  std::vector<float> x, weights, out0;
  std::vector<int32_t> ids;
  std::vector<uint16_t> w13, w2;  // NaN for experts that no pair chose
  std::vector<uint16_t> sw13, sw2;  // shared MLP [2 S, hidden], [hidden, S]
};

// Distinct experts per token; token 1 reuses token 0's first expert; with skips, the last pair of the last token
// is -1 and (top_k > 2) token 0's second pair is num_experts (out of range).
std::vector<int32_t> make_ids(const MoeCase& c) {
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

MoeInputs make_inputs(const MoeCase& c) {
  MoeInputs in;
  in.ids = make_ids(c);
  in.x = random_f32(c.tokens * c.hidden);
  in.weights = random_f32(c.tokens * c.top_k, 0.0f, 1.0f);
  in.out0 = c.n_shared > 0 ? std::vector<float>(c.tokens * c.hidden, NAN) : random_f32(c.tokens * c.hidden);
  // Scales that keep g, u, h and each expert's contribution near 1 (comparable to out0).
  const int64_t e13 = 2 * c.inter * c.hidden, e2 = c.hidden * c.inter;
  in.w13.assign(c.experts * e13, kBf16NaN);
  in.w2.assign(c.experts * e2, kBf16NaN);
  std::vector<bool> chosen(c.experts, false);
  for (int32_t e : in.ids) {
    if (e >= 0 && e < c.experts) chosen[e] = true;
  }
  const float a13 = 3.0f / std::sqrt(static_cast<float>(c.hidden));
  const float a2 = 3.0f / std::sqrt(static_cast<float>(c.inter));
  std::uniform_real_distribution<float> d13(-a13, a13), d2(-a2, a2);
  for (int64_t e = 0; e < c.experts; ++e) {
    if (!chosen[e]) continue;
    for (int64_t i = 0; i < e13; ++i) in.w13[e * e13 + i] = f32_to_bf16(d13(rng()));
    for (int64_t i = 0; i < e2; ++i) in.w2[e * e2 + i] = f32_to_bf16(d2(rng()));
  }
  const int64_t S = c.n_shared * c.inter;
  in.sw13.resize(2 * S * c.hidden);
  in.sw2.resize(c.hidden * S);
  for (auto& v : in.sw13) v = f32_to_bf16(d13(rng()));
  for (auto& v : in.sw2) v = f32_to_bf16(d2(rng()));
  return in;
}

// out0 + the formula of cuda_moe.h, in double (with shared experts: their MLP of S rows in place of out0).
std::vector<float> reference(const MoeCase& c, const MoeInputs& in, const std::vector<int32_t>& ids) {
  std::vector<double> out(in.out0.begin(), in.out0.end());
  std::vector<double> h(c.inter);
  const int64_t H = c.hidden, I = c.inter, S = c.n_shared * c.inter;
  for (int64_t t = 0; t < c.tokens; ++t) {
    const float* x = in.x.data() + t * H;
    if (c.n_shared > 0) {
      std::vector<double> hs(S);
      for (int64_t i = 0; i < S; ++i) {
        double g = 0.0, u = 0.0;
        for (int64_t k = 0; k < H; ++k) {
          g += double{bf16_to_f32(in.sw13[i * H + k])} * x[k];
          u += double{bf16_to_f32(in.sw13[(S + i) * H + k])} * x[k];
        }
        hs[i] = g / (1.0 + std::exp(-g)) * u;
      }
      for (int64_t n = 0; n < H; ++n) {
        double d = 0.0;
        for (int64_t i = 0; i < S; ++i) d += double{bf16_to_f32(in.sw2[n * S + i])} * hs[i];
        out[t * H + n] = d;
      }
    }
    for (int64_t j = 0; j < c.top_k; ++j) {
      const int32_t e = ids[t * c.top_k + j];
      if (e < 0 || e >= c.experts) continue;
      const uint16_t* w13 = in.w13.data() + e * 2 * I * H;
      for (int64_t i = 0; i < I; ++i) {
        double g = 0.0, u = 0.0;
        for (int64_t k = 0; k < H; ++k) {
          g += double{bf16_to_f32(w13[i * H + k])} * x[k];
          u += double{bf16_to_f32(w13[(I + i) * H + k])} * x[k];
        }
        h[i] = g / (1.0 + std::exp(-g)) * u;
      }
      const uint16_t* w2 = in.w2.data() + e * H * I;
      const double wt = in.weights[t * c.top_k + j];
      for (int64_t n = 0; n < H; ++n) {
        double d = 0.0;
        for (int64_t i = 0; i < I; ++i) d += double{bf16_to_f32(w2[n * I + i])} * h[i];
        out[t * H + n] += wt * d;
      }
    }
  }
  return std::vector<float>(out.begin(), out.end());
}

// Overwrites a device buffer from the host (stream-ordered; abort on failure like upload()).
template <class T>
void copy_to(CudaContext& ctx, DeviceBuffer<T>& buf, const std::vector<T>& host) {
  DSI_CHECK(cudaMemcpyAsync(buf.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice,
                            ctx.stream()) == cudaSuccess);
}

double fraction_differing_bits(const std::vector<float>& a, const std::vector<float>& b) {
  int64_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff += std::memcmp(&a[i], &b[i], sizeof(float)) != 0;
  return static_cast<double>(diff) / static_cast<double>(a.size());
}

struct GraphHolder {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~GraphHolder() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
};

void test_moe_experts(CudaContext& ctx, const MoeCase& c) {
  const std::string name = str_cat("moe_experts_gemv tokens=", c.tokens, " top_k=", c.top_k, " experts=", c.experts,
                                   " hidden=", c.hidden, " inter=", c.inter, c.skips ? " +skips" : "",
                                   c.n_shared > 0 ? str_cat(" +", c.n_shared, " shared") : std::string(),
                                   c.down_split > 0 ? str_cat(" split=", c.down_split) : std::string());
  constexpr double kTol = 1e-3;
  const MoeInputs in = make_inputs(c);
  const auto want = reference(c, in, in.ids);
  const size_t out_n = c.tokens * c.hidden;

  auto dx = upload(ctx, in.x), dw = upload(ctx, in.weights), dout = upload(ctx, in.out0);
  auto dids = upload(ctx, in.ids);
  auto dw13 = upload(ctx, in.w13), dw2 = upload(ctx, in.w2);
  auto dsw13 = upload(ctx, in.sw13.empty() ? std::vector<uint16_t>(8) : in.sw13);
  auto dsw2 = upload(ctx, in.sw2.empty() ? std::vector<uint16_t>(8) : in.sw2);
  auto dh = upload(ctx, std::vector<float>(c.tokens * (c.top_k + c.n_shared) * c.inter, NAN));
  cuda::MoeExpertsArgs a{.x = dx.get(), .ids = dids.get(), .weights = dw.get(), .w13 = dw13.get(),
                         .w2 = dw2.get(), .h = dh.get(), .out = dout.get(), .num_tokens = c.tokens,
                         .top_k = c.top_k, .num_experts = c.experts, .hidden = c.hidden, .inter = c.inter};
  a.down_split = c.down_split;
  if (c.n_shared > 0) {
    a.shared_w13 = dsw13.get();
    a.shared_w2 = dsw2.get();
    a.n_shared = c.n_shared;
  }
  CT_TRY(name, cuda::moe_experts_gemv(ctx, a));
  const auto got = download(ctx, dout, out_n);
  report(name, rel_max_err(got, want), kTol);

  // Same inputs again: no atomics, so the same bits.
  copy_to(ctx, dout, in.out0);
  CT_TRY(name, cuda::moe_experts_gemv(ctx, a));
  report(name + " rerun (fraction of bits differing)", fraction_differing_bits(download(ctx, dout, out_n), got), 0.0);

  if (!c.graph) return;
  // Capture once, replay with the captured ids, then with other ids written into the same device buffer: the
  // expert choice must be read on the device at replay time.
  const std::string gname = name + " graph";
  GraphHolder g;
  MOE_CUDA_TRY(gname, cudaStreamBeginCapture(ctx.stream(), cudaStreamCaptureModeThreadLocal));
  const Status captured = cuda::moe_experts_gemv(ctx, a);
  const cudaError_t ended = cudaStreamEndCapture(ctx.stream(), &g.graph);
  CT_TRY(gname, captured);
  MOE_CUDA_TRY(gname, ended);
  MOE_CUDA_TRY(gname, cudaGraphInstantiate(&g.exec, g.graph, 0));
  copy_to(ctx, dout, in.out0);
  MOE_CUDA_TRY(gname, cudaGraphLaunch(g.exec, ctx.stream()));
  report(gname + " replay", rel_max_err(download(ctx, dout, out_n), want), kTol);

  // New routing from the same chosen experts: token t takes token t + 1's ids in reverse order.
  std::vector<int32_t> ids2(in.ids.size());
  for (int64_t t = 0; t < c.tokens; ++t) {
    for (int64_t j = 0; j < c.top_k; ++j) {
      ids2[t * c.top_k + j] = in.ids[((t + 1) % c.tokens) * c.top_k + (c.top_k - 1 - j)];
    }
  }
  const auto want2 = reference(c, in, ids2);
  copy_to(ctx, dids, ids2);
  copy_to(ctx, dout, in.out0);
  MOE_CUDA_TRY(gname, cudaGraphLaunch(g.exec, ctx.stream()));
  report(gname + " replay with new ids", rel_max_err(download(ctx, dout, out_n), want2), kTol);
}

void test_moe_experts_args(CudaContext& ctx) {
  const std::string name = "moe_experts_gemv argument checks";
  const auto code = [&](const cuda::MoeExpertsArgs& a) { return cuda::moe_experts_gemv(ctx, a).code(); };
  auto dx = upload(ctx, std::vector<float>(64));
  const cuda::MoeExpertsArgs ok{.num_tokens = 1, .top_k = 2, .num_experts = 4, .hidden = 16, .inter = 8};
  cuda::MoeExpertsArgs a = ok;
  a.hidden = 12;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.inter = 0;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.top_k = 0;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.num_experts = 0;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.top_k = 65;
  CT_CHECK(name, code(a) == StatusCode::kUnsupported);
  CT_CHECK(name, code(ok) == StatusCode::kInvalidArgument);  // null pointers
  a = ok;
  a.top_k = 62;
  a.n_shared = 3;  // 65 pairs per token
  CT_CHECK(name, code(a) == StatusCode::kUnsupported);
  a = ok;
  a.down_split = 3;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.n_shared = -1;
  CT_CHECK(name, code(a) == StatusCode::kInvalidArgument);
  a = ok;
  a.num_tokens = 0;  // nothing to do: pointers are not needed
  CT_CHECK(name, code(a) == StatusCode::kOk);
  const std::string msg = cuda::moe_experts_gemv(ctx, ok).message();
  CT_CHECK(name, msg.find("x is null") != std::string::npos);
  a = ok;
  a.x = dx.get() + 1;  // 4-byte aligned only
  CT_CHECK(name, cuda::moe_experts_gemv(ctx, a).message().find("x is not 16-byte aligned") != std::string::npos);
  // Every pointer set but the shared experts'.
  auto buf = upload(ctx, std::vector<float>(1024));
  a = ok;
  a.x = a.weights = a.h = a.out = buf.get();
  a.ids = reinterpret_cast<const int32_t*>(buf.get());
  a.w13 = a.w2 = buf.get();
  a.n_shared = 1;
  CT_CHECK(name, cuda::moe_experts_gemv(ctx, a).message().find("needs shared_w13 and shared_w2") != std::string::npos);
  std::printf("PASS %s\n", name.c_str());
  tally().passed++;
}

}  // namespace

void run_moe_experts_tests(CudaContext& ctx) {
  test_moe_experts_args(ctx);
  // DeepSeek-V2-Lite decode: one token, then a few (finer and coarser row splits).
  test_moe_experts(ctx, {.tokens = 1, .top_k = 6, .experts = 64, .hidden = 2048, .inter = 1408, .graph = true});
  test_moe_experts(ctx, {.tokens = 4, .top_k = 6, .experts = 64, .hidden = 2048, .inter = 1408, .skips = false});
  // V3 hidden size, narrow experts.
  test_moe_experts(ctx, {.tokens = 3, .top_k = 8, .experts = 16, .hidden = 7168, .inter = 256});
  // V3 inter: a token's h is 64 KB of shared memory (opt-in above 48 KB), also captured in a graph.
  test_moe_experts(ctx, {.tokens = 2, .top_k = 8, .experts = 16, .hidden = 512, .inter = 2048, .graph = true});
  // h of exactly 48 KB: with the down kernel's static shared memory, just past the default limit.
  test_moe_experts(ctx, {.tokens = 1, .top_k = 6, .experts = 8, .hidden = 64, .inter = 2048});
  // h beyond 96 KB per token: the down kernel reads h from global memory.
  test_moe_experts(ctx, {.tokens = 2, .top_k = 16, .experts = 32, .hidden = 256, .inter = 1600});
  // Small and odd shapes: h rows shorter than a warp's step, hidden not a multiple of 256, the largest top_k.
  test_moe_experts(ctx, {.tokens = 5, .top_k = 2, .experts = 4, .hidden = 64, .inter = 40});
  test_moe_experts(ctx, {.tokens = 1, .top_k = 1, .experts = 1, .hidden = 8, .inter = 8});
  test_moe_experts(ctx, {.tokens = 7, .top_k = 3, .experts = 5, .hidden = 24, .inter = 16, .graph = true});
  test_moe_experts(ctx, {.tokens = 4, .top_k = 6, .experts = 64, .hidden = 520, .inter = 264});
  test_moe_experts(ctx, {.tokens = 2, .top_k = 64, .experts = 64, .hidden = 16, .inter = 8});
  // Shared experts folded in: V2-Lite's two (an MLP of 2816 rows as two slices), also from a graph; V3's one; a
  // token's h past 96 KB (read from global memory); the largest top_k + n_shared.
  test_moe_experts(ctx, {.tokens = 1, .top_k = 6, .experts = 64, .hidden = 2048, .inter = 1408, .graph = true,
                         .n_shared = 2});
  test_moe_experts(ctx, {.tokens = 3, .top_k = 6, .experts = 64, .hidden = 2048, .inter = 1408, .n_shared = 2});
  test_moe_experts(ctx, {.tokens = 2, .top_k = 8, .experts = 16, .hidden = 512, .inter = 2048, .n_shared = 1});
  test_moe_experts(ctx, {.tokens = 2, .top_k = 14, .experts = 32, .hidden = 256, .inter = 1600, .n_shared = 2});
  test_moe_experts(ctx, {.tokens = 5, .top_k = 2, .experts = 4, .hidden = 64, .inter = 40, .n_shared = 3});
  test_moe_experts(ctx, {.tokens = 2, .top_k = 60, .experts = 64, .hidden = 16, .inter = 8, .n_shared = 4});
  // Two and four warps per output row in the down kernel (one token; hidden not a multiple of the block's rows;
  // h in global memory).
  for (int split : {1, 2, 4}) {
    test_moe_experts(ctx, {.tokens = 1, .top_k = 6, .experts = 64, .hidden = 2048, .inter = 1408, .graph = true,
                           .n_shared = 2, .down_split = split});
    test_moe_experts(ctx, {.tokens = 1, .top_k = 6, .experts = 64, .hidden = 2048, .inter = 1408,
                           .down_split = split});
    test_moe_experts(ctx, {.tokens = 2, .top_k = 3, .experts = 5, .hidden = 24, .inter = 16, .down_split = split});
    test_moe_experts(ctx, {.tokens = 1, .top_k = 14, .experts = 32, .hidden = 256, .inter = 1600, .n_shared = 2,
                           .down_split = split});
  }
}

}  // namespace dsi::cuda_test
