// `piecewise_step` device: the step is interpolated from a table of measured step sizes per
// state (aihwkit PiecewiseStepDevice); the table comes inline or from a CSV file so users fit
// their own devices. t = (w - b-)/(b+ - b-) n, k = min(floor t, n - 1), q = t - k,
// f = (1 - q) v[k] + q v[k+1]; up w += Delta+ f+ (1 + sigma xi), down w -= Delta- f- (...).
#include <cmath>
#include <sstream>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/device/device.h"

namespace pim {
namespace {

// Reads "up,down" rows (a header line and '#' comments allowed) from `path`.
void ReadTable(const std::string& where, const std::string& path, std::vector<double>& up,
               std::vector<double>& down) {
  std::string text;
  try {
    text = ReadFile(path);
  } catch (const Error& e) {
    throw ConfigError(where + ": cannot read the step table '" + path + "': " + e.what());
  }
  std::istringstream in(text);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    std::string a, b;
    if (!std::getline(ls, a, ',') || !std::getline(ls, b)) {
      throw ConfigError(path + ":" + std::to_string(lineno) + ": expected 'up,down', got '" +
                        line + "'");
    }
    char* end = nullptr;
    const double u = std::strtod(a.c_str(), &end);
    const bool ok_a = end != a.c_str();
    const double d = std::strtod(b.c_str(), &end);
    const bool ok_b = end != b.c_str();
    if (!ok_a || !ok_b) {
      if (up.empty() && lineno == 1) continue;  // a header
      throw ConfigError(path + ":" + std::to_string(lineno) + ": '" + line +
                        "' is not two numbers (expected 'up,down')");
    }
    if (!(u >= 0) || !(d >= 0)) {
      throw ConfigError(path + ":" + std::to_string(lineno) + ": step sizes must be >= 0");
    }
    up.push_back(u);
    down.push_back(d);
  }
  if (up.size() < 2) {
    throw ConfigError(where + ": step table '" + path + "' has " + std::to_string(up.size()) +
                      " rows; expected at least 2");
  }
}

class PiecewiseStep final : public PulsedDevice<PiecewiseStep> {
 public:
  explicit PiecewiseStep(const ConfigNode& p) : PulsedDevice(p) {
    const std::string table = p.GetString("table");
    if (!table.empty()) {
      ReadTable(p.At("table").Where(), table, up_, down_);
    } else {
      for (double v : p.At("piecewise_up").AsDoubleList()) up_.push_back(v);
      for (double v : p.At("piecewise_down").AsDoubleList()) down_.push_back(v);
      if (up_.size() != down_.size() || up_.empty()) {
        throw ConfigError(p.At("piecewise_down").Where() + ": piecewise_up has " +
                          std::to_string(up_.size()) + " nodes and piecewise_down " +
                          std::to_string(down_.size()) + "; expected the same count, >= 1");
      }
    }
  }
  static Schema GetSchema() {
    Schema s;
    AddPulsedParams(s, PulsedParams{});
    s.Add(Param::FloatList("piecewise_up").Default("[1.0]").Doc(
        "relative up step at n+1 evenly spaced states from w_min to w_max"));
    s.Add(Param::FloatList("piecewise_down").Default("[1.0]").Doc(
        "relative down step at the same states"));
    s.Add(Param::String("table").Default("").Doc(
        "CSV file of 'up,down' rows (overrides piecewise_up/down); empty: inline nodes"));
    return s;
  }
  double Granularity() const override { return params_.dw_min * up_[up_.size() / 2]; }
  float Interp(const std::vector<double>& v, float w, float lo, float hi) const {
    const int64_t n = static_cast<int64_t>(v.size()) - 1;
    if (n == 0 || hi <= lo) return static_cast<float>(v[0]);
    const double t = std::clamp(static_cast<double>(w - lo) / (hi - lo), 0.0, 1.0) * n;
    const int64_t k = std::min(static_cast<int64_t>(std::floor(t)), n - 1);
    const double q = t - k;
    return static_cast<float>((1 - q) * v[k] + q * v[k + 1]);
  }
  float Step(float w, int64_t i, const DeviceCells& c, int dir, float xi) const {
    if (dir > 0) return w + c.dw_up[i] * Interp(up_, w, c.b_min[i], c.b_max[i]) * (1 + sigma_ * xi);
    return w - c.dw_down[i] * Interp(down_, w, c.b_min[i], c.b_max[i]) * (1 + sigma_ * xi);
  }

 private:
  std::vector<double> up_, down_;
};

PIM_REGISTER(Device, PiecewiseStep, "piecewise_step",
             "step interpolated from a measured table per state (aihwkit PiecewiseStepDevice)");

}  // namespace
}  // namespace pim
