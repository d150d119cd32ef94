// Technology tables: per-action energy, per-component area, voltage and frequency behaviour of a
// process node (presets/tech/<name>.yaml), with the scaling rules between nodes (docs/cost.md).
#pragma once

#include <map>
#include <string>

namespace pim {

struct TechTable {
  std::string name;           // "28nm"
  std::string origin;         // the file it came from (for error messages)
  double node_nm = 28;
  double nominal_voltage = 0.9;    // V; energies are given at this voltage
  double threshold_voltage = 0.4;  // V; sets the frequency limit's voltage dependence
  double max_frequency_mhz = 1000; // at the nominal voltage
  double leakage_mw_per_mm2 = 0.1; // at the nominal voltage
  double fo4_ps = 15;              // fan-out-of-4 inverter delay at the nominal voltage
  std::map<std::string, double> energy_pj;  // dynamic energy per action at nominal voltage
  std::map<std::string, double> area_um2;   // area per component instance

  // Energy of one `action` at voltage `v`: E_nom * (v / V_nom)^2 (dynamic CV^2 energy). An
  // action missing from the table is a ConfigError naming the table file.
  double Energy(const std::string& action, double v) const;
  double Area(const std::string& component) const;  // um2
  bool HasEnergy(const std::string& action) const { return energy_pj.count(action) > 0; }
  // (v / V_nom)^2.
  double EnergyScale(double v) const;
  // Alpha-power law (Sakurai-Newton, alpha = 1.3): f_max(v) = f_nom * g(v) / g(V_nom) with
  // g(v) = (v - V_th)^1.3 / v.
  double MaxFrequencyMhz(double v) const;
  // Leakage power of `area_mm2` at voltage v: P_nom * (v / V_nom)^3, a fit of subthreshold
  // leakage with DIBL over the 0.5..1.1 V range (docs/cost.md).
  double LeakageMw(double area_mm2, double v) const;
  // This table moved to another node by classic scaling: energy per action proportional to the
  // feature size (capacitance), area to its square (docs/cost.md, "Scaling between nodes").
  TechTable ScaledTo(double target_node_nm) const;
};

// The folder holding presets/ (env PIMTRAIN_PRESETS, else the source tree's presets/).
std::string PresetsDir();
// A config file path as given, else a chip preset's name (<presets>/chips/NAME.yaml), as every
// command that takes "PRESET_OR_CONFIG" resolves it. IoError when neither exists; `where` (a
// file:line, or empty) starts the message.
std::string ResolvePresetOrFile(const std::string& arg, const std::string& where = "");
// Loads a table by name ("28nm" -> <presets>/tech/28nm.yaml) or by a path ending in .yaml.
// Malformed tables are ConfigErrors naming the file and key.
TechTable LoadTech(const std::string& name_or_path);

}  // namespace pim
