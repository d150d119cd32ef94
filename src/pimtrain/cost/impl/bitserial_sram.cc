// bitserial_sram cost model: prices the digital bit-serial SRAM macro's counts (T-PIM). Each
// counted event maps to one component of presets/tech; the mapping and its reasoning are in
// docs/cost.md ("bitserial_sram").
#include <algorithm>
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/cost/cost_model.h"

namespace pim {
namespace {

class BitSerialSramCost final : public CostModel {
 public:
  static Schema GetSchema() {
    Schema s;
    AddCommonParams(s, "28nm", 0.9, 200);
    s.Add(Param::Int("output_bits").Default(32).Range(1, 64).Unit("bits")
              .Doc("width of the accumulators and of each output written to the output buffer"));
    s.Add(Param::Float("compute_duty").Default(1.0).Range(0.01, 1.0)
              .Doc("fraction of clock cycles in which the arrays apply a plane (the rest: buffer "
                   "refills, control, stalls)"));
    return s;
  }
  explicit BitSerialSramCost(const ConfigNode& p)
      : CostModel(p),
        output_bits_(static_cast<double>(p.GetInt("output_bits"))),
        compute_duty_(p.GetDouble("compute_duty")) {
    Prices("cell_and_ops", "array: sram8t_and each; adder_tree: adder_tree_toggle each");
    Prices("gated_zero_weight_ops", "array: gated_op each (the clock gate of a zero weight)");
    Prices("bitserial_cycles", "array: array_cycle each; time: cycles / arrays / duty");
    Prices("adder_tree_adds", "adder_tree: adder_tree_idle each (clocking)");
    Prices("shift_adds", "accumulator: output_bits x accumulator_add_bit each");
    Prices("tile_accumulations", "accumulator: output_bits x accumulator_add_bit each");
    Prices("input_buffer_writes", "buffers: input bits x buffer_write_bit each");
    Prices("input_buffer_reads", "buffers: input bits x buffer_read_bit each");
    Prices("output_buffer_writes", "buffers: output_bits x buffer_write_bit each");
    Prices("weight_writes", "weight_write: sram8t_write each; time: a row of bit lines a cycle");
    Prices("shadow_weight_writes", "weight_write: sram8t_write each; no time (hidden)");
    Prices("gc_operand_writes", "weight_write: sram8t_write each; time: a row a cycle");
    Ignores("skipped_zero_cycles", "a skipped plane is not applied: no energy, no cycle");
    Ignores("buffer_switches", "one select line per programmed matrix: below 1e-6 of a write-back");
  }

  PricedCounts Price(const ActionCounts& c, Stage stage, const HardwareParams& hw,
                     const OperatingPoint& op) const override {
    const double v = op.voltage;
    auto n = [&](const char* k) { return N(c, k); };
    const double arrays = ParallelArrays(hw);
    const double in_bits = stage == Stage::kBackward ? HwParam(hw, "error_bits", 8)
                                                     : HwParam(hw, "input_bits", 8);
    PricedCounts p;
    auto& e = p.energy_pj;
    // The array: a cell AND fires only where the input bit is 1 (8T read port), gated units of
    // zero weights still cost their clock gate; every applied plane costs the word-line drivers
    // and the array's control for one cycle.
    e["array"] = n("cell_and_ops") * E("sram8t_and", v) +
                 n("gated_zero_weight_ops") * E("gated_op", v) +
                 n("bitserial_cycles") * E("array_cycle", v);
    // Adder trees: switching follows the 1s entering them (one per cell AND that fired); every
    // two-input add of an active cycle costs its clocking.
    e["adder_tree"] = n("cell_and_ops") * E("adder_tree_toggle", v) +
                      n("adder_tree_adds") * E("adder_tree_idle", v);
    // Shift-adds and the merging of row-block partial results: output_bits-wide adders.
    e["accumulator"] = (n("shift_adds") + n("tile_accumulations")) * output_bits_ *
                       E("accumulator_add_bit", v);
    e["buffers"] = (n("input_buffer_writes") * in_bits * E("buffer_write_bit", v)) +
                   (n("input_buffer_reads") * in_bits * E("buffer_read_bit", v)) +
                   (n("output_buffer_writes") * output_bits_ * E("buffer_write_bit", v));
    // Shadow writes (a double-buffered macro) cost the same energy but overlap computation.
    e["weight_write"] = (n("weight_writes") + n("shadow_weight_writes") + n("gc_operand_writes")) *
                        E("sram8t_write", v);
    // Time: the arrays apply their planes in parallel; a write-back writes one row of one array
    // (its bit lines) per cycle.
    const double bitlines = HwParam(hw, "bitlines", 256);
    p.cycles = (n("bitserial_cycles") / arrays +
                (n("weight_writes") + n("gc_operand_writes")) / bitlines / arrays) /
               compute_duty_;
    // Chip-wide energy of every clock cycle, busy or not: clock distribution, controller, I/O.
    e["chip_overhead"] = p.cycles * E("chip_cycle", v);
    PriceCommon(c, v, p);
    return p;
  }

  std::map<std::string, double> AreaMm2(const HardwareParams& hw) const override {
    const double arrays = HwParam(hw, "arrays_total", 1);
    const double rows = HwParam(hw, "rows", 256), bitlines = HwParam(hw, "bitlines", 256);
    const double cells = arrays * rows * bitlines * HwParam(hw, "weight_buffers", 1);
    std::map<std::string, double> a;
    a["cells"] = cells * tech_.Area("sram8t_cell") * 1e-6;
    // One adder tree per bit line over the array's rows (rows - 1 two-input adders of growing
    // width, about 2 full adders each on average).
    a["adder_trees"] = arrays * bitlines * (rows - 1) * 2 * tech_.Area("full_adder") * 1e-6;
    a["accumulators"] = arrays * (bitlines / HwParam(hw, "weight_bits_backward", 16)) *
                        output_bits_ * (tech_.Area("full_adder") + tech_.Area("register_bit")) *
                        1e-6;
    return a;
  }

 private:
  double output_bits_;
  double compute_duty_;
};

PIM_REGISTER(CostModel, BitSerialSramCost, "bitserial_sram",
             "digital bit-serial SRAM PIM (T-PIM): cell ANDs, adder trees, shift-adds, buffers");

}  // namespace
}  // namespace pim
