// `relu`: y = max(x, 0), elementwise.
#include <string>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/layer.h"

namespace pim {
namespace {

constexpr int64_t kGrain = 16384;

// FP: y = max(x, 0).  BP: dx = dy * [x > 0] (the subgradient 0 at x = 0, as PyTorch).
class Relu final : public Layer {
 public:
  explicit Relu(const ConfigNode&) {}
  static Schema GetSchema() { return Schema(); }

  Shape Build(const Shape& input, uint64_t) override {
    shape_ = input;
    return input;
  }

  BatchCoupling batch_coupling() const override { return BatchCoupling::kPerSample; }
  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    x_ = &x;
    y.Resize(x.shape());
    const float* in = x.data();
    float* out = y.data();
    PoolOf(ctx).ParallelFor(x.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[i] = in[i] > 0.0f ? in[i] : 0.0f;
    });
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    dx.Resize(x_->shape());
    const float* in = x_->data();
    const float* d = dy.data();
    float* out = dx.data();
    PoolOf(ctx).ParallelFor(dy.numel(), kGrain, [&](int64_t b, int64_t e) {
      // Both operands loaded unconditionally so the select vectorizes (a conditional load of
      // d[i] would not, and a branch on the sign mispredicts half the time).
      for (int64_t i = b; i < e; ++i) {
        const float g = d[i];
        out[i] = in[i] > 0.0f ? g : 0.0f;
      }
    });
  }

  std::string Summary() const override { return "relu " + shape_.ToString(); }

 private:
  Shape shape_;
  const Tensor* x_ = nullptr;
};

PIM_REGISTER(Layer, Relu, "relu", "rectified linear unit max(x, 0)");

}  // namespace
}  // namespace pim
