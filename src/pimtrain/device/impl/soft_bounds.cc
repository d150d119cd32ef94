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
  float Step(float w, int64_t i, const DeviceCells& c, int dir, float xi) const {
    if (dir > 0) {
      const float f = c.b_max[i] != 0 ? 1 - w / c.b_max[i] : 0.0f;
      return w + c.dw_up[i] * f * (1 + sigma_ * xi);
    }
    const float f = c.b_min[i] != 0 ? 1 - w / c.b_min[i] : 0.0f;
    return w - c.dw_down[i] * f * (1 + sigma_ * xi);
  }
};

PIM_REGISTER(Device, SoftBounds, "soft_bounds",
             "step linear in the weight, zero at the bounds (aihwkit SoftBoundsDevice)");

}  // namespace
}  // namespace pim
