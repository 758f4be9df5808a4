#include "parallel/local_communicator.h"

#include <algorithm>
#include <cstring>

namespace dsi {

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator(LocalGroup* group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }

  Status all_reduce(float* data, int64_t count, ReduceOp op) override {
    LocalGroup& g = *group_;
    g.inputs_[rank_] = data;
    g.barrier();  // every rank's input is published
    if (rank_ == 0) {
      g.scratch_.assign(data, data + count);
      for (int r = 1; r < g.size_; ++r) {
        const float* in = g.inputs_[r];
        for (int64_t i = 0; i < count; ++i) {
          g.scratch_[i] = op == ReduceOp::kSum ? g.scratch_[i] + in[i] : std::max(g.scratch_[i], in[i]);
        }
      }
    }
    g.barrier();  // the result is ready
    std::memcpy(data, g.scratch_.data(), static_cast<size_t>(count) * sizeof(float));
    g.barrier();  // nobody reuses scratch before all have copied
    return Status::Ok();
  }

  Status all_gather(const float* send, float* recv, int64_t count) override {
    LocalGroup& g = *group_;
    g.inputs_[rank_] = send;
    g.barrier();
    for (int r = 0; r < g.size_; ++r) {
      std::memcpy(recv + r * count, g.inputs_[r], static_cast<size_t>(count) * sizeof(float));
    }
    g.barrier();
    return Status::Ok();
  }

  Status broadcast(float* data, int64_t count, int root) override {
    LocalGroup& g = *group_;
    g.inputs_[rank_] = data;
    g.barrier();
    if (rank_ != root) std::memcpy(data, g.inputs_[root], static_cast<size_t>(count) * sizeof(float));
    g.barrier();
    return Status::Ok();
  }

 private:
  LocalGroup* group_;
  int rank_;
};

LocalGroup::LocalGroup(int size) : size_(size), inputs_(size) {
  for (int r = 0; r < size; ++r) comms_.push_back(std::make_unique<LocalCommunicator>(this, r));
}

void LocalGroup::barrier() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t gen = generation_;
  if (++arrived_ == size_) {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return;
  }
  cv_.wait(lock, [&] { return generation_ != gen; });
}

}  // namespace dsi
