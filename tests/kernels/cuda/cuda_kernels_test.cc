// CUDA kernels against their kernels/ref twins. Prints one line per case; exits 1 if any case failed.
// Without a CUDA device it prints "SKIP: no CUDA device" and exits 77, which CTest reports as skipped (after the
// host-only pool tests, which still fail the run with exit 1).
#include <cstdio>
#include <string_view>

#include "cuda_test_util.h"

namespace dsi::cuda_test {

Tally& tally() {
  static Tally t;
  return t;
}

namespace {

void test_range_allocator() {
  const std::string name = "device_pool range allocator";
  RangeAllocator ra(0x10000, 1 << 20);
  auto a = ra.alloc(1000, 256), b = ra.alloc(5000, 4096), c = ra.alloc(300, 256);
  CT_CHECK(name, a.ok() && b.ok() && c.ok());
  CT_CHECK(name, *a % 256 == 0 && *b % 4096 == 0 && *c % 256 == 0);
  CT_CHECK(name, *b >= *a + 1000 && *c >= *b + 5000);
  CT_CHECK(name, !ra.alloc(2 << 20, 256).ok());  // larger than the pool: OutOfRange
  ra.free(*b);
  auto d = ra.alloc(4000, 256);  // first fit reuses b's hole
  CT_CHECK(name, d.ok() && *d < *c);
  ra.free(*a);
  ra.free(*c);
  ra.free(*d);
  CT_CHECK(name, ra.used() == 0 && ra.largest_free() == (1u << 20));  // fully coalesced
  std::printf("PASS %s\n", name.c_str());
  tally().passed++;
}

}  // namespace
}  // namespace dsi::cuda_test

int main(int argc, char** argv) {
  using namespace dsi;
  using namespace dsi::cuda_test;
  test_range_allocator();
  if (cuda_device_count() == 0) {
    std::printf("SKIP: no CUDA device: the GPU kernel tests did not run (scripts/gpu-run.sh runs them on a GPU)\n");
    return tally().failed == 0 ? 77 : 1;
  }
  auto ctx = CudaContext::create({.pool_bytes = size_t{24} << 30});
  if (!ctx.ok()) {
    std::printf("FAIL cuda context: %s\n", ctx.status().to_string().c_str());
    return 1;
  }
  std::printf("device: %s, %d SMs\n", (*ctx)->props().name, (*ctx)->num_sms());
  // Arguments name the groups to run (all without arguments), e.g. `cuda_kernels_test moe_grouped`.
  const auto wanted = [&](std::string_view group) {
    if (argc < 2) return true;
    for (int i = 1; i < argc; ++i) {
      if (group == argv[i]) return true;
    }
    return false;
  };
  if (wanted("elementwise")) run_elementwise_tests(**ctx);
  if (wanted("gemm")) run_gemm_tests(**ctx);
  if (wanted("fp8")) run_fp8_tests(**ctx);
  if (wanted("fp8_weights")) run_fp8_weights_tests(**ctx);
  if (wanted("mla_moe")) run_mla_moe_tests(**ctx);
  if (wanted("attention")) run_attention_tests(**ctx);
  if (wanted("model_ops")) run_model_ops_tests(**ctx);
  if (wanted("moe_experts")) run_moe_experts_tests(**ctx);
  if (wanted("moe_grouped")) run_moe_grouped_tests(**ctx);
  if (wanted("fused")) run_fused_tests(**ctx);
  if (wanted("sampling")) run_sampling_tests(**ctx);
  const Tally& t = tally();
  std::printf("SUMMARY: %d passed, %d failed, %d unsupported\n", t.passed, t.failed, t.unsupported);
  return t.failed == 0 ? 0 : 1;
}
