// CostModel: the parameters every cost model shares.
#include "pimtrain/cost/cost_model.h"

#include <algorithm>

#include "pimtrain/base/error.h"

namespace pim {

void CostModel::AddCommonParams(Schema& s, const char* default_tech, double voltage,
                                double frequency_mhz) {
  s.Add(Param::String("tech").Default(default_tech)
            .Doc("technology table: a name in presets/tech (28nm, 32nm, 65nm) or a .yaml path"));
  s.Add(Param::Float("voltage").Default(voltage).Range(0.3, 2.0).Unit("V")
            .Doc("supply voltage of the run's operating point"));
  s.Add(Param::Float("frequency_mhz").Default(frequency_mhz).Range(1, 10000).Unit("MHz")
            .Doc("clock of the run's operating point"));
  s.Add(Param::Any("operating_points").Optional()
            .Doc("named points: a list of {name, voltage, frequency_mhz}"));
  s.Add(Param::Float("chip_area_mm2").Default(0.0).Range(0, 1e5).Unit("mm2")
            .Doc("published die area (leakage, GOPS/mm2); 0: the component model's area"));
  s.Add(Param::Any("energy_pj").Optional()
            .Doc("overrides of the tech table's per-action energies (calibrated components)"));
  s.Add(Param::Any("area_um2").Optional()
            .Doc("overrides of the tech table's component areas (calibrated components)"));
  s.Add(Param::Float("energy_scale").Default(1.0).Range(0.01, 100)
            .Doc("design factor on every per-action energy of the tech table (calibrated where a "
                 "chip's measured efficiency fixes it; docs/fidelity.md)"));
  s.Add(Param::Float("offchip_pj_per_bit").Default(20.0).Range(0, 1e4).Unit("pJ/bit")
            .Doc("energy of one bit moved to or from off-chip memory (LPDDR-class)"));
  s.Add(Param::Enum("schedule", {"sequential", "layer_pipelined", "super_pipelined"})
            .Default("sequential")
            .Doc("training stages one after another, pipelined over layers and samples, or "
                 "SP-PIM's super-pipeline (local errors, double-buffered macros)"));
  s.Add(Param::Float("activation_buffer_kb").Default(256.0).Range(0, 1e7).Unit("KiB")
            .Doc("on-chip storage for activations kept until gradient calculation"));
  s.Add(Param::Int("epu_lanes").Default(64).Range(1, 1 << 20)
            .Doc("shift-add lanes of the error prediction unit (local error prediction)"));
}

CostModel::CostModel(const ConfigNode& p) {
  tech_ = LoadTech(p.GetString("tech"));
  op_.name = "run";
  op_.voltage = p.GetDouble("voltage");
  op_.frequency_mhz = p.GetDouble("frequency_mhz");
  chip_area_mm2_ = p.GetDouble("chip_area_mm2");
  offchip_pj_per_bit_ = p.GetDouble("offchip_pj_per_bit");
  energy_scale_ = p.GetDouble("energy_scale");
  const std::string schedule = p.GetString("schedule");
  schedule_ = schedule == "sequential"        ? StageSchedule::kSequential
              : schedule == "layer_pipelined" ? StageSchedule::kLayerPipelined
                                              : StageSchedule::kSuperPipelined;
  activation_buffer_kb_ = p.GetDouble("activation_buffer_kb");
  epu_lanes_ = static_cast<double>(p.GetInt("epu_lanes"));
  if (const ConfigNode* e = p.Find("energy_pj"); e != nullptr && !e->IsNull()) {
    if (!e->IsMap()) throw ConfigError(e->path() + ": expected a map of action: pJ");
    for (const auto& [k, v] : e->entries()) {
      double x = v.AsDouble();
      if (!(x >= 0)) throw ConfigError(v.path() + ": energy must be >= 0, got " + v.text());
      tech_.energy_pj[k] = x;
    }
  }
  if (const ConfigNode* a = p.Find("area_um2"); a != nullptr && !a->IsNull()) {
    if (!a->IsMap()) throw ConfigError(a->path() + ": expected a map of component: um2");
    for (const auto& [k, v] : a->entries()) {
      double x = v.AsDouble();
      if (!(x >= 0)) throw ConfigError(v.path() + ": area must be >= 0, got " + v.text());
      tech_.area_um2[k] = x;
    }
  }
  if (const ConfigNode* l = p.Find("operating_points"); l != nullptr && !l->IsNull()) {
    if (!l->IsList()) throw ConfigError(l->path() + ": expected a list of operating points");
    for (const auto& item : l->items()) {
      if (!item.IsMap()) throw ConfigError(item.path() + ": expected {name, voltage, frequency_mhz}");
      OperatingPoint op;
      for (const char* key : {"name", "voltage", "frequency_mhz"}) {
        if (item.Find(key) == nullptr) {
          throw ConfigError(item.path() + ": missing '" + key + "'");
        }
      }
      for (const auto& [k, v] : item.entries()) {
        if (k != "name" && k != "voltage" && k != "frequency_mhz") {
          throw ConfigError(v.path() + ": unknown key (expected name, voltage, frequency_mhz)");
        }
      }
      op.name = item.At("name").AsString();
      op.voltage = item.At("voltage").AsDouble();
      op.frequency_mhz = item.At("frequency_mhz").AsDouble();
      if (!(op.voltage > 0.2 && op.voltage < 3)) {
        throw ConfigError(item.At("voltage").path() + ": " + item.At("voltage").text() +
                          " is outside (0.2, 3) V");
      }
      if (!(op.frequency_mhz > 0)) {
        throw ConfigError(item.At("frequency_mhz").path() + ": must be > 0");
      }
      points_.push_back(op);
    }
  }
}

OperatingPoint CostModel::FindOperatingPoint(const std::string& name) const {
  if (name.empty() || name == op_.name) return op_;
  std::string known = op_.name;
  for (const auto& p : points_) {
    if (p.name == name) return p;
    known += ", " + p.name;
  }
  throw ConfigError("unknown operating point '" + name + "' (known: " + known + ")");
}

double CostModel::ChipAreaMm2(const HardwareParams& hw) const {
  if (chip_area_mm2_ > 0) return chip_area_mm2_;
  double a = 0;
  for (const auto& [k, v] : AreaMm2(hw)) a += v;
  return a;
}

double CostModel::LeakageMw(const HardwareParams& hw, const OperatingPoint& op) const {
  return tech_.LeakageMw(ChipAreaMm2(hw), op.voltage);
}

void CostModel::PriceCommon(const ActionCounts& c, double v, PricedCounts& p) const {
  const double shift_adds = static_cast<double>(c.Get("epu_shift_adds"));
  const double other = static_cast<double>(c.Get("epu_sign_flips") + c.Get("epu_mask_ops"));
  const double reads = static_cast<double>(c.Get("epu_reads"));
  if (shift_adds + other + reads == 0) return;
  // A shift by a constant is wiring; the add is a 16-bit adder; the feedback signs/exponents are
  // read from a small register file (one byte per entry).
  p.energy_pj["error_prediction"] += shift_adds * 16 * E("accumulator_add_bit", v) +
                                     other * E("register_bit", v) +
                                     reads * 8 * E("buffer_read_bit", v);
  p.epu_cycles += (shift_adds + other) / epu_lanes_;
}

double HwParam(const HardwareParams& hw, const std::string& key, double fallback) {
  auto it = hw.find(key);
  return it == hw.end() ? fallback : it->second;
}

}  // namespace pim

namespace pim {

double ParallelArrays(const HardwareParams& hw) {
  const double total = std::max(1.0, HwParam(hw, "arrays_total", 1));
  const double used = HwParam(hw, "arrays_used", 0);
  return used > 0 ? std::min(total, std::max(1.0, used)) : total;
}

double CellsPerArray(const HardwareParams& hw) {
  if (hw.count("array_rows") && hw.count("port_bits")) {
    return hw.at("array_rows") * hw.at("port_bits");
  }
  if (hw.count("rows") && hw.count("bitlines")) return hw.at("rows") * hw.at("bitlines");
  return 0;
}

}  // namespace pim
