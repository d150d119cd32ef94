// Direct convolution (no im2col) for narrow reductions: a first layer's few input channels x
// taps (5x5x1 = 25), where im2col + GEMM spends most of its time copying columns and packing
// them again. FP (y = conv(x, W) + b) and GC (dW = sum over pixels of patch x dY), NHWC, with
// W stored (kh * kw * c, oc) as conv2d stores it. ref reads like the equation; fast is AVX2 and
// equals it bit for bit (the same products, fused multiply-adds in the same order).
#pragma once

#include <cstdint>

#include "pimtrain/base/parallel.h"
#include "pimtrain/kernels/im2col.h"

namespace pim::kernels {

// Taps t = (i * kw + j) * c + ch, in increasing t; x_t(n, oh, ow) = x[n][oh*stride - pad + i]
// [ow*stride - pad + j][ch], 0 in the padding (padding taps are multiplied too, as im2col's
// zeros are).
//
// FP, for every output (n, oh, ow, o):
//   acc = 0;  acc = fma(x_t(n, oh, ow), W[t][o], acc) for t = 0, 1, ...;  y = acc + b[o]
// (y = acc without a bias). Images [n0, n1) of y (n, out_h, out_w, oc) are written.
//
// GC, for every (t, o), over the batch's pixels in order (n, oh, ow):
//   acc = 0;  acc = fma(x_t(n, oh, ow), dY[n][oh][ow][o], acc);  dW[t][o] = acc
// (one running sum per element, never split: the same for any thread count).
namespace ref {
void ConvDirectForward(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                       int64_t oc, float* y, int64_t n0, int64_t n1);
void ConvDirectWeightGradient(const ConvGeometry& g, const float* x, const float* dy, int64_t oc,
                              float* dw);
}  // namespace ref

namespace fast {
// oc must be a multiple of 8 (DirectConvFits). Forward: images [n0, n1) on the calling thread.
void ConvDirectForward(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                       int64_t oc, float* y, int64_t n0, int64_t n1);
// Split over blocks of dW (taps x output channels) on `pool` (nullptr: inline).
void ConvDirectWeightGradient(const ConvGeometry& g, const float* x, const float* dy, int64_t oc,
                              float* dw, ThreadPool* pool);
}  // namespace fast

// Whether the direct kernels serve this layer: a reduction of at most 64 (taps x channels),
// where they outrun im2col + GEMM, and whole AVX2 vectors of output channels.
inline bool DirectConvFits(const ConvGeometry& g, int64_t oc) {
  return g.col_width() <= 64 && oc % 8 == 0;
}

}  // namespace pim::kernels
