// `flatten`: (N, H, W, C) -> (N, H*W*C); NHWC order makes it a plain copy.
#include <cstring>
#include <string>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/layer.h"

namespace pim {
namespace {

class Flatten final : public Layer {
 public:
  explicit Flatten(const ConfigNode&) {}
  static Schema GetSchema() { return Schema(); }

  Shape Build(const Shape& input, uint64_t) override {
    in_ = input;
    return Shape{input.numel()};
  }

  BatchCoupling batch_coupling() const override { return BatchCoupling::kPerSample; }
  void Forward(const Tensor& x, Tensor& y, const StepContext&) override {
    y.Resize(Shape{x.shape()[0], in_.numel()});
    PIM_CHECK_MSG(y.numel() == x.numel(), "flatten input " + x.shape().ToString());
    std::memcpy(y.data(), x.data(), sizeof(float) * x.numel());
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext&) override {
    dx.Resize(in_.WithBatch(dy.shape()[0]));
    std::memcpy(dx.data(), dy.data(), sizeof(float) * dy.numel());
  }

  std::string Summary() const override {
    return "flatten " + in_.ToString() + " -> [" + std::to_string(in_.numel()) + "]";
  }

 private:
  Shape in_;
};

PIM_REGISTER(Layer, Flatten, "flatten", "reshape each sample to a vector (NHWC order kept)");

}  // namespace
}  // namespace pim
