// Reference direct convolution: the sums of conv_direct.h, element by element.
#include <cmath>

#include "pimtrain/kernels/conv_direct.h"

namespace pim::kernels::ref {
namespace {

// x_t(n, oh, ow) for tap (i, j, ch): the input pixel under the tap, 0 in the padding.
float Tap(const ConvGeometry& g, const float* x, int64_t n, int64_t oh, int64_t ow, int64_t i,
          int64_t j, int64_t ch) {
  const int64_t ih = oh * g.stride - g.pad + i, iw = ow * g.stride - g.pad + j;
  if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) return 0.0f;
  return x[((n * g.h + ih) * g.w + iw) * g.c + ch];
}

}  // namespace

void ConvDirectForward(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                       int64_t oc, float* y, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t oh = 0; oh < g.out_h(); ++oh) {
      for (int64_t ow = 0; ow < g.out_w(); ++ow) {
        for (int64_t o = 0; o < oc; ++o) {
          float acc = 0.0f;
          int64_t t = 0;
          for (int64_t i = 0; i < g.kh; ++i) {
            for (int64_t j = 0; j < g.kw; ++j) {
              for (int64_t ch = 0; ch < g.c; ++ch, ++t) {
                acc = std::fma(Tap(g, x, n, oh, ow, i, j, ch), w[t * oc + o], acc);
              }
            }
          }
          y[((n * g.out_h() + oh) * g.out_w() + ow) * oc + o] =
              bias != nullptr ? acc + bias[o] : acc;
        }
      }
    }
  }
}

void ConvDirectWeightGradient(const ConvGeometry& g, const float* x, const float* dy, int64_t oc,
                              float* dw) {
  int64_t t = 0;
  for (int64_t i = 0; i < g.kh; ++i) {
    for (int64_t j = 0; j < g.kw; ++j) {
      for (int64_t ch = 0; ch < g.c; ++ch, ++t) {
        for (int64_t o = 0; o < oc; ++o) {
          float acc = 0.0f;
          for (int64_t n = 0; n < g.n; ++n) {
            for (int64_t oh = 0; oh < g.out_h(); ++oh) {
              for (int64_t ow = 0; ow < g.out_w(); ++ow) {
                const float d = dy[((n * g.out_h() + oh) * g.out_w() + ow) * oc + o];
                acc = std::fma(Tap(g, x, n, oh, ow, i, j, ch), d, acc);
              }
            }
          }
          dw[t * oc + o] = acc;
        }
      }
    }
  }
}

void ConvDirectBackward(const ConvGeometry& g, const float* dy, const float* w, int64_t oc,
                        float* dx, int64_t n0, int64_t n1) {
  const int64_t out_h = g.out_h(), out_w = g.out_w();
  for (int64_t n = n0; n < n1; ++n) {
    for (int64_t ih = 0; ih < g.h; ++ih) {
      for (int64_t iw = 0; iw < g.w; ++iw) {
        for (int64_t ch = 0; ch < g.c; ++ch) {
          float acc = 0.0f;
          for (int64_t ii = 0; ii < g.kh; ++ii) {
            for (int64_t jj = 0; jj < g.kw; ++jj) {
              const int64_t i = g.kh - 1 - ii, j = g.kw - 1 - jj;
              const int64_t oh = ih + g.pad - i, ow = iw + g.pad - j;  // stride 1
              for (int64_t o = 0; o < oc; ++o) {
                const float d = oh < 0 || oh >= out_h || ow < 0 || ow >= out_w
                                    ? 0.0f
                                    : dy[((n * out_h + oh) * out_w + ow) * oc + o];
                acc = std::fma(d, w[((i * g.kw + j) * g.c + ch) * oc + o], acc);
              }
            }
          }
          dx[((n * g.h + ih) * g.w + iw) * g.c + ch] = acc;
        }
      }
    }
  }
}

}  // namespace pim::kernels::ref
