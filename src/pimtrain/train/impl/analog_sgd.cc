// `analog_sgd`: plain SGD written into the devices, W <- W - lr x^T d by the macro's update
// rule (stochastic pulses, pulse counts, write-verify, exact); no digital master copy.
#include "pimtrain/base/registry.h"
#include "pimtrain/train/impl/analog_common.h"

namespace pim {
namespace {

class AnalogSgd final : public AnalogAlgorithm {
 public:
  explicit AnalogSgd(const ConfigNode&) {}
  static Schema GetSchema() { return Schema(); }

 protected:
  const char* name() const override { return "analog_sgd"; }
  void UpdateLayer(AnalogLayer& al, ConstMatrixView x, ConstMatrixView d, float lr,
                   const RunContext& rc, ActionCounts& counts) override {
    al.macro->UpdateInArray(x, d, lr, rc, counts);
  }
};

PIM_REGISTER(TrainingAlgorithm, AnalogSgd, "analog_sgd",
             "SGD written into the analog devices by the macro's update rule (no master copy)");

}  // namespace
}  // namespace pim
