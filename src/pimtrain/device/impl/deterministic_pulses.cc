// `deterministic_pulses` update (NeuroSim style): per batch, each cell receives
// n = round(-lr dW / epsilon) pulses (halves away from zero; n > 0 up), dW = x^T d computed
// digitally; optionally capped at max_pulses. NeuroSim applies all n pulses of a write at once.
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/device/update.h"

namespace pim {
namespace {

class DeterministicPulses final : public UpdateRule {
 public:
  explicit DeterministicPulses(const ConfigNode& p)
      : max_pulses_(static_cast<int>(p.GetInt("max_pulses"))) {}
  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("max_pulses").Default(0).Range(0, 1 << 20).Unit("pulses").Doc(
        "most pulses per cell and update (0: no cap)"));
    return s;
  }
  int max_pulses() const override { return max_pulses_ > 0 ? max_pulses_ : (1 << 20); }
  void Apply(DeviceArray& a, ConstMatrixView x, ConstMatrixView d, float lr,
             const UpdateContext& ctx, uint64_t tag, ActionCounts& counts) const override {
    std::vector<float> dw;
    OuterGradient(x, d, dw, ctx.pool);
    const double eps = a.granularity();
    const double cap = max_pulses();
    std::vector<int32_t> n(dw.size());
    for (size_t i = 0; i < dw.size(); ++i) {
      const double v = std::clamp(std::round(-lr * dw[i] / eps), -cap, cap);
      n[i] = static_cast<int32_t>(v);
    }
    counts.Add("digital_macs", x.rows * x.cols * d.cols);
    ApplyPulseCounts(a, n.data(), ctx, tag, counts);
  }

 private:
  int max_pulses_;
};

PIM_REGISTER(UpdateRule, DeterministicPulses, "deterministic_pulses",
             "NeuroSim-style pulse counts n = round(-lr dW / epsilon) per cell and batch");

}  // namespace
}  // namespace pim
