// `gelu`: y = x * Phi(x), the Gaussian error linear unit (exact erf form, PyTorch's default).
#include <cmath>
#include <string>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/layer.h"

namespace pim {
namespace {

constexpr int64_t kGrain = 8192;

// Hendrycks & Gimpel, "Gaussian Error Linear Units" (2016):
// FP: y = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2.   BP: dx = dy (Phi(x) + x phi(x)),
// phi(x) = exp(-x^2 / 2) / sqrt(2 pi). In double per element, rounded once.
class Gelu final : public Layer {
 public:
  explicit Gelu(const ConfigNode&) {}
  static Schema GetSchema() { return Schema(); }

  Shape Build(const Shape& input, uint64_t) override {
    shape_ = input;
    return input;
  }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    x_ = &x;
    y.Resize(x.shape());
    const float* in = x.data();
    float* out = y.data();
    PoolOf(ctx).ParallelFor(x.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const double v = in[i];
        out[i] = static_cast<float>(0.5 * v * (1.0 + std::erf(v * M_SQRT1_2)));
      }
    });
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    dx.Resize(x_->shape());
    const float* in = x_->data();
    const float* d = dy.data();
    float* out = dx.data();
    const double inv_sqrt_2pi = 0.5 * M_2_SQRTPI * M_SQRT1_2;
    PoolOf(ctx).ParallelFor(dy.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        const double v = in[i];
        const double cdf = 0.5 * (1.0 + std::erf(v * M_SQRT1_2));
        const double pdf = inv_sqrt_2pi * std::exp(-0.5 * v * v);
        out[i] = static_cast<float>(d[i] * (cdf + v * pdf));
      }
    });
  }

  // Each sample's output and input error depend on that sample alone (data-parallel shards).
  BatchCoupling batch_coupling() const override { return BatchCoupling::kPerSample; }
  std::string Summary() const override { return "gelu " + shape_.ToString(); }

 private:
  Shape shape_;
  const Tensor* x_ = nullptr;
};

PIM_REGISTER(Layer, Gelu, "gelu", "Gaussian error linear unit x * Phi(x) (erf form)");

}  // namespace
}  // namespace pim
