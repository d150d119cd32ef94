// `mixed_precision` (Nandakumar et al., Front. Neurosci. 2020; aihwkit MixedPrecisionCompound):
// the gradient is accumulated digitally, chi += -lr x^T d; every transfer_every steps each cell
// receives n = trunc(chi / epsilon) pulses (capped at the rule's desired BL) and
// chi -= n epsilon. Digital: dW = x^T d and the chi update (rows x cols MACs and adds per
// step); in the array: |n| pulses per cell. chi is checkpointed (resume is bit-identical).
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/train/impl/analog_common.h"

namespace pim {
namespace {

class MixedPrecision final : public AnalogAlgorithm {
 public:
  explicit MixedPrecision(const ConfigNode& p)
      : every_(p.GetInt("transfer_every")), cap_(static_cast<int>(p.GetInt("max_pulses"))) {}
  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("transfer_every").Default(1).Range(1, 1 << 20).Unit("steps").Doc(
        "steps between transfers of chi into the devices"));
    s.Add(Param::Int("max_pulses").Default(31).Range(1, 1 << 20).Unit("pulses").Doc(
        "most pulses per cell and transfer (aihwkit: desired_bl)"));
    return s;
  }

 protected:
  const char* name() const override { return "mixed_precision"; }
  void AllocateState(int layer, int64_t rows, int64_t cols, AnalogTrainable&) override {
    AddState(layer, "chi", rows * cols);
  }
  void UpdateLayer(AnalogLayer& al, ConstMatrixView x, ConstMatrixView d, float lr,
                   const RunContext& rc, ActionCounts& counts) override {
    Tensor& chi_t = State(al.index, "chi");
    float* chi = chi_t.data();
    const size_t size = static_cast<size_t>(chi_t.numel());
    // chi in device units (pim.macro.mapping: W = alpha W_dev, so d / alpha), transferred in
    // units of the device's granularity dw_min as in Nandakumar et al.
    std::vector<float> dw, ds;
    OuterGradient(x, al.trainable->ToDeviceUnits(d, ds, counts), dw, rc.pool);
    for (size_t i = 0; i < size; ++i) chi[i] -= lr * dw[i];
    counts.Add("digital_macs", x.rows * al.rows * al.cols);
    counts.Add("digital_accumulations", al.rows * al.cols);
    if ((rc.step + 1) % every_ != 0) return;
    DeviceArray& a = al.trainable->weight_array();
    const double eps = a.granularity();
    std::vector<int32_t> n(size);
    for (size_t i = 0; i < size; ++i) {
      const double cap = static_cast<double>(cap_);
      const double k = std::clamp(std::trunc(chi[i] / eps), -cap, cap);
      n[i] = static_cast<int32_t>(k);
      chi[i] -= static_cast<float>(k * eps);
    }
    UpdateContext uc{rc.seed, rc.step, rc.layer, rc.pool};
    ApplyPulseCounts(a, n.data(), uc, 2, counts);
  }

 private:
  int64_t every_;
  int cap_;
};

PIM_REGISTER(TrainingAlgorithm, MixedPrecision, "mixed_precision",
             "digital gradient accumulation chi, pulses when chi reaches the device granularity");

}  // namespace
}  // namespace pim
