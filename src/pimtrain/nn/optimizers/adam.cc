// Adam (Kingma & Ba, ICLR 2015) with optional L2 weight decay, PyTorch's formulation.
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/optimizer.h"

namespace pim {
namespace {

// g = grad + wd*w; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
class Adam final : public Optimizer {
 public:
  explicit Adam(const ConfigNode& p)
      : lr_(p.GetDouble("learning_rate")),
        beta1_(p.GetDouble("beta1")),
        beta2_(p.GetDouble("beta2")),
        eps_(p.GetDouble("eps")),
        weight_decay_(static_cast<float>(p.GetDouble("weight_decay"))),
        step_(Shape{1}) {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Float("learning_rate").Default(0.001).Range(0, 100).Doc("base step size"));
    s.Add(Param::Float("beta1").Default(0.9).Range(0, 0.999999).Doc("first-moment decay"));
    s.Add(Param::Float("beta2").Default(0.999).Range(0, 0.999999).Doc("second-moment decay"));
    s.Add(Param::Float("eps").Default(1e-8).Range(0, 1).Doc("denominator guard"));
    s.Add(Param::Float("weight_decay").Default(0.0).Range(0, 1).Doc("L2 penalty added to grad"));
    return s;
  }

  void Attach(const std::vector<Parameter*>& params) override {
    params_ = params;
    m_.clear();
    v_.clear();
    for (auto* p : params_) {
      m_.emplace_back(p->value.shape());
      v_.emplace_back(p->value.shape());
    }
    step_.Zero();
  }

  void Step(double lr) override {
    step_[0] += 1.0f;  // exact for any realistic step count (< 2^24)
    const double t = step_[0];
    const float c1 = static_cast<float>(1.0 / (1.0 - std::pow(beta1_, t)));
    const float c2 = static_cast<float>(1.0 / (1.0 - std::pow(beta2_, t)));
    const float b1 = static_cast<float>(beta1_), b2 = static_cast<float>(beta2_);
    const float eps = static_cast<float>(eps_), lr_f = static_cast<float>(lr);
    for (size_t i = 0; i < params_.size(); ++i) {
      float* w = params_[i]->value.data();
      const float* g = params_[i]->grad.data();
      float* m = m_[i].data();
      float* v = v_[i].data();
      DefaultPool().ParallelFor(params_[i]->value.numel(), 16384, [&](int64_t b, int64_t e) {
        for (int64_t j = b; j < e; ++j) {
          float gj = g[j] + weight_decay_ * w[j];
          m[j] = b1 * m[j] + (1.0f - b1) * gj;
          v[j] = b2 * v[j] + (1.0f - b2) * gj * gj;
          w[j] -= lr_f * (m[j] * c1) / (std::sqrt(v[j] * c2) + eps);
        }
      });
    }
  }

  double base_learning_rate() const override { return lr_; }

  std::vector<Tensor*> State() override {
    std::vector<Tensor*> out{&step_};
    for (size_t i = 0; i < m_.size(); ++i) {
      out.push_back(&m_[i]);
      out.push_back(&v_[i]);
    }
    return out;
  }

 private:
  double lr_, beta1_, beta2_, eps_;
  float weight_decay_;
  std::vector<Parameter*> params_;
  std::vector<Tensor> m_, v_;
  Tensor step_;
};

PIM_REGISTER(Optimizer, Adam, "adam", "Adam with bias correction and L2 weight decay");

}  // namespace
}  // namespace pim
