#include "kernels/cpu/membw.h"

#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

#include "core/status.h"

namespace dsi {

double measure_read_bandwidth_gbps(size_t bytes, int repeats) {
  DSI_CHECK(bytes >= 4096 && repeats > 0, "measure_read_bandwidth_gbps: bytes ", bytes, ", repeats ", repeats);
  const int64_t n = static_cast<int64_t>(bytes / 64 * 8);  // uint64 words, whole cache lines
  auto* data = static_cast<uint64_t*>(std::aligned_alloc(64, static_cast<size_t>(n) * 8));
  DSI_CHECK(data != nullptr, "measure_read_bandwidth_gbps: cannot allocate ", bytes, " bytes");
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) data[i] = static_cast<uint64_t>(i);
  double best = 0.0;
  uint64_t checksum = 0;
  for (int r = 0; r < repeats; ++r) {
    const double start = omp_get_wtime();
    uint64_t sum = 0;
#pragma omp parallel for schedule(static) reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += data[i];
    const double seconds = omp_get_wtime() - start;
    checksum += sum;
    best = std::max(best, static_cast<double>(n) * 8 / seconds / 1e9);
  }
  std::free(data);
  // The sum of 0..n-1 proves the reads happened (and keeps the compiler from dropping them).
  const uint64_t expected = static_cast<uint64_t>(n) * static_cast<uint64_t>(n - 1) / 2;
  DSI_CHECK(checksum == expected * static_cast<uint64_t>(repeats), "measure_read_bandwidth_gbps: bad checksum");
  return best;
}

}  // namespace dsi
