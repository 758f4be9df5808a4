#include "core/tensor.h"

#include <algorithm>

#include <cstdlib>
#include <cstring>

namespace dsi {

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void Tensor::FreeDeleter::operator()(void* p) const { std::free(p); }

Tensor::Tensor(DType dtype, Shape shape) : dtype_(dtype), shape_(std::move(shape)) {
  for (int64_t d : shape_) DSI_CHECK(d >= 0, "negative dimension in ", shape_str(shape_));
  size_t bytes = nbytes();
  size_t alloc = ((bytes + 63) / 64) * 64;
  if (alloc == 0) alloc = 64;
  void* p = std::aligned_alloc(64, alloc);
  DSI_CHECK(p != nullptr, "out of host memory allocating ", alloc, " bytes");
  std::memset(p, 0, alloc);
  data_.reset(p);
}

Tensor Tensor::uninitialized(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = std::move(shape);
  for (int64_t d : t.shape_) DSI_CHECK(d >= 0, "negative dimension in ", shape_str(t.shape_));
  const size_t alloc = std::max<size_t>(64, (t.nbytes() + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, alloc);
  DSI_CHECK(p != nullptr, "out of host memory allocating ", alloc, " bytes");
  t.data_.reset(p);
  return t;
}

Tensor Tensor::from_f32(const std::vector<float>& values, Shape shape) {
  Tensor t(DType::kF32, std::move(shape));
  DSI_CHECK(static_cast<int64_t>(values.size()) == t.numel(), "from_f32: ", values.size(), " values for shape ",
            shape_str(t.shape()));
  std::memcpy(t.raw(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::clone() const {
  Tensor t(dtype_, shape_);
  if (!empty()) std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

void Tensor::reshape(Shape shape) {
  DSI_CHECK(shape_numel(shape) == numel(), "reshape ", shape_str(shape_), " -> ", shape_str(shape));
  shape_ = std::move(shape);
}

Tensor to_f32(const TensorView& view) {
  Tensor t(DType::kF32, view.shape);
  convert_to_f32(view.data, view.dtype, t.data<float>(), static_cast<size_t>(view.numel()));
  return t;
}

}  // namespace dsi
