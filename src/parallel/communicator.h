// Communicator: the collectives the forward pass calls. The model holds a reference and never knows which
// transport is behind it (single process now; MPI for CPU processes and NCCL for GPUs later).
// Thread use: one communicator per rank, used by that rank's engine thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.h"

namespace dsi {

enum class ReduceOp { kSum, kMax };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // In place over `count` f32 values, on every rank.
  virtual Status all_reduce(float* data, int64_t count, ReduceOp op) = 0;
  // send [count] from each rank; recv [size * count] ordered by rank.
  virtual Status all_gather(const float* send, float* recv, int64_t count) = 0;
  virtual Status broadcast(float* data, int64_t count, int root) = 0;
};

// The world of one process: every collective is the identity.
class SingleProcessCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  Status all_reduce(float*, int64_t, ReduceOp) override { return Status::Ok(); }
  Status all_gather(const float* send, float* recv, int64_t count) override;
  Status broadcast(float*, int64_t, int) override { return Status::Ok(); }
};

// Which slice of a full weight this rank holds (tensor parallelism). Linear layers own their load-time slicing.
enum class ShardKind {
  kReplicated,  // the whole weight
  kColumn,      // rows [out_features] split: each rank computes a slice of the outputs
  kRow,         // columns [in_features] split: each rank sees a slice of the inputs; outputs need an all-reduce
};

struct ShardSpec {
  ShardKind kind = ShardKind::kReplicated;
  int rank = 0;
  int world = 1;
};

// Where each routed expert lives (expert parallelism; prepares for load balancing by re-placement).
class ExpertPlacement {
 public:
  // Contiguous blocks: expert e on rank e / ceil(num_experts / world).
  static ExpertPlacement contiguous(int64_t num_experts, int world, int rank);
  int64_t num_experts() const { return static_cast<int64_t>(owner_.size()); }
  bool is_local(int64_t expert) const { return owner_[expert] == rank_; }
  int owner(int64_t expert) const { return owner_[expert]; }
  // Index of the expert among this rank's experts, or -1.
  int64_t local_index(int64_t expert) const { return local_index_[expert]; }
  int64_t num_local() const { return num_local_; }

 private:
  int rank_ = 0;
  int64_t num_local_ = 0;
  std::vector<int> owner_;
  std::vector<int64_t> local_index_;
};

}  // namespace dsi
