// `ideal` device: no pulses, no bounds; the update is the exact floating-point increment
// (aihwkit's IdealDevice), the reference every device model is compared with.
#include "pimtrain/base/registry.h"
#include "pimtrain/device/device.h"

namespace pim {
namespace {

class IdealDevice final : public Device {
 public:
  explicit IdealDevice(const ConfigNode&) {}
  static Schema GetSchema() { return Schema(); }
  bool ideal() const override { return true; }
  void Draw(uint64_t, int64_t n, DeviceCells& c) const override {
    c.b_max.assign(n, 1e30f);
    c.b_min.assign(n, -1e30f);
    c.dw_up.assign(n, 0.0f);
    c.dw_down.assign(n, 0.0f);
    c.p_up.assign(n, 0.0f);
    c.p_down.assign(n, 0.0f);
  }
  double Granularity() const override { return 0.001; }
  float Pulse(float w, int64_t, const DeviceCells&, int n, int dir, const CounterRng&,
              uint64_t) const override {
    return w + static_cast<float>(dir * n) * 0.001f;
  }
};

PIM_REGISTER(Device, IdealDevice, "ideal",
             "exact floating-point update, unbounded (no pulses)");

}  // namespace
}  // namespace pim
