// MLA absorbed decode against ref attention (one kv head, v = prefix of k) and the MoE router against
// ref_moe_route.
#include "cuda_test_util.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ref/ref_moe_route.h"

namespace dsi::cuda_test {
namespace {

constexpr int64_t kLat = 576, kRank = 512;

void test_mla(CudaContext& ctx, int64_t heads, const std::vector<int32_t>& lens, int splits) {
  const int64_t batch = static_cast<int64_t>(lens.size());
  const int64_t max_len = *std::max_element(lens.begin(), lens.end());
  const int64_t max_tokens = max_len + 5;
  std::string lens_str;
  for (int32_t l : lens) lens_str += str_cat(lens_str.empty() ? "" : ",", l);
  const std::string name = str_cat("mla_decode heads=", heads, " lens={", lens_str, "} splits=", splits);
  const auto q = random_f32(batch * heads * kLat);
  const auto cache16 = to_bf16(random_f32(batch * max_tokens * kLat));
  const auto cache = from_bf16(cache16);
  const float scale = 1.0f / std::sqrt(192.0f);
  std::vector<float> want(batch * heads * kRank);
  for (int64_t b = 0; b < batch; ++b) {
    const float* kv = cache.data() + b * max_tokens * kLat;
    ref_ops().attention({.q = q.data() + b * heads * kLat, .k = kv, .v = kv, .out = want.data() + b * heads * kRank,
                         .num_q = 1, .kv_len = lens[b], .num_q_heads = heads, .num_kv_heads = 1,
                         .head_dim = kLat, .v_dim = kRank, .q_token_stride = heads * kLat, .q_head_stride = kLat,
                         .k_token_stride = kLat, .k_head_stride = kLat, .v_token_stride = kLat,
                         .v_head_stride = kLat, .out_token_stride = heads * kRank, .out_head_stride = kRank,
                         .scale = scale});
  }
  auto dq = upload(ctx, q);
  auto dc = upload(ctx, cache16);
  auto dl = upload(ctx, lens);
  auto dout = upload(ctx, std::vector<float>(want.size()));
  CT_TRY(name, cuda::mla_decode(ctx, {.q = dq.get(), .cache = dc.get(), .seq_lens = dl.get(), .out = dout.get(),
                                      .batch = batch, .num_heads = heads, .max_tokens = max_tokens,
                                      .max_seq_len = max_len, .scale = scale, .num_splits = splits}));
  // q and the probabilities are rounded to bf16 for the tensor cores.
  report(name, rel_max_err(download(ctx, dout, want.size()), want), 2e-2);
}

void test_moe(CudaContext& ctx, MoeRouteArgs a, const std::string& label) {
  const std::string name = str_cat("moe_route ", label, " tokens=", a.num_tokens, " experts=", a.num_experts,
                                   " top_k=", a.top_k);
  const auto logits = random_f32(a.num_tokens * a.num_experts, -4.0f, 4.0f);
  const auto bias = random_f32(a.num_experts, -0.2f, 0.2f);
  std::vector<int32_t> want_ids(a.num_tokens * a.top_k);
  std::vector<float> want_w(a.num_tokens * a.top_k);
  const bool use_bias = a.method == MoeTopk::kNoauxTc;
  a.logits = logits.data();
  a.bias = use_bias ? bias.data() : nullptr;
  a.expert_ids = want_ids.data();
  a.weights = want_w.data();
  ref_moe_route(a);
  auto dlog = upload(ctx, logits), dbias = upload(ctx, bias);
  auto dids = upload(ctx, std::vector<int32_t>(want_ids.size()));
  auto dw = upload(ctx, std::vector<float>(want_w.size()));
  a.logits = dlog.get();
  a.bias = use_bias ? dbias.get() : nullptr;
  a.expert_ids = dids.get();
  a.weights = dw.get();
  CT_TRY(name, cuda::moe_route(ctx, a));
  const auto ids = download(ctx, dids, want_ids.size());
  int64_t diff = 0;
  for (size_t i = 0; i < ids.size(); ++i) diff += ids[i] != want_ids[i];
  report(name + " ids (fraction differing)", static_cast<double>(diff) / ids.size(), 0.0);
  report(name + " weights", rel_max_err(download(ctx, dw, want_w.size()), want_w), 1e-6);
}

}  // namespace

void run_mla_moe_tests(CudaContext& ctx) {
  test_mla(ctx, 16, {1, 37, 300}, 0);
  test_mla(ctx, 16, {1, 37, 300}, 3);
  test_mla(ctx, 20, {1000, 77}, 0);
  test_mla(ctx, 128, {129}, 0);
  test_mla(ctx, 16, {4096, 2500}, 0);
  test_mla(ctx, 16, {33, 64}, 9);  // more splits than tiles: empty splits
  test_moe(ctx, {.num_tokens = 37, .num_experts = 64, .top_k = 6, .scoring = MoeScoring::kSoftmax,
                 .method = MoeTopk::kGreedy}, "softmax greedy (V2-Lite)");
  test_moe(ctx, {.num_tokens = 19, .num_experts = 160, .top_k = 6, .n_group = 8, .topk_group = 3,
                 .scoring = MoeScoring::kSoftmax, .method = MoeTopk::kGroupLimitedGreedy, .norm_topk_prob = true,
                 .routed_scaling_factor = 16.0f}, "softmax group_limited (V2)");
  test_moe(ctx, {.num_tokens = 41, .num_experts = 256, .top_k = 8, .n_group = 8, .topk_group = 4,
                 .scoring = MoeScoring::kSigmoid, .method = MoeTopk::kNoauxTc, .norm_topk_prob = true,
                 .routed_scaling_factor = 2.5f}, "sigmoid noaux_tc (V3)");
  test_moe(ctx, {.num_tokens = 5, .num_experts = 8, .top_k = 1, .n_group = 8, .topk_group = 2,
                 .scoring = MoeScoring::kSigmoid, .method = MoeTopk::kNoauxTc, .norm_topk_prob = true},
           "sigmoid noaux_tc group_size=1");
  test_moe(ctx, {.num_tokens = 3, .num_experts = 1024, .top_k = 32, .scoring = MoeScoring::kSigmoid,
                 .method = MoeTopk::kGreedy}, "sigmoid greedy wide");
}

}  // namespace dsi::cuda_test
