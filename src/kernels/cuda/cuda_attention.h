// Causal attention for a batch of sequence chunks on the GPU, over a paged bf16 KV cache or over contiguous f32
// K/V (MLA prefill, which expands the latent first). The semantics are ops.h's AttentionArgs per chunk: query t
// at position pos[t] sees keys 0 .. pos[t] of its own sequence.
//
// Paged KV layout (model/kv_cache.h on the device): a pool of rows [num_rows, row_width] bf16 per layer; position
// p of sequence s is row block_tables[s * max_blocks + p / block_size] * block_size + p % block_size; head h of a
// row starts at h * head_stride.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "kernels/cuda/cuda_context.h"

namespace dsi::cuda {

struct PagedAttentionArgs {
  const float* q = nullptr;  // [num_tokens, num_q_heads, head_dim] via strides
  int64_t q_token_stride = 0, q_head_stride = 0;
  // Paged bf16 (k_pool set) ...
  const uint16_t* k_pool = nullptr;
  const uint16_t* v_pool = nullptr;  // may equal k_pool (MLA absorbed: the value is a prefix of the key row)
  int64_t k_row_width = 0, v_row_width = 0, k_head_stride = 0, v_head_stride = 0;
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks]
  int64_t max_blocks = 0, block_size = 0;
  // ... or contiguous f32 (k_f32 set): key of position p, head h at k_f32[p * k_token_stride + h * k_head_stride].
  const float* k_f32 = nullptr;
  const float* v_f32 = nullptr;
  int64_t k_token_stride = 0, v_token_stride = 0;
  // Per query token (device): its sequence (row of block_tables) and its position.
  const int32_t* token_seq = nullptr;  // [num_tokens]
  const int32_t* token_pos = nullptr;  // [num_tokens]
  float* out = nullptr;                // [num_tokens, num_q_heads, v_dim] via strides
  int64_t out_token_stride = 0, out_head_stride = 0;
  int64_t num_tokens = 0, num_q_heads = 0, num_kv_heads = 0, head_dim = 0, v_dim = 0;
  int64_t max_kv_len = 0;  // host: upper bound of pos + 1 (sizes the split over the sequence)
  // Every query token belongs to one sequence with consecutive positions (a prefill chunk): the kernel then
  // shares each key/value load among several queries.
  bool single_sequence = false;
  float scale = 1.0f;
};
// head_dim <= 1024, v_dim <= 1024. Long sequences are split across blocks (flash-decoding) and combined.
Status paged_attention(CudaContext& ctx, const PagedAttentionArgs& args);

// Kernel choices, for tests and timing comparisons only: paged_attention(ctx, args) uses the defaults. The
// result is the same (up to rounding) under every choice.
struct PagedAttentionOptions {
  // GQA over the paged cache with 2 .. 8 query heads per kv head and head_dim, v_dim <= 128: one block per (token,
  // kv head, split) computes the whole group. false: one block per query head (the earlier kernel).
  bool grouped = true;
  // Single-query kernels may split a sequence down to one 64-key tile per split when the batch is too small to
  // fill the GPU. false: at least 4 tiles per split (the earlier rule).
  bool short_splits = true;
};
Status paged_attention(CudaContext& ctx, const PagedAttentionArgs& args, const PagedAttentionOptions& options);

}  // namespace dsi::cuda
