// Macro role: a PIM array (or a grid of them) that stores a weight matrix as the hardware does
// and multiplies batches through it in either direction, counting hardware actions.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/base/config.h"
#include "pimtrain/base/error.h"
#include "pimtrain/base/matrix_view.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/stage.h"

namespace pim {

// kForward: rows -> cols, y = x W (x is batch x rows, y is batch x cols).
// kTransposed: the same stored bits read for W^T, y = x W^T (x is batch x cols, y batch x rows).
enum class Direction { kForward, kTransposed };

// Everything a macro call may depend on besides its operands. Noise and stochastic rounding
// draw from counter-based streams keyed by (seed, layer, step, stage, coordinates).
struct RunContext {
  uint64_t seed = 0;
  int64_t step = 0;
  int layer = 0;
  Stage stage = Stage::kForward;
  ThreadPool* pool = nullptr;  // runs the call's parallel loops; nullptr: inline
  // The largest |x| of the whole tensor that this call's input is a slice of (a layer may
  // multiply a batch in slices). Macros that scale inputs per tensor use it, so slicing does not
  // change the numbers. Negative: use the input's own maximum.
  float input_max_abs = -1.0f;
  // GradientCalc only: the largest |dy| of the whole dy (a GC split over processes scans it
  // once over the ranks; docs/scaling.md). Macros that scale dy per tensor use it for signed
  // operands. Negative: dy's own maximum.
  float gradient_max_abs = -1.0f;
  // GradientCalc only: false when this call computes a block of dW's rows (x's columns) of a
  // product split over processes (docs/scaling.md), other than the first block. The actions the
  // whole product does once whatever its rows (writing dY into the GC array) are counted by the
  // first block alone; everything per row of dW is counted by the block that computes it.
  bool count_shared_actions = true;
};

// The geometry and precision every macro shares. Implementations add their own parameters.
struct MacroSpec {
  int64_t rows = 256;           // word lines per array (reduction dimension)
  int64_t cols = 256;           // bit lines per array (outputs)
  int64_t arrays_per_core = 1;  // arrays working in parallel in one core
  int64_t cores = 1;
  int input_bits = 8;           // bit-serial input width (forward activations)
  int weight_bits = 8;          // weight width used in the forward direction
  int weight_bits_backward = 8; // weight width used in the transposed direction
  int error_bits = 8;           // bit-serial width of transposed-direction inputs (errors)
  int gradient_bits = 16;       // width of the output errors on the gradient path
  // true: the layer keeps FP32 master weights and reprograms the array from them after each
  // update (small updates accumulate); false: the array is the only copy (the chip's update is
  // written into the cells, and an update below one LSB is lost unless rounded stochastically).
  bool master_weights = true;
};

class Macro {
 public:
  static constexpr const char* kRoleName = "macro";
  virtual ~Macro() = default;

  virtual const MacroSpec& spec() const = 0;

  // Every counter this macro may add (its kernels' and its own), declared with units where they
  // are counted (base/action_counts.h). The cost model must price or ignore each of them
  // (cost/cost_model.h, CheckPricingCovers); `pimtrain describe macro/NAME` lists them.
  virtual CounterSet Counters() const = 0;

  // The layer's mapping (docs/numerics.md, "Mapping"): the stored matrix's rows are cut into
  // segments of `rows_per_segment` rows that each start on a fresh array (a convolution mapped
  // channel-wise: one segment per kernel position); 0 packs the rows densely. Takes effect at
  // the next Program and holds for every later call until changed. A segmented layout changes
  // the counts and the array occupancy, never the numbers of an exact macro. Macros without a
  // tiling model may ignore it.
  virtual void SetRowSegment(int64_t rows_per_segment) { (void)rows_per_segment; }

  // Stores a rows x cols weight matrix (any size: tiled onto fixed arrays) as the hardware
  // stores it (quantized, sliced, rotated, ...). Counts the cell writes, and the occupancy of
  // the arrays the layout takes: `array_cells_allocated` (every cell of those arrays) and
  // `array_cells_used` (cells holding weight bits); utilization = used / allocated. `ctx` keys
  // stochastic rounding (the WU stage of ctx.step), so a resumed run programs the same bits.
  virtual void Program(ConstMatrixView w, const RunContext& ctx, ActionCounts& counts) = 0;

  // y = x W or y = x W^T (see Direction) through the stored array, for a whole batch.
  // Inputs are quantized as the chip's input path does; partial results across row tiles are
  // accumulated digitally (counted).
  virtual void Multiply(ConstMatrixView x, MatrixView y, Direction dir, const RunContext& ctx,
                        ActionCounts& counts) = 0;

  // dW = X^T dY (rows x cols) for a batch, on the macro's gradient-calculation path.
  virtual void GradientCalc(ConstMatrixView x, ConstMatrixView dy, MatrixView dw,
                            const RunContext& ctx, ActionCounts& counts) = 0;

  // WU in the array: W <- W - lr x^T d written into the cells as the configured update rule
  // does (pulses, write-verify, exact), x: batch x rows (the FP inputs), d: batch x cols (the
  // output errors). Macros that cannot update in place throw UnsupportedError.
  virtual void UpdateInArray(ConstMatrixView x, ConstMatrixView d, float lr,
                             const RunContext& ctx, ActionCounts& counts) {
    (void)x, (void)d, (void)lr, (void)ctx, (void)counts;
    throw UnsupportedError(
        "this macro has no in-array update (use analog_crossbar with a device / update block)");
  }

  // The weights as the array holds them now, dequantized to float (rows x cols).
  virtual void ReadWeights(MatrixView w) const = 0;

  // Structural figures the cost model needs besides the action counts: resolved widths (the ADC
  // resolution a dataflow's formula gives, DAC bits, cell bits, datapath width), array geometry,
  // and the like. Names are documented by each implementation; the cost model (src/pimtrain/cost)
  // reads the ones its component tables need. Pure description: no state changes.
  virtual std::map<std::string, double> HardwareParams() const { return {}; }
  // Moves into `out` the actions of the calibration passes this macro ran inside its calls
  // since the last take (an analog macro's ADC range search: the candidate read-outs and the
  // digital reference), so that the caller counts them as Stage::kCalibration, not as the FP
  // they ran within. Macros without calibration leave `out` alone.
  virtual void TakeCalibrationCounts(ActionCounts& out) {}
  // The |x| that sets the per-tensor scale of the forward input x (the whole tensor a layer's
  // calls are slices of), for a macro that chooses the scale from more than the largest |x|
  // (analog_crossbar's input_scale: mse; larger inputs then saturate at the top code); the
  // caller passes it as RunContext::input_max_abs. -1: the largest |x| (the default). Any work
  // it does is counted in the macro's next forward Multiply.
  virtual float ForwardInputBound(ConstMatrixView x) { (void)x; return -1.0f; }
};

}  // namespace pim
