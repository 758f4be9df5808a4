// Device-side layers of the GPU runner (internal to src/model/cuda). Weights point into blocks owned by
// DeviceWeights; each layer's forward queues kernels on the context's stream and never synchronizes, except the
// MoE host-grouped path (expert widths that are not multiples of 8), which reads the routing back once per layer.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "kernels/cuda/cuda_context.h"
#include "kernels/ops.h"
#include "model/decoder.h"

namespace dsi::cuda {
struct RouterNormArgs;  // kernels/cuda/cuda_ops.h
struct HeadMatmulArgs;  // kernels/cuda/cuda_model_ops.h
struct GemvNormArgs;    // kernels/cuda/cuda_ops.h
}  // namespace dsi::cuda

namespace dsi::cuda_model {

// Bump allocator over device memory for a layer's temporaries: reset per layer; grows by chaining a new block
// (earlier blocks stay valid until reset_all: the stream may still use them).
class Arena {
 public:
  explicit Arena(CudaContext* ctx) : ctx_(ctx) {}
  Result<float*> floats(int64_t n) { return alloc_as<float>(n); }
  Result<int32_t*> ints(int64_t n) { return alloc_as<int32_t>(n); }
  Result<uint8_t*> bytes(int64_t n) { return alloc_as<uint8_t>((n + 15) / 16 * 16); }
  void reset();  // keeps the largest block, drops the others (after a stream synchronization)
  void rewind() { offset_ = 0; current_ = 0; }
  // Rewinding to a mark reuses what was allocated after it (safe: later kernels on the one stream run after the
  // earlier ones that used it).
  struct Mark {
    size_t current, offset;
  };
  Mark mark() const { return {current_, offset_}; }
  void rewind_to(Mark m) { current_ = m.current, offset_ = m.offset; }
  uint64_t generation() const { return generation_; }  // changes when blocks are added or merged

 private:
  template <class T>
  Result<T*> alloc_as(int64_t n) {
    DSI_ASSIGN_OR_RETURN(void* p, alloc(static_cast<size_t>(n) * sizeof(T)));
    return static_cast<T*>(p);
  }
  Result<void*> alloc(size_t bytes);
  CudaContext* ctx_;
  std::vector<DeviceBuffer<uint8_t>> blocks_;
  size_t current_ = 0, offset_ = 0;
  size_t high_water_ = 0;  // most bytes in use since the last reset
  uint64_t generation_ = 0;
};

// Opt-in step profile (environment DSI_CUDA_PROFILE=1): each mark synchronizes the stream and adds the time
// since the previous mark to `label`; profile_report prints the totals to stderr and clears them. Off, a mark
// costs one branch.
bool profiling();
void profile_mark(CudaContext& ctx, const char* label);
void profile_report(const char* title);

struct DLinear {
  const void* w = nullptr;  // [n, k]
  DType dtype = DType::kBF16;   // bf16, f32, or FP8 e4m3 with `scale`
  const float* scale = nullptr;  // FP8: [ceil(n / 128), ceil(k / 128)] (weight_scale_inv)
  const float* bias = nullptr;  // [n] or null
  int64_t n = 0, k = 0;
  // FP8 matmuls above the GEMV sizes take their quantized activations from the arena. x_bf16: optional, x rounded
  // to bf16 ([m, k], row stride k), which the GEMM reads instead of rounding x itself where takes_bf16_input(m)
  // and x has row stride k (the same bits).
  Status forward(CudaContext& ctx, Arena& arena, const float* x, int64_t m, float* y, int64_t x_stride = 0,
                 int64_t y_stride = 0, const uint16_t* x_bf16 = nullptr) const;
  // Whether forward at m rows multiplies bf16(x) on cuBLASLt (bf16 weights without bias, past the GEMV's m).
  bool takes_bf16_input(int64_t m) const { return m > 1 && dtype == DType::kBF16 && bias == nullptr && k % 8 == 0; }
  // One row with the RMSNorm before it in the GEMV's launch (cuda::gemv_bf16_norm; x = the norm's branch input):
  // where fuses_norm(m) and DSI_CUDA_GEMV_NORM=1 (not yet the default: not run on a GPU).
  bool fuses_norm(int64_t m) const;
  Status forward_normed(CudaContext& ctx, const float* x, const cuda::GemvNormArgs& norm, float* y) const;
  // y = (silu(gate) * up) W^T from gate_up = [m, 2k] (gate | up) in one GEMV, where fuses_silu_mul(m).
  bool fuses_silu_mul(int64_t m) const;
  Status forward_silu_mul(CudaContext& ctx, const float* gate_up, int64_t m, float* y) const;
  // The MatmulArgs of this layer for x [m, k] -> y [m, n] (bf16 / f32 weights).
  MatmulArgs matmul_args(const float* x, int64_t m, float* y, int64_t x_stride, int64_t y_stride) const;
};

struct DMlp {
  DLinear gate_up;  // [2 * inter, hidden]: gate rows then up rows
  DLinear down;     // [hidden, inter]
  int64_t inter = 0;
  // x_bf16: optional, x rounded to bf16 ([m, hidden]), used where takes_bf16_input(m) (see DLinear).
  Status forward(CudaContext& ctx, Arena& arena, const float* x, int64_t m, float* out,
                 const uint16_t* x_bf16 = nullptr) const;
  bool takes_bf16_input(int64_t m) const { return gate_up.takes_bf16_input(m); }
};

struct DRope {
  const double* inv_freq = nullptr;  // device [rot_dim / 2]
  double attn_factor = 1.0;
};

// What a layer's attention needs about the batch, on the device.
struct BatchMeta {
  int64_t num_tokens = 0, num_seqs = 0, max_blocks = 0, block_size = 0, max_kv_len = 0;
  bool all_single = false;                   // every chunk is one token (a decode step)
  bool any_single = false;                   // some chunk is one token
  const int64_t* positions = nullptr;       // [T]
  const int32_t* token_pos = nullptr;       // [T]
  const int32_t* token_seq = nullptr;       // [T]
  const int32_t* slots = nullptr;           // [T] cache row of each new token
  const int32_t* seq_lens = nullptr;        // [T] token_pos + 1 (the MLA decode kernel's lengths)
  const int32_t* block_tables = nullptr;    // [num_seqs, max_blocks]
  const int32_t* chunk_starts = nullptr;    // [num_seqs + 1] first token of each chunk, then num_tokens
  // [num_seqs + 1] first row of each chunk's whole context (cached prefix and chunk) when all contexts lie back to
  // back (the MLA naive prefill of a batch), then their total
  const int32_t* kv_starts = nullptr;
  int64_t max_chunk_tokens = 0;
  std::vector<int64_t> chunk_start, chunk_tokens;  // host copies per chunk
};

struct DGqa {
  DLinear qkv, o;
  DRope rope;
  int64_t hq = 0, hkv = 0, d = 0;
  float scale = 1.0f;
  uint16_t* k_pool = nullptr;  // [rows, 2 * hkv * d] bf16: K then V of each cached token
  uint16_t* v_pool = nullptr;  // k_pool + hkv * d
  // x_bf16: optional, x rounded to bf16 (see DLinear::forward). norm: the input norm left to qkv's GEMV (x is then
  // the norm's branch input; see DLinear::forward_normed).
  Status forward(CudaContext& ctx, Arena& arena, const float* x, const BatchMeta& b, float* out,
                 const uint16_t* x_bf16 = nullptr, const cuda::GemvNormArgs* norm = nullptr) const;
  bool takes_bf16_input(int64_t m) const { return qkv.takes_bf16_input(m); }
  bool fuses_norm(int64_t m) const { return qkv.fuses_norm(m); }
};

struct DMla {
  bool q_lora = false;
  DLinear fused_a;  // [q_lora_rank + lw, hidden] (q_a then kv_a) or [heads * qk + lw, hidden] (q then kv_a)
  const float* q_a_norm = nullptr;
  const float* kv_a_norm = nullptr;
  DLinear q_b;      // with q_lora
  DLinear kv_b;     // [heads * (nope + v), r]
  const void* w_uk_t = nullptr;  // [heads, r, nope], kv_b's dtype
  DLinear o;
  DRope rope;
  int64_t heads = 0, nope = 0, rope_dim = 0, v = 0, r = 0, q_lora_rank = 0;
  float eps = 1e-6f, scale = 1.0f;
  MlaMode mode = MlaMode::kAuto;
  uint16_t* pool = nullptr;  // [rows, r + rope_dim] bf16
  int64_t lw() const { return r + rope_dim; }
  // x_bf16: optional, x rounded to bf16 (see DLinear::forward). norm: the input norm left to fused_a's GEMV.
  Status forward(CudaContext& ctx, Arena& arena, const float* x, const BatchMeta& b, float* out,
                 const uint16_t* x_bf16 = nullptr, const cuda::GemvNormArgs* norm = nullptr) const;
  bool takes_bf16_input(int64_t m) const { return fused_a.takes_bf16_input(m); }
  bool fuses_norm(int64_t m) const { return fused_a.fuses_norm(m); }
  // q: [t, heads, nope + rope] at row stride q_stride; q_lat: [t, heads, r + rope] with its rope columns filled.
  // q_absorbed: q_lat[:, :, :r] already holds the absorbed queries (mla_prep_absorb).
  Status attend_absorbed(CudaContext& ctx, Arena& arena, const float* q, int64_t q_stride, float* q_lat,
                         const BatchMeta& b, float* attn, bool q_absorbed = false) const;
  // The query absorption q_lat[:, h, :r] = q_nope[:, h] W_UK_h of t tokens.
  cuda::HeadMatmulArgs q_absorb_args(const float* q, int64_t q_stride, float* q_lat, int64_t t) const;
  // q as for attend_absorbed (the attention kernels read it at its row stride: no contiguous copy).
  Status attend_naive(CudaContext& ctx, Arena& arena, const float* q, int64_t q_stride, const BatchMeta& b,
                      float* attn) const;
  // A prefill batch of several chunks in one expansion and one attention call; false (nothing queued) where the
  // batch does not qualify (a short chunk, too large, or a shape the kernels do not take).
  Result<bool> attend_naive_batched(CudaContext& ctx, Arena& arena, const float* q, int64_t q_stride,
                                    const BatchMeta& b, float* attn) const;
};

struct DMoe {
  DLinear router;  // [experts, hidden]
  const float* correction_bias = nullptr;
  MoeRouteArgs route;  // settings; pointers per call
  const void* w13 = nullptr;  // [experts, 2 * inter, hidden]
  const void* w2 = nullptr;   // [experts, hidden, inter]
  DType dtype = DType::kBF16;  // bf16 or FP8 e4m3 with the scales below
  const float* w13_scale = nullptr;  // FP8: [experts, 2 * inter / 128, ceil(hidden / 128)] (inter % 128 == 0)
  const float* w2_scale = nullptr;   // FP8: [experts, ceil(hidden / 128), inter / 128]
  int64_t experts = 0, inter = 0, hidden = 0;
  bool has_shared = false;
  DMlp shared;
  bool device_routing = true;
  // x_bf16: optional, x rounded to bf16 ([m, hidden]): the shared experts' GEMM and the grouped experts read it.
  // norm: optional, the residual add and RMSNorm that produce x (norm->normed == x), left to this call: fused into
  // the router's launch where fuses_norm(m), else run first.
  Status forward(CudaContext& ctx, Arena& arena, const float* x, int64_t m, float* out,
                 const uint16_t* x_bf16 = nullptr, const cuda::RouterNormArgs* norm = nullptr) const;
  // Whether the decode router (matmul + routing in one launch) can take the norm too (DSI_CUDA_ROUTER_NORM=1: not
  // yet the default, it has not run on a GPU).
  bool fuses_norm(int64_t m) const;
  bool fused_router(int64_t m, bool with_norm) const;
  bool takes_bf16_input(int64_t m) const { return path(m) == Path::kGrouped; }
  // Which routed-expert path forward takes for m tokens. kGemv and kGrouped keep the routing on the device
  // (capturable in a CUDA graph); kHost reads it back and runs one matmul per active expert.
  enum class Path { kGemv, kGrouped, kHost };
  Path path(int64_t m) const;
  DLinear expert_gate_up(int64_t e) const;
  DLinear expert_down(int64_t e) const;
  // The shared MLP as slices of `inter` rows that the decode kernels run beside the routed experts (0: it runs
  // on its own). Off with DSI_CUDA_FOLD_SHARED=0.
  int64_t shared_slices() const;
};

struct DLayer {
  const float* input_norm = nullptr;
  const float* post_norm = nullptr;
  bool mla = false;
  DGqa gqa;
  DMla mla_attn;
  bool moe = false;
  DMlp mlp;
  DMoe moe_mlp;
};

}  // namespace dsi::cuda_model
