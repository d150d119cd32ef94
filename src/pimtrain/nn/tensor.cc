// Tensor and Shape implementation.
#include "pimtrain/nn/tensor.h"

#include <algorithm>
#include <cstring>
#include <new>

namespace pim {

Shape::Shape(std::initializer_list<int64_t> dims) {
  PIM_CHECK(dims.size() <= kMaxRank);
  for (int64_t d : dims) dims_[rank_++] = d;
}

Shape::Shape(const std::vector<int64_t>& dims) {
  PIM_CHECK(dims.size() <= kMaxRank);
  for (int64_t d : dims) dims_[rank_++] = d;
}

int64_t Shape::numel() const {
  if (rank_ == 0) return 0;
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

Shape Shape::WithBatch(int64_t n) const {
  PIM_CHECK(rank_ < kMaxRank);
  Shape s;
  s.dims_[0] = n;
  for (int i = 0; i < rank_; ++i) s.dims_[i + 1] = dims_[i];
  s.rank_ = rank_ + 1;
  return s;
}

Shape Shape::DropFirst() const {
  PIM_CHECK(rank_ >= 1);
  Shape s;
  for (int i = 1; i < rank_; ++i) s.dims_[i - 1] = dims_[i];
  s.rank_ = rank_ - 1;
  return s;
}

std::string Shape::ToString() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[i]);
  return s + "]";
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[i] != o.dims_[i]) return false;
  return true;
}

Tensor::Tensor(const Shape& shape) {
  Resize(shape);
  Zero();
}

Tensor::Tensor(const Tensor& other) { *this = other; }

Tensor& Tensor::operator=(const Tensor& other) {
  if (this == &other) return *this;
  Resize(other.shape_);
  if (other.numel() > 0) std::memcpy(data(), other.data(), sizeof(float) * other.numel());
  return *this;
}

void Tensor::Resize(const Shape& shape) {
  int64_t n = shape.numel();
  if (n > capacity_) {
    size_t bytes = ((static_cast<size_t>(n) * sizeof(float) + 63) / 64) * 64;
    float* p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (p == nullptr) throw std::bad_alloc();
    data_.reset(p);
    capacity_ = n;
  }
  shape_ = shape;
}

void Tensor::Reshape(const Shape& shape) {
  PIM_CHECK_MSG(shape.numel() == shape_.numel(),
                "reshape " + shape_.ToString() + " -> " + shape.ToString());
  shape_ = shape;
}

void Tensor::Zero() {
  if (numel() > 0) std::memset(data(), 0, sizeof(float) * numel());
}

void Tensor::Fill(float v) { std::fill(data(), data() + numel(), v); }

MatrixView Tensor::AsMatrix() {
  int64_t rows = shape_.rank() == 0 ? 0 : shape_[0];
  int64_t cols = rows == 0 ? 0 : numel() / rows;
  return {data(), rows, cols, cols};
}

ConstMatrixView Tensor::AsMatrix() const {
  int64_t rows = shape_.rank() == 0 ? 0 : shape_[0];
  int64_t cols = rows == 0 ? 0 : numel() / rows;
  return {data(), rows, cols, cols};
}

}  // namespace pim
