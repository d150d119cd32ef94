// Update role: the weight-update (WU) stage written into the analog devices,
// W <- W - lr x^T d (x: batch x rows inputs, d: batch x cols output errors), as pulses
// (stochastic coincidences, deterministic counts, write-verify) or as the exact increment.
#pragma once

#include <vector>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/base/matrix_view.h"
#include "pimtrain/device/array.h"
#include "pimtrain/base/parallel.h"

namespace pim {

// What a device update depends on besides its operands (the macro fills it from RunContext).
struct UpdateContext {
  uint64_t seed = 0;
  int64_t step = 0;
  int layer = 0;
  ThreadPool* pool = nullptr;
};

class UpdateRule {
 public:
  static constexpr const char* kRoleName = "update";
  virtual ~UpdateRule() = default;
  // Applies one batch's update to `a`. Random draws are keyed by (ctx.seed, ctx.layer,
  // ctx.step, `tag`, sample, line or cell), so any thread count gives the same bits.
  virtual void Apply(DeviceArray& a, ConstMatrixView x, ConstMatrixView d, float lr,
                     const UpdateContext& ctx, uint64_t tag, ActionCounts& counts) const = 0;
  // The largest number of pulses one cell may receive in one update cycle (desired_bl).
  virtual int max_pulses() const { return 31; }
};

// Applies a signed pulse count per cell (n > 0: up pulses), the transfer step of Tiki-Taka and
// mixed precision; counts pulses and cells. Parallel over rows, keyed by (seed, layer, step,
// tag, cell).
void ApplyPulseCounts(DeviceArray& a, const int32_t* n, const UpdateContext& ctx, uint64_t tag,
                      ActionCounts& counts);

// dw = x^T d (rows x cols), digital, in fixed order.
void OuterGradient(ConstMatrixView x, ConstMatrixView d, std::vector<float>& dw, ThreadPool* pool);

}  // namespace pim
