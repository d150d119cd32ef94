// Hooks a training algorithm (PIM-QAT) uses to train through an analog macro: per-direction
// read-out (analog or ideal), adjusted ADC precision, ADC range / output gain calibration.
// Implemented by the analog_crossbar macro; reached with dynamic_cast from Macro.
#pragma once

#include "pimtrain/macro/macro.h"

namespace pim {

class AnalogTunable {
 public:
  virtual ~AnalogTunable() = default;

  // kAnalog: the configured read-out chain (DAC cycles, ADC, noise, non-linearity).
  // kIdeal: the exact product of the quantized operands (what the straight-through estimator
  // differentiates; a digital quantization-aware model).
  enum class Readout { kAnalog, kIdeal };
  virtual void SetReadout(Direction dir, Readout r) = 0;
  virtual Readout readout(Direction dir) const = 0;

  // Adds `delta` bits to every ADC of the chain (adjusted-precision training); 0 restores.
  virtual void SetAdcBitsDelta(int delta) = 0;

  // At the next forward Multiply: with `range`, searches the forward ADC's full-scale range for
  // the least squared output error against the ideal product on that call's input; with
  // `gain`, sets the least-squares digital output gain g, which then scales the forward output,
  // the transposed read and the gradient alike (docs/analog.md, "PIM-QAT").
  virtual void RequestCalibration(bool range, bool gain) = 0;
  // The forward ADC full scale as a fraction of the largest possible partial sum, and the
  // digital output gain, as last set or calibrated.
  virtual double adc_full_scale_fraction() const = 0;
  virtual double output_gain() const = 0;
  // The forward ADC conversions and how many of them clipped since the last call (then reset
  // to 0): a training algorithm recalibrates a range that the partial sums have outgrown.
  struct ClipTally {
    int64_t conversions = 0, clipped = 0;
  };
  virtual ClipTally TakeForwardClipTally() = 0;
};

}  // namespace pim
