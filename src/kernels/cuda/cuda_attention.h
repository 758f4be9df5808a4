// Causal attention for a batch of sequence chunks on the GPU, over a paged bf16 KV cache or over contiguous bf16 or
// f32 K/V (MLA prefill, which expands the latent first). The semantics are ops.h's AttentionArgs per chunk: query
// t at position pos[t] sees keys 0 .. pos[t] of its own sequence.
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
  // ... or contiguous bf16 (k_bf16 set): as k_f32, with the same strides in bf16 elements. Only the flash prefill
  // kernel reads it (paged_attention returns Unsupported where flash_prefill_supported is false).
  const uint16_t* k_bf16 = nullptr;
  const uint16_t* v_bf16 = nullptr;
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
  // Optional chunk boundaries (device, [num_chunks + 1]): chunk c is query tokens chunk_starts[c] ..
  // chunk_starts[c + 1] - 1, all of one sequence (same token_seq) at consecutive positions; chunk_starts[0] = 0 and
  // chunk_starts[num_chunks] = num_tokens (every token in exactly one chunk; a decode token is a chunk of one).
  // With them the flash prefill kernel serves batches of several sequences. Host: num_chunks and the longest
  // chunk's token count.
  const int32_t* chunk_starts = nullptr;
  int64_t num_chunks = 0, max_chunk_tokens = 0;
  // Optional with chunk_starts and contiguous K/V (device, [num_chunks + 1]): the keys of chunk c are rows
  // kv_starts[c] - kv_starts[0] + p (p = 0 .. its last position) of k_bf16 / k_f32 (and v): the contexts of all
  // chunks back to back, so that one call serves a batch of MLA prefills. Without it every chunk reads rows p.
  const int32_t* kv_starts = nullptr;
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
  // Prefill-sized work takes the tensor-core flash kernel (flash_prefill_attention). false: the CUDA-core kernels
  // (contiguous bf16 K/V then return Unsupported).
  bool flash_prefill = true;
};
Status paged_attention(CudaContext& ctx, const PagedAttentionArgs& args, const PagedAttentionOptions& options);

// Flash-attention-2 prefill on tensor cores (flash_prefill.cu). Grid (query head, 64-row query tile of a chunk,
// split over the keys); 4 warps of 16 query rows. Per 64-key tile (K and V in shared memory as bf16, double
// buffered: cp.async for bf16 sources, plain loads converted to bf16 for f32): S = Q K^T and O += P V with
// mma.sync m16n8k16 (bf16 in, f32 accumulate), causal mask per query position, online softmax in registers
// (exp2 domain). Tiles come from chunk_starts, or from single_sequence (the whole batch is one chunk); a tile never
// straddles two chunks and its rows past the chunk's end are neither computed into nor stored. Each tile's key loop
// ends at its largest position (fully masked key tiles are skipped; a warp skips tiles past its own rows). When the
// grid is small and the keys many (a short chunk after a long cached prefix) the keys are split (at least 8 tiles
// per split) and a combine kernel merges the splits.
// Numerics: Q, K, V and the probabilities P are rounded to bf16 (8 significant bits); scores, softmax sums and the
// output accumulate in f32. On random data max |out - exact| is about 2e-3 of max |out| (the tests allow 2e-2);
// the CUDA-core kernels compute in f32 (about 1e-6).
// Supported: (head_dim, v_dim) in {64, 128, 192} x {64, 128}; K/V rows and head slices 16-byte aligned (strides
// multiples of 8 bf16 or 4 f32 elements); the chunk layout known (chunk_starts, or single_sequence); contiguous K/V
// (bf16 or f32) have no sequence dimension: every chunk of such a call reads the same keys (one sequence per
// call), unless kv_starts places each chunk's keys (the MLA prefill of a batch).
bool flash_prefill_supported(const PagedAttentionArgs& args);
// What paged_attention(ctx, args, options) runs: the flash kernel when it is supported, options.flash_prefill is
// set, and the chunks are prefill-sized (num_tokens >= 16 per chunk on average) or the K/V are contiguous bf16.
bool picks_flash_prefill(const PagedAttentionArgs& args, const PagedAttentionOptions& options = {});
Status flash_prefill_attention(CudaContext& ctx, const PagedAttentionArgs& args);

}  // namespace dsi::cuda
