// `layer_norm`: normalizes each position's last dimension, then a learned scale and shift.
#include <cmath>
#include <string>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/layer.h"
#include "pimtrain/nn/staged_matmul.h"

namespace pim {
namespace {

// Ba, Kiros & Hinton, "Layer Normalization" (2016), PyTorch's nn.LayerNorm over the last dim D:
// FP:  mu = (1/D) sum x,  var = (1/D) sum (x - mu)^2,  xhat = (x - mu) / sqrt(var + eps),
//      y = gamma xhat + beta
// BP:  g = dy gamma;  dx = (g - mean(g) - xhat mean(g xhat)) / sqrt(var + eps)
// GC:  dgamma = sum_rows dy xhat,  dbeta = sum_rows dy (column sums in row order)
// Rows (positions) are independent, each on one thread, statistics in double.
class LayerNorm final : public Layer {
 public:
  explicit LayerNorm(const ConfigNode& p)
      : where_(p.Where()), eps_(p.GetDouble("eps")), affine_(p.GetBool("affine")) {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Float("eps").Default(1e-5).Range(0, 1).Doc("added to the variance"));
    s.Add(Param::Bool("affine").Default(true).Doc("learn a per-feature scale and shift"));
    return s;
  }

  Shape Build(const Shape& input, uint64_t) override {
    if (input.rank() == 0 || input.numel() <= 0) {
      throw ConfigError(where_ + ": layer_norm needs a non-empty input, got " + input.ToString());
    }
    shape_ = input;
    d_ = input[input.rank() - 1];
    if (affine_) {
      gamma_ = {"gamma", Tensor(Shape{d_}), Tensor(Shape{d_})};
      gamma_.value.Fill(1.0f);
      beta_ = {"beta", Tensor(Shape{d_}), Tensor(Shape{d_})};
    }
    return input;
  }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    const int64_t rows = x.numel() / d_;
    y.Resize(x.shape());
    xhat_.Resize(x.shape());
    inv_std_.Resize(Shape{rows});
    const float* in = x.data();
    float* out = y.data();
    float* xh = xhat_.data();
    PoolOf(ctx).ParallelFor(rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const float* xr = in + r * d_;
        double mu = 0, var = 0;
        for (int64_t j = 0; j < d_; ++j) mu += xr[j];
        mu /= d_;
        for (int64_t j = 0; j < d_; ++j) var += (xr[j] - mu) * (xr[j] - mu);
        var /= d_;
        const double inv = 1.0 / std::sqrt(var + eps_);
        inv_std_[r] = static_cast<float>(inv);
        for (int64_t j = 0; j < d_; ++j) {
          const float h = static_cast<float>((xr[j] - mu) * inv);
          xh[r * d_ + j] = h;
          out[r * d_ + j] = affine_ ? gamma_.value[j] * h + beta_.value[j] : h;
        }
      }
    });
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    const int64_t rows = dy.numel() / d_;
    dx.Resize(dy.shape());
    const float* d = dy.data();
    const float* xh = xhat_.data();
    float* out = dx.data();
    PoolOf(ctx).ParallelFor(rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        double mg = 0, mgx = 0;
        for (int64_t j = 0; j < d_; ++j) {
          const double g = d[r * d_ + j] * (affine_ ? gamma_.value[j] : 1.0f);
          mg += g;
          mgx += g * xh[r * d_ + j];
        }
        mg /= d_;
        mgx /= d_;
        for (int64_t j = 0; j < d_; ++j) {
          const double g = d[r * d_ + j] * (affine_ ? gamma_.value[j] : 1.0f);
          out[r * d_ + j] = static_cast<float>((g - mg - xh[r * d_ + j] * mgx) * inv_std_[r]);
        }
      }
    });
  }

  void ComputeGradient(const Tensor& dy, const StepContext& ctx) override {
    if (!affine_) return;
    const int64_t rows = dy.numel() / d_;
    prod_.Resize(dy.shape());
    for (int64_t i = 0; i < dy.numel(); ++i) prod_[i] = dy[i] * xhat_[i];
    ColumnSums(prod_.data(), rows, d_, gamma_.grad.data(), PoolOf(ctx));
    ColumnSums(dy.data(), rows, d_, beta_.grad.data(), PoolOf(ctx));
  }

  std::vector<Parameter*> Parameters() override {
    if (affine_) return {&gamma_, &beta_};
    return {};
  }

  std::string Summary() const override {
    return "layer_norm over " + std::to_string(d_) + " of " + shape_.ToString();
  }

 private:
  std::string where_;
  double eps_;
  bool affine_;
  Shape shape_;
  int64_t d_ = 0;
  Parameter gamma_, beta_;
  Tensor xhat_, inv_std_, prod_;
};

PIM_REGISTER(Layer, LayerNorm, "layer_norm",
             "normalization over the last dimension of each position, then scale and shift");

}  // namespace
}  // namespace pim
