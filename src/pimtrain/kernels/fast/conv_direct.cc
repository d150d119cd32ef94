// Fast direct convolution (AVX-512 where the build has it, else AVX2): register blocks of output
// pixels x output channels (FP, and BP as FP of the error) or of taps x output channels (GC),
// each element's fused multiply-adds in the reference's order.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/kernels/conv_direct.h"

namespace pim::kernels::fast {
namespace {

// One vector of output channels: 16 floats under AVX-512 (32 registers), else 8 (AVX2, 16
// registers). A vector may be a half (the first 8 lanes, when oc % 16 == 8 under AVX-512):
// masked loads and stores; its upper lanes compute zeros that are never stored. Vector width
// never changes an element's sum: each is one chain of fused multiply-adds in tap order.
#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
// Output pixels per FP register block / taps per GC register block (x V vectors).
constexpr int kBlock = 12;
inline Vec Zero() { return _mm512_setzero_ps(); }
inline Vec Bcast(const float* p) { return _mm512_set1_ps(*p); }
inline Vec Fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec Add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
// The lanes a vector holds: all, or the first 8 (a half). A masked load with every lane set
// costs what a plain one does, so the loops carry no branch on it.
using Mask = __mmask16;
inline Mask LanesOf(bool half) { return half ? Mask{0x00FF} : Mask{0xFFFF}; }
inline Vec Load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
inline void Store(float* p, Vec v, Mask m) { _mm512_mask_storeu_ps(p, m, v); }
#else
using Vec = __m256;
constexpr int kLanes = 8;
constexpr int kBlock = 6;
inline Vec Zero() { return _mm256_setzero_ps(); }
inline Vec Bcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Vec Fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec Add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
using Mask = bool;  // unused: whole 8-lane vectors only
inline Mask LanesOf(bool half) { return half; }
inline Vec Load(const float* p, Mask) { return _mm256_loadu_ps(p); }
inline void Store(float* p, Vec v, Mask) { _mm256_storeu_ps(p, v); }
#endif
// Channels per register block: 2 vectors; taps per GC block at most (one vector: T x 1
// accumulators).
constexpr int kBlockChannels = 2 * kLanes;
constexpr int kGradientTaps = 2 * kBlock;
// Taps per GC register block with V vectors (T x V accumulators + V + 1 in the registers).
constexpr int GradientTapsFor(int vectors) { return vectors == 2 ? kBlock : kGradientTaps; }

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

// P output pixels x V vectors of channels from `w`'s column block (the last one half when
// `half`): acc = fma(x_t, W[t], acc) over the taps in order, then + bias. Pixel p's window
// corner is at img + base[p] (kStep = 0), or at img + p * kStep (kStep > 0: pixels of one row,
// stride * c floats apart, so that every broadcast is one register plus a constant).
template <int P, int V, int kStep>
void ForwardBlock(const float* img, const int64_t* base, const int64_t* off, int64_t taps,
                  const float* w, int64_t oc, const float* bias, float* y, bool half) {
  const Mask full = LanesOf(false), last = LanesOf(half);
  Vec acc[P][V];
  #pragma GCC unroll 32
  for (int p = 0; p < P; ++p) {
    #pragma GCC unroll 32
    for (int v = 0; v < V; ++v) acc[p][v] = Zero();
  }
  for (int64_t t = 0; t < taps; ++t) {
    Vec wv[V];
    #pragma GCC unroll 32
    for (int v = 0; v < V; ++v) wv[v] = Load(w + t * oc + kLanes * v, v == V - 1 ? last : full);
    const float* xt = img + off[t];
    #pragma GCC unroll 32
    for (int p = 0; p < P; ++p) {
      const Vec xb = Bcast(kStep > 0 ? xt + p * kStep : xt + base[p]);
      #pragma GCC unroll 32
      for (int v = 0; v < V; ++v) acc[p][v] = Fma(xb, wv[v], acc[p][v]);
    }
  }
  #pragma GCC unroll 32
  for (int p = 0; p < P; ++p) {
    #pragma GCC unroll 32
    for (int v = 0; v < V; ++v) {
      const Mask h = v == V - 1 ? last : full;
      Vec r = acc[p][v];
      if (bias != nullptr) r = Add(r, Load(bias + kLanes * v, h));
      Store(y + p * oc + kLanes * v, r, h);
    }
  }
}

template <int V, int kStep, int P = V == 1 ? 2 * kBlock : kBlock>
void ForwardPixels(int pixels, const float* img, const int64_t* base, const int64_t* off,
                   int64_t taps, const float* w, int64_t oc, const float* bias, float* y,
                   bool half) {
  if constexpr (P > 1) {
    if (pixels < P) {
      return ForwardPixels<V, kStep, P - 1>(pixels, img, base, off, taps, w, oc, bias, y, half);
    }
  }
  ForwardBlock<P, V, kStep>(img, base, off, taps, w, oc, bias, y, half);
}

// Every channel block of a run of P pixels (output at y, oc channels per pixel).
template <int kStep>
void ForwardChannels(int pixels, const float* img, const int64_t* base, const int64_t* off,
                     int64_t taps, const float* w, int64_t oc, const float* bias, float* y);

// T taps x V vectors of channels, running sums in acc (T x V x kLanes floats), over every
// output pixel of one padded image: acc = fma(x_t, dY, acc) in pixel order. Tap k of the block
// is at off[k] from a window's corner, or (kContiguous: channels of one kernel position) at
// off[0] + k, a constant from the corner.
template <int T, int V, bool kContiguous>
void GradientBlock(const ConvGeometry& g, const float* img, int64_t pw, const int64_t* off,
                   const float* dy, int64_t oc, float* acc_mem, bool half) {
  const Mask full = LanesOf(false), last = LanesOf(half);
  Vec acc[T][V];
  #pragma GCC unroll 32
  for (int t = 0; t < T; ++t) {
    #pragma GCC unroll 32
    for (int v = 0; v < V; ++v) acc[t][v] = Load(acc_mem + (t * V + v) * kLanes, full);
  }
  const int64_t out_w = g.out_w(), step = g.stride * g.c;
  const float* first = img + (kContiguous ? off[0] : 0);
  for (int64_t oh = 0; oh < g.out_h(); ++oh) {
    const float* corner = first + oh * g.stride * pw * g.c;
    const float* d = dy + oh * out_w * oc;
    for (int64_t ow = 0; ow < out_w; ++ow, corner += step, d += oc) {
      Vec dv[V];
      #pragma GCC unroll 32
      for (int v = 0; v < V; ++v) dv[v] = Load(d + kLanes * v, v == V - 1 ? last : full);
      #pragma GCC unroll 32
      for (int t = 0; t < T; ++t) {
        const Vec xb = Bcast(kContiguous ? corner + t : corner + off[t]);
        #pragma GCC unroll 32
        for (int v = 0; v < V; ++v) acc[t][v] = Fma(xb, dv[v], acc[t][v]);
      }
    }
  }
  #pragma GCC unroll 32
  for (int t = 0; t < T; ++t) {
    #pragma GCC unroll 32
    for (int v = 0; v < V; ++v) Store(acc_mem + (t * V + v) * kLanes, acc[t][v], full);
  }
}

template <int V, bool kContiguous, int T = kGradientTaps>
void GradientTaps(int taps, const ConvGeometry& g, const float* img, int64_t pw,
                  const int64_t* off, const float* dy, int64_t oc, float* acc_mem, bool half) {
  if constexpr (T > 1) {
    if (taps < T) {
      return GradientTaps<V, kContiguous, T - 1>(taps, g, img, pw, off, dy, oc, acc_mem, half);
    }
  }
  GradientBlock<T, V, kContiguous>(g, img, pw, off, dy, oc, acc_mem, half);
}

// The channel block starting at o: 2 vectors, 1, or (AVX-512, oc % 16 == 8) a half.
struct ChannelBlock {
  int vectors;
  bool half;
  int64_t width;
};
ChannelBlock BlockAt(int64_t oc, int64_t o) {
  const int64_t left = oc - o;
  if (left >= 2 * kLanes) return {2, false, 2 * kLanes};
  if (left > kLanes) return {2, true, left};
  if (left == kLanes) return {1, false, kLanes};
  return {1, true, left};
}

template <int kStep>
void ForwardChannels(int pixels, const float* img, const int64_t* base, const int64_t* off,
                     int64_t taps, const float* w, int64_t oc, const float* bias, float* y) {
  for (int64_t o = 0; o < oc;) {
    const float* b = bias != nullptr ? bias + o : nullptr;
    const ChannelBlock cb = BlockAt(oc, o);
    if (cb.vectors == 2) {
      ForwardPixels<2, kStep>(pixels, img, base, off, taps, w + o, oc, b, y + o, cb.half);
    } else {
      ForwardPixels<1, kStep>(pixels, img, base, off, taps, w + o, oc, b, y + o, cb.half);
    }
    o += cb.width;
  }
}

// ForwardChannels<step> for the pixel steps of the layers served (stride x channels), or
// nullptr (the generic path, corners from a table).
using RowKernel = void (*)(int, const float*, const int64_t*, const int64_t*, int64_t,
                           const float*, int64_t, const float*, float*);
RowKernel RowKernelFor(int64_t step) {
  switch (step) {
    case 1: return ForwardChannels<1>;
    case 3: return ForwardChannels<3>;
    case 8: return ForwardChannels<8>;
    case 16: return ForwardChannels<16>;
    case 24: return ForwardChannels<24>;
    case 32: return ForwardChannels<32>;
    case 48: return ForwardChannels<48>;
    case 64: return ForwardChannels<64>;
    case 128: return ForwardChannels<128>;
    default: return nullptr;
  }
}

}  // namespace

void ConvDirectForward(const ConvGeometry& g, const float* x, const float* w, const float* bias,
                       int64_t oc, float* y, int64_t n0, int64_t n1) {
  PIM_CHECK_MSG(oc % 8 == 0, "direct convolution needs whole vectors of output channels");
  thread_local Padded padded;
  const int64_t taps = g.col_width(), out_h = g.out_h(), out_w = g.out_w();
  const int64_t total = out_h * out_w;
  std::vector<int64_t> off;
  const RowKernel row_kernel = RowKernelFor(g.stride * g.c);
  // Row kernels: each output row in equal blocks of at most kBlock pixels (32 = 11 + 11 + 10,
  // not 12 + 12 + 8, whose last block would wait on its accumulators' latency), or 2 kBlock.
  // One vector of channels (oc <= kLanes) has room for twice the pixels (2 kBlock accumulators).
  const int64_t most = oc <= kLanes ? 2 * kBlock : kBlock;
  const int64_t row_blocks = (out_w + most - 1) / most;
  const int64_t row_block = (out_w + row_blocks - 1) / row_blocks;
  for (int64_t n = n0; n < n1; ++n) {
    const float* img = padded.Load(g, x, n);
    if (off.empty()) off = TapOffsets(g, padded.pw);
    if (row_kernel != nullptr) {
      for (int64_t oh = 0; oh < out_h; ++oh) {
        const float* row = img + oh * g.stride * padded.pw * g.c;
        for (int64_t ow0 = 0; ow0 < out_w; ow0 += row_block) {
          const int pixels = static_cast<int>(std::min(row_block, out_w - ow0));
          row_kernel(pixels, row + ow0 * g.stride * g.c, nullptr, off.data(), taps, w, oc, bias,
                     y + ((n * out_h + oh) * out_w + ow0) * oc);
        }
      }
      continue;
    }
    // Generic: blocks of kBlock consecutive output pixels across rows, corners from a table.
    for (int64_t p0 = 0; p0 < total; p0 += kBlock) {
      const int pixels = static_cast<int>(std::min<int64_t>(kBlock, total - p0));
      int64_t base[kBlock];
      for (int p = 0; p < pixels; ++p) {
        const int64_t oh = (p0 + p) / out_w, ow = (p0 + p) % out_w;
        base[p] = (oh * g.stride * padded.pw + ow * g.stride) * g.c;
      }
      ForwardChannels<0>(pixels, img, base, off.data(), taps, w, oc, bias,
                         y + (n * total + p0) * oc);
    }
  }
}

void ConvDirectWeightGradient(const ConvGeometry& g, const float* x, const float* dy, int64_t oc,
                              float* dw, ThreadPool* pool) {
  PIM_CHECK_MSG(oc % 8 == 0, "direct convolution needs whole vectors of output channels");
  const int64_t taps = g.col_width();
  // Units: a block of taps x a block of channels. Channels of one kernel position are
  // contiguous in the padded image (c % 8 == 0: blocks within a position, equal blocks of at
  // most GradientTapsFor(V)); otherwise equal blocks of at most kBlock taps over all positions
  // (25 taps under AVX2: 5 x 5, not 4 x 6 + 1, whose one-tap block would wait on the latency of
  // its accumulator chains as long as a full block takes).
  struct Unit {
    int64_t t0, o;
    int taps;
    ChannelBlock cb;
  };
  const bool contiguous = g.c % 8 == 0;
  std::vector<Unit> units;
  for (int64_t o = 0; o < oc; o += BlockAt(oc, o).width) {
    const ChannelBlock cb = BlockAt(oc, o);
    const int64_t span = contiguous ? g.c : taps;  // taps a block may not cross
    const int64_t most = contiguous ? GradientTapsFor(cb.vectors) : kBlock;
    const int64_t blocks = (span + most - 1) / most, block = (span + blocks - 1) / blocks;
    for (int64_t s0 = 0; s0 < taps; s0 += span) {
      for (int64_t t0 = s0; t0 < s0 + span; t0 += block) {
        units.push_back({t0, o, static_cast<int>(std::min(block, s0 + span - t0)), cb});
      }
    }
  }
  const int64_t per_image = g.rows_per_image() * oc;
  constexpr int64_t kUnitFloats = int64_t{kGradientTaps} * kLanes;  // >= kBlock x 2 vectors
  static_assert(kGradientTaps * kLanes >= kBlock * kBlockChannels);
  auto run = [&](int64_t u0, int64_t u1) {
    // Each unit's running sums, carried from image to image (pixel order is kept).
    std::vector<float> acc(static_cast<size_t>((u1 - u0) * kUnitFloats), 0.0f);
    thread_local Padded padded;
    std::vector<int64_t> off;
    for (int64_t n = 0; n < g.n; ++n) {
      const float* img = padded.Load(g, x, n);
      if (off.empty()) off = TapOffsets(g, padded.pw);
      for (int64_t u = u0; u < u1; ++u) {
        const Unit& un = units[u];
        float* a = acc.data() + (u - u0) * kUnitFloats;
        const float* d = dy + n * per_image + un.o;
        const int64_t* o = off.data() + un.t0;
        if (contiguous && un.cb.vectors == 2) {
          GradientTaps<2, true, kBlock>(un.taps, g, img, padded.pw, o, d, oc, a, un.cb.half);
        } else if (contiguous) {
          GradientTaps<1, true>(un.taps, g, img, padded.pw, o, d, oc, a, un.cb.half);
        } else if (un.cb.vectors == 2) {
          GradientTaps<2, false, kBlock>(un.taps, g, img, padded.pw, o, d, oc, a, un.cb.half);
        } else {
          GradientTaps<1, false, kBlock>(un.taps, g, img, padded.pw, o, d, oc, a, un.cb.half);
        }
      }
    }
    for (int64_t u = u0; u < u1; ++u) {
      const Unit& un = units[u];
      const float* a = acc.data() + (u - u0) * kUnitFloats;
      for (int64_t k = 0; k < un.taps; ++k) {
        std::memcpy(dw + (un.t0 + k) * oc + un.o, a + k * un.cb.vectors * kLanes,
                    sizeof(float) * un.cb.width);
      }
    }
  };
  if (pool == nullptr) {
    run(0, static_cast<int64_t>(units.size()));
  } else {
    pool->ParallelFor(static_cast<int64_t>(units.size()), 1, run);
  }
}

void ConvDirectBackwardWeights(const ConvGeometry& g, const float* w, int64_t oc, float* wt) {
  for (int64_t ii = 0; ii < g.kh; ++ii) {
    for (int64_t jj = 0; jj < g.kw; ++jj) {
      const int64_t i = g.kh - 1 - ii, j = g.kw - 1 - jj;
      for (int64_t o = 0; o < oc; ++o) {
        float* dst = wt + ((ii * g.kw + jj) * oc + o) * g.c;
        const float* src = w + (i * g.kw + j) * g.c * oc + o;
        for (int64_t ch = 0; ch < g.c; ++ch) dst[ch] = src[ch * oc];
      }
    }
  }
}

void ConvDirectBackward(const ConvGeometry& g, const float* dy, const float* wt, int64_t oc,
                        float* dx, int64_t n0, int64_t n1) {
  PIM_CHECK_MSG(g.stride == 1 && g.c % 8 == 0 && g.pad < g.kh && g.pad < g.kw,
                "direct BP needs stride 1, whole vectors of input channels, pad < kernel");
  // dY as an image (out_h x out_w x oc) under the flipped kernel, padded so that the output is
  // h x w again: (out_h + 2 (kh-1-pad) - kh) + 1 = h.
  ConvGeometry t;
  t.n = g.n;
  t.h = g.out_h();
  t.w = g.out_w();
  t.c = oc;
  t.kh = g.kh;
  t.kw = g.kw;
  t.stride = 1;
  t.pad = g.kh - 1 - g.pad;
  PIM_CHECK(g.kh == g.kw && t.out_h() == g.h && t.out_w() == g.w);
  ConvDirectForward(t, dy, wt, nullptr, g.c, dx, n0, n1);
}

}  // namespace pim::kernels::fast
