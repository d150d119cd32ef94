// `max_pool2d`: per-channel maximum over kernel x kernel windows of NHWC images.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/layer.h"
#include "pimtrain/nn/layers/pool2d.h"

namespace pim {
namespace {

// FP: y[n, oh, ow, c] = max over taps (i, j) inside the image of x[n, oh*s - p + i, ow*s - p + j,
// c]
//     (padding never wins, as PyTorch's -inf padding; the first maximum wins ties; NaN wins).
// BP: dx = 0, then dx[argmax] += dy for every output (overlapping windows accumulate, in a fixed
//     order per image; images are split across threads).
class MaxPool2d final : public Pool2d {
 public:
  explicit MaxPool2d(const ConfigNode& p) : Pool2d(p) {}

  static Schema GetSchema() { return WindowSchema("implicit -inf border, <= kernel/2"); }

  Shape Build(const Shape& input, uint64_t) override { return BuildWindows(input, "max_pool2d"); }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    const int64_t n = x.shape()[0];
    PIM_CHECK_MSG(x.numel() == n * h_ * w_ * c_, "max_pool2d input " + x.shape().ToString());
    y.Resize(Shape{n, oh_, ow_, c_});
    argmax_.resize(y.numel());
    const int64_t grain = std::max<int64_t>(1, 16384 / (h_ * w_ * c_));
    PoolOf(ctx).ParallelFor(n, grain, [&](int64_t n0, int64_t n1) {
      for (int64_t b = n0; b < n1; ++b) {
        const float* img = x.data() + b * h_ * w_ * c_;
        float* out = y.data() + b * oh_ * ow_ * c_;
        int32_t* arg = argmax_.data() + b * oh_ * ow_ * c_;
        for (int64_t oh = 0; oh < oh_; ++oh) {
          for (int64_t ow = 0; ow < ow_; ++ow, out += c_, arg += c_) {
            // Channels in blocks of 8 held in locals (one AVX register each) across the taps.
            for (int64_t c0 = 0; c0 < c_; c0 += kLanes) {
              WindowMax(img, oh, ow, c0, std::min<int64_t>(kLanes, c_ - c0), out + c0, arg + c0);
            }
          }
        }
      }
    });
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    const int64_t n = dy.shape()[0];
    dx.Resize(Shape{n, h_, w_, c_});
    const int64_t per_out = oh_ * ow_ * c_, per_in = h_ * w_ * c_;
    const int64_t grain = std::max<int64_t>(1, 16384 / per_in);
    PoolOf(ctx).ParallelFor(n, grain, [&](int64_t n0, int64_t n1) {
      for (int64_t b = n0; b < n1; ++b) {
        // Each image is cleared right before its scatter, so both touch it in cache.
        float* img = dx.data() + b * per_in;
        std::memset(img, 0, sizeof(float) * per_in);
        const float* d = dy.data() + b * per_out;
        const int32_t* arg = argmax_.data() + b * per_out;
        for (int64_t i = 0; i < per_out; ++i) img[arg[i]] += d[i];
      }
    });
  }

  std::string Summary() const override {
    return "max_pool2d " + std::to_string(h_) + "x" + std::to_string(w_) + "x" +
           std::to_string(c_) + " -> " + std::to_string(oh_) + "x" + std::to_string(ow_) + "x" +
           std::to_string(c_) + ", kernel " + std::to_string(k_) + ", stride " +
           std::to_string(stride_) + (pad_ ? ", padding " + std::to_string(pad_) : "");
  }

 private:
  static constexpr int64_t kLanes = 8;

  // 8 lanes in one AVX register (GCC vector extensions; the auto-vectorizer does not manage
  // this compare-and-select across taps).
  using F8 = float __attribute__((vector_size(32)));
  using I8 = int32_t __attribute__((vector_size(32)));

  // Max over the window of output (oh, ow) for channels [c, c + lanes).
  void WindowMax(const float* img, int64_t oh, int64_t ow, int64_t c, int64_t lanes, float* out,
                 int32_t* arg) const {
    // Taps [i0, i1) x [j0, j1) fall inside the image (never empty: padding <= kernel / 2).
    const int64_t ih0 = oh * stride_ - pad_, iw0 = ow * stride_ - pad_;
    const int64_t i0 = std::max<int64_t>(0, -ih0), i1 = std::min<int64_t>(k_, h_ - ih0);
    const int64_t j0 = std::max<int64_t>(0, -iw0), j1 = std::min<int64_t>(k_, w_ - iw0);
    if (lanes == kLanes) {
      const I8 iota = {0, 1, 2, 3, 4, 5, 6, 7};
      const int32_t first = static_cast<int32_t>(((ih0 + i0) * w_ + iw0 + j0) * c_ + c);
      F8 best;
      std::memcpy(&best, img + first, sizeof(best));
      I8 where = first + iota;
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = j0; j < j1; ++j) {
          if (i == i0 && j == j0) continue;
          const int32_t base = static_cast<int32_t>(((ih0 + i) * w_ + iw0 + j) * c_ + c);
          F8 v;
          std::memcpy(&v, img + base, sizeof(v));
          // Strictly greater: the first maximum wins ties; a NaN wins over numbers.
          const I8 take = (v > best) | ((v != v) & (best == best));
          best = take ? v : best;
          where = take ? base + iota : where;
        }
      }
      std::memcpy(out, &best, sizeof(best));
      std::memcpy(arg, &where, sizeof(where));
      return;
    }
    for (int64_t l = 0; l < lanes; ++l) {
      int32_t where = static_cast<int32_t>(((ih0 + i0) * w_ + iw0 + j0) * c_ + c + l);
      float best = img[where];
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t j = j0; j < j1; ++j) {
          const int32_t at = static_cast<int32_t>(((ih0 + i) * w_ + iw0 + j) * c_ + c + l);
          const float v = img[at];
          if (v > best || (v != v && best == best)) {
            best = v;
            where = at;
          }
        }
      }
      out[l] = best;
      arg[l] = where;
    }
  }

  std::vector<int32_t> argmax_;  // per output: the winning input's offset within its image
};

PIM_REGISTER(Layer, MaxPool2d, "max_pool2d", "max pooling over square windows (NHWC)");

}  // namespace
}  // namespace pim
