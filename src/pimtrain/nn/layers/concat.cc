// `concat`: joins two or more tensors along their last dimension (channels / features).
#include <cstring>
#include <string>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/layer.h"

namespace pim {
namespace {

// FP: y[..., off_k : off_k + c_k] = x_k.  BP: dx_k = dy[..., off_k : off_k + c_k].
// Every position (row) is independent, split over threads.
class Concat final : public Layer {
 public:
  explicit Concat(const ConfigNode& p) : where_(p.Where()) {}
  static Schema GetSchema() { return Schema(); }

  int num_inputs() const override { return -1; }
  Shape Build(const Shape&, uint64_t) override {
    throw ConfigError(where_ + ": concat needs two or more inputs: use it in a graph model");
  }
  Shape BuildInputs(const std::vector<Shape>& in, uint64_t) override {
    widths_.clear();
    std::vector<int64_t> d = in[0].dims();
    if (d.empty()) throw ConfigError(where_ + ": concat of scalars");
    int64_t total = 0;
    for (size_t k = 0; k < in.size(); ++k) {
      std::vector<int64_t> dk = in[k].dims();
      bool ok = dk.size() == d.size();
      for (size_t a = 0; ok && a + 1 < d.size(); ++a) ok = dk[a] == d[a];
      if (!ok) {
        throw ConfigError(where_ + ": concat inputs must agree in all but the last dimension: "
                          "input 1 is " + in[0].ToString() + ", input " + std::to_string(k + 1) +
                          " is " + in[k].ToString());
      }
      widths_.push_back(dk.back());
      total += dk.back();
    }
    d.back() = total;
    out_ = Shape(d);
    return out_;
  }
  void Forward(const Tensor&, Tensor&, const StepContext&) override {
    PIM_CHECK_MSG(false, "concat has several inputs (ForwardInputs)");
  }
  void PropagateError(const Tensor&, Tensor&, const StepContext&) override {
    PIM_CHECK_MSG(false, "concat has several inputs (PropagateErrorInputs)");
  }

  void ForwardInputs(const std::vector<const Tensor*>& xs, Tensor& y,
                     const StepContext& ctx) override {
    const int64_t total = out_[out_.rank() - 1];
    const int64_t rows = xs[0]->numel() / widths_[0];
    y.Resize(out_.WithBatch(xs[0]->shape()[0]));
    float* out = y.data();
    PoolOf(ctx).ParallelFor(rows, 256, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        int64_t off = 0;
        for (size_t k = 0; k < xs.size(); ++k) {
          std::memcpy(out + r * total + off, xs[k]->data() + r * widths_[k],
                      sizeof(float) * widths_[k]);
          off += widths_[k];
        }
      }
    });
  }

  void PropagateErrorInputs(const Tensor& dy, const std::vector<Tensor*>& dxs,
                            const StepContext& ctx) override {
    const int64_t total = out_[out_.rank() - 1];
    const int64_t rows = dy.numel() / total;
    const int64_t n = dy.shape()[0];
    for (size_t k = 0; k < dxs.size(); ++k) {
      std::vector<int64_t> d = out_.dims();
      d.back() = widths_[k];
      dxs[k]->Resize(Shape(d).WithBatch(n));
    }
    PoolOf(ctx).ParallelFor(rows, 256, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        int64_t off = 0;
        for (size_t k = 0; k < dxs.size(); ++k) {
          std::memcpy(dxs[k]->data() + r * widths_[k], dy.data() + r * total + off,
                      sizeof(float) * widths_[k]);
          off += widths_[k];
        }
      }
    });
  }

  // Each sample's output and input error depend on that sample alone (data-parallel shards).
  BatchCoupling batch_coupling() const override { return BatchCoupling::kPerSample; }
  std::string Summary() const override {
    std::string s = "concat";
    for (size_t k = 0; k < widths_.size(); ++k) {
      s += (k ? " + " : " ") + std::to_string(widths_[k]);
    }
    return s + " -> " + out_.ToString();
  }

 private:
  std::string where_;
  std::vector<int64_t> widths_;
  Shape out_;
};

PIM_REGISTER(Layer, Concat, "concat", "joins two or more inputs along the last dimension");

}  // namespace
}  // namespace pim
