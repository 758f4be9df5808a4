// The model interface and the registry keyed by config.json `architectures[0]`.
// A model consumes a ForwardBatch and a KvCache and returns logits; it never sees requests or scheduling.
// Thread use: one thread calls forward at a time (the engine thread); kernels parallelize inside.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "kernels/ref/ref_sampling.h"
#include "model/forward_batch.h"
#include "model/kv_cache.h"
#include "model/layers/mla.h"
#include "parallel/communicator.h"

namespace dsi {

struct ModelOptions {
  const Ops* ops = nullptr;       // default: cpu_ops()
  Communicator* comm = nullptr;   // default: a single-process communicator owned by the model
  MlaMode mla_mode = MlaMode::kAuto;
};

// How to pick the token of one logits row: the parameters and the row's random number (unused when greedy).
struct RowSampling {
  SampleParams params;
  double u01 = 0.0;  // [0, 1)
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  // Cache widths for this rank's layers.
  virtual KvLayout kv_layout() const = 0;
  // logits: [num_tokens, vocab] when batch.all_logits, else [num_chunks, vocab] (last token of each chunk).
  // Reserves cache room for the new positions. Token ids outside the vocabulary are an error.
  virtual Result<Tensor> forward(const ForwardBatch& batch, KvCache& cache) = 0;
  virtual void set_mla_mode(MlaMode mode) = 0;
  // Hands a logits tensor from forward back once the caller is done with it; a runner may fill it again in a
  // later step of the same shape (the GPU runner does: a fresh host buffer of batch x vocab floats page-faults
  // at every step). Optional for callers.
  virtual void recycle_logits(Tensor logits) { (void)logits; }
  // forward, then one token per logits row (rows.size() must equal the number of logits rows) with ref_sample's
  // semantics. The default samples forward's logits on the host; a runner that samples where the logits are
  // (samples_on_device) hands back only the ids.
  virtual Result<std::vector<int64_t>> forward_sampled(const ForwardBatch& batch, KvCache& cache,
                                                       std::span<const RowSampling> rows);
  virtual bool samples_on_device() const { return false; }
};

// Loads a Hugging Face model directory: config.json + safetensors (single or sharded).
Result<std::unique_ptr<Model>> load_model(const std::string& model_dir, const ModelOptions& options = {});
// Builds a model from an already parsed config and opened tensors (tests, benchmarks with random weights).
Result<std::unique_ptr<Model>> build_model(const ModelConfig& config, TensorStore& store,
                                           const ModelOptions& options = {});

}  // namespace dsi
