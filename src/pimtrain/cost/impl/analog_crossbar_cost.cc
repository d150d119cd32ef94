// analog_crossbar cost model: prices the analog crossbar macro's counts (ISAAC, CASCADE,
// Neural-PIM, a CAP-RAM-like PIM-QAT macro): crossbar reads, DACs, sample-and-holds, ADCs whose
// energy and area grow with resolution, analog buffers (dataflow B), neural shift-and-add
// (dataflow C), digital shift-adds, registers, and the tile's eDRAM, bus and router
// (docs/cost.md, "analog_crossbar").
#include <algorithm>
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/cost/cost_model.h"

namespace pim {
namespace {

class AnalogCrossbarCost final : public CostModel {
 public:
  static Schema GetSchema() {
    Schema s;
    AddCommonParams(s, "32nm", 1.0, 10);
    s.Add(Param::Float("adcs_per_array").Default(1.0).Range(0.001, 1024)
              .Doc("ADCs (or NNADCs) serving one array (ISAAC 1; Neural-PIM 4/64; CASCADE 3/64)"));
    s.Add(Param::Float("adc_rate_gsps").Default(1.2).Range(0.001, 100).Unit("GS/s")
              .Doc("conversions per second of one ADC"));
    s.Add(Param::Float("nnsa_per_array").Default(0.0).Range(0, 1024)
              .Doc("neural shift-and-add units per array (dataflow C)"));
    s.Add(Param::Float("analog_buffer_arrays_per_array").Default(0.0).Range(0, 64)
              .Doc("RRAM buffer arrays per compute array (dataflow B)"));
    s.Add(Param::Float("tias_per_array").Default(0.0).Range(0, 1 << 16)
              .Doc("trans-impedance amplifiers per compute array (dataflow B: one per bit line, "
                   "CASCADE)"));
    s.Add(Param::Int("digital_mac_bits").Default(16).Range(2, 64).Unit("bit")
              .Doc("operand width of the periphery's digital MACs (GC: dW = X^T dY, and the ideal "
                   "read-out); energy b^2 full-adder bits + 2b accumulator bits per MAC"));
    s.Add(Param::Float("digital_mac_units_per_array").Default(1.0).Range(0.001, 1024)
              .Doc("digital MAC units of the periphery per array (where GC runs)"));
    s.Add(Param::Float("digital_clock_mhz").Default(1200).Range(1, 10000).Unit("MHz")
              .Doc("clock of the digital periphery (ISAAC's shift-and-add units: 1.2 GHz)"));
    s.Add(Param::Float("write_ns").Default(100).Range(0.1, 1e6).Unit("ns")
              .Doc("one programming pulse: a row of cells of each array written in parallel"));
    s.Add(Param::Float("pulse_ns").Default(100.0).Range(0, 1e9).Unit("ns")
              .Doc("duration of one programming-pulse slot of the device update (docs/devices.md)"));
    return s;
  }
  explicit AnalogCrossbarCost(const ConfigNode& p)
      : CostModel(p),
        adcs_per_array_(p.GetDouble("adcs_per_array")),
        adc_rate_(p.GetDouble("adc_rate_gsps") * 1e9),
        nnsa_per_array_(p.GetDouble("nnsa_per_array")),
        abuf_per_array_(p.GetDouble("analog_buffer_arrays_per_array")),
        tias_per_array_(p.GetDouble("tias_per_array")),
        mac_bits_(static_cast<double>(p.GetInt("digital_mac_bits"))),
        mac_units_(p.GetDouble("digital_mac_units_per_array")),
        digital_mhz_(p.GetDouble("digital_clock_mhz")),
        write_ns_(p.GetDouble("write_ns")),
        pulse_ns_(p.GetDouble("pulse_ns")) {
    Prices("cell_reads", "crossbar: crossbar_cell_read each");
    Prices("dac_conversions", "dac: dac_1bit x dac_bits each");
    Prices("sample_holds", "sample_hold each");
    Prices("adc_conversions", "adc: adc_8bit x 2^(bits - 8) each; time: ADC throughput");
    Prices("analog_buffer_writes",
           "analog_buffer: analog_buffer_write each (one RRAM buffer cell, one pulse)");
    Prices("tia_conversions", "tia: tia each (a bit line's current to a write voltage)");
    Prices("analog_buffer_reads", "analog_buffer: crossbar_cell_read each (a line summed)");
    Prices("analog_accumulations", "nnsa: nnsa_step each");
    Prices("shift_adds", "shift_add each");
    Prices("tile_accumulations", "shift_add each");
    Prices("input_buffer_reads", "registers: input bits x register_bit each");
    Prices("output_buffer_writes", "registers: 16 x register_bit each");
    Prices("input_cycles", "tile_overhead: tile_per_array_cycle each; time: cycles / arrays");
    Prices("weight_writes", "weight_write: cell_write each; time: a row per array per write_ns");
    Prices("shadow_weight_writes", "weight_write: cell_write each; no time (hidden)");
    Prices("digital_macs", "digital_mac: b^2 + 2b accumulator_add_bit each; time: "
                           "digital_mac_units_per_array x arrays at digital_clock_mhz");
    Prices("offset_corrections", "shift_add: one digital subtract each");
    // The pulsed device update (docs/devices.md).
    Prices("device_pulses", "device_pulse: cell_write each (the tech table's SET/RESET pulse)");
    Prices("device_verify_reads", "verify_read: crossbar_cell_read + one ADC conversion each");
    Prices("device_pulse_slots", "time: pulse_ns each (all firing lines pulse together)");
    Prices("digital_accumulations",
           "digital_accumulate: 2b accumulator_add_bit each (Tiki-Taka's H, mixed precision's chi)");
    Prices("out_scale_multiplies",
           "out_scale: b^2 accumulator_add_bit each (one b-bit multiply by a column's mapping "
           "scale, pim.macro.mapping); time: on the digital MAC units like digital_macs");
    Ignores("device_cells_pulsed", "a statistic: the cells the priced pulses reached");
    Ignores("bm_repeats", "the repeated reads are counted again under cell_reads, dac_conversions, "
                          "adc_conversions and input_cycles, which are priced");
    Ignores("transfer_reads", "the transfer's array reads are counted under cell_reads, "
                              "dac_conversions and adc_conversions, which are priced");
    Ignores("skipped_input_cycles", "a skipped cycle is not applied: no energy, no time");
    Ignores("adc_clipped", "a property of conversions already priced under adc_conversions");
    Ignores("buffer_switches", "one select line per programmed matrix: below 1e-6 of a write-back");
  }

  // Walden figure of merit: the energy of one conversion doubles with each bit (the reference
  // is the 8-bit SAR of the tech table).
  double AdcEnergy(double bits, double v) const {
    return E("adc_8bit", v) * std::pow(2.0, bits - 8);
  }
  // A DAC of b bits driving a word line: binary-weighted, so its switching grows with the bit
  // count (the word line's own capacitance, the 1-bit DAC's energy, dominates each bit).
  double DacEnergy(double bits, double v) const { return E("dac_1bit", v) * bits; }

  PricedCounts Price(const ActionCounts& c, Stage stage, const HardwareParams& hw,
                     const OperatingPoint& op) const override {
    const double v = op.voltage;
    auto n = [&](const char* k) { return N(c, k); };
    const double arrays = ParallelArrays(hw);
    const double adc_bits = stage == Stage::kBackward ? HwParam(hw, "adc_bits_transposed", 8)
                                                      : HwParam(hw, "adc_bits", 8);
    const double in_bits = stage == Stage::kBackward ? HwParam(hw, "error_bits", 8)
                                                     : HwParam(hw, "input_bits", 8);
    PricedCounts p;
    auto& e = p.energy_pj;
    e["crossbar"] = n("cell_reads") * E("crossbar_cell_read", v);
    e["dac"] = n("dac_conversions") * DacEnergy(HwParam(hw, "dac_bits", 1), v);
    e["sample_hold"] = n("sample_holds") * E("sample_hold", v);
    e["adc"] = n("adc_conversions") * AdcEnergy(adc_bits, v);
    // Dataflow B (CASCADE): each partial sum leaves its bit line through a TIA into one buffer
    // cell; the buffer lines are read in current (one cell read per stored partial sum).
    e["analog_buffer"] = n("analog_buffer_writes") * E("analog_buffer_write", v) +
                         n("analog_buffer_reads") * E("crossbar_cell_read", v);
    if (n("tia_conversions") > 0) e["tia"] = n("tia_conversions") * E("tia", v);
    e["nnsa"] = n("analog_accumulations") * E("nnsa_step", v);
    e["shift_add"] = (n("shift_adds") + n("tile_accumulations") + n("offset_corrections")) *
                     E("shift_add", v);
    e["registers"] = (n("input_buffer_reads") * in_bits + n("output_buffer_writes") * 16) *
                     E("register_bit", v);
    e["weight_write"] = (n("weight_writes") + n("shadow_weight_writes")) * E("cell_write", v);
    // One cycle = one input cycle of the crossbars (the clock of this model: frequency_mhz is
    // the input-cycle rate, 10 MHz for 100 ns). The ADCs must keep up: conversions per array
    // per cycle cannot exceed adcs_per_array * rate * cycle time.
    const double array_cycles = n("input_cycles") / arrays;
    const double cycle_s = 1.0 / (op.frequency_mhz * 1e6);
    const double adc_cycles =
        n("adc_conversions") / (adcs_per_array_ * arrays * adc_rate_ * cycle_s);
    p.cycles = std::max(array_cycles, adc_cycles);
    // Device update (docs/devices.md): each pulse on a cell costs one cell_write (the tech table's
    // SET/RESET pulse energy); a verify read is one cell read plus one conversion. The slots
    // (all firing lines of the arrays pulse together) take pulse_ns each.
    const double pulses = n("device_pulses"), verifies = n("device_verify_reads");
    if (pulses > 0) e["device_pulse"] = pulses * E("cell_write", v);
    if (verifies > 0) {
      e["verify_read"] = verifies * (E("crossbar_cell_read", v) + AdcEnergy(adc_bits, v));
    }
    p.cycles += n("device_pulse_slots") * pulse_ns_ * 1e-9 / cycle_s;
    const double accs = n("digital_accumulations");
    if (accs > 0) e["digital_accumulate"] = accs * 2 * mac_bits_ * E("accumulator_add_bit", v);
    // The digital periphery: an array multiplier (b^2 full-adder bits) and a 2b-bit accumulate
    // per MAC, on digital_mac_units_per_array units per array at the digital clock.
    const double dmacs = n("digital_macs");
    const double per_cycle = mac_units_ * arrays * digital_mhz_ / op.frequency_mhz;
    if (dmacs > 0) {
      e["digital_mac"] = dmacs * (mac_bits_ * mac_bits_ + 2 * mac_bits_) *
                         E("accumulator_add_bit", v);
      p.cycles += dmacs / per_cycle;
    }
    // The weight mapping's digital scales (an array multiplier, no accumulate), on the same units.
    const double smuls = n("out_scale_multiplies");
    if (smuls > 0) {
      e["out_scale"] = smuls * mac_bits_ * mac_bits_ * E("accumulator_add_bit", v);
      p.cycles += smuls / per_cycle;
    }
    // Programming: one write pulse writes one row (its bit lines) of each of the layer's arrays
    // in parallel.
    const double writes = n("weight_writes");
    if (writes > 0) {
      const double bitlines = HwParam(hw, "cols", 128);
      const double cycle_ns = 1e3 / op.frequency_mhz;
      p.cycles += writes / bitlines / arrays * write_ns_ / cycle_ns;
    }
    // The tile's eDRAM buffer, bus and router, per array and cycle of work.
    e["tile_overhead"] = n("input_cycles") * E("tile_per_array_cycle", v);
    PriceCommon(c, v, p);
    return p;
  }

  std::map<std::string, double> AreaMm2(const HardwareParams& hw) const override {
    const double arrays = HwParam(hw, "arrays_total", 1);
    const double rows = HwParam(hw, "rows", 128);
    const double bitlines = HwParam(hw, "cols", 128);  // the macro's cols are bit lines
    const double cell_area = 128.0 * 128.0;  // the table's crossbar area is per 128 x 128
    std::map<std::string, double> a;
    a["crossbars"] = arrays * rows * bitlines / cell_area * tech_.Area("crossbar_128x128") * 1e-6;
    a["dacs"] = arrays * rows * HwParam(hw, "dac_bits", 1) * tech_.Area("dac_1bit") * 1e-6;
    a["sample_holds"] = arrays * bitlines * tech_.Area("sample_hold") * 1e-6;
    a["adcs"] = arrays * adcs_per_array_ * tech_.Area("adc_8bit") *
                std::pow(2.0, HwParam(hw, "adc_bits", 8) - 8) * 1e-6;
    a["shift_add"] = arrays * tech_.Area("shift_add") * 1e-6;
    a["nnsa"] = arrays * nnsa_per_array_ * tech_.Area("nnsa") * 1e-6;
    a["analog_buffers"] = arrays * abuf_per_array_ * tech_.Area("crossbar_128x128") * 1e-6;
    if (tias_per_array_ > 0) a["tias"] = arrays * tias_per_array_ * tech_.Area("tia") * 1e-6;
    a["registers"] = arrays * tech_.Area("registers_per_array") * 1e-6;
    a["tile_share"] = arrays * tech_.Area("tile_share_per_array") * 1e-6;
    return a;
  }

 private:
  double adcs_per_array_, adc_rate_, nnsa_per_array_, abuf_per_array_, tias_per_array_;
  double mac_bits_, mac_units_, digital_mhz_, write_ns_, pulse_ns_;
};

PIM_REGISTER(CostModel, AnalogCrossbarCost, "analog_crossbar",
             "analog crossbar PIM (ISAAC, CASCADE, Neural-PIM, PIM-QAT): ADC/DAC, S+H, NNS+A");

}  // namespace
}  // namespace pim
