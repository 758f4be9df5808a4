// Host memory read bandwidth, for rooflines of the CPU benchmarks.
#pragma once

#include <cstddef>

namespace dsi {

// Streams a `bytes` buffer (allocated and first touched by the same OpenMP threads that read it) with all OpenMP
// threads, `repeats` times; returns the best run in GB/s (1e9 bytes per second).
double measure_read_bandwidth_gbps(size_t bytes, int repeats);

}  // namespace dsi
