// KV cache for incremental decoding, one growable contiguous region per (sequence slot, layer).
// Layouts: GQA caches K [tokens, num_kv_heads * head_dim] and V [tokens, num_kv_heads * v_head_dim];
// MLA caches the compressed latent per token, [tokens, kv_lora_rank + qk_rope_head_dim] (normalized c_kv then
// the rotated k_pe), and no V (the absorbed form reads values from the latent).
// The paged cache of the serving engine replaces the storage, not this interface.
// Thread use: owned by the engine thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "core/status.h"

namespace dsi {

struct KvLayout {
  int64_t num_layers = 0;
  int64_t k_width = 0;  // floats per token per layer in K (or the MLA latent)
  int64_t v_width = 0;  // floats per token per layer in V (0 for MLA)
};

class KvCache {
 public:
  explicit KvCache(KvLayout layout) : layout_(layout) {}

  const KvLayout& layout() const { return layout_; }
  // A new empty sequence slot.
  int64_t add_sequence();
  void free_sequence(int64_t slot);
  // Makes room for `num_tokens` positions in every layer of `slot`.
  void reserve(int64_t slot, int64_t num_tokens);
  int64_t capacity(int64_t slot) const { return slots_[slot].capacity; }

  // Base of the [capacity, k_width] / [capacity, v_width] arrays of one layer.
  float* k(int64_t slot, int64_t layer) { return slots_[slot].k[layer].data(); }
  float* v(int64_t slot, int64_t layer) { return slots_[slot].v[layer].data(); }

 private:
  struct Slot {
    bool live = false;
    int64_t capacity = 0;
    std::vector<std::vector<float>> k, v;  // per layer
  };
  KvLayout layout_;
  std::vector<Slot> slots_;
};

}  // namespace dsi
