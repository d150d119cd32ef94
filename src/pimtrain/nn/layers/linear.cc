// `linear`: Y = X W + b with W stored (in, out) = rows x cols, the PIM macro's orientation.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/nn/layer.h"
#include "pimtrain/nn/staged_matmul.h"
#include "pimtrain/nn/weighted_layer.h"

namespace pim {
namespace {



// FP:  Y = X W + 1 b^T           (X: N x in, W: in x out)
// BP:  dX = dY W^T
// GC:  dW = X^T dY,  db = 1^T dY  (column sums over the batch)
class Linear final : public WeightedLayer {
 public:
  explicit Linear(const ConfigNode& p)
      : WeightedLayer(p.GetBool("bias")),
        where_(p.Where()),
        out_(p.GetInt("out_features")),
        last_(p.GetString("over") == "last") {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("out_features").Range(1, 1 << 24).Doc("output width (macro columns)"));
    s.Add(Param::Bool("bias").Default(true).Doc("add a learned bias"));
    s.Add(Param::Enum("over", {"sample", "last"}).Default("sample")
              .Doc("the reduction: the whole sample flattened, or its last dimension at every "
                   "position (tokens: PyTorch's nn.Linear on (N, T, D))"));
    return s;
  }

  Shape Build(const Shape& input, uint64_t init_key) override {
    in_ = last_ && input.rank() > 0 ? input[input.rank() - 1] : input.numel();
    if (input.rank() == 0 || in_ <= 0) {
      throw ConfigError(where_ + ": linear needs a non-empty input, got " + input.ToString());
    }
    positions_ = input.numel() / in_;
    InitParameters(in_, out_, init_key);
    if (!last_) return Shape{out_};
    std::vector<int64_t> d = input.dims();
    d.back() = out_;
    return Shape(d);
  }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    const int64_t n = x.shape()[0] * positions_;
    PIM_CHECK_MSG(x.numel() == n * in_, "linear input " + x.shape().ToString());
    x_ = &x;
    if (last_) {
      std::vector<int64_t> d = x.shape().dims();
      d.back() = out_;
      y.Resize(Shape(d));
    } else {
      y.Resize(Shape{n, out_});
    }
    matmul_.Forward(ConstMatrixView(x.data(), n, in_, in_), weight_.value,
                    bias_data(), MatrixView{y.data(), n, out_, out_}, -1.0f, ctx,
                    &PoolOf(ctx));
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    const int64_t n = dy.shape()[0] * positions_;
    dx.Resize(x_->shape());
    if (!input_error_needed()) {
      dx.Zero();
      return;
    }
    matmul_.Backward(ConstMatrixView(dy.data(), n, out_, out_), weight_.value, MatrixView{dx.data(), n, in_, in_}, -1.0f, ctx,
                     &PoolOf(ctx));
  }

  void ComputeGradient(const Tensor& dy, const StepContext& ctx) override {
    const int64_t n = dy.shape()[0] * positions_;
    matmul_.Gradient(ConstMatrixView(x_->data(), n, in_, in_),
                     ConstMatrixView(dy.data(), n, out_, out_), weight_.grad.AsMatrix(), ctx,
                     &PoolOf(ctx));
    BiasGradient(dy.data(), n, PoolOf(ctx));
  }

  // On a macro a row's product depends on that row alone (exact integer sums). The FP32 GEMM's
  // last bits depend on which rows share its call (kernels/fast/gemm.cc), so on FP32 the layer
  // runs whole batches.
  BatchCoupling batch_coupling() const override {
    return matmul_.on_macro() ? BatchCoupling::kPerSample : BatchCoupling::kCoupled;
  }
  void ComputeGradientForBatch(const Tensor& x, const Tensor& dy,
                               const StepContext& ctx) override {
    const Tensor* shard = x_;
    x_ = &x;
    ComputeGradient(dy, ctx);
    x_ = shard;
  }

  std::string Summary() const override {
    return "linear " + std::to_string(in_) + " -> " + std::to_string(out_) +
           (last_ ? " at each of " + std::to_string(positions_) + " positions" : "") +
           (has_bias_ ? "" : " (no bias)");
  }
  int64_t ForwardMacsPerSample() const override { return positions_ * in_ * out_; }

 private:
  std::string where_;
  int64_t in_ = 0;
  int64_t out_;
  bool last_;               // over: last (per position) instead of the flattened sample
  int64_t positions_ = 1;   // vectors per sample the weights multiply (1 unless over: last)
  const Tensor* x_ = nullptr;
};

PIM_REGISTER(Layer, Linear, "linear", "fully connected layer Y = X W + b (W stored in x out)");

}  // namespace
}  // namespace pim
