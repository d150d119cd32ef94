// WeightedLayer: what linear and conv2d share: a rows x cols weight (rows = reduction), an
// optional bias, PyTorch's default initialization, and the StagedMatmul their products run on.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "pimtrain/base/rng.h"
#include "pimtrain/nn/layer.h"
#include "pimtrain/nn/staged_matmul.h"

namespace pim {

// While one is alive on this thread, weighted layers built on it get zero weights of the right
// shape and no gradient storage: the shapes of a network for cost-only estimates
// (sim/network_cost.h) without drawing ResNet-50's 25.6 M initial weights.
class ShapesOnlyBuild {
 public:
  ShapesOnlyBuild() : previous_(active_) { active_ = true; }
  ~ShapesOnlyBuild() { active_ = previous_; }
  ShapesOnlyBuild(const ShapesOnlyBuild&) = delete;
  ShapesOnlyBuild& operator=(const ShapesOnlyBuild&) = delete;
  static bool active() { return active_; }

 private:
  static inline thread_local bool active_ = false;
  bool previous_;
};

class WeightedLayer : public Layer {
 public:
  void CommitUpdate(const StepContext& ctx) override { matmul_.Commit(weight_.value, ctx); }
  StagedMatmul* matmul() override { return &matmul_; }
  std::vector<Parameter*> Parameters() override {
    if (has_bias_) return {&weight_, &bias_};
    return {&weight_};
  }

 protected:
  explicit WeightedLayer(bool has_bias) : has_bias_(has_bias) {}

  // Creates W (rows x cols) and b (cols) with PyTorch's default, kaiming_uniform(a = sqrt(5)):
  // U(-1/sqrt(rows), 1/sqrt(rows)) for both, drawn from counter streams 0 (W) and 1 (b).
  void InitParameters(int64_t rows, int64_t cols, uint64_t init_key) {
    const float bound = 1.0f / std::sqrt(static_cast<float>(rows));
    if (ShapesOnlyBuild::active()) {
      weight_ = {"weight", Tensor(Shape{rows, cols}), Tensor()};
      if (has_bias_) bias_ = {"bias", Tensor(Shape{cols}), Tensor()};
      return;
    }
    weight_ = {"weight", Tensor(Shape{rows, cols}), Tensor(Shape{rows, cols})};
    const CounterRng w_rng(init_key, 0);
    for (int64_t i = 0; i < weight_.value.numel(); ++i) {
      weight_.value[i] = bound * (2.0f * w_rng.Uniform(i) - 1.0f);
    }
    if (has_bias_) {
      bias_ = {"bias", Tensor(Shape{cols}), Tensor(Shape{cols})};
      const CounterRng b_rng(init_key, 1);
      for (int64_t i = 0; i < cols; ++i) bias_.value[i] = bound * (2.0f * b_rng.Uniform(i) - 1.0f);
    }
  }

  const float* bias_data() const { return has_bias_ ? bias_.value.data() : nullptr; }

  // GC of the bias: db = column sums of dy (rows x cols(W)).
  void BiasGradient(const float* dy, int64_t rows, ThreadPool& pool) {
    if (has_bias_) ColumnSums(dy, rows, weight_.value.shape()[1], bias_.grad.data(), pool);
  }

  bool has_bias_;
  Parameter weight_, bias_;
  StagedMatmul matmul_;
};

}  // namespace pim
