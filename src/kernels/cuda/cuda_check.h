// Error checks for CUDA runtime and cuBLASLt calls. Every call and every launch goes through one of these:
//   DSI_CUDA_RETURN_IF_ERROR(expr)   -> returns Status::Internal("file:line: cudaMalloc(...): out of memory")
//   DSI_CUDA_CHECK(expr)             -> aborts with file:line (for invariants and destructors)
//   DSI_CUBLAS_RETURN_IF_ERROR(expr) / DSI_CUBLAS_CHECK(expr): the same for cublasStatus_t
//   DSI_CUDA_RETURN_IF_LAUNCH_FAILED() after a <<<>>> launch (cudaGetLastError)
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "core/status.h"

namespace dsi {

inline Status cuda_status(cudaError_t err, const char* expr, const char* file, int line) {
  if (err == cudaSuccess) return Status::Ok();
  return Status::Internal(str_cat(file, ":", line, ": ", expr, ": ", cudaGetErrorName(err), " (",
                                  cudaGetErrorString(err), ")"));
}

inline Status cublas_status(cublasStatus_t st, const char* expr, const char* file, int line) {
  if (st == CUBLAS_STATUS_SUCCESS) return Status::Ok();
  return Status::Internal(str_cat(file, ":", line, ": ", expr, ": ", cublasLtGetStatusName(st), " (",
                                  cublasLtGetStatusString(st), ")"));
}

}  // namespace dsi

#define DSI_CUDA_RETURN_IF_ERROR(expr) DSI_RETURN_IF_ERROR(::dsi::cuda_status((expr), #expr, __FILE__, __LINE__))
#define DSI_CUBLAS_RETURN_IF_ERROR(expr) \
  DSI_RETURN_IF_ERROR(::dsi::cublas_status((expr), #expr, __FILE__, __LINE__))
#define DSI_CUDA_RETURN_IF_LAUNCH_FAILED() \
  DSI_RETURN_IF_ERROR(::dsi::cuda_status(cudaGetLastError(), "kernel launch", __FILE__, __LINE__))

#define DSI_CUDA_CHECK(expr)                                                          \
  do {                                                                                \
    const cudaError_t dsi_err_ = (expr);                                              \
    if (dsi_err_ != cudaSuccess)                                                      \
      ::dsi::check_failed(__FILE__, __LINE__, #expr, cudaGetErrorString(dsi_err_));   \
  } while (0)
#define DSI_CUBLAS_CHECK(expr)                                                          \
  do {                                                                                  \
    const cublasStatus_t dsi_st_ = (expr);                                              \
    if (dsi_st_ != CUBLAS_STATUS_SUCCESS)                                               \
      ::dsi::check_failed(__FILE__, __LINE__, #expr, cublasLtGetStatusString(dsi_st_)); \
  } while (0)
