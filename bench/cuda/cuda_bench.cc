// CUDA kernel micro-benchmarks on one GPU. Prints one JSON object per line (to stdout) and a readable summary
// (to stderr). Every figure comes with the device-to-device copy bandwidth measured in the same run.
// Usage: cuda_bench [commit] [date]
#include <cuda_runtime.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"

namespace dsi {
namespace {

struct Env {
  CudaContext* ctx;
  std::string gpu, commit, date;
  double copy_gbps = 0.0;
};

void must(const Status& st, const char* what) {
  if (!st.ok()) {
    std::fprintf(stderr, "bench: %s: %s\n", what, st.to_string().c_str());
    std::exit(1);
  }
}

template <class T>
DeviceBuffer<T> alloc(Env& env, size_t n) {
  auto buf = pool_alloc<T>(env.ctx->pool(), n);
  must(buf.status(), "alloc");
  return std::move(buf).value();
}

// Fills a device buffer with small random-ish bit patterns (valid bf16 / e4m3 / f32 values).
void fill(Env& env, void* p, size_t bytes, uint8_t mask) {
  std::vector<uint8_t> host(bytes);
  uint32_t s = 12345;
  for (auto& b : host) {
    s = s * 1664525u + 1013904223u;
    b = static_cast<uint8_t>((s >> 24) & mask);
  }
  DSI_CUDA_CHECK(cudaMemcpy(p, host.data(), bytes, cudaMemcpyHostToDevice));
}

// Mean seconds per call of fn(i) over `iters` calls after `warmup`.
double time_it(Env& env, int warmup, int iters, const std::function<void(int)>& fn) {
  for (int i = 0; i < warmup; ++i) fn(i);
  cudaEvent_t a, b;
  DSI_CUDA_CHECK(cudaEventCreate(&a));
  DSI_CUDA_CHECK(cudaEventCreate(&b));
  DSI_CUDA_CHECK(cudaEventRecord(a, env.ctx->stream()));
  for (int i = 0; i < iters; ++i) fn(i);
  DSI_CUDA_CHECK(cudaEventRecord(b, env.ctx->stream()));
  DSI_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0.0f;
  DSI_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  DSI_CUDA_CHECK(cudaEventDestroy(a));
  DSI_CUDA_CHECK(cudaEventDestroy(b));
  return ms / 1e3 / iters;
}

void emit(const Env& env, const std::string& bench, const std::string& shape, long batch, long context,
          const std::string& metric, double value, double ratio, const char* ratio_of, double time_us) {
  std::printf(
      "{\"date\": \"%s\", \"gpu\": \"%s\", \"commit\": \"%s\", \"bench\": \"%s\", \"shape\": \"%s\", \"batch\": %ld, "
      "\"context\": %s, \"metric\": \"%s\", \"value\": %.2f, \"ratio\": %.3f, \"ratio_of\": \"%s\", "
      "\"time_us\": %.2f, \"copy_GBps\": %.1f}\n",
      env.date.c_str(), env.gpu.c_str(), env.commit.c_str(), bench.c_str(), shape.c_str(), batch,
      context > 0 ? std::to_string(context).c_str() : "null", metric.c_str(), value, ratio, ratio_of, time_us,
      env.copy_gbps);
  std::fflush(stdout);
  std::fprintf(stderr, "%-10s %-28s batch %4ld ctx %5ld: %9.1f %s (%.1f%% of %s), %.1f us\n", bench.c_str(),
               shape.c_str(), batch, context, value, metric.c_str(), 100.0 * ratio, ratio_of, time_us);
}

void bench_copy(Env& env) {
  const size_t bytes = size_t{1} << 30;
  auto src = alloc<uint8_t>(env, bytes), dst = alloc<uint8_t>(env, bytes);
  DSI_CUDA_CHECK(cudaMemsetAsync(src.get(), 1, bytes, env.ctx->stream()));
  const double t = time_it(env, 3, 20, [&](int) {
    DSI_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice, env.ctx->stream()));
  });
  env.copy_gbps = 2.0 * bytes / t / 1e9;  // bytes read + written
  emit(env, "copy", "1GiB d2d", 1, 0, "GBps", env.copy_gbps, 1.0, "copy", t * 1e6);
}

// Decode GEMV: weights rotate through >= 512 MB of copies so L2 (50 MB) never holds them.
void bench_gemv(Env& env, int64_t n, int64_t k) {
  const size_t wbytes = static_cast<size_t>(n * k) * 2;
  const int copies = static_cast<int>(std::max<size_t>(2, (size_t{512} << 20) / wbytes + 1));
  auto w = alloc<uint16_t>(env, static_cast<size_t>(n * k) * copies);
  fill(env, w.get(), wbytes * copies, 0x3f);
  auto x = alloc<float>(env, 16 * k);
  auto y = alloc<float>(env, 16 * n);
  DSI_CUDA_CHECK(cudaMemset(x.get(), 0, 16 * k * 4));
  for (int64_t m : {1, 2, 4, 8, 16}) {
    for (int path = 0; path < 2; ++path) {
      auto run = [&](int i) {
        const MatmulArgs a{.x = x.get(), .w = w.get() + static_cast<size_t>(i % copies) * n * k,
                           .w_dtype = DType::kBF16, .y = y.get(), .m = m, .n = n, .k = k};
        must(path == 0 ? cuda::gemv_bf16(*env.ctx, a) : cuda::gemm_cublaslt(*env.ctx, a), "gemv");
      };
      const double t = time_it(env, 5, 100, run);
      const double gbps = (wbytes + m * (k + n) * 4.0) / t / 1e9;
      emit(env, path == 0 ? "gemv_ours" : "gemv_cublaslt", str_cat("n=", n, " k=", k, " bf16"), m, 0, "GBps", gbps,
           gbps / env.copy_gbps, "copy", t * 1e6);
    }
  }
}

void bench_gemm_bf16(Env& env, int64_t m, int64_t n, int64_t k) {
  auto x = alloc<uint16_t>(env, m * k), w = alloc<uint16_t>(env, n * k), y = alloc<uint16_t>(env, m * n);
  fill(env, x.get(), m * k * 2, 0x3f);
  fill(env, w.get(), n * k * 2, 0x3f);
  const double t = time_it(env, 3, 20, [&](int) {
    must(cuda::gemm_bf16(*env.ctx, {.x = x.get(), .w = w.get(), .y = y.get(), .y_dtype = DType::kBF16, .m = m,
                                    .n = n, .k = k}),
         "gemm_bf16");
  });
  const double tflops = 2.0 * m * n * k / t / 1e12;
  emit(env, "gemm_bf16", str_cat(m, "x", n, "x", k), m, 0, "TFLOPs", tflops, tflops / 989.0, "H100 dense bf16 spec 989",
       t * 1e6);
}

void bench_gemm_fp8(Env& env, int64_t m, int64_t n, int64_t k, double bf16_tflops) {
  const int64_t kb = (k + 127) / 128, nb = (n + 127) / 128;
  auto xf = alloc<float>(env, m * k);
  auto xq = alloc<uint8_t>(env, m * k), wq = alloc<uint8_t>(env, n * k);
  auto xs = alloc<float>(env, kb * m), ws = alloc<float>(env, nb * kb);
  auto y = alloc<uint16_t>(env, m * n);
  fill(env, wq.get(), n * k, 0x3f);
  std::vector<float> ones(nb * kb, 1e-3f);
  DSI_CUDA_CHECK(cudaMemcpy(ws.get(), ones.data(), ones.size() * 4, cudaMemcpyHostToDevice));
  DSI_CUDA_CHECK(cudaMemset(xf.get(), 0, m * k * 4));
  must(cuda::quantize_fp8(*env.ctx, {.x = xf.get(), .q = xq.get(), .scale = xs.get(), .m = m, .k = k}), "quant");
  const double t = time_it(env, 3, 20, [&](int) {
    must(cuda::gemm_fp8(*env.ctx, {.x = xq.get(), .x_scale = xs.get(), .w = wq.get(), .w_scale = ws.get(),
                                   .y = y.get(), .y_dtype = DType::kBF16, .m = m, .n = n, .k = k}),
         "gemm_fp8");
  });
  const double tflops = 2.0 * m * n * k / t / 1e12;
  const double bytes = n * k + m * k + 2.0 * m * n;
  emit(env, "gemm_fp8_blockscaled", str_cat(m, "x", n, "x", k), m, 0, "TFLOPs", tflops, tflops / 1979.0,
       "H100 dense fp8 spec 1979", t * 1e6);
  emit(env, "gemm_fp8_blockscaled", str_cat(m, "x", n, "x", k), m, 0, "GBps", bytes / t / 1e9,
       bytes / t / 1e9 / env.copy_gbps, "copy", t * 1e6);
  const double tq = time_it(env, 3, 20, [&](int) {
    must(cuda::quantize_fp8(*env.ctx, {.x = xf.get(), .q = xq.get(), .scale = xs.get(), .m = m, .k = k}), "quant");
  });
  const double qbytes = m * k * 5.0 + kb * m * 4.0;
  emit(env, "quantize_fp8", str_cat(m, "x", k), m, 0, "GBps", qbytes / tq / 1e9, qbytes / tq / 1e9 / env.copy_gbps,
       "copy", tq * 1e6);
  (void)bf16_tflops;
}

void bench_mla(Env& env, int64_t batch, int64_t heads, int64_t context) {
  const int64_t lat = 576;
  auto cache = alloc<uint16_t>(env, batch * context * lat);
  fill(env, cache.get(), batch * context * lat * 2, 0x3f);
  auto q = alloc<float>(env, batch * heads * lat);
  auto out = alloc<float>(env, batch * heads * 512);
  DSI_CUDA_CHECK(cudaMemset(q.get(), 0, batch * heads * lat * 4));
  std::vector<int32_t> lens(batch, static_cast<int32_t>(context));
  auto dl = alloc<int32_t>(env, batch);
  DSI_CUDA_CHECK(cudaMemcpy(dl.get(), lens.data(), batch * 4, cudaMemcpyHostToDevice));
  const double t = time_it(env, 3, 20, [&](int) {
    must(cuda::mla_decode(*env.ctx, {.q = q.get(), .cache = cache.get(), .seq_lens = dl.get(), .out = out.get(),
                                     .batch = batch, .num_heads = heads, .max_tokens = context,
                                     .max_seq_len = context, .scale = 0.07f}),
         "mla_decode");
  });
  const double bytes = batch * context * lat * 2.0 + batch * heads * (lat + 512) * 4.0;
  const double gbps = bytes / t / 1e9;
  emit(env, "mla_decode", str_cat("heads=", heads, " kv_lora=512 rope=64 bf16"), batch, context, "GBps", gbps,
       gbps / env.copy_gbps, "copy", t * 1e6);
  const double tflops = 2.0 * batch * heads * context * (lat + 512) / t / 1e12;
  emit(env, "mla_decode", str_cat("heads=", heads, " kv_lora=512 rope=64 bf16"), batch, context, "TFLOPs", tflops,
       tflops / 989.0, "H100 dense bf16 spec 989", t * 1e6);
}

}  // namespace
}  // namespace dsi

int main(int argc, char** argv) {
  using namespace dsi;
  if (cuda_device_count() == 0) {
    std::fprintf(stderr, "SKIP: no CUDA device\n");
    return 0;
  }
  auto ctx = CudaContext::create({.pool_bytes = size_t{40} << 30});
  must(ctx.status(), "context");
  Env env{.ctx = ctx->get(), .gpu = (*ctx)->props().name, .commit = argc > 1 ? argv[1] : "unknown",
          .date = argc > 2 ? argv[2] : "unknown"};
  bench_copy(env);
  for (auto [n, k] : {std::pair<int64_t, int64_t>{10944, 2048}, {2048, 10944}, {14336, 4096}, {4096, 14336}}) {
    bench_gemv(env, n, k);
  }
  bench_gemm_bf16(env, 8192, 8192, 8192);
  bench_gemm_fp8(env, 8192, 8192, 8192, 0);
  bench_gemm_fp8(env, 4096, 7168, 7168, 0);
  bench_gemm_fp8(env, 128, 7168, 2048, 0);
  bench_gemm_fp8(env, 128, 2048, 7168, 0);
  for (int64_t heads : {16, 128}) {
    for (int64_t batch : {64, 128}) bench_mla(env, batch, heads, 4096);
  }
  return 0;
}
