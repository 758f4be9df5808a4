// Tensor (owning, host memory, 64-byte aligned) and TensorView (borrowed). Row-major, contiguous.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace dsi {

using Shape = std::vector<int64_t>;

int64_t shape_numel(const Shape& shape);
std::string shape_str(const Shape& shape);  // "[2, 3]"

struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  Shape shape;

  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  template <class T>
  const T* as() const { return static_cast<const T*>(data); }
};

class Tensor {
 public:
  Tensor() = default;
  // Zero-initialized.
  Tensor(DType dtype, Shape shape);
  static Tensor zeros(DType dtype, Shape shape) { return Tensor(dtype, std::move(shape)); }
  // Not initialized: for buffers the caller overwrites at once (e.g. logits copied from the GPU).
  static Tensor uninitialized(DType dtype, Shape shape);
  // An f32 tensor holding `values` with the given shape (numel must match).
  static Tensor from_f32(const std::vector<float>& values, Shape shape);

  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  Tensor clone() const;

  bool empty() const { return data_ == nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? shape_.size() + i : i]; }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }

  void* raw() { return data_.get(); }
  const void* raw() const { return data_.get(); }
  template <class T>
  T* data() { return static_cast<T*>(raw()); }
  template <class T>
  const T* data() const { return static_cast<const T*>(raw()); }

  // Same bytes, new shape (numel must match).
  void reshape(Shape shape);
  TensorView view() const { return TensorView{raw(), dtype_, shape_}; }

 private:
  struct FreeDeleter {
    void operator()(void* p) const;
  };
  DType dtype_ = DType::kF32;
  Shape shape_;
  std::unique_ptr<void, FreeDeleter> data_;
};

// A copy of `view` converted to f32 (any floating dtype).
Tensor to_f32(const TensorView& view);

}  // namespace dsi
