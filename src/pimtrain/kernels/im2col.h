// im2col / col2im for NHWC images: turn a convolution into one GEMM (and its adjoint back).
#pragma once

#include <cstdint>

#include "pimtrain/base/parallel.h"

namespace pim::kernels {

// A 2-D convolution's geometry on NHWC input (n, h, w, c), zero padding, equal in both axes.
struct ConvGeometry {
  int64_t n = 0, h = 0, w = 0, c = 0;
  int64_t kh = 1, kw = 1;
  int64_t stride = 1;
  int64_t pad = 0;

  int64_t out_h() const { return (h + 2 * pad - kh) / stride + 1; }
  int64_t out_w() const { return (w + 2 * pad - kw) / stride + 1; }
  // Rows of the column matrix per image, and its width (the GEMM's reduction dimension).
  int64_t rows_per_image() const { return out_h() * out_w(); }
  int64_t col_width() const { return kh * kw * c; }
};

// cols[(n, oh, ow)][(i, j, ch)] = x[n][oh * stride - pad + i][ow * stride - pad + j][ch], zero
// where the tap falls into the padding. cols is (n * out_h * out_w) x (kh * kw * c), row-major,
// so cols * W (kh*kw*c x oc) is the NHWC output. Parallel over images.
void Im2col(const ConvGeometry& g, const float* x, float* cols, ThreadPool* pool);

// The adjoint of Im2col: dx = 0, then dx[n][ih][iw][ch] += cols[(n, oh, ow)][(i, j, ch)] for
// every tap that lands inside the image. Parallel over images (whose pixels are disjoint), and
// within an image the sum runs in a fixed order, so the result does not depend on threads.
void Col2im(const ConvGeometry& g, const float* cols, float* dx, ThreadPool* pool);

// Serial building blocks on images [n0, n1): `x`/`dx` point at image 0 of the batch, `cols` at
// the first row of image n0 (so a caller may pass a scratch block holding only those images'
// rows). Col2imImages zeroes images [n0, n1) of dx before accumulating.
void Im2colImages(const ConvGeometry& g, const float* x, float* cols, int64_t n0, int64_t n1);
void Col2imImages(const ConvGeometry& g, const float* cols, float* dx, int64_t n0, int64_t n1);
// Columns [c0, c1) of Im2colImages' rows alone: `cols` is ((n1 - n0) * rows_per_image) x
// (c1 - c0), row-major (e.g. the block of a weight gradient's rows one MPI rank computes).
void Im2colImagesColumns(const ConvGeometry& g, const float* x, float* cols, int64_t n0,
                         int64_t n1, int64_t c0, int64_t c1);

}  // namespace pim::kernels
