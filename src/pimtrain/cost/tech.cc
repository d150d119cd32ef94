// Technology table loading and scaling.
#include "pimtrain/cost/tech.h"

#include <cmath>
#include <cstdlib>

#include "pimtrain/base/config.h"
#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"

#ifndef PIMTRAIN_PRESETS_DIR
#define PIMTRAIN_PRESETS_DIR "presets"
#endif

namespace pim {

double TechTable::EnergyScale(double v) const {
  return (v / nominal_voltage) * (v / nominal_voltage);
}

double TechTable::Energy(const std::string& action, double v) const {
  auto it = energy_pj.find(action);
  if (it == energy_pj.end()) {
    throw ConfigError(origin + ": energy_pj has no entry '" + action +
                      "' (needed by the cost model)");
  }
  return it->second * EnergyScale(v);
}

double TechTable::Area(const std::string& component) const {
  auto it = area_um2.find(component);
  if (it == area_um2.end()) {
    throw ConfigError(origin + ": area_um2 has no entry '" + component +
                      "' (needed by the cost model)");
  }
  return it->second;
}

double TechTable::MaxFrequencyMhz(double v) const {
  auto g = [&](double x) { return x <= threshold_voltage ? 0.0 : std::pow(x - threshold_voltage, 1.3) / x; };
  return max_frequency_mhz * g(v) / g(nominal_voltage);
}

double TechTable::LeakageMw(double area_mm2, double v) const {
  double r = v / nominal_voltage;
  return leakage_mw_per_mm2 * area_mm2 * r * r * r;
}

TechTable TechTable::ScaledTo(double target_node_nm) const {
  TechTable t = *this;
  double s = target_node_nm / node_nm;
  for (auto& [k, e] : t.energy_pj) e *= s;
  for (auto& [k, a] : t.area_um2) a *= s * s;
  t.node_nm = target_node_nm;
  t.name = name + "->" + std::to_string(static_cast<int>(target_node_nm)) + "nm";
  return t;
}

std::string PresetsDir() {
  if (const char* env = std::getenv("PIMTRAIN_PRESETS"); env != nullptr && *env != '\0') {
    return env;
  }
  return PIMTRAIN_PRESETS_DIR;
}

std::string ResolvePresetOrFile(const std::string& arg, const std::string& where) {
  if (FileExists(arg)) return arg;
  std::string preset = PresetsDir() + "/chips/" + arg + ".yaml";
  if (FileExists(preset)) return preset;
  throw IoError((where.empty() ? "" : where + ": ") + arg +
                ": no such config file, and no preset of that name in " + PresetsDir() + "/chips");
}

TechTable LoadTech(const std::string& name_or_path) {
  std::string path = name_or_path;
  if (path.size() < 5 || path.substr(path.size() - 5) != ".yaml") {
    path = PresetsDir() + "/tech/" + name_or_path + ".yaml";
  }
  if (!FileExists(path)) {
    throw ConfigError("technology table '" + name_or_path + "' not found (looked for " + path +
                      ")");
  }
  ConfigNode root = LoadYamlFile(path);
  TechTable t;
  t.origin = path;
  auto number = [&](const char* key, double lo, double hi) {
    const ConfigNode* n = root.Find(key);
    if (n == nullptr) throw ConfigError(path + ": missing key '" + key + "'");
    double v = n->AsDouble();
    if (!(v >= lo && v <= hi)) {
      throw ConfigError(path + ": " + key + ": " + n->text() + " is outside [" +
                        std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    return v;
  };
  const ConfigNode* name = root.Find("name");
  t.name = name != nullptr ? name->AsString() : name_or_path;
  t.node_nm = number("node_nm", 1, 1000);
  t.nominal_voltage = number("nominal_voltage", 0.1, 5);
  t.threshold_voltage = number("threshold_voltage", 0, t.nominal_voltage);
  t.max_frequency_mhz = number("max_frequency_mhz", 1, 1e5);
  t.leakage_mw_per_mm2 = number("leakage_mw_per_mm2", 0, 1e4);
  t.fo4_ps = number("fo4_ps", 0.1, 1e4);
  auto table = [&](const char* key, std::map<std::string, double>& out) {
    const ConfigNode* n = root.Find(key);
    if (n == nullptr || !n->IsMap()) throw ConfigError(path + ": missing map '" + key + "'");
    for (const auto& [k, v] : n->entries()) {
      if (!v.IsScalar()) continue;  // nested notes are allowed
      double x = v.AsDouble();
      if (!(x >= 0)) throw ConfigError(path + ": " + key + "." + k + " must be >= 0");
      out[k] = x;
    }
  };
  table("energy_pj", t.energy_pj);
  table("area_um2", t.area_um2);
  return t;
}

}  // namespace pim
