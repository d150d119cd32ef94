// `linear_step` device: the step changes linearly with the weight, with per-device slopes
// (aihwkit LinearStepDevice): s+- = -|gamma+- + gamma_dtod xi| Delta+- / ref+-,
// up w += (s+ w + Delta+)(1 + sigma xi), down w -= (s- w + Delta-)(1 + sigma xi).
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/device/device.h"

namespace pim {
namespace {

class LinearStep final : public PulsedDevice<LinearStep> {
 public:
  explicit LinearStep(const ConfigNode& p)
      : PulsedDevice(p),
        gamma_up_(p.GetDouble("gamma_up")),
        gamma_down_(p.GetDouble("gamma_down")),
        gamma_up_dtod_(p.GetDouble("gamma_up_dtod")),
        gamma_down_dtod_(p.GetDouble("gamma_down_dtod")),
        mean_ref_(p.GetBool("mean_bound_reference")),
        mult_noise_(p.GetBool("mult_noise")) {}
  static Schema GetSchema() {
    Schema s;
    AddPulsedParams(s, PulsedParams{});
    s.Add(Param::Float("gamma_up").Default(0.0).Range(0, 100).Doc("slope of the up step"));
    s.Add(Param::Float("gamma_down").Default(0.0).Range(0, 100).Doc("slope of the down step"));
    s.Add(Param::Float("gamma_up_dtod").Default(0.05).Range(0, 100).Doc(
        "device-to-device spread of gamma_up, absolute"));
    s.Add(Param::Float("gamma_down_dtod").Default(0.05).Range(0, 100).Doc(
        "device-to-device spread of gamma_down, absolute"));
    s.Add(Param::Bool("mean_bound_reference").Default(true).Doc(
        "slopes referenced to the mean bounds w_max / w_min (false: the device's own bounds)"));
    s.Add(Param::Bool("mult_noise").Default(true).Doc(
        "cycle-to-cycle noise multiplies the whole step (false: only Delta)"));
    return s;
  }
  void Draw(uint64_t key, int64_t n, DeviceCells& c) const override {
    Device::Draw(key, n, c);
    const CounterRng r(key, 16);
    for (int64_t i = 0; i < n; ++i) {
      const float xi = r.Normal(static_cast<uint64_t>(i));
      const double ref_up = mean_ref_ ? params_.w_max : c.b_max[i];
      const double ref_down = mean_ref_ ? params_.w_min : c.b_min[i];
      const double gu = std::fabs(gamma_up_ + gamma_up_dtod_ * xi);
      const double gd = std::fabs(gamma_down_ + gamma_down_dtod_ * xi);
      c.p_up[i] = ref_up != 0 ? static_cast<float>(-gu * c.dw_up[i] / ref_up) : 0.0f;
      c.p_down[i] = ref_down != 0 ? static_cast<float>(-gd * c.dw_down[i] / ref_down) : 0.0f;
    }
  }
  float Step(float w, int64_t i, const DeviceCells& c, int dir, float xi) const {
    const float n = sigma_ * xi;
    if (dir > 0) {
      return mult_noise_ ? w + (c.p_up[i] * w + c.dw_up[i]) * (1 + n)
                         : w + c.p_up[i] * w + c.dw_up[i] * (1 + n);
    }
    return mult_noise_ ? w - (c.p_down[i] * w + c.dw_down[i]) * (1 + n)
                       : w - c.p_down[i] * w - c.dw_down[i] * (1 + n);
  }

 private:
  double gamma_up_, gamma_down_, gamma_up_dtod_, gamma_down_dtod_;
  bool mean_ref_, mult_noise_;
};

PIM_REGISTER(Device, LinearStep, "linear_step",
             "step linear in the weight with per-device slopes (aihwkit LinearStepDevice)");

}  // namespace
}  // namespace pim
