// `constant_step` device: every pulse moves the weight by its device's fixed step
// (aihwkit ConstantStepDevice): up w += Delta+ (1 + sigma xi), down w -= Delta- (1 + sigma xi).
#include "pimtrain/base/registry.h"
#include "pimtrain/device/device.h"

namespace pim {
namespace {

class ConstantStep final : public PulsedDevice<ConstantStep> {
 public:
  explicit ConstantStep(const ConfigNode& p) : PulsedDevice(p) {}
  static Schema GetSchema() {
    Schema s;
    AddPulsedParams(s, PulsedParams{});
    return s;
  }
  float Step(float w, int64_t i, const DeviceCells& c, int dir, float xi) const {
    return dir > 0 ? w + c.dw_up[i] * (1 + sigma_ * xi) : w - c.dw_down[i] * (1 + sigma_ * xi);
  }
};

PIM_REGISTER(Device, ConstantStep, "constant_step",
             "fixed step per pulse, hard bounds (aihwkit ConstantStepDevice)");

}  // namespace
}  // namespace pim
