// A fixed-bucket histogram (Prometheus style) with a snapshot for the metrics endpoint. Not thread-safe: the
// engine thread observes; snapshots are copied under the engine's stats lock.
#pragma once

#include <vector>

#include "engine/engine.h"

namespace dsi {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  // Seconds, from 1 ms to 10 min.
  static std::vector<double> latency_buckets() {
    return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
            40.0, 80.0, 160.0, 640.0};
  }
  void observe(double v) {
    size_t i = 0;
    while (i < bounds_.size() && v > bounds_[i]) ++i;
    ++counts_[i];
    sum_ += v;
    ++count_;
  }
  HistogramSnapshot snapshot() const { return {bounds_, counts_, sum_, count_}; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

}  // namespace dsi
