// `position_embedding`: (H, W, C) patch maps or (T, C) tokens -> (T, C) tokens plus a learned
// embedding per position (the ViT's positional embedding after its patch-embedding conv).
#include <string>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/nn/layer.h"
#include "pimtrain/nn/staged_matmul.h"

namespace pim {
namespace {

// Dosovitskiy et al., "An Image is Worth 16x16 Words" (ICLR 2021), eq. 1 without the class
// token (the model pools the tokens instead). With T = H*W positions:
// FP: y[t][c] = x[t][c] + P[t][c]    BP: dx = dy    GC: dP = sum over the batch of dy.
// P ~ 0.02 N(0, 1) (timm's trunc_normal(std = 0.02) without the truncation), counter stream 0.
class PositionEmbedding final : public Layer {
 public:
  explicit PositionEmbedding(const ConfigNode& p) : where_(p.Where()) {}
  static Schema GetSchema() { return Schema(); }

  Shape Build(const Shape& input, uint64_t init_key) override {
    if (input.rank() < 2 || input.numel() <= 0) {
      throw ConfigError(where_ + ": position_embedding needs (H, W, C) or (T, C) input, got " +
                        input.ToString());
    }
    in_ = input;
    c_ = input[input.rank() - 1];
    t_ = input.numel() / c_;
    table_ = {"embedding", Tensor(Shape{t_, c_}), Tensor(Shape{t_, c_})};
    const CounterRng rng(init_key, 0);
    for (int64_t i = 0; i < t_ * c_; ++i) table_.value[i] = 0.02f * rng.Normal(i);
    return Shape{t_, c_};
  }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    const int64_t n = x.shape()[0], d = t_ * c_;
    y.Resize(Shape{n, t_, c_});
    const float* in = x.data();
    const float* p = table_.value.data();
    float* out = y.data();
    PoolOf(ctx).ParallelFor(n, 8, [&](int64_t n0, int64_t n1) {
      for (int64_t s = n0; s < n1; ++s) {
        for (int64_t i = 0; i < d; ++i) out[s * d + i] = in[s * d + i] + p[i];
      }
    });
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext&) override {
    dx.Resize(in_.WithBatch(dy.shape()[0]));
    std::copy(dy.data(), dy.data() + dy.numel(), dx.data());
  }

  void ComputeGradient(const Tensor& dy, const StepContext& ctx) override {
    ColumnSums(dy.data(), dy.shape()[0], t_ * c_, table_.grad.data(), PoolOf(ctx));
  }

  std::vector<Parameter*> Parameters() override { return {&table_}; }

  std::string Summary() const override {
    return "position_embedding " + in_.ToString() + " -> " + std::to_string(t_) + " tokens of " +
           std::to_string(c_);
  }

 private:
  std::string where_;
  Shape in_;
  int64_t c_ = 0, t_ = 0;
  Parameter table_;
};

PIM_REGISTER(Layer, PositionEmbedding, "position_embedding",
             "patch maps to tokens plus a learned embedding per position (vision transformers)");

}  // namespace
}  // namespace pim
