// MLA absorbed decode against ref attention (one kv head, v = prefix of k) over contiguous and paged latent
// caches (shuffled block tables), for V3's 128 heads, V2-Lite's 16, head counts that are no multiple of 16 or 64,
// forced splits, forced heads per block, the earlier kernel and the warpgroup (wgmma) kernel; the split merge fused into the decode kernel (the
// default) and by the separate combine kernel, empty sequences, and the fused merge's determinism (bit-identical
// reruns, CUDA graph replays); INFO lines time the decode at 16 and 128 heads against the copy bandwidth (not
// checked). Then the MoE router against ref_moe_route.
#include <cuda_runtime.h>

#include <cstring>
#include <functional>
#include <numeric>

#include "cuda_test_util.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ref/ref_moe_route.h"

namespace dsi::cuda_test {
namespace {

constexpr int64_t kLat = 576, kRank = 512;

struct MlaCase {
  int64_t heads = 16;
  std::vector<int32_t> lens;
  int64_t block_size = 0;  // 0: contiguous cache [batch, max_tokens, 576]; else paged with shuffled blocks
  int splits = 0;          // num_splits (0: chosen)
  cuda::MlaDecodeOptions options = {};
  bool unaligned_q = false;  // q one float past a 16-byte boundary (the kernel's scalar loads)
};

// `batch` lengths cycling through `cycle` (tile edges 31, 32, 33, 64; one token; long contexts).
std::vector<int32_t> cycle_lens(int64_t batch, const std::vector<int32_t>& cycle) {
  std::vector<int32_t> lens;
  for (int64_t i = 0; i < batch; ++i) lens.push_back(cycle[(i * 7 + 2) % cycle.size()]);
  return lens;
}

// A case's inputs on the device, the arguments and the reference output (zeros for an empty sequence).
struct MlaSetup {
  std::string name;
  std::vector<float> want;
  DeviceBuffer<float> q, out;
  DeviceBuffer<uint16_t> cache;
  DeviceBuffer<int32_t> lens, tables;
  cuda::MlaDecodeArgs args;
};

MlaSetup setup_mla(CudaContext& ctx, const MlaCase& c) {
  const auto& lens = c.lens;
  const int64_t batch = static_cast<int64_t>(lens.size()), heads = c.heads, bs = c.block_size;
  const int64_t max_len = *std::max_element(lens.begin(), lens.end());
  std::string lens_str;
  for (int32_t l : lens) lens_str += str_cat(lens_str.empty() ? "" : ",", l);
  if (lens_str.size() > 60) lens_str = str_cat(lens_str.substr(0, 60), "...(", batch, " sequences)");
  MlaSetup m;
  m.name = str_cat("mla_decode ", bs > 0 ? str_cat("paged bs=", bs) : std::string("contiguous"), " heads=", heads,
                   " lens={", lens_str, "} splits=", c.splits,
                   c.options.heads_per_block ? str_cat(" heads_per_block=", c.options.heads_per_block) : std::string(),
                   c.options.legacy ? " legacy" : "", c.options.fused_combine ? " fused-combine" : "",
                   c.options.wgmma ? " wgmma" : "",
                   c.unaligned_q ? " unaligned-q" : "");
  // Cache rows: [batch, max_tokens] contiguous, or a pool of shuffled blocks (3 spare) and a table per sequence.
  const int64_t max_tokens = max_len + 5;
  int64_t max_blocks = 0, rows = batch * max_tokens;
  std::vector<int32_t> tables;
  if (bs > 0) {
    int64_t total = 0;
    for (int32_t l : lens) {
      max_blocks = std::max<int64_t>(max_blocks, (l + bs - 1) / bs);
      total += (l + bs - 1) / bs;
    }
    std::vector<int32_t> ids(static_cast<size_t>(total + 3));
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng());
    tables.assign(static_cast<size_t>(batch * max_blocks), -1);
    size_t next = 0;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t k = 0; k < (lens[b] + bs - 1) / bs; ++k) tables[b * max_blocks + k] = ids[next++];
    }
    rows = static_cast<int64_t>(ids.size()) * bs;
  }
  const auto q = random_f32(batch * heads * kLat);
  const auto cache16 = to_bf16(random_f32(rows * kLat));
  const auto cache = from_bf16(cache16);
  const float scale = 1.0f / std::sqrt(192.0f);
  m.want.assign(batch * heads * kRank, 0.0f);
  for (int64_t b = 0; b < batch; ++b) {
    if (lens[b] == 0) continue;  // an empty sequence: zeros
    std::vector<float> kv(lens[b] * kLat);
    for (int64_t t = 0; t < lens[b]; ++t) {
      const int64_t r = bs > 0 ? int64_t{tables[b * max_blocks + t / bs]} * bs + t % bs : b * max_tokens + t;
      std::copy(cache.begin() + r * kLat, cache.begin() + (r + 1) * kLat, kv.begin() + t * kLat);
    }
    ref_ops().attention({.q = q.data() + b * heads * kLat, .k = kv.data(), .v = kv.data(),
                         .out = m.want.data() + b * heads * kRank, .num_q = 1, .kv_len = lens[b],
                         .num_q_heads = heads, .num_kv_heads = 1, .head_dim = kLat, .v_dim = kRank,
                         .q_token_stride = heads * kLat, .q_head_stride = kLat, .k_token_stride = kLat,
                         .k_head_stride = kLat, .v_token_stride = kLat, .v_head_stride = kLat,
                         .out_token_stride = heads * kRank, .out_head_stride = kRank, .scale = scale});
  }
  std::vector<float> q_host = q;
  if (c.unaligned_q) q_host.insert(q_host.begin(), 0.0f);
  m.q = upload(ctx, q_host);
  m.cache = upload(ctx, cache16);
  m.lens = upload(ctx, lens);
  m.tables = upload(ctx, tables);
  // NaN bit patterns: every output element must be written.
  m.out = upload(ctx, std::vector<float>(m.want.size(), std::nanf("")));
  cuda::MlaDecodeArgs& a = m.args;
  a.q = m.q.get() + (c.unaligned_q ? 1 : 0);
  a.cache = m.cache.get();
  a.seq_lens = m.lens.get();
  if (bs > 0) {
    a.block_tables = m.tables.get();
    a.max_blocks = max_blocks;
    a.block_size = bs;
  }
  a.out = m.out.get();
  a.batch = batch;
  a.num_heads = heads;
  a.max_tokens = bs > 0 ? 0 : max_tokens;
  a.max_seq_len = max_len;
  a.scale = scale;
  a.num_splits = c.splits;
  return m;
}

bool wgmma_device(const CudaContext& ctx) { return ctx.props().major == 9 && ctx.props().minor == 0; }

void test_mla(CudaContext& ctx, const MlaCase& c) {
  if (c.options.wgmma && !wgmma_device(ctx)) {
    std::printf("SKIP mla_decode wgmma cases: not an sm_90 device\n");
    return;
  }
  MlaSetup m = setup_mla(ctx, c);
  CT_TRY(m.name, cuda::mla_decode(ctx, m.args, c.options));
  // q and the probabilities are rounded to bf16 for the tensor cores.
  report(m.name, rel_max_err(download(ctx, m.out, m.want.size()), m.want), 2e-2);
}

// The fused split merge run again, directly and replayed twice from a CUDA graph, with the output reset to NaN
// before each run: bit-identical every time (the merge adds the splits in split order whichever block arrives
// last, and the arrival counters are back at zero after each launch). Also against the reference.
void test_mla_repeat(CudaContext& ctx, const MlaCase& c) {
  MlaSetup m = setup_mla(ctx, c);
  const std::string name = m.name + " repeated (direct, graph x2)";
  const size_t n = m.want.size();
  CT_TRY(name, cuda::mla_decode(ctx, m.args, c.options));
  const auto first = download(ctx, m.out, n);
  report(name, rel_max_err(first, m.want), 2e-2);
  const auto nan_out = [&] {
    return cudaMemsetAsync(m.out.get(), 0xff, n * sizeof(float), ctx.stream()) == cudaSuccess;
  };
  CT_CHECK(name, nan_out());
  CT_TRY(name, cuda::mla_decode(ctx, m.args, c.options));
  auto again = download(ctx, m.out, n);
  CT_CHECK(name, std::memcmp(first.data(), again.data(), n * sizeof(float)) == 0);
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  CT_CHECK(name, cudaStreamBeginCapture(ctx.stream(), cudaStreamCaptureModeThreadLocal) == cudaSuccess);
  const Status st = cuda::mla_decode(ctx, m.args, c.options);
  const bool captured = cudaStreamEndCapture(ctx.stream(), &graph) == cudaSuccess;
  CT_TRY(name, st);
  CT_CHECK(name, captured && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess);
  for (int replay = 0; replay < 2; ++replay) {
    CT_CHECK(name, nan_out() && cudaGraphLaunch(exec, ctx.stream()) == cudaSuccess);
    again = download(ctx, m.out, n);
    CT_CHECK(name, std::memcmp(first.data(), again.data(), n * sizeof(float)) == 0);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  report(name + " bit-identical", 0.0, 0.0);
}

// Mean microseconds per call of calls(i) (i = 0 .. kIters - 1), replayed from a CUDA graph so that host launch
// overhead does not hide the small cases (direct calls if the capture fails).
Status time_calls(CudaContext& ctx, const std::function<Status(int)>& call, double* us, bool* graphed) {
  constexpr int kIters = 20;
  const auto calls = [&]() -> Status {
    for (int i = 0; i < kIters; ++i) DSI_RETURN_IF_ERROR(call(i));
    return Status::Ok();
  };
  DSI_RETURN_IF_ERROR(calls());  // warm-up (and the workspace)
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  *graphed = cudaStreamBeginCapture(ctx.stream(), cudaStreamCaptureModeThreadLocal) == cudaSuccess;
  if (*graphed) {
    const bool called = calls().ok();
    *graphed = cudaStreamEndCapture(ctx.stream(), &graph) == cudaSuccess && called &&
               cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess &&
               cudaGraphLaunch(exec, ctx.stream()) == cudaSuccess;  // warm-up
  }
  cudaGetLastError();  // a failed capture falls back to direct calls
  cudaEvent_t start = nullptr, stop = nullptr;
  DSI_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start));
  DSI_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop));
  DSI_CUDA_RETURN_IF_ERROR(cudaEventRecord(start, ctx.stream()));
  Status st = Status::Ok();
  if (*graphed) {
    DSI_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec, ctx.stream()));
  } else {
    st = calls();
  }
  DSI_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop, ctx.stream()));
  DSI_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop));
  float ms = 0.0f;
  DSI_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (exec != nullptr) cudaGraphExecDestroy(exec);
  if (graph != nullptr) cudaGraphDestroy(graph);
  *us = 1e3 * ms / kIters;
  return st;
}

// Device-to-device copy of 256 MB, in GB/s of bytes read plus written (DEVICE.md's ceiling for decode).
double copy_gbps(CudaContext& ctx) {
  const size_t bytes = size_t{256} << 20;
  auto src = pool_alloc<uint8_t>(ctx.pool(), bytes), dst = pool_alloc<uint8_t>(ctx.pool(), bytes);
  if (!src.ok() || !dst.ok()) return 0.0;
  double us = 0.0;
  bool graphed = false;
  const Status st = time_calls(
      ctx,
      [&](int) {
        return cuda_status(cudaMemcpyAsync(dst->get(), src->get(), bytes, cudaMemcpyDeviceToDevice, ctx.stream()),
                           "cudaMemcpyAsync", __FILE__, __LINE__);
      },
      &us, &graphed);
  return st.ok() ? 2.0 * bytes / (us * 1e3) : 0.0;
}

// Info only: decode at kv_lora 512 + rope 64 (bf16), `batch` sequences of `ctx_len` tokens, the default kernel
// (splits merged by the last split block), the same with the separate combine kernel, and the earlier kernel. The calls cycle through enough copies of the cache (>= 128 MB) that it comes from HBM, not L2.
// GB/s counts the latent bytes read.
void time_mla(CudaContext& ctx, int64_t heads, int64_t batch, int64_t ctx_len, double copy) {
  const std::string name = str_cat("mla_decode timing heads=", heads, " batch=", batch, " ctx=", ctx_len);
  const int64_t seq_elems = batch * ctx_len * kLat;
  const double bytes = static_cast<double>(seq_elems) * 2;
  const int64_t copies = std::max<int64_t>(1, ((int64_t{128} << 20) + seq_elems * 2 - 1) / (seq_elems * 2));
  auto cache = pool_alloc<uint16_t>(ctx.pool(), static_cast<size_t>(seq_elems * copies));
  if (!cache.ok()) {
    std::printf("INFO %s skipped: %s\n", name.c_str(), cache.status().to_string().c_str());
    return;
  }
  CT_CHECK(name, cudaMemsetAsync(cache->get(), 0x3c, static_cast<size_t>(seq_elems * copies) * 2, ctx.stream()) ==
                     cudaSuccess);
  auto dq = upload(ctx, random_f32(batch * heads * kLat, -0.1f, 0.1f));
  auto dl = upload(ctx, std::vector<int32_t>(batch, static_cast<int32_t>(ctx_len)));
  auto dout = upload(ctx, std::vector<float>(batch * heads * kRank));
  struct Variant {
    const char* label;
    cuda::MlaDecodeOptions options;
  };
  const Variant variants[] = {{"fused", {.fused_combine = true}},
                              {"separate-combine", {}},
                              {"legacy", {.legacy = true}},
                              {"wgmma", {.wgmma = true}}};
  std::string line;
  for (const Variant& v : variants) {
    if (v.options.wgmma && (heads % 64 != 0 || !wgmma_device(ctx))) continue;
    double us = 0.0;
    bool graphed = false;
    CT_TRY(name, time_calls(
                     ctx,
                     [&](int i) {
                       return cuda::mla_decode(ctx,
                                               {.q = dq.get(), .cache = cache->get() + (i % copies) * seq_elems,
                                                .seq_lens = dl.get(), .out = dout.get(), .batch = batch,
                                                .num_heads = heads, .max_tokens = ctx_len, .max_seq_len = ctx_len,
                                                .scale = 0.07f},
                                               v.options);
                     },
                     &us, &graphed));
    const double gbps = bytes / (us * 1e3);
    char buf[160];
    std::snprintf(buf, sizeof(buf), "%s %.1f us %.0f GB/s (%.0f%% of copy)%s", v.label, us, gbps,
                  copy > 0.0 ? 100.0 * gbps / copy : 0.0, graphed ? "" : " direct calls");
    line += str_cat(line.empty() ? "" : "; ", buf);
  }
  std::printf("INFO %s (%.1f MB of latent): %s\n", name.c_str(), bytes * 1e-6, line.c_str());
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
  // The earlier cases.
  test_mla(ctx, {.heads = 16, .lens = {1, 37, 300}});
  test_mla(ctx, {.heads = 16, .lens = {1, 37, 300}, .splits = 3});
  test_mla(ctx, {.heads = 20, .lens = {1000, 77}});
  test_mla(ctx, {.heads = 128, .lens = {129}});
  test_mla(ctx, {.heads = 16, .lens = {4096, 2500}});
  test_mla(ctx, {.heads = 16, .lens = {33, 64}, .splits = 9});  // more splits than tiles: empty splits
  // V3 (128 heads: 2 blocks of 64 per tile), one split (normalized in the kernel) and many (empty ones too).
  test_mla(ctx, {.heads = 128, .lens = {1, 4096, 33}});
  test_mla(ctx, {.heads = 128, .lens = {4096}});  // batch 1: many splits
  test_mla(ctx, {.heads = 128, .lens = {31, 32, 64}, .splits = 1});
  test_mla(ctx, {.heads = 128, .lens = {4096, 33}, .splits = 64});
  test_mla(ctx, {.heads = 128, .lens = cycle_lens(65, {1, 31, 32, 33, 64}), .splits = 1});
  // 64 heads (one block per tile), 32, 16 (V2-Lite), 8, and counts padded with masked heads (24, 48, 80).
  // (Batch 65 with a long sequence is paged where the contiguous cache would be 65 x 4096 rows.)
  std::vector<int32_t> long65 = cycle_lens(65, {1, 31, 32, 33, 64});
  long65[7] = 4096;
  test_mla(ctx, {.heads = 64, .lens = long65, .block_size = 64});
  test_mla(ctx, {.heads = 32, .lens = {33, 4096, 1}});
  test_mla(ctx, {.heads = 16, .lens = cycle_lens(65, {1, 31, 32, 33, 64, 4096})});
  test_mla(ctx, {.heads = 8, .lens = {31, 32, 33}});
  test_mla(ctx, {.heads = 24, .lens = {64, 1, 4096}, .splits = 1});
  test_mla(ctx, {.heads = 48, .lens = {1000}, .unaligned_q = true});
  test_mla(ctx, {.heads = 80, .lens = {33, 100, 7}, .splits = 7});
  // Paged caches (shuffled blocks) of block size 1, 16 and 64.
  test_mla(ctx, {.heads = 128, .lens = {4096, 1, 33}, .block_size = 64});
  test_mla(ctx, {.heads = 64, .lens = {31, 32, 33}, .block_size = 1});
  test_mla(ctx, {.heads = 16, .lens = cycle_lens(65, {1, 31, 32, 33, 64, 4096}), .block_size = 16});
  test_mla(ctx, {.heads = 80, .lens = {64, 4096, 1}, .block_size = 16, .splits = 1});
  test_mla(ctx, {.heads = 24, .lens = {33}, .block_size = 1, .splits = 5});
  test_mla(ctx, {.heads = 128, .lens = {500, 64}, .block_size = 16, .splits = 3});
  // Forced heads per block (the 16-, 32- and 48-head kernels on V3's heads) and the earlier kernel.
  test_mla(ctx, {.heads = 128, .lens = {1, 4096, 33}, .options = {.heads_per_block = 16}});
  test_mla(ctx, {.heads = 128, .lens = {500, 64}, .block_size = 16, .options = {.heads_per_block = 32}});
  test_mla(ctx, {.heads = 128, .lens = {4096, 33}, .splits = 1, .options = {.heads_per_block = 48}});
  test_mla(ctx, {.heads = 16, .lens = {1, 37, 300}, .options = {.legacy = true}});
  test_mla(ctx, {.heads = 128, .lens = {129, 4096}, .options = {.legacy = true}});
  test_mla(ctx, {.heads = 16, .lens = {1, 37, 600}, .block_size = 16, .options = {.legacy = true}});
  // Split merge: by the last split block (fused_combine) and by the combine kernel (the default), at batch 1 and 5, V2-Lite's
  // 16 heads and V3's 128, contexts of one split and of many, an empty sequence (zeros), forced splits (2, 7, 64:
  // with 7 and 64 some splits of the short sequences are empty, and of 64 some of every sequence).
  for (const bool separate : {false, true}) {
    const cuda::MlaDecodeOptions o = {.fused_combine = !separate};
    for (const int64_t heads : {16, 128}) {
      for (const int32_t len : {1, 63, 512, 4096}) test_mla(ctx, {.heads = heads, .lens = {len}, .options = o});
      test_mla(ctx, {.heads = heads, .lens = {4096, 0, 63, 1, 512}, .options = o});
      for (const int splits : {2, 7, 64}) {
        test_mla(ctx, {.heads = heads, .lens = {512, 1, 0, 4096, 63}, .splits = splits, .options = o});
      }
    }
    test_mla(ctx, {.heads = 16, .lens = {0, 600, 37}, .block_size = 16, .options = o});
    test_mla(ctx, {.heads = 16, .lens = {0, 33}, .splits = 1, .options = o});
    test_mla(ctx, {.heads = 80, .lens = {4096, 0, 100}, .splits = 7, .options = o});  // masked heads in the merge
    test_mla(ctx, {.heads = 128, .lens = {2000, 31}, .options = {.heads_per_block = 48, .fused_combine = !separate}});
  }
  // The warpgroup kernel: V3's 128 heads (two blocks per tile), 64, 192, padded head counts (80: a block of 64
  // and one of 16 real heads), tile edges (63, 64, 65 tokens), one token, empty sequences, many splits (empty ones
  // too), paged caches of block size 1, 16 and 64, unaligned q, batch 65; and its determinism (graph replays).
  {
    const cuda::MlaDecodeOptions w = {.wgmma = true};
    test_mla(ctx, {.heads = 128, .lens = {1, 4096, 33}, .options = w});
    test_mla(ctx, {.heads = 128, .lens = {4096}, .options = w});
    test_mla(ctx, {.heads = 128, .lens = {63, 64, 65, 0, 129}, .splits = 1, .options = w});
    test_mla(ctx, {.heads = 128, .lens = {4096, 33, 0}, .splits = 64, .options = w});
    test_mla(ctx, {.heads = 64, .lens = cycle_lens(65, {1, 31, 32, 33, 64, 65, 127, 128}), .options = w});
    test_mla(ctx, {.heads = 128, .lens = {4096, 1500}, .splits = 1, .options = w});  // 64 tiles in one split
    test_mla(ctx, {.heads = 128, .lens = {0, 700}, .splits = 1, .options = w});       // an empty sequence, direct
    test_mla(ctx, {.heads = 192, .lens = {500, 1}, .splits = 3, .options = w});
    test_mla(ctx, {.heads = 80, .lens = {33, 100, 7}, .splits = 7, .options = w});
    test_mla(ctx, {.heads = 128, .lens = {4096, 1, 33}, .block_size = 64, .options = w});
    test_mla(ctx, {.heads = 128, .lens = {500, 64}, .block_size = 16, .splits = 3, .options = w});
    test_mla(ctx, {.heads = 64, .lens = {31, 32, 33}, .block_size = 1, .options = w});
    test_mla(ctx, {.heads = 128, .lens = {1000}, .options = w, .unaligned_q = true});
    test_mla(ctx, {.heads = 16, .lens = {1, 37, 300}, .options = w});  // a block of 16 real heads and 48 padded
    if (wgmma_device(ctx)) test_mla_repeat(ctx, {.heads = 128, .lens = {4096, 2500, 77}, .options = w});
  }
  // Fused merge determinism (and counters back at zero after each launch, CUDA graphs included).
  const cuda::MlaDecodeOptions fused = {.fused_combine = true};
  test_mla_repeat(ctx, {.heads = 16, .lens = {512, 1, 0, 4096, 63}, .splits = 64, .options = fused});
  test_mla_repeat(ctx, {.heads = 128, .lens = {4096}, .options = fused});
  test_mla_repeat(ctx, {.heads = 16, .lens = {4096, 2500, 77}, .block_size = 16});
  const double copy = copy_gbps(ctx);
  std::printf("INFO device-to-device copy: %.0f GB/s (read + write)\n", copy);
  for (int64_t heads : {16, 128}) {
    for (int64_t ctx_len : {512, 4096}) {
      for (int64_t batch : {1, 64, 128}) time_mla(ctx, heads, batch, ctx_len, copy);
    }
  }
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
