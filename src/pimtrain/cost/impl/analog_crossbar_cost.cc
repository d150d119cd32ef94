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
        pulse_ns_(p.GetDouble("pulse_ns")) {}

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
    auto n = [&](const char* k) { return static_cast<double>(c.Get(k)); };
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
    e["analog_buffer"] = n("analog_buffer_writes") * E("analog_buffer_write", v);
    e["nnsa"] = n("analog_accumulations") * E("nnsa_step", v);
    e["shift_add"] = (n("shift_adds") + n("tile_accumulations")) * E("shift_add", v);
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
    // Device update (docs/devices.md): each pulse on a cell costs one cell_write (the tech table's
    // SET/RESET pulse energy); a verify read is one cell read plus one conversion. The slots
    // (all firing lines of the arrays pulse together) take pulse_ns each, in cycles.
    e["device_pulses"] = n("device_pulses") * E("cell_write", v);
    e["verify_reads"] = n("device_verify_reads") * (E("crossbar_cell_read", v) +
                                                    AdcEnergy(adc_bits, v));
    const double pulse_cycles = n("device_pulse_slots") * pulse_ns_ * 1e-9 / cycle_s;
    // device_cells_pulsed is a statistic (the cells a pulse reached), priced through the pulses.
    p.cycles = std::max(array_cycles, adc_cycles) + pulse_cycles;
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
    a["registers"] = arrays * tech_.Area("registers_per_array") * 1e-6;
    a["tile_share"] = arrays * tech_.Area("tile_share_per_array") * 1e-6;
    return a;
  }

 private:
  double adcs_per_array_, adc_rate_, nnsa_per_array_, abuf_per_array_, pulse_ns_;
};

PIM_REGISTER(CostModel, AnalogCrossbarCost, "analog_crossbar",
             "analog crossbar PIM (ISAAC, CASCADE, Neural-PIM, PIM-QAT): ADC/DAC, S+H, NNS+A");

}  // namespace
}  // namespace pim
