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
  s.Add(Param::Bool("replicate_stages").Default(false)
            .Doc("super_pipelined: copy the slowest layers' weights onto the arrays no layer "
                 "uses, the samples split among the copies (stage balancing; every copy is "
                 "written at each update)"));
  s.Add(Param::Float("activation_buffer_kb").Default(256.0).Range(0, 1e7).Unit("KiB")
            .Doc("on-chip storage for activations kept until gradient calculation"));
  s.Add(Param::Int("epu_lanes").Default(64).Range(1, 1 << 20)
            .Doc("shift-add lanes of the error prediction unit (local error prediction)"));
}

CostModel::CostModel(const ConfigNode& p) {
  name_ = p.GetString("impl");
  tech_ = LoadTech(p.GetString("tech"));
  // Counters every layer may carry whatever its macro: priced in PriceCommon, or ignored.
  Prices("epu_shift_adds", "error_prediction: 16-bit adds (accumulator_add_bit); EPU cycles");
  Prices("epu_sign_flips", "error_prediction: one register bit each; EPU cycles");
  Prices("epu_mask_ops", "error_prediction: one register bit each; EPU cycles");
  Prices("epu_reads", "error_prediction: one byte of buffer read each");
  Prices("epu_softmax_exps", "error_prediction: a 16-bit exp by a 16-entry table and 2 adds "
                             "(2 x 16 accumulator bits + 16 buffer bits read)");
  Prices("bias_adds", "bias: one 16-bit add each (accumulator_add_bit)");
  Prices("elementwise_adds", "elementwise: one 16-bit add each (accumulator_add_bit); overlapped "
                             "with the arrays (no cycles)");
  Ignores("macs", "a logical figure (the ops of TOPS/W): the hardware actions doing the MACs are "
                  "priced under their own counters");
  Ignores("array_cells_allocated", "occupancy, not an action: reported as array utilization; the "
                                   "arrays' area is priced from arrays_total");
  Ignores("array_cells_used", "occupancy, not an action (array utilization)");
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
  replicate_stages_ = p.GetBool("replicate_stages");
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

void CostModel::Prices(const std::string& counter, const std::string& how) {
  PIM_CHECK_MSG(CounterTable::Find(counter) != nullptr,
                "cost model prices counter '" + counter + "' that no component declares");
  pricing_[counter] = {true, how};
}

void CostModel::Ignores(const std::string& counter, const std::string& reason) {
  PIM_CHECK_MSG(CounterTable::Find(counter) != nullptr,
                "cost model ignores counter '" + counter + "' that no component declares");
  PIM_CHECK_MSG(!reason.empty(), "ignoring counter '" + counter + "' needs a reason");
  pricing_[counter] = {false, reason};
}

double CostModel::N(const ActionCounts& c, const std::string& counter) const {
  auto it = pricing_.find(counter);
  PIM_CHECK_MSG(it != pricing_.end() && it->second.priced,
                "cost model " + name_ + " reads counter '" + counter +
                    "' that it does not declare as priced");
  return static_cast<double>(c.Get(counter));
}

void CostModel::CheckCovers(const CounterSet& counters, const std::string& where) const {
  for (const auto& name : counters.names()) {
    if (pricing_.count(name)) continue;
    const CounterInfo* info = CounterTable::Find(name);
    throw ConfigError(where + ": cost model '" + name_ + "' neither prices nor ignores counter '" +
                      name + "' (" + (info ? info->unit + ", counted by " + info->owner : "") +
                      ") of " + counters.owner() + " (docs/cost.md, \"Declared counters\")");
  }
}

void CostModel::PriceCommon(const ActionCounts& c, double v, PricedCounts& p) const {
  const double bias = N(c, "bias_adds");
  if (bias > 0) p.energy_pj["bias"] += bias * 16 * E("accumulator_add_bit", v);
  const double elementwise = N(c, "elementwise_adds");
  if (elementwise > 0) {
    p.energy_pj["elementwise"] += elementwise * 16 * E("accumulator_add_bit", v);
  }
  const double shift_adds = N(c, "epu_shift_adds");
  const double other = N(c, "epu_sign_flips") + N(c, "epu_mask_ops");
  const double reads = N(c, "epu_reads");
  const double exps = N(c, "epu_softmax_exps");
  if (shift_adds + other + reads + exps == 0) return;
  // A shift by a constant is wiring; the add is a 16-bit adder; the feedback signs/exponents are
  // read from a small register file (one byte per entry). A softmax exponential: a 16-entry
  // table lookup (16 bits read) and two 16-bit adds of the piecewise-linear interpolation.
  p.energy_pj["error_prediction"] += (shift_adds + 2 * exps) * 16 * E("accumulator_add_bit", v) +
                                     other * E("register_bit", v) +
                                     (reads * 8 + exps * 16) * E("buffer_read_bit", v);
  p.epu_cycles += (shift_adds + other + exps) / epu_lanes_;
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
