// Numeric faults: NaN or Inf in the loss, activations, errors, gradients, weights or layer state
// stop the run (or skip the step, when configured) with a message naming layer, stage and step.
#pragma once

#include <cstdint>
#include <string>

#include "pimtrain/base/error.h"
#include "pimtrain/base/stage.h"
#include "pimtrain/nn/model.h"

namespace pim {

// A run stopped by a non-finite value. A user-level error (exit code 2): it comes from the
// config (learning rate, data scale, macro precision), not from a simulator bug.
class NumericError : public Error {
 public:
  using Error::Error;
};

// Where the first non-finite value of a step was found.
struct NonfiniteFault {
  int layer = -1;             // -1: the loss
  std::string layer_summary;  // "linear 256 -> 128" (empty for the loss)
  Stage stage = Stage::kForward;
  std::string tensor;  // "output", "input error", "weight gradient", "weight", "running_mean"
  int64_t index = 0;   // the first bad element
  float value = 0;     // NaN or +-Inf
  int64_t step = 0;    // global training step
  int64_t epoch = 0;   // 0-based
  // What grew before the overflow, so the message shows it: the largest finite magnitudes of
  // the layer's parameters, input and output (negative: not known, e.g. for the loss), and the
  // mean loss of the last step that finished finite (set by the trainer; step -1: none yet).
  float max_abs_weight = -1, max_abs_input = -1, max_abs_output = -1;
  double last_finite_loss = 0;
  int64_t last_finite_step = -1;
  bool analog = false;  // the layer runs on an analog macro (its ADC range is a suspect)
  // One line: "NaN in layer 3 (linear 256 -> 128) weight gradient at stage GC, step 41
  // (epoch 2); largest |weight| 3.1e+04, |input| 12, |output| 8.2e+37; last finite loss 0.41
  // (step 40)".
  std::string Describe() const;
  // Which knob to look at, by stage and macro: the ADC range (analog forward), the learning
  // rate, the noise; with the doc section that explains the failure.
  std::string Advice() const;

 private:
  std::string Growth() const;  // the magnitudes and last finite loss, "" if none is known
};

// Thrown inside a training step when a value is not finite. The trainer catches it and either
// stops the run (NumericError) or skips the step; see Trainer::RunEpoch.
class NonfiniteFound : public NumericError {
 public:
  explicit NonfiniteFound(NonfiniteFault fault)
      : NumericError(fault.Describe()), fault_(std::move(fault)) {}
  const NonfiniteFault& fault() const { return fault_; }

 private:
  NonfiniteFault fault_;
};

// Index of the first element that is NaN or +-Inf, or -1. A branch-free pass over blocks (the
// exponent-all-ones test on the bit pattern vectorizes), so checking every tensor of a step
// costs a small fraction of the step's products.
int64_t FirstNonfinite(const float* x, int64_t n);

// Throws NonfiniteFound naming layer `layer` of `net`, `stage`, `tensor` and the step of `ctx`
// if `t` holds a non-finite value.
void CheckFinite(const Tensor& t, Network& net, int layer, Stage stage, const std::string& tensor,
                 const StepContext& ctx);
// The largest finite |x| of `n` values (0 when none is finite).
float MaxFiniteAbsOf(const float* x, int64_t n);

// Throws NonfiniteFound naming the loss if `loss_sum` is not finite.
void CheckLossFinite(double loss_sum, const StepContext& ctx);
// Every layer's output of the last forward pass (stage FP), input layer first.
void CheckActivationsFinite(Network& net, const StepContext& ctx);
// Every parameter of every layer (stage WU: what the update wrote) and every buffer (layer state
// such as batch-norm running statistics, written in FP).
void CheckStateFinite(Network& net, const StepContext& ctx);

}  // namespace pim
