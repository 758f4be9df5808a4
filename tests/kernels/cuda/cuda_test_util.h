// Helpers for the CUDA kernel tests: no gtest (the GPU machine has none). Each case prints one line
// "PASS|FAIL|UNSUP <name> <metric>" and failures are counted; main exits non-zero if any case failed.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/cuda/device_pool.h"

namespace dsi::cuda_test {

struct Tally {
  int passed = 0, failed = 0, unsupported = 0;
};
Tally& tally();  // cuda_kernels_test.cc

// A Status that is not ok fails the case (UNSUP for kUnsupported) and returns from the calling test.
#define CT_TRY(name, expr)                                                                       \
  do {                                                                                           \
    const ::dsi::Status ct_st_ = (expr);                                                         \
    if (!ct_st_.ok()) {                                                                          \
      const bool unsup = ct_st_.code() == ::dsi::StatusCode::kUnsupported;                       \
      std::printf("%s %s: %s\n", unsup ? "UNSUP" : "FAIL", std::string(name).c_str(),           \
                  ct_st_.to_string().c_str());                                                   \
      (unsup ? ::dsi::cuda_test::tally().unsupported : ::dsi::cuda_test::tally().failed)++;      \
      return;                                                                                    \
    }                                                                                            \
  } while (0)

#define CT_CHECK(name, cond)                                                             \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::printf("FAIL %s: %s (%s:%d)\n", std::string(name).c_str(), #cond, __FILE__, __LINE__); \
      ::dsi::cuda_test::tally().failed++;                                                \
      return;                                                                            \
    }                                                                                    \
  } while (0)

inline std::mt19937& rng() {
  static std::mt19937 gen(12345);
  return gen;
}

inline std::vector<float> random_f32(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng());
  return v;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = f32_to_bf16(v[i]);
  return out;
}

inline std::vector<float> from_bf16(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_f32(v[i]);
  return out;
}

// Device copies through the context's pool and stream (abort on failure: the test cannot go on).
template <class T>
DeviceBuffer<T> upload(CudaContext& ctx, const std::vector<T>& host) {
  auto buf = pool_alloc<T>(ctx.pool(), std::max<size_t>(host.size(), 1));
  DSI_CHECK(buf.ok(), "upload: ", buf.status().to_string());
  if (!host.empty()) {
    DSI_CHECK(cudaMemcpyAsync(buf->get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice,
                              ctx.stream()) == cudaSuccess);
  }
  return std::move(buf).value();
}

template <class T>
std::vector<T> download(CudaContext& ctx, const DeviceBuffer<T>& buf, size_t n) {
  std::vector<T> host(n);
  DSI_CHECK(cudaMemcpyAsync(host.data(), buf.get(), n * sizeof(T), cudaMemcpyDeviceToHost, ctx.stream()) ==
            cudaSuccess);
  const cudaError_t err = cudaStreamSynchronize(ctx.stream());
  DSI_CHECK(err == cudaSuccess, "download: ", cudaGetErrorString(err));
  return host;
}

// max |got - want| / max(max |want|, 1e-30): one number per case, against a per-dtype tolerance.
inline double rel_max_err(const std::vector<float>& got, const std::vector<float>& want) {
  double max_want = 0.0, max_err = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    max_want = std::max(max_want, std::fabs(double{want[i]}));
    const double e = std::fabs(double{got[i]} - want[i]);
    max_err = std::isnan(e) ? INFINITY : std::max(max_err, e);
  }
  return max_err / std::max(max_want, 1e-30);
}

inline void report(const std::string& name, double err, double tol) {
  const bool ok = err <= tol;
  std::printf("%s %s rel_err=%.3g tol=%.1g\n", ok ? "PASS" : "FAIL", name.c_str(), err, tol);
  (ok ? tally().passed : tally().failed)++;
}

// Test groups (one file each).
void run_elementwise_tests(CudaContext& ctx);
void run_gemm_tests(CudaContext& ctx);
void run_fp8_tests(CudaContext& ctx);
void run_fp8_weights_tests(CudaContext& ctx);
void run_mla_moe_tests(CudaContext& ctx);
void run_moe_experts_tests(CudaContext& ctx);
void run_attention_tests(CudaContext& ctx);
void run_model_ops_tests(CudaContext& ctx);
void run_moe_grouped_tests(CudaContext& ctx);
void run_fused_tests(CudaContext& ctx);
void run_sampling_tests(CudaContext& ctx);

}  // namespace dsi::cuda_test
