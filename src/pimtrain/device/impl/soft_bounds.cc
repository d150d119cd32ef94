// `soft_bounds` device: the step shrinks linearly to zero at the device's own bounds
// (aihwkit SoftBoundsDevice): up w += Delta+ (1 - w/b+)(1 + sigma xi),
// down w -= Delta- (1 - w/b-)(1 + sigma xi).
#include "pimtrain/base/registry.h"
#include "pimtrain/device/device.h"

namespace pim {
namespace {

class SoftBounds final : public PulsedDevice<SoftBounds> {
 public:
  explicit SoftBounds(const ConfigNode& p) : PulsedDevice(p) {}
  static Schema GetSchema() {
    Schema s;
    AddPulsedParams(s, PulsedParams{});
    return s;
  }
  // Branch-free (the direction of a pulse is a coin flip to the branch predictor, and a
  // mispredict discards the loads of the pulses behind it): the bound and step of the pulse's
  // direction picked by index, the down step as -Delta- (w + (-a) f = w - a f, exactly).
  float Step(float w, int64_t i, const DeviceCells& c, int dir, float xi) const {
    static constexpr float kSign[2] = {-1.0f, 1.0f};
    const int up = dir > 0;
    const float* const bounds[2] = {c.b_min.data(), c.b_max.data()};
    const float* const steps[2] = {c.dw_down.data(), c.dw_up.data()};
    const float b = bounds[up][i];
    const float dw = steps[up][i] * kSign[up];
    const float q = 1 - w / b;
    const float f = b != 0 ? q : 0.0f;
    return w + dw * f * (1 + sigma_ * xi);
  }
  // Step on the packed record (b-, b+, -Delta-, Delta+): the same operations on the same floats.
  float StepPacked(float w, const float* rec, int up, float xi) const {
    const float b = rec[up];
    const float dw = rec[2 + up];
    const float q = 1 - w / b;
    const float f = b != 0 ? q : 0.0f;
    return w + dw * f * (1 + sigma_ * xi);
  }
};

PIM_REGISTER(Device, SoftBounds, "soft_bounds",
             "step linear in the weight, zero at the bounds (aihwkit SoftBoundsDevice)");

}  // namespace
}  // namespace pim
