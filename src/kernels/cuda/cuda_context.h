// CudaContext: the device, one stream, the cuBLASLt handle and its workspace, the device pool and a scratch
// buffer for staging (e.g. f32 -> bf16 activations). Every CUDA kernel launcher takes one. Not thread-safe:
// one thread owns the context and issues all work on its stream.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <memory>

#include "core/status.h"
#include "kernels/cuda/device_pool.h"

namespace dsi {

class GemmPlanCache;  // gemm_cublaslt.cc

struct CudaContextOptions {
  int device = 0;
  size_t pool_bytes = size_t{1} << 30;       // the one cudaMalloc
  size_t cublas_workspace_bytes = 32 << 20;  // carved from the pool
};

class CudaContext {
 public:
  static Result<std::unique_ptr<CudaContext>> create(const CudaContextOptions& options);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  cudaStream_t stream() const { return stream_; }
  void* cublas_handle() const { return cublas_; }  // cublasLtHandle_t
  void* cublas_workspace() const { return workspace_; }
  size_t cublas_workspace_bytes() const { return workspace_bytes_; }
  DevicePool& pool() { return *pool_; }
  GemmPlanCache& gemm_plans() { return *plans_; }
  int num_sms() const { return num_sms_; }
  const cudaDeviceProp& props() const { return props_; }
  // Programmatic dependent launch for kernels launched through launch.cuh (sm_90 and later; DSI_CUDA_PDL=0 turns
  // it off).
  bool pdl() const { return pdl_; }
  void set_pdl(bool on) { pdl_ = on && props_.major >= 9; }
  // Split-k GEMVs: partial sums of the splits of a launch ([splits, m, n] floats) and one arrival counter per
  // block of rows, which the last split to arrive resets (so they stay zero between launches). Fixed at create:
  // captured graphs keep the pointers. The GEMVs use counters from 0 up (one per row block); the MLA decode's
  // fused split merge uses the upper half, [kSplitkCounters / 2, kSplitkCounters) (one per sequence and head
  // group), under the same zero-at-exit rule (an overlap would be harmless too: kernels on the stream touch the
  // counters only after pdl_wait, i.e. one at a time, and leave them zero).
  float* splitk_partials() const { return splitk_partials_; }
  unsigned* splitk_counters() const { return splitk_counters_; }
  // The fused MoE router's arrival counter (the last of the split-k counters; GEMVs use the low ones).
  unsigned* moe_route_counter() const { return splitk_counters_ + kSplitkCounters - 1; }  // (in the MLA range: also used one kernel at a time)
  static constexpr size_t kSplitkPartialFloats = size_t{4} << 20;
  static constexpr size_t kSplitkCounters = size_t{1} << 16;

  // Device scratch of at least `bytes`, valid until the next call (grows through the pool; stream-ordered use).
  Result<void*> scratch(size_t bytes);
  // Changes whenever scratch() moves to a new block (captured CUDA graphs that used the old one are stale).
  uint64_t scratch_generation() const { return scratch_generation_; }
  Status synchronize() const;

 private:
  CudaContext() = default;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  void* cublas_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::unique_ptr<DevicePool> pool_;
  std::unique_ptr<GemmPlanCache> plans_;
  void* scratch_ = nullptr;
  size_t scratch_bytes_ = 0;
  uint64_t scratch_generation_ = 0;
  int num_sms_ = 0;
  cudaDeviceProp props_{};
  bool pdl_ = false;
  float* splitk_partials_ = nullptr;
  unsigned* splitk_counters_ = nullptr;
};

// Number of CUDA devices; 0 when there is no device or no driver (never an error).
int cuda_device_count();

}  // namespace dsi
