// im2col / col2im on NHWC images, through a zero-padded copy of each image.
#include "pimtrain/kernels/im2col.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace pim::kernels {
namespace {

// Each image is first copied into a zero-bordered scratch, so every kernel row's taps are kw * c
// contiguous floats, copied (or added) without bounds checks or zero-fill branches.

// Copies n floats. Small runs (5 for a 5x5 kernel on one channel) are the common case of the
// first layer, where a memcpy call costs more than the copy: use fixed-size moves, the last one
// overlapping the previous (dst and src do not overlap each other).
inline void CopyRun(float* dst, const float* src, int64_t n) {
  if (n >= 8) {
    int64_t t = 0;
    for (; t + 8 <= n; t += 8) std::memcpy(dst + t, src + t, 8 * sizeof(float));
    if (t < n) std::memcpy(dst + n - 8, src + n - 8, 8 * sizeof(float));
  } else if (n >= 4) {
    std::memcpy(dst, src, 4 * sizeof(float));
    std::memcpy(dst + n - 4, src + n - 4, 4 * sizeof(float));
  } else {
    for (int64_t t = 0; t < n; ++t) dst[t] = src[t];
  }
}

// dst[t] += src[t] for n floats (no overlap trick: an add must not be applied twice).
inline void AddRun(float* __restrict dst, const float* __restrict src, int64_t n) {
  for (int64_t t = 0; t < n; ++t) dst[t] += src[t];
}

// A per-thread scratch image with `pad` zeros around it: (h + 2 pad) x (w + 2 pad) x c.
struct Padded {
  int64_t ph, pw;
  float* data;
};
Padded PaddedScratch(const ConvGeometry& g) {
  thread_local std::vector<float> buf;
  Padded p{g.h + 2 * g.pad, g.w + 2 * g.pad, nullptr};
  const size_t n = static_cast<size_t>(p.ph * p.pw * g.c);
  if (buf.size() < n) buf.resize(n);
  p.data = buf.data();
  return p;
}

}  // namespace

void Im2colImages(const ConvGeometry& g, const float* x, float* cols, int64_t n0, int64_t n1) {
  Im2colImagesColumns(g, x, cols, n0, n1, 0, g.col_width());  // every column
}

void Im2colImagesColumns(const ConvGeometry& g, const float* x, float* cols, int64_t n0,
                         int64_t n1, int64_t c0, int64_t c1) {
  const int64_t oh_n = g.out_h(), ow_n = g.out_w(), width = c1 - c0;
  const int64_t run = g.kw * g.c;  // one kernel row's taps: columns [i run, (i + 1) run)
  const int64_t image = g.h * g.w * g.c;
  if (width <= 0) return;
  Padded p{g.h, g.w, nullptr};
  if (g.pad > 0) {
    p = PaddedScratch(g);
    std::fill(p.data, p.data + p.ph * p.pw * g.c, 0.0f);  // the border stays zero
  }
  // The kernel rows that meet [c0, c1), and the part of each.
  const int64_t i0 = c0 / run, i1 = std::min(g.kh, (c1 + run - 1) / run);
  for (int64_t n = n0; n < n1; ++n) {
    const float* img = x + n * image;
    if (g.pad > 0) {
      for (int64_t ih = 0; ih < g.h; ++ih) {
        std::memcpy(p.data + ((ih + g.pad) * p.pw + g.pad) * g.c, img + ih * g.w * g.c,
                    g.w * g.c * sizeof(float));
      }
      img = p.data;
    }
    float* out = cols + (n - n0) * oh_n * ow_n * width;
    for (int64_t oh = 0; oh < oh_n; ++oh) {
      for (int64_t ow = 0; ow < ow_n; ++ow, out += width) {
        const float* src = img + (oh * g.stride * p.pw + ow * g.stride) * g.c;
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t lo = std::max(c0, i * run), hi = std::min(c1, (i + 1) * run);
          CopyRun(out + (lo - c0), src + i * p.pw * g.c + (lo - i * run), hi - lo);
        }
      }
    }
  }
}

void Col2imImages(const ConvGeometry& g, const float* cols, float* dx, int64_t n0, int64_t n1) {
  const int64_t oh_n = g.out_h(), ow_n = g.out_w(), width = g.col_width();
  const int64_t run = g.kw * g.c;
  const int64_t image = g.h * g.w * g.c;
  for (int64_t n = n0; n < n1; ++n) {
    // Accumulate into the padded scratch (or straight into dx without padding), in row order.
    Padded p{g.h, g.w, dx + n * image};
    if (g.pad > 0) p = PaddedScratch(g);
    std::fill(p.data, p.data + p.ph * p.pw * g.c, 0.0f);
    const float* in = cols + (n - n0) * oh_n * ow_n * width;
    for (int64_t oh = 0; oh < oh_n; ++oh) {
      for (int64_t ow = 0; ow < ow_n; ++ow, in += width) {
        float* dst = p.data + (oh * g.stride * p.pw + ow * g.stride) * g.c;
        for (int64_t i = 0; i < g.kh; ++i) AddRun(dst + i * p.pw * g.c, in + i * run, run);
      }
    }
    if (g.pad > 0) {
      // The padding's share is dropped: those taps read zeros in the forward pass.
      for (int64_t ih = 0; ih < g.h; ++ih) {
        std::memcpy(dx + n * image + ih * g.w * g.c, p.data + ((ih + g.pad) * p.pw + g.pad) * g.c,
                    g.w * g.c * sizeof(float));
      }
    }
  }
}

namespace {
// About 64 KiB of columns per chunk: enough work to be worth a thread.
int64_t ImageGrain(const ConvGeometry& g) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, g.rows_per_image() * g.col_width()));
}
}  // namespace

void Im2col(const ConvGeometry& g, const float* x, float* cols, ThreadPool* pool) {
  if (pool == nullptr) pool = &DefaultPool();
  pool->ParallelFor(g.n, ImageGrain(g), [&](int64_t n0, int64_t n1) {
    Im2colImages(g, x, cols + n0 * g.rows_per_image() * g.col_width(), n0, n1);
  });
}

void Col2im(const ConvGeometry& g, const float* cols, float* dx, ThreadPool* pool) {
  if (pool == nullptr) pool = &DefaultPool();
  pool->ParallelFor(g.n, ImageGrain(g), [&](int64_t n0, int64_t n1) {
    Col2imImages(g, cols + n0 * g.rows_per_image() * g.col_width(), dx, n0, n1);
  });
}

}  // namespace pim::kernels
