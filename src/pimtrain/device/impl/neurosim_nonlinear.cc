// `neurosim_nonlinear` device: NeuroSim's nonlinear potentiation / depression (MLP_NeuroSim
// V3.0 RealDevice; spec 2.3). The state moves along G(x) = B (1 - e^(-x/A)) + G_min,
// x in [0, P_max], B = (G_max - G_min)/(1 - e^(-P_max/A)), with A = NA(NL) P_max (sign of NL),
// separate curves (NL, P_max) for LTP and LTD. n pulses in one direction: x -> x(G) + n, then
// c2c noise sigma_c2c (G_max - G_min) sqrt(n) xi and the clip, as NeuroSim applies a write.
#include <cmath>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/device/device.h"

namespace pim {
namespace {

// The largest deviation of the normalized curve g(t) = (1 - e^(-t/a))/(1 - e^(-1/a)) from the
// line t; NeuroSim's tabulated NA(NL) (DNN_NeuroSim_V2.1 Documents/Nonlinearity-NormA.htm) is the
// a with max(g - t) = 0.09899 NL: that reproduces the spec's six samples (NL .01 ... 8) to
// 4 digits (the constant 0.09899 is fitted to those samples).
double MaxDeviation(double a) {
  const double e = 1 - std::exp(-1 / a);
  double t = -a * std::log(a * e);  // g'(t) = 1
  t = std::clamp(t, 0.0, 1.0);
  return (1 - std::exp(-t / a)) / e - t;
}

double NormA(double nl) {
  const double target = 0.09899 * std::fabs(nl);
  double lo = 1e-3, hi = 1e4;  // deviation falls as a grows
  for (int i = 0; i < 200; ++i) {
    const double mid = std::sqrt(lo * hi);
    (MaxDeviation(mid) > target ? lo : hi) = mid;
  }
  return std::sqrt(lo * hi);
}

class NeuroSimNonlinear final : public Device {
 public:
  explicit NeuroSimNonlinear(const ConfigNode& p)
      : nl_ltp_(p.GetDouble("nl_ltp")),
        nl_ltd_(p.GetDouble("nl_ltd")),
        p_ltp_(static_cast<double>(p.GetInt("levels_ltp"))),
        p_ltd_(static_cast<double>(p.GetInt("levels_ltd"))),
        sigma_c2c_(p.GetDouble("sigma_c2c")),
        sigma_dtod_(p.GetDouble("sigma_dtod")) {
    params_.w_max = p.GetDouble("w_max");
    params_.w_min = p.GetDouble("w_min");
    params_.dw_min = (params_.w_max - params_.w_min) / p_ltp_;
    params_.dw_min_std = 0;
    if (!(params_.w_max > params_.w_min)) {
      throw ConfigError(p.At("w_max").Where() + ": w_max must be above w_min");
    }
    for (const char* k : {"nl_ltp", "nl_ltd"}) {
      const double v = std::fabs(p.GetDouble(k));
      if (v < 0.01 || v > 9) {
        throw ConfigError(p.At(k).Where() + ": |" + p.At(k).text() +
                          "| is outside NeuroSim's table [0.01, 9]");
      }
    }
  }
  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Float("w_max").Default(1.0).Range(-100, 100).Doc("weight at G_max"));
    s.Add(Param::Float("w_min").Default(-1.0).Range(-100, 100).Doc("weight at G_min"));
    s.Add(Param::Float("nl_ltp").Default(2.4).Range(-9, 9).Doc(
        "potentiation nonlinearity NL (NeuroSim RealDevice 2.4)"));
    s.Add(Param::Float("nl_ltd").Default(-4.88).Range(-9, 9).Doc(
        "depression nonlinearity NL (RealDevice -4.88)"));
    s.Add(Param::Int("levels_ltp").Default(97).Range(1, 1 << 20).Doc("P_max of LTP (97)"));
    s.Add(Param::Int("levels_ltd").Default(100).Range(1, 1 << 20).Doc("P_max of LTD (100)"));
    s.Add(Param::Float("sigma_c2c").Default(0.035).Range(0, 10).Doc(
        "cycle-to-cycle sigma per pulse, fraction of the range (RealDevice 3.5 %)"));
    s.Add(Param::Float("sigma_dtod").Default(0.0).Range(0, 10).Doc(
        "device-to-device spread of NL, absolute (sigmaDtoD)"));
    return s;
  }
  void Draw(uint64_t key, int64_t n, DeviceCells& c) const override {
    c.b_max.assign(n, static_cast<float>(params_.w_max));
    c.b_min.assign(n, static_cast<float>(params_.w_min));
    c.dw_up.assign(n, static_cast<float>(params_.dw_min));
    c.dw_down.assign(n, static_cast<float>((params_.w_max - params_.w_min) / p_ltd_));
    c.p_up.resize(n);
    c.p_down.resize(n);
    const CounterRng r(key, 18);
    const double a_up = Signed(nl_ltp_) * NormA(nl_ltp_) * p_ltp_;
    const double a_down = Signed(nl_ltd_) * NormA(nl_ltd_) * p_ltd_;
    for (int64_t i = 0; i < n; ++i) {
      if (sigma_dtod_ > 0) {
        const double nu = Clamp(nl_ltp_ + sigma_dtod_ * r.Normal(2 * static_cast<uint64_t>(i)));
        const double nd = Clamp(nl_ltd_ + sigma_dtod_ * r.Normal(2 * static_cast<uint64_t>(i) + 1));
        c.p_up[i] = static_cast<float>(Signed(nu) * NormA(nu) * p_ltp_);
        c.p_down[i] = static_cast<float>(Signed(nd) * NormA(nd) * p_ltd_);
      } else {
        c.p_up[i] = static_cast<float>(a_up);
        c.p_down[i] = static_cast<float>(a_down);
      }
    }
  }
  // The mean LTP step (range / P_max).
  double Granularity() const override { return params_.dw_min; }
  float Pulse(float w, int64_t i, const DeviceCells& c, int n, int dir, const CounterRng& rng,
              uint64_t ctr) const override {
    const double lo = c.b_min[i], hi = c.b_max[i], range = hi - lo;
    const double a = dir > 0 ? c.p_up[i] : c.p_down[i];
    const double pmax = dir > 0 ? p_ltp_ : p_ltd_;
    const double b = range / (1 - std::exp(-pmax / a));
    // G(x + k) = G_min + B - (G_min + B - G) e^(-k/A), k = +n (LTP) or -n (LTD).
    const double k = dir > 0 ? n : -n;
    double g = lo + b - (lo + b - w) * std::exp(-k / a);
    if (sigma_c2c_ > 0) {
      g += sigma_c2c_ * range * std::sqrt(static_cast<double>(n)) * rng.Normal(ctr);
    }
    return static_cast<float>(std::clamp(g, lo, hi));
  }

 private:
  static double Signed(double v) { return v < 0 ? -1.0 : 1.0; }
  static double Clamp(double v) {
    const double m = std::clamp(std::fabs(v), 0.01, 9.0);
    return v < 0 ? -m : m;
  }
  double nl_ltp_, nl_ltd_, p_ltp_, p_ltd_, sigma_c2c_, sigma_dtod_;
};

PIM_REGISTER(Device, NeuroSimNonlinear, "neurosim_nonlinear",
             "NeuroSim's nonlinear LTP/LTD curves (nonlinearity NL, levels, c2c, d2d)");

}  // namespace
}  // namespace pim
