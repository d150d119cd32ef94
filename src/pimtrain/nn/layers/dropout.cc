// `dropout`: zero each element with probability p in training, scale the rest by 1/(1-p).
#include <algorithm>
#include <cstring>
#include <sstream>
#include <string>

#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/nn/layer.h"

namespace pim {
namespace {

// FP (train): m_i = [u_i >= p] / (1 - p),  y = m * x   (inverted dropout: eval is the identity)
// BP:         dx = m * dy
// u_i is word i % 4 of Philox block i / 4 under the key MixKey(seed, layer key, step): a pure
// function of the element index, so the mask does not depend on threads or loop order.
class Dropout final : public Layer {
 public:
  explicit Dropout(const ConfigNode& p) : p_(p.GetDouble("p")) {
    if (p_ >= 1.0) {
      throw ConfigError(p.At("p").Where() + ": " + p.At("p").text() +
                        " is outside [0, 1) (p = 1 would drop everything)");
    }
  }

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Float("p").Default(0.5).Range(0, 1).Doc("drop probability, in [0, 1)"));
    return s;
  }

  Shape Build(const Shape& input, uint64_t init_key) override {
    shape_ = input;
    key_ = init_key;
    return input;
  }

  void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) override {
    y.Resize(x.shape());
    active_ = ctx.mode == Mode::kTrain && p_ > 0.0;
    if (!active_) {
      std::memcpy(y.data(), x.data(), sizeof(float) * x.numel());
      return;
    }
    mask_.Resize(x.shape());
    const CounterRng rng(MixKey(ctx.seed, key_, static_cast<uint64_t>(ctx.step)));
    // Compare 24-bit uniforms against p in integers: keep iff (u >> 8) >= threshold.
    const uint32_t threshold = static_cast<uint32_t>(p_ * 16777216.0);
    const float scale = static_cast<float>(1.0 / (1.0 - p_));
    const int64_t n = x.numel(), blocks = (n + 3) / 4;
    const float* in = x.data();
    float* out = y.data();
    float* m = mask_.data();
    PoolOf(ctx).ParallelFor(blocks, 4096, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const auto words = rng.Block(static_cast<uint64_t>(b));
        for (int64_t w = 0; w < 4 && 4 * b + w < n; ++w) {
          const int64_t i = 4 * b + w;
          m[i] = (words[w] >> 8) >= threshold ? scale : 0.0f;
          out[i] = m[i] * in[i];
        }
      }
    });
  }

  void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) override {
    dx.Resize(dy.shape());
    if (!active_) {
      std::memcpy(dx.data(), dy.data(), sizeof(float) * dy.numel());
      return;
    }
    const float* d = dy.data();
    const float* m = mask_.data();
    float* out = dx.data();
    PoolOf(ctx).ParallelFor(dy.numel(), 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[i] = m[i] * d[i];
    });
  }

  std::string Summary() const override {
    std::ostringstream os;
    os << "dropout p=" << p_ << " " << shape_.ToString();
    return os.str();
  }

 private:
  double p_;
  Shape shape_;
  uint64_t key_ = 0;
  bool active_ = false;
  Tensor mask_;  // 0 or 1/(1-p) per element of the last training forward
};

PIM_REGISTER(Layer, Dropout, "dropout", "inverted dropout with a counter-based mask");

}  // namespace
}  // namespace pim
