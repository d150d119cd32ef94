// `linear`: Y = X W + b with W stored (in, out) = rows x cols, the PIM macro's orientation.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/nn/layer.h"
#include "pimtrain/nn/staged_matmul.h"

namespace pim {
namespace {


ThreadPool& PoolOf(const StepContext& ctx) { return ctx.pool ? *ctx.pool : DefaultPool(); }


// FP:  Y = X W + 1 b^T           (X: N x in, W: in x out)
// BP:  dX = dY W^T
// GC:  dW = X^T dY,  db = 1^T dY  (column sums over the batch)
class Linear final : public Layer {
 public:
  explicit Linear(const ConfigNode& p)
      : where_(p.Where()), out_(p.GetInt("out_features")), has_bias_(p.GetBool("bias")) {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("out_features").Range(1, 1 << 24).Doc("output width (macro columns)"));
    s.Add(Param::Bool("bias").Default(true).Doc("add a learned bias"));
    return s;
  }

  Shape Build(const Shape& input, uint64_t init_key) override {
    in_ = input.numel();
    if (input.rank() == 0 || in_ <= 0) {
      throw ConfigError(where_ + ": linear needs a non-empty input, got " + input.ToString());
    }
    // PyTorch's default: kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), bias alike.
    const float bound = 1.0f / std::sqrt(static_cast<float>(in_));
    weight_ = {"weight", Tensor(Shape{in_, out_}), Tensor(Shape{in_, out_})};
    CounterRng w_rng(init_key, 0);
    for (int64_t i = 0; i < weight_.value.numel(); ++i) {
      weight_.value[i] = bound * (2.0f * w_rng.Uniform(i) - 1.0f);
    }
    if (has_bias_) {
      bias_ = {"bias", Tensor(Shape{out_}), Tensor(Shape{out_})};
      CounterRng b_rng(init_key, 1);
      for (int64_t i = 0; i < out_; ++i) bias_.value[i] = bound * (2.0f * b_rng.Uniform(i) - 1.0f);
    }
    return Shape{out_};
  }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    const int64_t n = x.shape()[0];
    PIM_CHECK_MSG(x.numel() == n * in_, "linear input " + x.shape().ToString());
    x_ = &x;
    y.Resize(Shape{n, out_});
    matmul_.Forward(ConstMatrixView(x.data(), n, in_, in_), weight_.value,
                    has_bias_ ? bias_.value.data() : nullptr, y.AsMatrix(), -1.0f, ctx,
                    &PoolOf(ctx));
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    const int64_t n = dy.shape()[0];
    dx.Resize(x_->shape());
    matmul_.Backward(dy.AsMatrix(), weight_.value, MatrixView{dx.data(), n, in_, in_}, -1.0f, ctx,
                     &PoolOf(ctx));
  }

  void ComputeGradient(const Tensor& dy, const StepContext& ctx) override {
    const int64_t n = dy.shape()[0];
    matmul_.Gradient(ConstMatrixView(x_->data(), n, in_, in_), dy.AsMatrix(),
                     weight_.grad.AsMatrix(), ctx, &PoolOf(ctx));
    if (has_bias_) {
      ColumnSums(dy.data(), n, out_, bias_.grad.data(), PoolOf(ctx));
    }
  }

  void CommitUpdate(const StepContext& ctx) override { matmul_.Commit(weight_.value, ctx); }
  StagedMatmul* matmul() override { return &matmul_; }

  std::vector<Parameter*> Parameters() override {
    if (has_bias_) return {&weight_, &bias_};
    return {&weight_};
  }

  std::string Summary() const override {
    return "linear " + std::to_string(in_) + " -> " + std::to_string(out_) +
           (has_bias_ ? "" : " (no bias)");
  }
  int64_t ForwardMacsPerSample() const override { return in_ * out_; }

 private:
  std::string where_;
  int64_t in_ = 0;
  int64_t out_;
  bool has_bias_;
  Parameter weight_, bias_;
  const Tensor* x_ = nullptr;
  StagedMatmul matmul_;
};

PIM_REGISTER(Layer, Linear, "linear", "fully connected layer Y = X W + b (W stored in x out)");

}  // namespace
}  // namespace pim
