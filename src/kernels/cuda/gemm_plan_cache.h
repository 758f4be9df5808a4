// Cached cuBLASLt plans (descriptors, layouts and the heuristic's algorithm) keyed by the GEMM's shape, dtypes,
// epilogue and pointer alignments, so a decode step does not re-run the heuristic. Owned by CudaContext.
#pragma once

#include <cublasLt.h>

#include <map>
#include <string>

namespace dsi {

struct GemmPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_bytes = 0;
};

class GemmPlanCache {
 public:
  GemmPlanCache() = default;
  ~GemmPlanCache();
  GemmPlanCache(const GemmPlanCache&) = delete;
  GemmPlanCache& operator=(const GemmPlanCache&) = delete;

  GemmPlan* find(const std::string& key);
  GemmPlan* insert(const std::string& key, const GemmPlan& plan);  // takes ownership of the handles

 private:
  std::map<std::string, GemmPlan> plans_;
};

void destroy_gemm_plan(GemmPlan& plan);

}  // namespace dsi
