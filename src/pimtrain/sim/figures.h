// Chip figures from the cost model: a macro benchmark (the chip's arrays filled with one
// synthetic workload, priced at an operating point) and the check of a preset's `expected:`
// block against it (docs/cost.md, "Figures"; docs/fidelity.md).
#pragma once

#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/cost/cost_model.h"
#include "pimtrain/cost/report.h"

namespace pim {

// A synthetic workload: macro parameter overrides (widths, modes) plus operand statistics.
struct Workload {
  ConfigNode macro_overrides = ConfigNode::Map();
  double input_sparsity = 0.5;   // fraction of exactly-zero input elements
  double weight_sparsity = 0.0;  // fraction of exactly-zero weights
  bool signed_inputs = false;    // inputs in [-1, 1) instead of post-ReLU [0, 1)
  bool transposed = false;       // read the array transposed (the BP direction)
  int64_t batch = 64;
  std::string Describe() const;  // "input_bits=8 weight_bits=8 input_sparsity=0.5 ..."
};

// Parses a workload map ({input_sparsity, weight_sparsity, signed_inputs, direction, batch, and
// any macro parameter}); `where` names it in errors.
Workload ParseWorkload(const ConfigNode* node);

// Fills every array of the chip (pim.macro of `config`) with random weights, multiplies a batch
// of random inputs through them, and prices the counts of that multiply at `op` (programming
// excluded: the weights are stationary). Deterministic for the config's seed.
CostReport BenchmarkMacro(const ConfigNode& config, const CostModel& model, const Workload& w,
                          const OperatingPoint& op);

// Trains one epoch of `config` on a slice of `slice_samples` training samples (the first ones
// of the data set; epochs: 1) and prices it; per-sample figures hold for the whole epoch, whose
// time is the slice's scaled by epoch_samples / slice_samples. `sets` are further overrides.
CostReport TrainingCost(const ConfigNode& config, int64_t slice_samples,
                        const std::vector<std::string>& sets = {});

// SP-PIM's comparison on the same slice, the chip's own hardware each time (docs/sppim.md,
// "Baseline"): backprop run stage after stage (sequential schedule; a double-buffered macro
// keeps W^T in its second buffer for BP and writes both copies in time), local error prediction
// stage after stage (the algorithm alone; the second buffer idle, write-back in time), and local
// error prediction on the super-pipeline (the preset). The speedup splits into the algorithm's
// part (backprop / local sequential) and the schedule's (local sequential / super-pipelined).
struct PipelineComparison {
  CostReport backprop_sequential, local_sequential, local_super_pipelined;
  double speedup() const;            // backprop sequential / super-pipelined
  double algorithm_speedup() const;  // backprop sequential / local sequential
  double schedule_speedup() const;   // local sequential / super-pipelined
  double traffic_reduction() const;  // backprop off-chip bits / local error prediction's
};
PipelineComparison ComparePipelines(const ConfigNode& config, int64_t slice_samples);

// One published figure against the model.
struct FigureCheck {
  std::string figure;     // tops_per_watt, power_mw, ...
  std::string unit;
  std::string point;      // operating point name
  std::string workload;   // Workload::Describe()
  std::string note;       // why these settings (from the preset)
  double paper = 0, model = 0, tolerance = 0.1;
  // What the figure is to the model (docs/fidelity.md): "fit" (a parameter, `fitted`, was chosen
  // to reproduce it), "prediction" (published, nothing fitted to it), "public_check" (published,
  // nothing fitted to it, but a derived or partial test: a ratio of published figures, a figure
  // of a companion paper, an efficiency whose power is fitted), or "model" (no published value).
  std::string role = "model";
  std::string fitted;       // the parameter fitted to this figure (role fit)
  // A tested figure the model misses by more than its tolerance, with the reason it cannot
  // reach it (a missing published detail, docs/fidelity.md); reported, not asserted as a pass.
  std::string miss_reason;
  std::string preset;       // the preset's name (set by CheckExpected's caller or config name)
  bool calibrated() const { return role == "fit"; }
  // Published and not fitted: the figures that test the model.
  bool tests_the_model() const { return role == "prediction" || role == "public_check"; }
  bool ok() const;  // within tolerance (a known miss is not ok)
  bool known_miss() const { return !miss_reason.empty(); }
  // No published value: the figure is printed as what the model predicts.
  bool prediction_only() const { return paper != paper; }
  double relative_error() const;
};

// The figure names BenchmarkMacro's report provides, with units.
const std::vector<std::pair<std::string, std::string>>& KnownFigures();
double FigureValue(const CostReport& r, const std::string& figure);

// Evaluates every entry of the config's `expected:` list. Needs `cost:` and `pim.macro`.
std::vector<FigureCheck> CheckExpected(const ConfigNode& config, const CostModel& model);

std::string FigureChecksTable(const std::vector<FigureCheck>& checks);
std::string FigureChecksJson(const std::vector<FigureCheck>& checks);

}  // namespace pim
