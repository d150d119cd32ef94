// Tensor: an owning, contiguous, 64-byte-aligned float array with a shape; MatrixView for GEMMs.
// Layout convention: batch first, channels last (N, H, W, C), so a conv's im2col GEMM output is
// already the next layer's input and flatten is free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/matrix_view.h"

namespace pim {

class Shape {
 public:
  static constexpr int kMaxRank = 4;
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(const std::vector<int64_t>& dims);

  int rank() const { return rank_; }
  int64_t operator[](int i) const { return dims_[i]; }
  int64_t& operator[](int i) { return dims_[i]; }
  int64_t numel() const;
  // The shape with a leading batch dimension.
  Shape WithBatch(int64_t n) const;
  // The shape without its leading dimension.
  Shape DropFirst() const;
  std::vector<int64_t> dims() const { return {dims_, dims_ + rank_}; }
  std::string ToString() const;  // "[64, 28, 28, 1]"
  bool operator==(const Shape& o) const;
  bool operator!=(const Shape& o) const { return !(*this == o); }

 private:
  int64_t dims_[kMaxRank] = {0, 0, 0, 0};
  int rank_ = 0;
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(const Shape& shape);  // zero-filled
  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;

  const Shape& shape() const { return shape_; }
  int64_t numel() const { return shape_.numel(); }
  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  float& operator[](int64_t i) { return data_.get()[i]; }
  float operator[](int64_t i) const { return data_.get()[i]; }

  // Re-shapes, reallocating only when the capacity is too small. Contents are unspecified
  // after growth (callers overwrite); use Zero() when needed.
  void Resize(const Shape& shape);
  // Same element count, new shape (no copy).
  void Reshape(const Shape& shape);
  void Zero();
  void Fill(float v);

  // As a matrix: first dimension = rows, the rest flattened = cols.
  MatrixView AsMatrix();
  ConstMatrixView AsMatrix() const;

 private:
  struct FreeDeleter {
    void operator()(float* p) const { std::free(p); }
  };
  Shape shape_;
  int64_t capacity_ = 0;
  std::unique_ptr<float, FreeDeleter> data_;
};

}  // namespace pim
