#include "model/kv_cache.h"

namespace dsi {

int64_t KvCache::add_sequence() {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (!slots_[i].live) {
      slots_[i].live = true;
      return static_cast<int64_t>(i);
    }
  }
  Slot s;
  s.live = true;
  s.k.resize(layout_.num_layers);
  s.v.resize(layout_.num_layers);
  slots_.push_back(std::move(s));
  return static_cast<int64_t>(slots_.size()) - 1;
}

void KvCache::free_sequence(int64_t slot) {
  DSI_CHECK(slot >= 0 && slot < static_cast<int64_t>(slots_.size()) && slots_[slot].live);
  Slot& s = slots_[slot];
  s.live = false;
  s.capacity = 0;
  for (auto& k : s.k) std::vector<float>().swap(k);
  for (auto& v : s.v) std::vector<float>().swap(v);
}

void KvCache::reserve(int64_t slot, int64_t num_tokens) {
  DSI_CHECK(slot >= 0 && slot < static_cast<int64_t>(slots_.size()) && slots_[slot].live);
  Slot& s = slots_[slot];
  if (num_tokens <= s.capacity) return;
  int64_t cap = std::max<int64_t>(num_tokens, s.capacity * 2);
  for (int64_t l = 0; l < layout_.num_layers; ++l) {
    s.k[l].resize(static_cast<size_t>(cap * layout_.k_width));
    s.v[l].resize(static_cast<size_t>(cap * layout_.v_width));
  }
  s.capacity = cap;
}

}  // namespace dsi
