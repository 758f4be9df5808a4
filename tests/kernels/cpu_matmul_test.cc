// cpu matmul vs ref on random inputs: GEMV (m <= 8) and widened-panel (m > 8) paths, f32 and bf16 weights,
// odd sizes (k tails, n tails), padded strides, bias and accumulate, for every instruction set.
#include "kernels/cpu/cpu_ops.h"
#include "kernel_test_util.h"

namespace dsi::testing {
namespace {

struct MatmulCase {
  int64_t m, n, k;
  DType w_dtype;
  bool bias, accumulate, padded;
};

std::string describe(const MatmulCase& c) {
  return str_cat("m=", c.m, " n=", c.n, " k=", c.k, " w=", dtype_name(c.w_dtype), " bias=", c.bias,
                 " accumulate=", c.accumulate, " padded=", c.padded);
}

// Runs the case on ref and cpu with identical inputs; returns the relative error of y (padding checked too).
double run_matmul_case(const Ops& cpu, const MatmulCase& c, uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t x_stride = c.padded ? c.k + 3 : c.k;
  const int64_t y_stride = c.padded ? c.n + 5 : c.n;
  std::vector<float> x = random_normal(static_cast<size_t>(c.m * x_stride), rng);
  std::vector<float> w = random_normal(static_cast<size_t>(c.n * c.k), rng, 0.5f);
  std::vector<uint16_t> w_bf16 = to_bf16(w);
  std::vector<float> bias = random_normal(static_cast<size_t>(c.n), rng);
  std::vector<float> y_init = random_normal(static_cast<size_t>(c.m * y_stride), rng);
  for (int64_t i = 0; i < c.m; ++i)
    for (int64_t j = c.n; j < y_stride; ++j) y_init[i * y_stride + j] = kSentinel;
  std::vector<float> y_ref = y_init, y_cpu = y_init;
  MatmulArgs args{.x = x.data(),
                  .w = c.w_dtype == DType::kBF16 ? static_cast<const void*>(w_bf16.data()) : w.data(),
                  .w_dtype = c.w_dtype,
                  .bias = c.bias ? bias.data() : nullptr,
                  .m = c.m, .n = c.n, .k = c.k,
                  .x_stride = c.padded ? x_stride : 0,
                  .y_stride = c.padded ? y_stride : 0,
                  .accumulate = c.accumulate};
  args.y = y_ref.data();
  ref_ops().matmul(args);
  args.y = y_cpu.data();
  cpu.matmul(args);
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = c.n; j < y_stride; ++j) {
      EXPECT_EQ(y_cpu[i * y_stride + j], kSentinel) << describe(c) << " wrote padding at row " << i;
    }
  }
  return max_rel_error(y_cpu, y_ref);
}

using CpuMatmulTest = CpuIsaTest;

TEST_P(CpuMatmulTest, MatchesRefOverShapes) {
  uint32_t seed = 1;
  for (int64_t m : {1, 3, 8, 17, 64}) {
    for (int64_t k : {1, 7, 64, 129, 1000}) {
      for (int64_t n : {1, 13, 131}) {
        for (DType w_dtype : {DType::kF32, DType::kBF16}) {
          // Cycle the flags so every shape meets some and every flag meets every m and k.
          const MatmulCase c{m, n, k, w_dtype, seed % 2 == 0, seed % 3 == 0, seed % 5 < 2};
          EXPECT_LT(run_matmul_case(cpu(), c, seed), 1e-5) << describe(c);
          ++seed;
        }
      }
    }
  }
}

TEST_P(CpuMatmulTest, MatchesRefWithEveryFlagCombination) {
  uint32_t seed = 100;
  for (int64_t m : {2, 9, 64}) {  // GEMV, on-the-fly widening, widened panel
    for (int flags = 0; flags < 8; ++flags) {
      for (DType w_dtype : {DType::kF32, DType::kBF16}) {
        const MatmulCase c{m, 37, 70, w_dtype, (flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0};
        EXPECT_LT(run_matmul_case(cpu(), c, seed++), 1e-5) << describe(c);
      }
    }
  }
}

TEST_P(CpuMatmulTest, MatchesRefAtModelLikeSizes) {
  // Several blocks per thread, a k that is a multiple of every vector width, both weight dtypes.
  EXPECT_LT(run_matmul_case(cpu(), {1, 512, 2048, DType::kBF16, false, false, false}, 7), 1e-5);
  EXPECT_LT(run_matmul_case(cpu(), {4, 300, 1536, DType::kF32, true, false, false}, 8), 1e-5);
  EXPECT_LT(run_matmul_case(cpu(), {40, 260, 2048, DType::kBF16, false, true, true}, 9), 1e-5);
}

TEST_P(CpuMatmulTest, EmptyKGivesBiasOnly) {
  const MatmulCase c{3, 5, 0, DType::kF32, true, false, false};
  EXPECT_LT(run_matmul_case(cpu(), c, 11), 1e-7);
}

INSTANTIATE_TEST_SUITE_P(AllIsas, CpuMatmulTest, ::testing::ValuesIn(all_cpu_isas()), isa_param_name);

}  // namespace
}  // namespace dsi::testing
