// Non-owning row-major float matrix views, the currency of kernels and macros.
#pragma once

#include <cstdint>

namespace pim {

// Non-owning row-major matrix views (rows x cols, leading dimension ld >= cols).
struct MatrixView {
  float* data;
  int64_t rows, cols, ld;
  float* Row(int64_t r) const { return data + r * ld; }
};
struct ConstMatrixView {
  const float* data;
  int64_t rows, cols, ld;
  ConstMatrixView(const float* d, int64_t r, int64_t c, int64_t l) : data(d), rows(r), cols(c), ld(l) {}
  ConstMatrixView(const MatrixView& m) : data(m.data), rows(m.rows), cols(m.cols), ld(m.ld) {}  // NOLINT
  const float* Row(int64_t r) const { return data + r * ld; }
};

}  // namespace pim
