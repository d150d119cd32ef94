// `step` schedule: multiply the rate by gamma every step_size epochs.
#include <algorithm>
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/optimizer.h"

namespace pim {
namespace {

// factor = gamma ^ floor(epoch / step_size)
class StepSchedule final : public Schedule {
 public:
  explicit StepSchedule(const ConfigNode& p)
      : step_size_(p.GetInt("step_size")), gamma_(p.GetDouble("gamma")) {}
  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("step_size").Default(1).Range(1, 1e6).Unit("epochs").Doc("epochs per decay"));
    s.Add(Param::Float("gamma").Default(0.1).Range(0, 1).Doc("decay factor per step"));
    return s;
  }
  double Factor(int64_t epoch, double, int64_t) const override {
    return std::pow(gamma_, static_cast<double>(epoch / step_size_));
  }

 private:
  int64_t step_size_;
  double gamma_;
};

PIM_REGISTER(Schedule, StepSchedule, "step", "multiply the rate by gamma every step_size epochs");

}  // namespace
}  // namespace pim
