// cuBLASLt GEMMs. Row-major y[m, n] = x[m, k] w[n, k]^T is column-major y^T[n, m] = w^T... expressed as
// D(n x m) = op(A) op(B) with A = w stored column-major [k x n] (op T) and B = x stored [k x m] (op N): the "TN"
// form that FP8 on Hopper requires. For FP8, A carries the 128x128 block scales and B the 1x128 vector scales.
#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/gemm_plan_cache.h"

namespace dsi {

GemmPlanCache::~GemmPlanCache() {
  for (auto& [key, plan] : plans_) destroy_gemm_plan(plan);
}

GemmPlan* GemmPlanCache::find(const std::string& key) {
  auto it = plans_.find(key);
  return it == plans_.end() ? nullptr : &it->second;
}

GemmPlan* GemmPlanCache::insert(const std::string& key, const GemmPlan& plan) { return &(plans_[key] = plan); }

void destroy_gemm_plan(GemmPlan& p) {
  if (p.op) cublasLtMatmulDescDestroy(p.op);
  for (cublasLtMatrixLayout_t l : {p.a, p.b, p.c, p.d}) {
    if (l) cublasLtMatrixLayoutDestroy(l);
  }
  p = GemmPlan{};
}

namespace cuda {
namespace {

uint32_t alignment_of(const void* p) {
  const auto v = reinterpret_cast<uintptr_t>(p);
  uint32_t a = 256;
  while (a > 1 && (v % a) != 0) a /= 2;
  return a;
}

enum class Scaling { kNone, kDeepSeekFp8 };

struct GemmDesc {
  cudaDataType_t a_type, b_type, d_type;
  cublasComputeType_t compute = CUBLAS_COMPUTE_32F;
  int64_t m = 0, n = 0, k = 0;  // row-major problem: y[m, n] = x[m, k] w[n, k]^T
  int64_t ldx = 0, ldy = 0;
  const void* w = nullptr;
  const void* x = nullptr;
  void* y = nullptr;
  const float* bias = nullptr;
  bool accumulate = false;
  Scaling scaling = Scaling::kNone;
  const float* w_scale = nullptr;
  const float* x_scale = nullptr;
};

Status make_plan(CudaContext& ctx, const GemmDesc& g, GemmPlan* plan) {
  DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->op, g.compute, CUDA_R_32F));
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (g.bias != nullptr) {
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
  }
  if (g.scaling == Scaling::kDeepSeekFp8) {
    const int32_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
    const int32_t b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    DSI_CUBLAS_RETURN_IF_ERROR(
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof(a_mode)));
    DSI_CUBLAS_RETURN_IF_ERROR(
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof(b_mode)));
    // The heuristic needs the scale pointers set to choose a block-scaled kernel.
    DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                              &g.w_scale, sizeof(g.w_scale)));
    DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                              &g.x_scale, sizeof(g.x_scale)));
  }
  DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->a, g.a_type, g.k, g.n, g.k));
  DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->b, g.b_type, g.k, g.m, g.ldx));
  DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->c, g.d_type, g.n, g.m, g.ldy));
  DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->d, g.d_type, g.n, g.m, g.ldy));

  cublasLtMatmulPreference_t pref = nullptr;
  DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = ctx.cublas_workspace_bytes();
  const uint32_t align_a = alignment_of(g.w), align_b = alignment_of(g.x), align_d = alignment_of(g.y);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_d, sizeof(align_d));
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_d, sizeof(align_d));
  cublasLtMatmulHeuristicResult_t result{};
  int count = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(ctx.cublas_handle()), plan->op, plan->a,
                                     plan->b, plan->c, plan->d, pref, 1, &result, &count);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || count == 0) {
    return Status::Unsupported(str_cat("cuBLASLt has no algorithm for m=", g.m, " n=", g.n, " k=", g.k,
                                       " (a type ", int(g.a_type), ", d type ", int(g.d_type), "): ",
                                       cublasLtGetStatusString(st)));
  }
  plan->algo = result.algo;
  plan->workspace_bytes = result.workspaceSize;
  return Status::Ok();
}

Status run_gemm(CudaContext& ctx, const GemmDesc& g) {
  const std::string key =
      str_cat(int(g.a_type), '/', int(g.b_type), '/', int(g.d_type), '/', int(g.compute), '/', g.m, 'x', g.n, 'x',
              g.k, '/', g.ldx, '/', g.ldy, '/', g.bias != nullptr, '/', int(g.scaling), '/', alignment_of(g.w), '/',
              alignment_of(g.x), '/', alignment_of(g.y));
  GemmPlan* plan = ctx.gemm_plans().find(key);
  if (plan == nullptr) {
    GemmPlan fresh;
    const Status st = make_plan(ctx, g, &fresh);
    if (!st.ok()) {
      destroy_gemm_plan(fresh);
      return st;
    }
    plan = ctx.gemm_plans().insert(key, fresh);
  }
  if (g.bias != nullptr) {
    DSI_CUBLAS_RETURN_IF_ERROR(
        cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias, sizeof(g.bias)));
  }
  if (g.scaling == Scaling::kDeepSeekFp8) {
    DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                              &g.w_scale, sizeof(g.w_scale)));
    DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                              &g.x_scale, sizeof(g.x_scale)));
  }
  const float alpha = 1.0f, beta = g.accumulate ? 1.0f : 0.0f;
  DSI_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(static_cast<cublasLtHandle_t>(ctx.cublas_handle()), plan->op, &alpha,
                                            g.w, plan->a, g.x, plan->b, &beta, g.y, plan->c, g.y, plan->d,
                                            &plan->algo, ctx.cublas_workspace(), plan->workspace_bytes,
                                            ctx.stream()));
  return Status::Ok();
}

Status check_shape(int64_t m, int64_t n, int64_t k, const char* op) {
  if (m < 0 || n < 0 || k < 0) return Status::InvalidArgument(str_cat(op, ": negative shape ", m, "x", n, "x", k));
  return Status::Ok();
}

}  // namespace

Status gemm_cublaslt(CudaContext& ctx, const MatmulArgs& a) {
  DSI_RETURN_IF_ERROR(check_shape(a.m, a.n, a.k, "gemm_cublaslt"));
  if (a.m == 0 || a.n == 0) return Status::Ok();
  const int64_t xs = a.x_stride ? a.x_stride : a.k, ys = a.y_stride ? a.y_stride : a.n;
  GemmDesc g{.a_type = CUDA_R_32F, .b_type = CUDA_R_32F, .d_type = CUDA_R_32F, .m = a.m, .n = a.n, .k = a.k,
             .ldx = xs, .ldy = ys, .w = a.w, .x = a.x, .y = a.y, .bias = a.bias, .accumulate = a.accumulate};
  if (a.w_dtype == DType::kBF16) {
    if (a.k % 8 != 0) return Status::Unsupported(str_cat("bf16 GEMM: k=", a.k, " is not a multiple of 8"));
    // Round the activations to bf16 into scratch; cuBLASLt multiplies bf16 x bf16 with f32 accumulation.
    DSI_ASSIGN_OR_RETURN(void* xb, ctx.scratch(static_cast<size_t>(a.m * a.k) * 2));
    DSI_RETURN_IF_ERROR(f32_to_bf16(ctx, a.x, static_cast<uint16_t*>(xb), a.m, a.k, xs));
    g.a_type = g.b_type = CUDA_R_16BF;
    g.x = xb;
    g.ldx = a.k;
  } else if (a.w_dtype != DType::kF32) {
    return Status::Unsupported(str_cat("cuda matmul: weight dtype ", dtype_name(a.w_dtype)));
  }
  return run_gemm(ctx, g);
}

Status gemm_bf16(CudaContext& ctx, const GemmBf16Args& a) {
  DSI_RETURN_IF_ERROR(check_shape(a.m, a.n, a.k, "gemm_bf16"));
  if (a.y_dtype != DType::kF32 && a.y_dtype != DType::kBF16) return Status::Unsupported("gemm_bf16: y dtype");
  if (a.m == 0 || a.n == 0) return Status::Ok();
  const GemmDesc g{.a_type = CUDA_R_16BF, .b_type = CUDA_R_16BF,
                   .d_type = a.y_dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF, .m = a.m, .n = a.n, .k = a.k,
                   .ldx = a.k, .ldy = a.n, .w = a.w, .x = a.x, .y = a.y};
  return run_gemm(ctx, g);
}

Status gemm_fp8(CudaContext& ctx, const GemmFp8Args& a) {
  DSI_RETURN_IF_ERROR(check_shape(a.m, a.n, a.k, "gemm_fp8"));
  // cuBLASLt accepts k % 128 != 0 with these scale modes but computes wrong results (seen on the H100).
  // Likewise for k / 128 not a multiple of 4 (k = 384, 640 gave garbage; 512, 1024, 2048 are right), perhaps a
  // padded stride for the 128x128 weight scales. DeepSeek's k (512, 1536, 2048, 7168, 18432) all qualify.
  if (a.k % 512 != 0) return Status::Unsupported(str_cat("gemm_fp8: k=", a.k, " is not a multiple of 512"));
  if (a.y_dtype != DType::kF32 && a.y_dtype != DType::kBF16) return Status::Unsupported("gemm_fp8: y dtype");
  if (a.m == 0 || a.n == 0) return Status::Ok();
  const int64_t m_pad = fp8_gemm_rows(a.m);
  const size_t y_size = a.y_dtype == DType::kF32 ? 4 : 2;
  const int64_t kb = a.k / 128;
  GemmDesc g{.a_type = CUDA_R_8F_E4M3, .b_type = CUDA_R_8F_E4M3,
             .d_type = a.y_dtype == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF, .m = m_pad, .n = a.n, .k = a.k,
             .ldx = a.k, .ldy = a.n, .w = a.w, .x = a.x, .y = a.y, .scaling = Scaling::kDeepSeekFp8,
             .w_scale = a.w_scale, .x_scale = a.x_scale};
  if (m_pad == a.m) return run_gemm(ctx, g);
  // cuBLASLt has no block-scaled kernel for m % 16 != 0: stage x, its scales and y with zero rows up to m_pad.
  const size_t x_bytes = static_cast<size_t>(m_pad * a.k), s_bytes = static_cast<size_t>(kb * m_pad) * 4;
  const size_t y_bytes = static_cast<size_t>(m_pad * a.n) * y_size;
  const size_t s_off = (x_bytes + 255) / 256 * 256, y_off = s_off + (s_bytes + 255) / 256 * 256;
  DSI_ASSIGN_OR_RETURN(void* buf, ctx.scratch(y_off + y_bytes));
  auto* base = static_cast<uint8_t*>(buf);
  DSI_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(base, 0, y_off, ctx.stream()));
  DSI_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(base, a.x, static_cast<size_t>(a.m * a.k), cudaMemcpyDeviceToDevice,
                                           ctx.stream()));
  DSI_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(base + s_off, m_pad * 4, a.x_scale, a.m * 4, a.m * 4, kb,
                                             cudaMemcpyDeviceToDevice, ctx.stream()));
  g.x = base;
  g.x_scale = reinterpret_cast<const float*>(base + s_off);
  g.y = base + y_off;
  DSI_RETURN_IF_ERROR(run_gemm(ctx, g));
  DSI_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(a.y, base + y_off, static_cast<size_t>(a.m * a.n) * y_size,
                                           cudaMemcpyDeviceToDevice, ctx.stream()));
  return Status::Ok();
}

int64_t fp8_gemm_rows(int64_t m) { return (m + 15) / 16 * 16; }

}  // namespace cuda
}  // namespace dsi
