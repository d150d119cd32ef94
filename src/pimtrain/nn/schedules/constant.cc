// `constant` schedule: the base learning rate throughout.
#include <algorithm>
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/optimizer.h"

namespace pim {
namespace {

class ConstantSchedule final : public Schedule {
 public:
  explicit ConstantSchedule(const ConfigNode&) {}
  static Schema GetSchema() { return Schema(); }
  double Factor(int64_t, double, int64_t) const override { return 1.0; }
};

PIM_REGISTER(Schedule, ConstantSchedule, "constant", "the base learning rate throughout");

}  // namespace
}  // namespace pim
