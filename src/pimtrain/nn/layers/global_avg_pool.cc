// `global_avg_pool`: the mean over every position of a (H, W, C) map or (T, C) tokens -> (C).
#include <string>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/layer.h"

namespace pim {
namespace {

// With P positions per sample: FP y[c] = (1/P) sum_p x[p][c] (summed in position order, in
// double); BP dx[p][c] = dy[c] / P. Samples are independent, split over threads.
class GlobalAvgPool final : public Layer {
 public:
  explicit GlobalAvgPool(const ConfigNode& p) : where_(p.Where()) {}
  static Schema GetSchema() { return Schema(); }

  Shape Build(const Shape& input, uint64_t) override {
    if (input.rank() < 2 || input.numel() <= 0) {
      throw ConfigError(where_ + ": global_avg_pool needs (H, W, C) or (T, C) input, got " +
                        input.ToString());
    }
    in_ = input;
    c_ = input[input.rank() - 1];
    p_ = input.numel() / c_;
    return Shape{c_};
  }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    const int64_t n = x.shape()[0];
    y.Resize(Shape{n, c_});
    const float* in = x.data();
    float* out = y.data();
    PoolOf(ctx).ParallelFor(n, 4, [&](int64_t n0, int64_t n1) {
      std::vector<double> acc(c_);
      for (int64_t s = n0; s < n1; ++s) {
        std::fill(acc.begin(), acc.end(), 0.0);
        const float* xs = in + s * p_ * c_;
        for (int64_t p = 0; p < p_; ++p) {
          for (int64_t c = 0; c < c_; ++c) acc[c] += xs[p * c_ + c];
        }
        for (int64_t c = 0; c < c_; ++c) out[s * c_ + c] = static_cast<float>(acc[c] / p_);
      }
    });
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    const int64_t n = dy.shape()[0];
    dx.Resize(in_.WithBatch(n));
    const float inv = 1.0f / static_cast<float>(p_);
    const float* d = dy.data();
    float* out = dx.data();
    PoolOf(ctx).ParallelFor(n, 4, [&](int64_t n0, int64_t n1) {
      for (int64_t s = n0; s < n1; ++s) {
        for (int64_t p = 0; p < p_; ++p) {
          for (int64_t c = 0; c < c_; ++c) out[(s * p_ + p) * c_ + c] = d[s * c_ + c] * inv;
        }
      }
    });
  }

  // Each sample's output and input error depend on that sample alone (data-parallel shards).
  BatchCoupling batch_coupling() const override { return BatchCoupling::kPerSample; }
  std::string Summary() const override {
    return "global_avg_pool " + in_.ToString() + " -> [" + std::to_string(c_) + "]";
  }

 private:
  std::string where_;
  Shape in_;
  int64_t c_ = 0, p_ = 0;
};

PIM_REGISTER(Layer, GlobalAvgPool, "global_avg_pool",
             "mean over all positions: (H, W, C) or (T, C) -> (C)");

}  // namespace
}  // namespace pim
