// Kernel launches with programmatic dependent launch (PDL, Hopper): a kernel launched through launch() may start
// while the kernel before it on the stream is still running, so its launch latency and whatever it does before
// pdl_wait() (the GEMVs prefetch their weights there) overlap the previous kernel's tail. Inside a CUDA graph the
// same holds between captured kernels, where a decode step is 20-odd small kernels per layer.
//
// The contract for a kernel launched here: call pdl_wait() before its first read of anything an earlier kernel
// wrote and before its first global write (the earlier kernel may still be reading that memory), in every block.
// Before pdl_wait() it may read only what no kernel writes (weights). pdl_trigger() right after lets the next
// kernel launch early; both are no-ops when the kernel was launched without the attribute (or PDL is off:
// DSI_CUDA_PDL=0, or a GPU before sm_90).
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda/cuda_context.h"

namespace dsi::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

// Waits for the previous kernel, then lets the next one launch: the first line of a PDL kernel.
__device__ __forceinline__ void pdl_enter() {
  pdl_wait();
  pdl_trigger();
}

// kernel<<<grid, block, smem, ctx.stream()>>>(args...), with the PDL attribute when the context allows it.
// Returns the launch error (callers check it like a <<<>>> launch).
template <class... Params, class... Args>
cudaError_t launch(CudaContext& ctx, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                   Args&&... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = ctx.stream();
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attr;
  config.numAttrs = ctx.pdl() ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

}  // namespace dsi::cuda

#define DSI_CUDA_LAUNCH(ctx, kernel, grid, block, smem, ...) \
  DSI_CUDA_RETURN_IF_ERROR(::dsi::cuda::launch((ctx), (kernel), (grid), (block), (smem), __VA_ARGS__))
