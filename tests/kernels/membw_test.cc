#include "kernels/cpu/membw.h"

#include <gtest/gtest.h>

namespace dsi {
namespace {

TEST(MemBw, MeasuresAPositiveFiniteBandwidth) {
  // A small buffer (cache-resident); the function checks its own checksum, so this also proves the reads ran.
  const double gbps = measure_read_bandwidth_gbps(size_t{8} << 20, 3);
  EXPECT_GT(gbps, 0.1);
  EXPECT_LT(gbps, 1e5);
}

}  // namespace
}  // namespace dsi
