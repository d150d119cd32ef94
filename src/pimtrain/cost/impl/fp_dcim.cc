// fp_dcim cost model: prices the floating-point digital CIM macro's counts (ISSCC 2025 14.5;
// SP-PIM's BF16 macro): pre-alignment, port reads and rotations of the cyclic transpose, 4b x 4b
// multipliers (approximate mode drops partial-product terms), adder trees, nibble shift-adds,
// renormalization, and the FP32 gradient path outside the macro (docs/cost.md, "fp_dcim").
#include <algorithm>
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/cost/cost_model.h"

namespace pim {
namespace {

class FpDcimCost final : public CostModel {
 public:
  static Schema GetSchema() {
    Schema s;
    AddCommonParams(s, "28nm", 0.9, 400);
    s.Add(Param::Float("toggle_rate").Default(0.5).Range(0.0, 1.0)
              .Doc("switching activity of the datapath (the tech energies hold at 0.5)"));
    s.Add(Param::Float("compute_duty").Default(1.0).Range(0.01, 1.0)
              .Doc("fraction of clock cycles in which the multipliers work (rest: control, "
                   "stalls)"));
    s.Add(Param::Bool("zero_skipping").Default(false)
              .Doc("zero operands are skipped in time, not only gated (SP-PIM's dual sparsity: "
                   "a zero activation or error is never fed to the multipliers)"));
    s.Add(Param::Int("offmacro_macs_per_cycle").Default(16).Range(1, 1 << 20)
              .Doc("FP32 MACs per cycle of the gradient unit outside the macro"));
    s.Add(Param::Float("access_fo4").Default(120).Range(1, 1e4)
              .Doc("critical path of one macro access (read, multiply, tree, normalize) in FO4 "
                   "delays"));
    return s;
  }
  explicit FpDcimCost(const ConfigNode& p)
      : CostModel(p),
        toggle_(p.GetDouble("toggle_rate")),
        duty_(p.GetDouble("compute_duty")),
        zero_skipping_(p.GetBool("zero_skipping")),
        offmacro_rate_(static_cast<double>(p.GetInt("offmacro_macs_per_cycle"))),
        access_fo4_(p.GetDouble("access_fo4")) {
    Prices("array_row_reads", "array_read: port_bits x sram6t_read_bit each");
    Prices("rotations", "transpose_rotation: port_bits x shifter_bit each");
    Prices("multiplier_input_loads", "input_drive: 4 register bits each (one multiplier's input "
                                     "nibble per pass)");
    Prices("exponent_compares", "prealignment: exponent_compare each");
    Prices("alignment_shifts", "prealignment: a 4-stage barrel shift of elem_bits each");
    Prices("exponent_adds", "prealignment: exponent_compare each (an 8-bit add)");
    Prices("format_conversions", "prealignment: elem_bits register bits each");
    Prices("multiplier_ops", "multipliers: mult4x4 x (16 - dropped terms) / 16; time: slots");
    Prices("approx_dropped_terms", "multipliers: the dropped terms' share of mult4x4, removed");
    Prices("gated_zero_ops", "multipliers: gated_op each; time unless zero_skipping");
    Prices("adder_tree_adds", "adder_tree: (tree_bits - 3 - 0.8 or_bits) adder bits each");
    Prices("bias_compensations", "adder_tree: tree_bits adder bits each");
    Prices("nibble_shift_adds", "accumulate: tree_bits + 8 accumulator bits each");
    Prices("tree_accumulations", "accumulate: tree_bits + 10 accumulator bits each");
    Prices("normalizations", "normalize each");
    Prices("fp_accumulations", "accumulate: fp_add_fp32 each (aligned blocks merged in FP32)");
    Prices("input_buffer_reads", "buffers: elem_bits x buffer_read_bit each");
    Prices("output_buffer_writes", "buffers: 16 x buffer_write_bit each");
    Prices("weight_writes", "weight_write: sram6t_write each; time: a port-wide row a cycle");
    Prices("shadow_weight_writes", "weight_write: sram6t_write each; no time (hidden)");
    Prices("exponent_writes", "weight_write: 8 register bits each");
    Prices("off_macro_fp32_macs", "gradient_unit: fp_mac_fp32 each; time: offmacro_macs_per_cycle");
    Prices("gc_multiplier_ops", "multipliers: mult4x4 each; time: multiplier slots");
    Prices("gc_gated_ops", "multipliers: gated_op each; time unless zero_skipping");
    Prices("gc_tree_passes", "adder_tree: tree_inputs - 1 adds of add_bits each; normalize each");
    Ignores("gc_macro_macs", "logical figure: the on-macro GC's multiplies and tree passes are "
                             "priced under gc_multiplier_ops and gc_tree_passes");
    Ignores("shifted_out_bits", "a numerical effect of the alignment shifts already priced");
    Ignores("alignment_saturations", "a numerical effect of the alignment already priced");
    Ignores("buffer_switches", "one select line per programmed matrix: below 1e-6 of a write-back");
  }

  PricedCounts Price(const ActionCounts& c, Stage stage, const HardwareParams& hw,
                     const OperatingPoint& op) const override {
    const double v = op.voltage;
    auto n = [&](const char* k) { return N(c, k); };
    const double activity = toggle_ / 0.5;
    const double arrays = ParallelArrays(hw);
    const double mults = std::max(1.0, HwParam(hw, "multipliers", 64));
    const double port = HwParam(hw, "port_bits", 256);
    const double tree_bits = HwParam(hw, "tree_result_bits", 14);
    const double elem_bits = stage == Stage::kBackward ? HwParam(hw, "error_bits", 8)
                                                       : HwParam(hw, "input_bits", 8);
    const double or_bits = HwParam(hw, "approx_or_bits", 0);
    PricedCounts p;
    auto& e = p.energy_pj;
    e["array_read"] = n("array_row_reads") * port * E("sram6t_read_bit", v);
    e["transpose_rotation"] = n("rotations") * port * E("shifter_bit", v);
    // Every pass loads each multiplier's input nibble into its operand register.
    e["input_drive"] = n("multiplier_input_loads") * 4 * E("register_bit", v) * activity;
    e["prealignment"] = n("exponent_compares") * E("exponent_compare", v) +
                        // a barrel shifter: log2(max shift) = 4 stages of elem_bits muxes
                        n("alignment_shifts") * elem_bits * 4 * E("shifter_bit", v) +
                        n("exponent_adds") * E("exponent_compare", v) +
                        n("format_conversions") * elem_bits * E("register_bit", v);
    // A 4b x 4b multiplier has 16 partial-product terms; the broken-array multiplier skips the
    // dropped ones. Zero nibbles gate the multiplier.
    const double terms = 16 * n("multiplier_ops") - n("approx_dropped_terms");
    e["multipliers"] = terms / 16 * E("mult4x4", v) * activity +
                       n("gated_zero_ops") * E("gated_op", v);
    // Tree adders grow from 8 to tree_bits bits (average about tree_bits - 3); the low or_bits
    // of each are lower-part OR gates (about a fifth of a full adder).
    const double add_bits = std::max(1.0, tree_bits - 3 - 0.8 * or_bits);
    e["adder_tree"] = n("adder_tree_adds") * add_bits * E("adder_tree_add_bit", v) * activity +
                      n("bias_compensations") * tree_bits * E("adder_tree_add_bit", v);
    e["accumulate"] = (n("nibble_shift_adds") * (tree_bits + 8) +
                       n("tree_accumulations") * (tree_bits + 10)) *
                      E("accumulator_add_bit", v) * activity;
    e["normalize"] = n("normalizations") * E("normalize", v);
  // Blocks with their own exponents meet in an FP32 adder (align, add, normalize).
  if (const double fa = n("fp_accumulations"); fa > 0) {
    e["accumulate"] += fa * E("fp_add_fp32", v) * activity;
  }
    e["buffers"] = n("input_buffer_reads") * elem_bits * E("buffer_read_bit", v) +
                   n("output_buffer_writes") * 16 * E("buffer_write_bit", v);
    e["weight_write"] = (n("weight_writes") + n("shadow_weight_writes")) * E("sram6t_write", v) +
                        n("exponent_writes") * 8 * E("register_bit", v);
    // Cycles: every tree pass uses the macro's multipliers once (gated ones included); the
    // write-back writes one port-wide row per cycle.
    const double slots = n("multiplier_ops") + (zero_skipping_ ? 0.0 : n("gated_zero_ops"));
    double cycles = slots / mults / arrays +
                    n("weight_writes") / port / arrays;
    // GC where the macro says it ran: on its own multipliers (counted nibble multiplies and
    // tree passes; each pass normalizes its result into the FP32 gradient accumulator), or on
    // the FP32 unit outside it.
    const double gc_mults = n("gc_multiplier_ops"), gc_passes = n("gc_tree_passes");
    if (gc_mults > 0 || gc_passes > 0) {
      const double tree_in = std::max(1.0, HwParam(hw, "tree_inputs", 64));
      e["multipliers"] += gc_mults * E("mult4x4", v) * activity;
      e["adder_tree"] += gc_passes * (tree_in - 1) * add_bits * E("adder_tree_add_bit", v) *
                         activity;
      e["normalize"] += gc_passes * E("normalize", v);
      cycles += gc_mults / mults / arrays;
    }
    // Dual sparsity in GC: the MACs with a zero activation or error are gated; with
    // zero_skipping they are not issued at all (no slot).
    const double gc_gated = n("gc_gated_ops");
    e["multipliers"] += gc_gated * E("gated_op", v);
    if (!zero_skipping_) cycles += gc_gated / mults / arrays;
    const double gc = n("off_macro_fp32_macs");
    if (gc > 0) {
      e["gradient_unit"] = gc * E("fp_mac_fp32", v);
      cycles += gc / offmacro_rate_;
    }
    p.cycles = cycles / duty_;
    e["chip_overhead"] = p.cycles * E("chip_cycle", v);
    PriceCommon(c, v, p);
    return p;
  }

  std::map<std::string, double> AreaMm2(const HardwareParams& hw) const override {
    const double arrays = HwParam(hw, "arrays_total", 1);
    const double cells = arrays * HwParam(hw, "array_rows", 256) * HwParam(hw, "port_bits", 256) *
                         HwParam(hw, "weight_buffers", 1);
    const double mults = arrays * HwParam(hw, "multipliers", 64);
    std::map<std::string, double> a;
    a["cells"] = cells * tech_.Area("sram6t_cell") * 1e-6;
    a["multipliers"] = mults * tech_.Area("mult4x4") * 1e-6;
    a["adder_trees"] = mults * HwParam(hw, "tree_result_bits", 14) * tech_.Area("full_adder") * 1e-6;
    a["alignment"] = arrays * HwParam(hw, "port_bits", 256) * 4 * tech_.Area("shifter_bit") * 1e-6;
    return a;
  }

  double AccessTimeNs(const OperatingPoint& op) const override {
    // FO4 delay scales with the clock limit's voltage dependence.
    const double fo4_ps = tech_.fo4_ps * tech_.max_frequency_mhz / tech_.MaxFrequencyMhz(op.voltage);
    return access_fo4_ * fo4_ps * 1e-3;
  }

 private:
  double toggle_, duty_;
  bool zero_skipping_;
  double offmacro_rate_, access_fo4_;
};

PIM_REGISTER(CostModel, FpDcimCost, "fp_dcim",
             "floating-point digital CIM (ISSCC'25 14.5, SP-PIM): alignment, 4b multipliers, trees");

}  // namespace
}  // namespace pim
