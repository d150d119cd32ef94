// `ideal` update: the exact increment W <- W - lr x^T d written into the devices, clipped to
// their bounds (exact reprogramming, no pulse physics).
#include "pimtrain/base/registry.h"
#include "pimtrain/device/update.h"

namespace pim {
namespace {

class IdealUpdate final : public UpdateRule {
 public:
  explicit IdealUpdate(const ConfigNode&) {}
  static Schema GetSchema() { return Schema(); }
  void Apply(DeviceArray& a, ConstMatrixView x, ConstMatrixView d, float lr,
             const UpdateContext& ctx, uint64_t, ActionCounts& counts) const override {
    std::vector<float> dw;
    OuterGradient(x, d, dw, ctx.pool);
    int64_t written = 0;
    for (int64_t i = 0; i < a.size(); ++i) {
      const float step = -lr * dw[i];
      if (step == 0) continue;
      a.Add(i, step);
      ++written;
    }
    counts.Add("weight_writes", written);
    counts.Add("digital_macs", x.rows * x.cols * d.cols);
  }
};

PIM_REGISTER(UpdateRule, IdealUpdate, "ideal",
             "exact reprogramming: the floating-point increment, clipped to the bounds");

}  // namespace
}  // namespace pim
