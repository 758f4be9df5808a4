#include "kernels/cuda/cuda_context.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemm_plan_cache.h"

namespace dsi {

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

Result<std::unique_ptr<CudaContext>> CudaContext::create(const CudaContextOptions& options) {
  std::unique_ptr<CudaContext> ctx(new CudaContext());
  ctx->device_ = options.device;
  DSI_CUDA_RETURN_IF_ERROR(cudaSetDevice(options.device));
  DSI_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&ctx->props_, options.device));
  ctx->num_sms_ = ctx->props_.multiProcessorCount;
  DSI_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&ctx->stream_, cudaStreamNonBlocking));
  cublasLtHandle_t handle = nullptr;
  DSI_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&handle));
  ctx->cublas_ = handle;
  DSI_ASSIGN_OR_RETURN(ctx->pool_, DevicePool::create(options.pool_bytes));
  DSI_ASSIGN_OR_RETURN(ctx->workspace_, ctx->pool_->alloc(options.cublas_workspace_bytes));
  ctx->workspace_bytes_ = options.cublas_workspace_bytes;
  ctx->plans_ = std::make_unique<GemmPlanCache>();
  const char* pdl = std::getenv("DSI_CUDA_PDL");
  ctx->set_pdl(pdl == nullptr || std::strcmp(pdl, "0") != 0);
  DSI_ASSIGN_OR_RETURN(void* partials, ctx->pool_->alloc(kSplitkPartialFloats * sizeof(float)));
  ctx->splitk_partials_ = static_cast<float*>(partials);
  DSI_ASSIGN_OR_RETURN(void* counters, ctx->pool_->alloc(kSplitkCounters * sizeof(unsigned)));
  ctx->splitk_counters_ = static_cast<unsigned*>(counters);
  DSI_CUDA_RETURN_IF_ERROR(cudaMemset(counters, 0, kSplitkCounters * sizeof(unsigned)));
  return ctx;
}

CudaContext::~CudaContext() {
  plans_.reset();
  if (stream_ != nullptr) DSI_CUDA_CHECK(cudaStreamSynchronize(stream_));
  if (pool_ != nullptr) {
    if (scratch_ != nullptr) pool_->free(scratch_);
    if (workspace_ != nullptr) pool_->free(workspace_);
    if (splitk_partials_ != nullptr) pool_->free(splitk_partials_);
    if (splitk_counters_ != nullptr) pool_->free(splitk_counters_);
  }
  pool_.reset();
  if (cublas_ != nullptr) DSI_CUBLAS_CHECK(cublasLtDestroy(static_cast<cublasLtHandle_t>(cublas_)));
  if (stream_ != nullptr) DSI_CUDA_CHECK(cudaStreamDestroy(stream_));
}

Result<void*> CudaContext::scratch(size_t bytes) {
  if (bytes <= scratch_bytes_) return scratch_;
  if (scratch_ != nullptr) {
    // Work already queued may still read the old block; wait before handing it back.
    DSI_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    pool_->free(scratch_);
    scratch_ = nullptr;
    scratch_bytes_ = 0;
  }
  const size_t want = std::max(bytes, size_t{1} << 20);
  DSI_ASSIGN_OR_RETURN(scratch_, pool_->alloc(want));
  ++scratch_generation_;
  scratch_bytes_ = want;
  return scratch_;
}

Status CudaContext::synchronize() const {
  DSI_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return Status::Ok();
}

}  // namespace dsi
