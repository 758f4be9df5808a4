// Helpers shared by the kernels tests: seeded random data, bf16 copies, error measures.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/ops.h"

namespace dsi {

// Names the instruction set in gtest messages.
inline void PrintTo(CpuIsa isa, std::ostream* os) { *os << cpu_isa_name(isa); }

}  // namespace dsi

namespace dsi::testing {

inline std::vector<float> random_normal(size_t n, std::mt19937& rng, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  std::transform(v.begin(), v.end(), out.begin(), f32_to_bf16);
  return out;
}

// max |got - want| / max |want| over the given elements (max |want| floored at 1e-30): the error relative to the
// scale of the result, which is what a float32 accumulation can promise for sums with cancellation.
inline double max_rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  EXPECT_EQ(got.size(), want.size());
  double max_diff = 0.0, max_want = 1e-30;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return INFINITY;
    if (std::isnan(want[i])) continue;
    max_diff = std::max(max_diff, std::fabs(double{got[i]} - want[i]));
    max_want = std::max(max_want, std::fabs(double{want[i]}));
  }
  return max_diff / max_want;
}

// Every instruction set this build has, so each variant is tested against ref on machines that can run it.
inline std::vector<CpuIsa> all_cpu_isas() { return {CpuIsa::kGeneric, CpuIsa::kAvx2, CpuIsa::kAvx512}; }

inline std::string isa_param_name(const ::testing::TestParamInfo<CpuIsa>& info) {
  return cpu_isa_name(info.param);
}

// Fixture for cpu-vs-ref tests over every instruction set; skips those this machine cannot run.
class CpuIsaTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override {
    if (!cpu_isa_available(GetParam())) GTEST_SKIP() << cpu_isa_name(GetParam()) << " not available here";
  }
  const Ops& cpu() const { return cpu_ops_for(GetParam()); }
  const Ops& ref() const { return ref_ops(); }
};

constexpr float kSentinel = 12345.0f;  // fills padding that an op must not write

}  // namespace dsi::testing
