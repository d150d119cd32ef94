// `avg_pool2d`: per-channel mean over kernel x kernel windows of NHWC images.
#include <algorithm>
#include <cstring>
#include <string>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/layer.h"
#include "pimtrain/nn/layers/pool2d.h"

namespace pim {
namespace {

// FP: y[n, oh, ow, c] = (1 / k^2) * sum over taps (i, j) inside the image of
//     x[n, oh*s - p + i, ow*s - p + j, c]   (zero padding counts in the divisor: PyTorch's
//     count_include_pad = True).
// BP: dx[tap] += dy / k^2 for every tap inside the image (a fixed order per image).
class AvgPool2d final : public Pool2d {
 public:
  explicit AvgPool2d(const ConfigNode& p) : Pool2d(p) {}

  static Schema GetSchema() { return WindowSchema("zero border, counted in the divisor, <= kernel/2"); }

  Shape Build(const Shape& input, uint64_t) override { return BuildWindows(input, "avg_pool2d"); }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    const int64_t n = x.shape()[0];
    PIM_CHECK_MSG(x.numel() == n * h_ * w_ * c_, "avg_pool2d input " + x.shape().ToString());
    y.Resize(Shape{n, oh_, ow_, c_});
    const float scale = 1.0f / static_cast<float>(k_ * k_);
    const int64_t grain = std::max<int64_t>(1, 16384 / (h_ * w_ * c_));
    PoolOf(ctx).ParallelFor(n, grain, [&](int64_t n0, int64_t n1) {
      for (int64_t b = n0; b < n1; ++b) {
        const float* img = x.data() + b * h_ * w_ * c_;
        float* out = y.data() + b * oh_ * ow_ * c_;
        for (int64_t oh = 0; oh < oh_; ++oh) {
          for (int64_t ow = 0; ow < ow_; ++ow, out += c_) {
            std::fill(out, out + c_, 0.0f);
            for (int64_t i = 0; i < k_; ++i) {
              const int64_t ih = oh * stride_ - pad_ + i;
              if (ih < 0 || ih >= h_) continue;
              for (int64_t j = 0; j < k_; ++j) {
                const int64_t iw = ow * stride_ - pad_ + j;
                if (iw < 0 || iw >= w_) continue;
                const float* tap = img + (ih * w_ + iw) * c_;
                for (int64_t c = 0; c < c_; ++c) out[c] += tap[c];
              }
            }
            for (int64_t c = 0; c < c_; ++c) out[c] *= scale;
          }
        }
      }
    });
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    const int64_t n = dy.shape()[0];
    dx.Resize(Shape{n, h_, w_, c_});
    const float scale = 1.0f / static_cast<float>(k_ * k_);
    const int64_t per_in = h_ * w_ * c_;
    const int64_t grain = std::max<int64_t>(1, 16384 / per_in);
    PoolOf(ctx).ParallelFor(n, grain, [&](int64_t n0, int64_t n1) {
      std::memset(dx.data() + n0 * per_in, 0, sizeof(float) * (n1 - n0) * per_in);
      for (int64_t b = n0; b < n1; ++b) {
        float* img = dx.data() + b * per_in;
        const float* d = dy.data() + b * oh_ * ow_ * c_;
        for (int64_t oh = 0; oh < oh_; ++oh) {
          for (int64_t ow = 0; ow < ow_; ++ow, d += c_) {
            for (int64_t i = 0; i < k_; ++i) {
              const int64_t ih = oh * stride_ - pad_ + i;
              if (ih < 0 || ih >= h_) continue;
              for (int64_t j = 0; j < k_; ++j) {
                const int64_t iw = ow * stride_ - pad_ + j;
                if (iw < 0 || iw >= w_) continue;
                float* tap = img + (ih * w_ + iw) * c_;
                for (int64_t c = 0; c < c_; ++c) tap[c] += scale * d[c];
              }
            }
          }
        }
      }
    });
  }

  std::string Summary() const override {
    return "avg_pool2d " + std::to_string(h_) + "x" + std::to_string(w_) + "x" +
           std::to_string(c_) + " -> " + std::to_string(oh_) + "x" + std::to_string(ow_) + "x" +
           std::to_string(c_) + ", kernel " + std::to_string(k_) + ", stride " +
           std::to_string(stride_) + (pad_ ? ", padding " + std::to_string(pad_) : "");
  }

};

PIM_REGISTER(Layer, AvgPool2d, "avg_pool2d", "average pooling over square windows (NHWC)");

}  // namespace
}  // namespace pim
