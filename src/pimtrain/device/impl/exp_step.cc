// `exp_step` device: the step falls exponentially towards each bound (aihwkit ExpStepDevice):
// z = 2a w / (b+ - b-) + b, f+ = max(1 - A_up e^(gamma_up z), 0),
// f- = max(1 - A_down e^(-gamma_down z), 0); dw = +Delta+ f+ or -Delta- f-, then
// w += dw (1 + sigma xi), or w += dw + sigma (|dw| + std_add + std_slope |w|) xi when either
// std_add or std_slope is set.
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/device/device.h"

namespace pim {
namespace {

class ExpStep final : public PulsedDevice<ExpStep> {
 public:
  explicit ExpStep(const ConfigNode& p)
      : PulsedDevice(p),
        a_up_(static_cast<float>(p.GetDouble("A_up"))),
        a_down_(static_cast<float>(p.GetDouble("A_down"))),
        g_up_(static_cast<float>(p.GetDouble("gamma_up"))),
        g_down_(static_cast<float>(p.GetDouble("gamma_down"))),
        a_(static_cast<float>(p.GetDouble("a"))),
        b_(static_cast<float>(p.GetDouble("b"))),
        std_add_(static_cast<float>(p.GetDouble("std_add"))),
        std_slope_(static_cast<float>(p.GetDouble("std_slope"))) {}
  static Schema GetSchema() {
    Schema s;
    AddPulsedParams(s, PulsedParams{});
    s.Add(Param::Float("A_up").Default(0.00081).Range(-1e6, 1e6).Doc("amplitude of the up decay"));
    s.Add(Param::Float("A_down").Default(0.36833).Range(-1e6, 1e6).Doc(
        "amplitude of the down decay"));
    s.Add(Param::Float("gamma_up").Default(12.44625).Range(-1e3, 1e3).Doc("up decay rate"));
    s.Add(Param::Float("gamma_down").Default(12.78785).Range(-1e3, 1e3).Doc("down decay rate"));
    s.Add(Param::Float("a").Default(0.244).Range(-1e3, 1e3).Doc("z = 2a w/(b+ - b-) + b: scale"));
    s.Add(Param::Float("b").Default(0.2425).Range(-1e3, 1e3).Doc("z offset"));
    s.Add(Param::Float("std_add").Default(0.0).Range(0, 100).Doc("additive c2c noise term"));
    s.Add(Param::Float("std_slope").Default(0.0).Range(0, 100).Doc(
        "c2c noise term proportional to |w|"));
    return s;
  }
  // The down step at w = 0 without device-to-device spread (aihwkit's choice, spec 2.1);
  // dw_min where that step is not positive.
  double Granularity() const override {
    const double f = std::max(1.0 - a_down_ * std::exp(-g_down_ * b_), 0.0);
    const double g = params_.dw_min * (1 - std::max(params_.up_down, 0.0)) * f;
    return g > 0 ? g : params_.dw_min;
  }
  float Step(float w, int64_t i, const DeviceCells& c, int dir, float xi) const {
    const float span = c.b_max[i] - c.b_min[i];
    const float z = span > 0 ? 2 * a_ * w / span + b_ : b_;
    const float dw = dir > 0 ? c.dw_up[i] * std::max(1 - a_up_ * std::exp(g_up_ * z), 0.0f)
                             : -c.dw_down[i] * std::max(1 - a_down_ * std::exp(-g_down_ * z), 0.0f);
    if (std_add_ != 0 || std_slope_ != 0) {
      return w + dw + sigma_ * (std::fabs(dw) + std_add_ + std_slope_ * std::fabs(w)) * xi;
    }
    return w + dw * (1 + sigma_ * xi);
  }

 private:
  float a_up_, a_down_, g_up_, g_down_, a_, b_, std_add_, std_slope_;
};

PIM_REGISTER(Device, ExpStep, "exp_step",
             "step decaying exponentially towards the bounds (aihwkit ExpStepDevice)");

}  // namespace
}  // namespace pim
