// CostModel role: prices the functional model's action counts in energy, time and area, using a
// technology table (presets/tech) and the chip's component parameters (docs/cost.md).
#pragma once

#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/base/config.h"
#include "pimtrain/base/schema.h"
#include "pimtrain/base/stage.h"
#include "pimtrain/cost/tech.h"

namespace pim {

// A supply voltage and clock the chip runs at.
struct OperatingPoint {
  std::string name = "nominal";
  double voltage = 0.9;       // V
  double frequency_mhz = 100; // MHz
};

// How per-stage latencies combine into the time of a training period (cost/pipeline.h).
enum class StageSchedule {
  kSequential,      // every stage of every layer one after another (T-PIM)
  kLayerPipelined,  // samples flow through the (layer, stage) chain; drains at each update
  kSuperPipelined,  // local errors (SP-PIM): FP and GC of each layer overlap on its
                    // double-buffered macro, error prediction is its own unit (docs/cost.md)
};

// The structural description of one macro (Macro::HardwareParams): rows, cols, widths, ...
using HardwareParams = std::map<std::string, double>;

// What one layer did on its macro in some period (an epoch, a benchmark): its counts per stage
// and the hardware it ran on.
struct LayerHardware {
  int layer = 0;
  std::string summary;  // "linear 784->256"
  HardwareParams hw;
  std::array<ActionCounts, kNumStages> counts;
};

// Counts priced at one operating point.
struct PricedCounts {
  std::map<std::string, double> energy_pj;  // dynamic energy by component (pJ)
  double cycles = 0;                        // clock cycles the work occupies the chip's units
  double epu_cycles = 0;                    // cycles of the error prediction unit (SP-PIM)
  double TotalEnergyPj() const {
    double e = 0;
    for (const auto& [k, v] : energy_pj) e += v;
    return e;
  }
};

// How a cost model treats one declared counter: priced (into which component, by which rule) or
// deliberately ignored (why).
struct CounterPricing {
  bool priced = false;
  std::string how;  // priced: the component and rule; ignored: the reason
};

class CostModel {
 public:
  static constexpr const char* kRoleName = "cost_model";
  virtual ~CostModel() = default;

  const TechTable& tech() const { return tech_; }
  // Every counter this model prices or ignores, by name (docs/cost.md, "Declared counters").
  const std::map<std::string, CounterPricing>& pricing() const { return pricing_; }
  // A ConfigError (one line, naming `where`, the model and the counter) for the first counter of
  // `counters` that this model neither prices nor ignores.
  void CheckCovers(const CounterSet& counters, const std::string& where) const;
  // The operating point of a run (the config's voltage and frequency_mhz).
  const OperatingPoint& operating_point() const { return op_; }
  // Named operating points (e.g. the published ends of a chip's range); may be empty.
  const std::vector<OperatingPoint>& operating_points() const { return points_; }
  // The named point, or a ConfigError listing the known names.
  OperatingPoint FindOperatingPoint(const std::string& name) const;

  // Dynamic energy and cycles of `counts` (one stage of one layer) on hardware `hw` at `op`.
  virtual PricedCounts Price(const ActionCounts& counts, Stage stage, const HardwareParams& hw,
                             const OperatingPoint& op) const = 0;
  // The critical path of one macro access at `op` (ns); 0 when the model has none.
  virtual double AccessTimeNs(const OperatingPoint& op) const { return 0; }
  // Chip area by component (mm2) for a chip built from macros like `hw`.
  virtual std::map<std::string, double> AreaMm2(const HardwareParams& hw) const = 0;
  // Die area used for leakage and GOPS/mm2: the published area when given, else the sum above.
  double ChipAreaMm2(const HardwareParams& hw) const;
  double LeakageMw(const HardwareParams& hw, const OperatingPoint& op) const;
  // Off-chip traffic energy per bit (pJ, not voltage scaled: the DRAM interface is its own
  // supply).
  double offchip_pj_per_bit() const { return offchip_pj_per_bit_; }
  StageSchedule schedule() const { return schedule_; }
  bool replicate_stages() const { return replicate_stages_; }
  // On-chip capacity for the activations a training step keeps until its gradient calculation;
  // what does not fit goes to off-chip memory and back.
  double activation_buffer_bits() const { return activation_buffer_kb_ * 8192.0; }

 protected:
  // Reads the parameters every cost model shares (AddCommonParams).
  explicit CostModel(const ConfigNode& p);
  // tech, voltage, frequency_mhz, operating_points, chip_area_mm2, energy_pj overrides,
  // offchip_pj_per_bit, schedule.
  static void AddCommonParams(Schema& s, const char* default_tech, double voltage,
                              double frequency_mhz);
  // Energy of one action from the tech table (after the preset's overrides) at voltage v.
  double E(const std::string& action, double v) const {
    return tech_.Energy(action, v) * energy_scale_;
  }

  // Declares how this model treats a counter (each model, in its constructor, for every counter
  // of the macros it prices). The counter must be declared (base/action_counts.h).
  void Prices(const std::string& counter, const std::string& how);
  void Ignores(const std::string& counter, const std::string& reason);
  // The count of a counter this model declared as priced; reading any other is a PIM_CHECK
  // failure (a price cannot rest on a counter the model says it ignores or never declared).
  double N(const ActionCounts& c, const std::string& counter) const;

  TechTable tech_;
  OperatingPoint op_;
  std::vector<OperatingPoint> points_;
  double chip_area_mm2_ = 0;  // 0: from the component model
  double offchip_pj_per_bit_ = 0;
  StageSchedule schedule_ = StageSchedule::kSequential;
  double activation_buffer_kb_ = 0;
  bool replicate_stages_ = false;
  double epu_lanes_ = 64;
  double energy_scale_ = 1;  // design factor on every per-action energy (calibrated per chip)

  // Prices the events every family shares, into `p`: the error prediction unit of local error
  // prediction (`epu_*`: shift-adds, sign flips, masks, reads of the fixed feedback; on its own
  // unit, so its cycles go to `p.epu_cycles`, not `p.cycles`).
  void PriceCommon(const ActionCounts& c, double v, PricedCounts& p) const;

 private:
  std::map<std::string, CounterPricing> pricing_;
  std::string name_;  // the impl name (for messages)
};

// A parameter of `hw`, or `fallback` when the macro does not report it.
double HwParam(const HardwareParams& hw, const std::string& key, double fallback);

// The arrays a layer's stage can run on in parallel: its own arrays when the training period
// recorded them (`arrays_used`, weight-stationary: a layer computes on the arrays holding its
// weights), at most the chip's `arrays_total`; the whole chip for a benchmark.
double ParallelArrays(const HardwareParams& hw);
// Cells of one array from the macro's geometry (rows x bit lines), 0 if unknown.
double CellsPerArray(const HardwareParams& hw);

}  // namespace pim
