#include "parallel/communicator.h"

#include <cstring>

namespace dsi {

Status SingleProcessCommunicator::all_gather(const float* send, float* recv, int64_t count) {
  if (send != recv) std::memmove(recv, send, static_cast<size_t>(count) * sizeof(float));
  return Status::Ok();
}

ExpertPlacement ExpertPlacement::contiguous(int64_t num_experts, int world, int rank) {
  DSI_CHECK(world > 0 && rank >= 0 && rank < world);
  ExpertPlacement p;
  p.rank_ = rank;
  int64_t per_rank = (num_experts + world - 1) / world;
  p.owner_.resize(num_experts);
  p.local_index_.assign(num_experts, -1);
  for (int64_t e = 0; e < num_experts; ++e) {
    p.owner_[e] = static_cast<int>(e / per_rank);
    if (p.owner_[e] == rank) p.local_index_[e] = p.num_local_++;
  }
  return p;
}

}  // namespace dsi
