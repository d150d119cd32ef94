// `pow_step` device: the step is a power of the distance to the bound (aihwkit PowStepDevice):
// omega = (b+ - w)/(b+ - b-), up w += Delta+ omega^gamma+ (1 + sigma xi),
// down w -= Delta- (1 - omega)^gamma- (1 + sigma xi).
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/device/device.h"

namespace pim {
namespace {

class PowStep final : public PulsedDevice<PowStep> {
 public:
  explicit PowStep(const ConfigNode& p)
      : PulsedDevice(p),
        gamma_(p.GetDouble("pow_gamma")),
        gamma_dtod_(p.GetDouble("pow_gamma_dtod")),
        up_down_(p.GetDouble("pow_up_down")) {}
  static Schema GetSchema() {
    Schema s;
    AddPulsedParams(s, PulsedParams{});
    s.Add(Param::Float("pow_gamma").Default(1.0).Range(0, 100).Doc("exponent of the step"));
    s.Add(Param::Float("pow_gamma_dtod").Default(0.1).Range(0, 10).Doc(
        "device-to-device spread of the exponent, relative"));
    s.Add(Param::Float("pow_up_down").Default(0.0).Range(-1, 1).Doc(
        "up/down asymmetry of the exponent (like up_down)"));
    return s;
  }
  double Granularity() const override { return params_.dw_min * std::pow(0.5, gamma_); }
  void Draw(uint64_t key, int64_t n, DeviceCells& c) const override {
    Device::Draw(key, n, c);
    const CounterRng r(key, 17);
    for (int64_t i = 0; i < n; ++i) {
      const double g = 1 + gamma_dtod_ * r.Normal(static_cast<uint64_t>(i));
      c.p_up[i] = static_cast<float>(std::max(0.0, gamma_ * (std::min(up_down_, 0.0) + g)));
      c.p_down[i] = static_cast<float>(std::max(0.0, gamma_ * (-std::max(up_down_, 0.0) + g)));
    }
  }
  float Step(float w, int64_t i, const DeviceCells& c, int dir, float xi) const {
    const float span = c.b_max[i] - c.b_min[i];
    const float om = span > 0 ? std::clamp((c.b_max[i] - w) / span, 0.0f, 1.0f) : 0.5f;
    if (dir > 0) return w + c.dw_up[i] * std::pow(om, c.p_up[i]) * (1 + sigma_ * xi);
    return w - c.dw_down[i] * std::pow(1 - om, c.p_down[i]) * (1 + sigma_ * xi);
  }

 private:
  double gamma_, gamma_dtod_, up_down_;
};

PIM_REGISTER(Device, PowStep, "pow_step",
             "step a power of the distance to the bound (aihwkit PowStepDevice)");

}  // namespace
}  // namespace pim
