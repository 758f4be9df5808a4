// DevicePool: one big cudaMalloc carved by a first-fit free list with coalescing (a bump allocator while nothing
// has been freed). Weights, activations, the KV cache and scratch all come from here; nothing else calls
// cudaMalloc. Not thread-safe: owned and used by the one thread that drives the CUDA stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>

#include "core/status.h"

namespace dsi {

// The carving logic alone, over an address range (host-testable).
class RangeAllocator {
 public:
  RangeAllocator(uintptr_t base, size_t capacity);
  // Offset-aligned block of `bytes` (> 0); OutOfRange when no free block fits.
  Result<uintptr_t> alloc(size_t bytes, size_t align);
  // Returns a block from alloc; an unknown address is a bug (DSI_CHECK).
  void free(uintptr_t addr);
  size_t capacity() const { return capacity_; }
  size_t used() const { return used_; }
  size_t largest_free() const;

 private:
  uintptr_t base_;
  size_t capacity_;
  size_t used_ = 0;
  std::map<size_t, size_t> free_;  // offset -> size, non-adjacent (coalesced)
  struct Block {
    size_t start, size;  // the carved range; the user address may sit past `start` (alignment)
  };
  std::map<size_t, Block> live_;  // user offset -> block
};

class DevicePool {
 public:
  // cudaMalloc's `bytes` on the current device.
  static Result<std::unique_ptr<DevicePool>> create(size_t bytes);
  ~DevicePool();
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  Result<void*> alloc(size_t bytes, size_t align = 256);
  void free(void* p);
  size_t capacity() const { return ranges_.capacity(); }
  size_t used() const { return ranges_.used(); }

 private:
  DevicePool(void* base, size_t bytes) : base_(base), ranges_(reinterpret_cast<uintptr_t>(base), bytes) {}
  void* base_;
  RangeAllocator ranges_;
};

// A typed block from the pool, returned to it on destruction.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DevicePool* pool, T* p, size_t n) : pool_(pool), p_(p), n_(n) {}
  DeviceBuffer(DeviceBuffer&& o) noexcept : pool_(o.pool_), p_(o.p_), n_(o.n_) { o.p_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    reset();
    pool_ = o.pool_, p_ = o.p_, n_ = o.n_;
    o.p_ = nullptr;
    return *this;
  }
  ~DeviceBuffer() { reset(); }
  void reset() {
    if (p_ != nullptr) pool_->free(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }

 private:
  DevicePool* pool_ = nullptr;
  T* p_ = nullptr;
  size_t n_ = 0;
};

template <class T>
Result<DeviceBuffer<T>> pool_alloc(DevicePool& pool, size_t n) {
  DSI_ASSIGN_OR_RETURN(void* p, pool.alloc(n * sizeof(T) > 0 ? n * sizeof(T) : 1));
  return DeviceBuffer<T>(&pool, static_cast<T*>(p), n);
}

}  // namespace dsi
