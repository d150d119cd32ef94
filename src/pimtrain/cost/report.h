// CostReport: a period's counts (an epoch, a benchmark) priced by a CostModel, broken down per
// layer, stage and component, with the derived figures defined in docs/cost.md.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "pimtrain/cost/cost_model.h"

namespace pim {

struct StageCost {
  int layer = 0;
  std::string summary;
  Stage stage = Stage::kForward;
  std::map<std::string, double> energy_pj;  // dynamic, by component
  double cycles = 0;
  double epu_cycles = 0;        // on the error prediction unit (local error prediction)
  double macs = 0;
  double activation_bits = 0;   // FP inputs of the layer over the period (kept until GC)
  // The report's name of the stage: StageName(stage), or "reprogram" for the weight tiles
  // streamed through a chip too small to hold every layer (priced as WU writes).
  std::string stage_name;
  double EnergyPj() const;
};

// The shape of the period the counts cover.
struct RunShape {
  int64_t samples = 0;      // training samples (0: not a training period, e.g. a benchmark)
  int64_t batch_size = 1;   // samples per weight update (pipelines drain at each update)
  StageSchedule schedule = StageSchedule::kSequential;
  // Super-pipeline only: copies of the slowest layers' weights on the arrays no layer uses, the
  // samples split among the copies (stage balancing; docs/sppim.md).
  bool replicate_stages = false;
  int64_t label_bits = 8;   // one label read from off-chip memory per training sample [assume]
};

struct CostReport {
  OperatingPoint op;
  std::string tech;
  RunShape shape;
  std::vector<StageCost> items;            // one per (layer, stage) with any work
  std::map<std::string, double> area_mm2;  // modeled components of the chip
  double chip_area_mm2 = 0;                // used for leakage and GOPS/mm2
  double leakage_mw = 0;
  double max_frequency_mhz = 0;            // the tech's limit at op.voltage
  double access_time_ns = 0;               // the macro's critical path at op (0: not modeled)

  // Derived (docs/cost.md): filled by BuildCostReport.
  double dynamic_energy_pj = 0;
  double leakage_energy_pj = 0;
  double energy_pj = 0;          // dynamic + leakage
  double cycles = 0;             // under the schedule
  // Off-chip traffic: the training inputs, plus (when they do not fit the activation buffer)
  // the activations kept for gradient calculation, written and read back (docs/cost.md).
  double offchip_bits = 0;
  // The config asked for super_pipelined but the algorithm propagates errors through the
  // arrays (backprop): priced layer_pipelined instead (shape.schedule says which was used).
  bool super_pipeline_refused = false;
  double offchip_energy_pj = 0;  // part of dynamic_energy_pj; not in any (layer, stage)
  bool activations_spill = false;
  // Off-chip bits by tensor: "inputs" (read once), "labels", "prediction_matrices" (local error
  // prediction's feedback, read once and kept), "activations.L" (the part of layer L's kept FP
  // inputs that overflows the buffer: written and read back; layer 0's are re-read only),
  // "weights" (tiles not resident, read before each reprogramming).
  std::map<std::string, double> offchip_bits_by_tensor;
  // Stage balancing (replicate_stages): copies of each layer's weights (1: none).
  std::map<int, int> replicas;
  // Weight-stationary capacity: arrays the layers' weights need against the chip's. When they
  // do not fit, the tiles that are not resident are written again before each pass that reads
  // them (FP, and BP when errors go through the arrays), every batch (docs/cost.md,
  // "Layers larger than the chip").
  double arrays_needed = 0, arrays_available = 0;
  double reprogram_cell_writes = 0;
  double seconds = 0;            // cycles / f
  double sequential_seconds = 0; // the same work with every stage one after another
  double macs = 0;
  double ops = 0;                // 2 * macs
  double tops_per_watt = 0;      // ops / energy
  double gops_per_mm2 = 0;       // ops / seconds / chip area
  double power_mw = 0;           // energy / seconds
  double samples_per_second = 0; // training samples / seconds
  double energy_per_sample_uj = 0;

  std::map<std::string, double> EnergyByStage() const;      // pJ
  std::map<std::string, double> EnergyByComponent() const;  // pJ
  std::map<int, double> EnergyByLayer() const;              // pJ
  std::map<std::string, double> CyclesByStage() const;

  std::string ToJson() const;   // every figure with its unit
  // The headline figures in SI base units (J, s, W) and per stage, for one metrics.jsonl line.
  std::string CompactJson() const;
  std::string ToTable() const;  // for people
  // The one-paragraph summary `pimtrain train` prints at the end.
  std::string Headline() const;
};

CostReport BuildCostReport(const CostModel& model, const std::vector<LayerHardware>& layers,
                           const OperatingPoint& op, const RunShape& shape);

}  // namespace pim
