// Fast direct convolution (AVX2): register blocks of output pixels x output channels (FP) or of
// taps x output channels (GC), each element's fused multiply-adds in the reference's order.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/kernels/conv_direct.h"

namespace pim::kernels::fast {
namespace {

// Output pixels per FP register block (x 2 vectors of channels: 12 accumulators of 16).
constexpr int kPixels = 6;
// Taps per GC register block (x 2 vectors of channels: 12 accumulators).
constexpr int kTaps = 6;

// Image n with a zero border of g.pad, (h + 2 pad) x (w + 2 pad) x c, in a per-thread scratch;
// the border is cleared when the scratch is (re)made for a geometry and never written after.
struct Padded {
  int64_t pw = 0;
  std::vector<float> buf;
  int64_t h = -1, w = -1, c = -1, pad = -1;  // the geometry the border was cleared for

  const float* Load(const ConvGeometry& g, const float* x, int64_t n) {
    const int64_t ph = g.h + 2 * g.pad;
    pw = g.w + 2 * g.pad;
    if (g.h != h || g.w != w || g.c != c || g.pad != pad) {
      buf.assign(static_cast<size_t>(ph * pw * g.c), 0.0f);
      h = g.h;
      w = g.w;
      c = g.c;
      pad = g.pad;
    }
    const float* img = x + n * g.h * g.w * g.c;
    for (int64_t ih = 0; ih < g.h; ++ih) {
      std::memcpy(buf.data() + ((ih + g.pad) * pw + g.pad) * g.c, img + ih * g.w * g.c,
                  sizeof(float) * g.w * g.c);
    }
    return buf.data();
  }
};

// Offset of tap t = (i * kw + j) * c + ch from a window's top-left corner in the padded image.
std::vector<int64_t> TapOffsets(const ConvGeometry& g, int64_t pw) {
  std::vector<int64_t> off;
  for (int64_t i = 0; i < g.kh; ++i) {
    for (int64_t j = 0; j < g.kw; ++j) {
      for (int64_t ch = 0; ch < g.c; ++ch) off.push_back((i * pw + j) * g.c + ch);
    }
  }
  return off;
}

// P output pixels (window corners at img + base[p]) x V vectors of channels from `w`'s column
// block: acc = fma(x_t, W[t], acc) over the taps in order, then + bias.
template <int P, int V>
void ForwardBlock(const float* img, const int64_t* base, const int64_t* off, int64_t taps,
                  const float* w, int64_t oc, const float* bias, float* y) {
  __m256 acc[P][V];
  for (int p = 0; p < P; ++p) {
    for (int v = 0; v < V; ++v) acc[p][v] = _mm256_setzero_ps();
  }
  for (int64_t t = 0; t < taps; ++t) {
    __m256 wv[V];
    for (int v = 0; v < V; ++v) wv[v] = _mm256_loadu_ps(w + t * oc + 8 * v);
    for (int p = 0; p < P; ++p) {
      const __m256 xb = _mm256_broadcast_ss(img + base[p] + off[t]);
      for (int v = 0; v < V; ++v) acc[p][v] = _mm256_fmadd_ps(xb, wv[v], acc[p][v]);
    }
  }
  for (int p = 0; p < P; ++p) {
    for (int v = 0; v < V; ++v) {
      __m256 r = acc[p][v];
      if (bias != nullptr) r = _mm256_add_ps(r, _mm256_loadu_ps(bias + 8 * v));
      _mm256_storeu_ps(y + p * oc + 8 * v, r);
    }
  }
}

template <int V>
void ForwardPixels(int pixels, const float* img, const int64_t* base, const int64_t* off,
                   int64_t taps, const float* w, int64_t oc, const float* bias, float* y) {
  switch (pixels) {
    case 6: return ForwardBlock<6, V>(img, base, off, taps, w, oc, bias, y);
    case 5: return ForwardBlock<5, V>(img, base, off, taps, w, oc, bias, y);
    case 4: return ForwardBlock<4, V>(img, base, off, taps, w, oc, bias, y);
    case 3: return ForwardBlock<3, V>(img, base, off, taps, w, oc, bias, y);
    case 2: return ForwardBlock<2, V>(img, base, off, taps, w, oc, bias, y);
    default: return ForwardBlock<1, V>(img, base, off, taps, w, oc, bias, y);
  }
}

// T taps (offsets off[0..T)) x V vectors of channels, running sums in acc (T x V x 8 floats),
// over every output pixel of one padded image: acc = fma(x_t, dY, acc) in pixel order.
template <int T, int V>
void GradientBlock(const ConvGeometry& g, const float* img, int64_t pw, const int64_t* off,
                   const float* dy, int64_t oc, float* acc_mem) {
  __m256 acc[T][V];
  for (int t = 0; t < T; ++t) {
    for (int v = 0; v < V; ++v) acc[t][v] = _mm256_loadu_ps(acc_mem + (t * V + v) * 8);
  }
  const int64_t out_w = g.out_w();
  for (int64_t oh = 0; oh < g.out_h(); ++oh) {
    for (int64_t ow = 0; ow < out_w; ++ow) {
      const float* corner = img + (oh * g.stride * pw + ow * g.stride) * g.c;
      const float* d = dy + (oh * out_w + ow) * oc;
      __m256 dv[V];
      for (int v = 0; v < V; ++v) dv[v] = _mm256_loadu_ps(d + 8 * v);
      for (int t = 0; t < T; ++t) {
        const __m256 xb = _mm256_broadcast_ss(corner + off[t]);
        for (int v = 0; v < V; ++v) acc[t][v] = _mm256_fmadd_ps(xb, dv[v], acc[t][v]);
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(acc_mem + (t * V + v) * 8, acc[t][v]);
  }
}

template <int V>
void GradientTaps(int taps, const ConvGeometry& g, const float* img, int64_t pw,
                  const int64_t* off, const float* dy, int64_t oc, float* acc_mem) {
  switch (taps) {
    case 6: return GradientBlock<6, V>(g, img, pw, off, dy, oc, acc_mem);
    case 5: return GradientBlock<5, V>(g, img, pw, off, dy, oc, acc_mem);
    case 4: return GradientBlock<4, V>(g, img, pw, off, dy, oc, acc_mem);
    case 3: return GradientBlock<3, V>(g, img, pw, off, dy, oc, acc_mem);
    case 2: return GradientBlock<2, V>(g, img, pw, off, dy, oc, acc_mem);
    default: return GradientBlock<1, V>(g, img, pw, off, dy, oc, acc_mem);
  }
}

}  // namespace

void ConvDirectForward(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                       int64_t oc, float* y, int64_t n0, int64_t n1) {
  PIM_CHECK_MSG(oc % 8 == 0, "direct convolution needs whole vectors of output channels");
  thread_local Padded padded;
  const int64_t taps = g.col_width(), out_h = g.out_h(), out_w = g.out_w();
  std::vector<int64_t> off;
  for (int64_t n = n0; n < n1; ++n) {
    const float* img = padded.Load(g, x, n);
    if (off.empty()) off = TapOffsets(g, padded.pw);
    for (int64_t oh = 0; oh < out_h; ++oh) {
      for (int64_t ow0 = 0; ow0 < out_w; ow0 += kPixels) {
        const int pixels = static_cast<int>(std::min<int64_t>(kPixels, out_w - ow0));
        int64_t base[kPixels];
        for (int p = 0; p < pixels; ++p) {
          base[p] = (oh * g.stride * padded.pw + (ow0 + p) * g.stride) * g.c;
        }
        float* out = y + ((n * out_h + oh) * out_w + ow0) * oc;
        for (int64_t o = 0; o < oc;) {
          const float* b = bias != nullptr ? bias + o : nullptr;
          if (oc - o >= 16) {
            ForwardPixels<2>(pixels, img, base, off.data(), taps, w + o, oc, b, out + o);
            o += 16;
          } else {
            ForwardPixels<1>(pixels, img, base, off.data(), taps, w + o, oc, b, out + o);
            o += 8;
          }
        }
      }
    }
  }
}

void ConvDirectWeightGradient(const ConvGeometry& g, const float* x, const float* dy, int64_t oc,
                              float* dw, ThreadPool* pool) {
  PIM_CHECK_MSG(oc % 8 == 0, "direct convolution needs whole vectors of output channels");
  const int64_t taps = g.col_width();
  // Equal tap blocks of at most kTaps (25 taps: 5 x 5, not 4 x 6 + 1, whose one-tap block would
  // wait on the latency of its two accumulator chains as long as a full block takes).
  const int64_t tap_blocks = (taps + kTaps - 1) / kTaps;
  const int64_t block = (taps + tap_blocks - 1) / tap_blocks;
  const int64_t oc_blocks = (oc + 15) / 16;  // 16 channels, the last one 8 if oc % 16 == 8
  const int64_t units = tap_blocks * oc_blocks;
  const int64_t per_image = g.rows_per_image() * oc;
  auto run = [&](int64_t u0, int64_t u1) {
    // Each unit's running sums, carried from image to image (pixel order is kept).
    std::vector<float> acc(static_cast<size_t>((u1 - u0) * kTaps * 16), 0.0f);
    thread_local Padded padded;
    std::vector<int64_t> off;
    for (int64_t n = 0; n < g.n; ++n) {
      const float* img = padded.Load(g, x, n);
      if (off.empty()) off = TapOffsets(g, padded.pw);
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t t0 = u / oc_blocks * block, o = u % oc_blocks * 16;
        const int t = static_cast<int>(std::min<int64_t>(block, taps - t0));
        float* a = acc.data() + (u - u0) * kTaps * 16;
        if (oc - o >= 16) {
          GradientTaps<2>(t, g, img, padded.pw, off.data() + t0, dy + n * per_image + o, oc, a);
        } else {
          GradientTaps<1>(t, g, img, padded.pw, off.data() + t0, dy + n * per_image + o, oc, a);
        }
      }
    }
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t t0 = u / oc_blocks * block, o = u % oc_blocks * 16;
      const int64_t t = std::min<int64_t>(block, taps - t0), v = oc - o >= 16 ? 2 : 1;
      const float* a = acc.data() + (u - u0) * kTaps * 16;
      for (int64_t k = 0; k < t; ++k) std::memcpy(dw + (t0 + k) * oc + o, a + k * v * 8, 32 * v);
    }
  };
  if (pool == nullptr) {
    run(0, units);
  } else {
    pool->ParallelFor(units, 1, run);
  }
}

}  // namespace pim::kernels::fast
