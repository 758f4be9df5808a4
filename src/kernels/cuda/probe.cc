#include "kernels/cuda/cuda_probe.h"

#include <cuda_profiler_api.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/cuda_ops.h"

namespace dsi::cuda {
namespace {

// Median-free simple timing: `iters` runs after `warm` runs, events on the context's stream.
template <class F>
Result<double> time_seconds(CudaContext& ctx, int warm, int iters, F&& fn) {
  for (int i = 0; i < warm; ++i) DSI_RETURN_IF_ERROR(fn());
  cudaEvent_t a, b;
  DSI_CUDA_RETURN_IF_ERROR(cudaEventCreate(&a));
  DSI_CUDA_RETURN_IF_ERROR(cudaEventCreate(&b));
  DSI_CUDA_RETURN_IF_ERROR(cudaEventRecord(a, ctx.stream()));
  for (int i = 0; i < iters; ++i) DSI_RETURN_IF_ERROR(fn());
  DSI_CUDA_RETURN_IF_ERROR(cudaEventRecord(b, ctx.stream()));
  DSI_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(b));
  float ms = 0;
  DSI_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / 1e3 / iters;
}

}  // namespace

Result<DeviceLimits> measure_device_limits(int device) {
  DSI_ASSIGN_OR_RETURN(std::unique_ptr<CudaContext> ctx,
                       CudaContext::create({.device = device, .pool_bytes = size_t{2560} << 20}));
  DeviceLimits lim;
  lim.name = ctx->props().name;
  lim.sms = ctx->num_sms();
  const size_t bytes = size_t{1} << 30;
  DSI_ASSIGN_OR_RETURN(void* src, ctx->pool().alloc(bytes));
  DSI_ASSIGN_OR_RETURN(void* dst, ctx->pool().alloc(bytes));
  DSI_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(src, 1, bytes, ctx->stream()));
  DSI_ASSIGN_OR_RETURN(double t_copy, time_seconds(*ctx, 3, 20, [&]() -> Status {
    DSI_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx->stream()));
    return Status::Ok();
  }));
  lim.copy_gbps = 2.0 * static_cast<double>(bytes) / t_copy / 1e9;
  ctx->pool().free(dst);
  ctx->pool().free(src);
  const int64_t n = 8192;
  const size_t mat = static_cast<size_t>(n * n) * 2;
  DSI_ASSIGN_OR_RETURN(void* x, ctx->pool().alloc(mat));
  DSI_ASSIGN_OR_RETURN(void* w, ctx->pool().alloc(mat));
  DSI_ASSIGN_OR_RETURN(void* y, ctx->pool().alloc(mat));
  DSI_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(x, 0x3c, mat, ctx->stream()));
  DSI_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(w, 0x3c, mat, ctx->stream()));
  DSI_ASSIGN_OR_RETURN(double t_gemm, time_seconds(*ctx, 3, 10, [&]() {
    return gemm_bf16(*ctx, {.x = static_cast<const uint16_t*>(x), .w = static_cast<const uint16_t*>(w), .y = y,
                            .y_dtype = DType::kBF16, .m = n, .n = n, .k = n});
  }));
  lim.bf16_tflops = 2.0 * static_cast<double>(n) * n * n / t_gemm / 1e12;
  ctx->pool().free(x);
  ctx->pool().free(w);
  ctx->pool().free(y);
  return lim;
}

void profiler_range(bool on) {
  (void)cudaDeviceSynchronize();
  (void)(on ? cudaProfilerStart() : cudaProfilerStop());
}

}  // namespace dsi::cuda
