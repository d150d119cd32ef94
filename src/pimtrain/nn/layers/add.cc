// `add`: the element-wise sum of two or more tensors of one shape (residual connections).
#include <cstring>
#include <string>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/layer.h"

namespace pim {
namespace {

constexpr int64_t kGrain = 16384;

// FP: y = x_1 + x_2 + ... (summed in input order).  BP: dx_k = dy for every input.
class Add final : public Layer {
 public:
  explicit Add(const ConfigNode& p) : where_(p.Where()) {}
  static Schema GetSchema() { return Schema(); }

  int num_inputs() const override { return -1; }
  Shape Build(const Shape& input, uint64_t) override {
    throw ConfigError(where_ + ": add needs two or more inputs: use it in a graph model");
  }
  Shape BuildInputs(const std::vector<Shape>& in, uint64_t) override {
    for (size_t k = 1; k < in.size(); ++k) {
      if (in[k] != in[0]) {
        throw ConfigError(where_ + ": add inputs differ in shape: input 1 is " + in[0].ToString() +
                          ", input " + std::to_string(k + 1) + " is " + in[k].ToString());
      }
    }
    shape_ = in[0];
    inputs_ = static_cast<int>(in.size());
    return shape_;
  }
  void Forward(const Tensor&, Tensor&, const StepContext&) override {
    PIM_CHECK_MSG(false, "add has several inputs (ForwardInputs)");
  }
  void PropagateError(const Tensor&, Tensor&, const StepContext&) override {
    PIM_CHECK_MSG(false, "add has several inputs (PropagateErrorInputs)");
  }

  void ForwardInputs(const std::vector<const Tensor*>& xs, Tensor& y,
                     const StepContext& ctx) override {
    y.Resize(xs[0]->shape());
    float* out = y.data();
    PoolOf(ctx).ParallelFor(y.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[i] = (*xs[0])[i];
      for (size_t k = 1; k < xs.size(); ++k) {
        const float* in = xs[k]->data();
        for (int64_t i = b; i < e; ++i) out[i] += in[i];
      }
    });
  }

  void PropagateErrorInputs(const Tensor& dy, const std::vector<Tensor*>& dxs,
                            const StepContext&) override {
    for (Tensor* dx : dxs) {
      dx->Resize(dy.shape());
      std::memcpy(dx->data(), dy.data(), sizeof(float) * dy.numel());
    }
  }

  // Each sample's output and input error depend on that sample alone (data-parallel shards).
  BatchCoupling batch_coupling() const override { return BatchCoupling::kPerSample; }
  std::string Summary() const override {
    return "add " + std::to_string(inputs_) + " x " + shape_.ToString();
  }

 private:
  std::string where_;
  Shape shape_;
  int inputs_ = 0;
};

PIM_REGISTER(Layer, Add, "add", "element-wise sum of two or more inputs (graph models)");

}  // namespace
}  // namespace pim
