// `cosine` schedule: cosine annealing per step with optional linear warmup.
#include <algorithm>
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/nn/optimizer.h"

namespace pim {
namespace {

// Per step: t = (epoch + fraction) / total in [0, 1);
// factor = min + (1 - min) * (1 + cos(pi t)) / 2, after `warmup_epochs` of linear warmup.
class CosineSchedule final : public Schedule {
 public:
  explicit CosineSchedule(const ConfigNode& p)
      : min_factor_(p.GetDouble("min_factor")), warmup_(p.GetDouble("warmup_epochs")) {}
  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Float("min_factor").Default(0.0).Range(0, 1).Doc("final lr / base lr"));
    s.Add(Param::Float("warmup_epochs").Default(0.0).Range(0, 1e6).Unit("epochs")
              .Doc("linear warmup from 0 before the cosine"));
    return s;
  }
  double Factor(int64_t epoch, double fraction, int64_t total) const override {
    double t = static_cast<double>(epoch) + fraction;
    if (t < warmup_) return (t + 1e-9) / warmup_;
    double span = std::max(1e-9, static_cast<double>(total) - warmup_);
    double u = std::clamp((t - warmup_) / span, 0.0, 1.0);
    return min_factor_ + (1.0 - min_factor_) * 0.5 * (1.0 + std::cos(M_PI * u));
  }

 private:
  double min_factor_, warmup_;
};

PIM_REGISTER(Schedule, CosineSchedule, "cosine", "cosine annealing per step, optional warmup");

}  // namespace
}  // namespace pim
