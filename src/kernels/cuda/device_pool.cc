#include "kernels/cuda/device_pool.h"

#include <algorithm>

#include "kernels/cuda/cuda_check.h"

namespace dsi {

RangeAllocator::RangeAllocator(uintptr_t base, size_t capacity) : base_(base), capacity_(capacity) {
  if (capacity > 0) free_[0] = capacity;
}

Result<uintptr_t> RangeAllocator::alloc(size_t bytes, size_t align) {
  DSI_CHECK(bytes > 0 && align > 0 && (align & (align - 1)) == 0, "alloc(", bytes, ", align ", align, ")");
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    const size_t off = it->first, size = it->second;
    const uintptr_t addr = (base_ + off + align - 1) & ~(uintptr_t{align} - 1);
    const size_t pad = addr - (base_ + off);
    if (pad + bytes > size) continue;
    // Round blocks to 256 bytes so the remainder stays aligned for the next caller.
    const size_t take = std::min(size, (pad + bytes + 255) / 256 * 256);
    free_.erase(it);
    if (take < size) free_[off + take] = size - take;
    live_[addr - base_] = Block{off, take};
    used_ += take;
    return addr;
  }
  return Status::OutOfRange(str_cat("device pool: no free block of ", bytes, " bytes (", used_, " of ", capacity_,
                                    " used, largest free ", largest_free(), ")"));
}

void RangeAllocator::free(uintptr_t addr) {
  DSI_CHECK(addr >= base_, "device pool: free of a foreign pointer");
  auto it = live_.find(addr - base_);
  DSI_CHECK(it != live_.end(), "device pool: free of an unknown pointer");
  size_t start = it->second.start, size = it->second.size;
  live_.erase(it);
  used_ -= size;
  auto next = free_.lower_bound(start);
  if (next != free_.end() && next->first == start + size) {  // merge with the free block after
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {  // merge with the free block before
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      size += prev->second;
      free_.erase(prev);
    }
  }
  free_[start] = size;
}

size_t RangeAllocator::largest_free() const {
  size_t best = 0;
  for (const auto& [off, size] : free_) best = std::max(best, size);
  return best;
}

Result<std::unique_ptr<DevicePool>> DevicePool::create(size_t bytes) {
  void* base = nullptr;
  DSI_CUDA_RETURN_IF_ERROR(cudaMalloc(&base, bytes));
  return std::unique_ptr<DevicePool>(new DevicePool(base, bytes));
}

DevicePool::~DevicePool() {
  if (base_ != nullptr) DSI_CUDA_CHECK(cudaFree(base_));
}

Result<void*> DevicePool::alloc(size_t bytes, size_t align) {
  DSI_ASSIGN_OR_RETURN(uintptr_t addr, ranges_.alloc(bytes, align));
  return reinterpret_cast<void*>(addr);
}

void DevicePool::free(void* p) { ranges_.free(reinterpret_cast<uintptr_t>(p)); }

}  // namespace dsi
