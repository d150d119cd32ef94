// Direct convolution (no im2col): a first layer's few input channels x taps (5x5x1 = 25),
// where im2col + GEMM spends most of its time copying columns and packing them again, and the
// 3x3 convolutions of narrow networks (resnet20's 16-64 channels), where the GEMMs' N = oc is
// too small for the BLAS to reach the core's peak. FP (y = conv(x, W) + b), GC (dW = sum over
// pixels of patch x dY) and, stride 1, BP (dX = the transposed convolution of dY), NHWC, with
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
//
// BP (stride 1), for every input element (n, ih, iw, ch), with the kernel flipped:
//   acc = 0;  for i' = 0 .. kh-1, j' = 0 .. kw-1, o = 0 .. oc-1, with i = kh-1-i', j = kw-1-j':
//     acc = fma(dY(n, ih + pad - i, iw + pad - j, o), W[(i * kw + j) * c + ch][o], acc)
//   dX = acc    (dY = 0 outside the output: the padding's taps are multiplied too)
// Images [n0, n1) of dX (n, h, w, c) are written.
namespace ref {
void ConvDirectForward(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                       int64_t oc, float* y, int64_t n0, int64_t n1);
void ConvDirectWeightGradient(const ConvGeometry& g, const float* x, const float* dy, int64_t oc,
                              float* dw);
void ConvDirectBackward(const ConvGeometry& g, const float* dy, const float* w, int64_t oc,
                        float* dx, int64_t n0, int64_t n1);
}  // namespace ref

namespace fast {
// oc must be a multiple of 8 (DirectConvFits). Forward: images [n0, n1) on the calling thread.
void ConvDirectForward(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                       int64_t oc, float* y, int64_t n0, int64_t n1);
// Split over blocks of dW (taps x output channels) on `pool` (nullptr: inline).
void ConvDirectWeightGradient(const ConvGeometry& g, const float* x, const float* dy, int64_t oc,
                              float* dw, ThreadPool* pool);
// BP is FP of dY (out_h x out_w x oc, padding kh-1-pad) with the flipped, transposed kernel
// wt[(i' * kw + j') * oc + o][ch] = W[((kh-1-i') * kw + kw-1-j') * c + ch][o], which
// BackwardWeights writes (col_width() * oc floats) once per step; c must be a multiple of 8.
void ConvDirectBackwardWeights(const ConvGeometry& g, const float* w, int64_t oc, float* wt);
void ConvDirectBackward(const ConvGeometry& g, const float* dy, const float* wt, int64_t oc,
                        float* dx, int64_t n0, int64_t n1);
}  // namespace fast

// Whether the direct kernels serve FP and GC of this layer: whole AVX2 vectors of output
// channels, and a reduction of at most 64 (taps x channels) or a 3x3 kernel on 8-64 channels in
// and out, where they outrun im2col + GEMM (measured on resnet20, bench/stage_profile.cc).
inline bool DirectConvFits(const ConvGeometry& g, int64_t oc) {
  if (oc % 8 != 0) return false;
  if (g.col_width() <= 64) return true;
  return g.kh == 3 && g.kw == 3 && g.c % 8 == 0 && g.c <= 64 && oc <= 64;
}
// Whether BP runs direct too: stride 1 (a transposed convolution that is a convolution), whole
// vectors of input channels, and padding at most kh - 1 and kw - 1.
inline bool DirectBackwardFits(const ConvGeometry& g, int64_t oc) {
  return DirectConvFits(g, oc) && g.kh == 3 && g.kw == 3 && g.stride == 1 && g.c % 8 == 0 &&
         g.pad <= 2;
}

}  // namespace pim::kernels
