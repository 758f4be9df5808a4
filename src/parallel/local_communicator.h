// In-process communicator group: N ranks as N threads of one process, collectives through shared memory and a
// barrier. Tests use it to check that a tensor/expert-parallel run gives the single-process logits; it is also
// the intra-node path of CPU expert offload later.
// Thread use: rank i's communicator is used by thread i only; collectives must be called by all ranks in order.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "parallel/communicator.h"

namespace dsi {

class LocalGroup {
 public:
  explicit LocalGroup(int size);
  int size() const { return size_; }
  // The communicator of `rank` (owned by the group).
  Communicator& rank(int r) { return *comms_[r]; }

 private:
  friend class LocalCommunicator;
  void barrier();

  int size_;
  std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  std::vector<const float*> inputs_;
  std::vector<float> scratch_;
  std::vector<std::unique_ptr<Communicator>> comms_;
};

}  // namespace dsi
