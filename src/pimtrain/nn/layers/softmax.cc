// `softmax`: exp(x) / sum exp(x) over one dimension of each sample.
#include <algorithm>
#include <cmath>
#include <string>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/layer.h"

namespace pim {
namespace {

// Over dimension `dim` of the per-sample shape (negative counts from the end), with the batch
// and the dimensions before it as `outer` and those after it as `inner`:
// FP: y = exp(x - max) / sum exp(x - max)   (max-shifted: never overflows)
// BP: dx = y (dy - sum(dy y))               (sums over the same dimension)
// Each softmax vector is computed by one thread, in double.
class Softmax final : public Layer {
 public:
  explicit Softmax(const ConfigNode& p) : where_(p.Where()), dim_(p.GetInt("dim")) {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("dim").Default(-1).Range(-3, 2)
              .Doc("dimension of the sample (no batch) to normalize over; -1 = the last"));
    return s;
  }

  Shape Build(const Shape& input, uint64_t) override {
    const int64_t d = dim_ < 0 ? input.rank() + dim_ : dim_;
    if (input.rank() == 0 || d < 0 || d >= input.rank()) {
      throw ConfigError(where_ + ": softmax dim " + std::to_string(dim_) +
                        " is not a dimension of the input " + input.ToString());
    }
    shape_ = input;
    len_ = input[static_cast<int>(d)];
    inner_ = 1;
    for (int a = static_cast<int>(d) + 1; a < input.rank(); ++a) inner_ *= input[a];
    return input;
  }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    y.Resize(x.shape());
    y_.Resize(x.shape());
    const int64_t vectors = x.numel() / len_;
    const float* in = x.data();
    float* out = y.data();
    float* keep = y_.data();
    PoolOf(ctx).ParallelFor(vectors, 64, [&](int64_t v0, int64_t v1) {
      for (int64_t v = v0; v < v1; ++v) {
        const int64_t base = (v / inner_) * len_ * inner_ + v % inner_;
        float m = in[base];
        for (int64_t j = 1; j < len_; ++j) m = std::max(m, in[base + j * inner_]);
        double sum = 0;
        for (int64_t j = 0; j < len_; ++j) sum += std::exp(double{in[base + j * inner_]} - m);
        for (int64_t j = 0; j < len_; ++j) {
          const int64_t i = base + j * inner_;
          out[i] = keep[i] = static_cast<float>(std::exp(double{in[i]} - m) / sum);
        }
      }
    });
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    dx.Resize(dy.shape());
    const int64_t vectors = dy.numel() / len_;
    const float* y = y_.data();
    const float* d = dy.data();
    float* out = dx.data();
    PoolOf(ctx).ParallelFor(vectors, 64, [&](int64_t v0, int64_t v1) {
      for (int64_t v = v0; v < v1; ++v) {
        const int64_t base = (v / inner_) * len_ * inner_ + v % inner_;
        double dot = 0;
        for (int64_t j = 0; j < len_; ++j) {
          dot += double{d[base + j * inner_]} * y[base + j * inner_];
        }
        for (int64_t j = 0; j < len_; ++j) {
          const int64_t i = base + j * inner_;
          out[i] = static_cast<float>(y[i] * (d[i] - dot));
        }
      }
    });
  }

  // Each sample's output and input error depend on that sample alone (data-parallel shards).
  BatchCoupling batch_coupling() const override { return BatchCoupling::kPerSample; }
  std::string Summary() const override {
    return "softmax over dim " + std::to_string(dim_) + " of " + shape_.ToString();
  }

 private:
  std::string where_;
  int64_t dim_;
  Shape shape_;
  int64_t len_ = 1, inner_ = 1;
  Tensor y_;  // FP's output, for BP
};

PIM_REGISTER(Layer, Softmax, "softmax", "softmax over one dimension of each sample");

}  // namespace
}  // namespace pim
