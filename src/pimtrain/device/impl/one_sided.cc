// `one_sided` unit cell: each weight is a pair of devices of one response model, w = g+ - g-,
// driven by potentiation only (up pulses to g+, down pulses to g-), with aihwkit's
// OneSidedUnitCell refresh: when the larger normalized conductance passes refresh_upper and
// the smaller refresh_lower, both are reset and the difference is reprogrammed into one.
#include <algorithm>
#include <cmath>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/device/unit_cell.h"

namespace pim {
namespace {

class OneSided final : public UnitCellDevice {
 public:
  explicit OneSided(const ConfigNode& p)
      : inner_(Registry<Device>::Create(p.At("device"))),
        refresh_(p.GetBool("refresh")),
        upper_(static_cast<float>(p.GetDouble("refresh_upper"))),
        lower_(static_cast<float>(p.GetDouble("refresh_lower"))),
        iterations_(static_cast<int>(p.GetInt("refresh_iterations"))),
        max_pulses_(static_cast<int>(p.GetInt("refresh_max_pulses"))),
        tolerance_(p.GetDouble("refresh_tolerance")) {
    const std::string impl = p.At("device").GetString("impl");
    if (inner_->ideal() || dynamic_cast<const UnitCellDevice*>(inner_.get()) != nullptr) {
      throw ConfigError(p.At("device").Where() + ": impl " + impl +
                        " cannot be a one_sided pair's device (expected a pulsed device model)");
    }
    if (lower_ > upper_) {
      throw ConfigError(p.At("refresh_lower").Where() + ": " + p.At("refresh_lower").text() +
                        " is above refresh_upper " + p.At("refresh_upper").text() +
                        " (expected refresh_lower <= refresh_upper)");
    }
    params_ = inner_->params();  // write noise and dw_min act on the pair's weight
  }
  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Component("device", "device").Default("{impl: soft_bounds, w_min: 0}").Doc(
        "response model of both devices of the pair (each with its own draws)"));
    s.Add(Param::Bool("refresh").Default(true).Doc(
        "check each pulsed pair after its pulses and refresh it past the thresholds"));
    s.Add(Param::Float("refresh_upper").Default(0.75).Range(0, 1).Doc(
        "refresh when the larger normalized conductance exceeds this (aihwkit "
        "refresh_upper_thres)"));
    s.Add(Param::Float("refresh_lower").Default(0.25).Range(0, 1).Doc(
        "... and the smaller exceeds this (else the pair is saturated: no refresh)"));
    s.Add(Param::Int("refresh_iterations").Default(5).Range(1, 100).Doc(
        "program-and-verify iterations of the refresh's reprogramming"));
    s.Add(Param::Int("refresh_max_pulses").Default(1000).Range(1, 100000).Unit("pulses").Doc(
        "most potentiation pulses in one reprogramming iteration"));
    s.Add(Param::Float("refresh_tolerance").Default(0.5).Range(0, 100).Doc(
        "the reprogramming stops within this many device granularities of the weight"));
    return s;
  }

  double Granularity() const override { return inner_->Granularity(); }

  void Draw(uint64_t key, int64_t n, DeviceCells& c) const override {
    auto sub = std::make_shared<SubCells>();
    sub->k = 2;
    inner_->Draw(MixKey(key, 0x6f6e65736964), 2 * n, sub->cells);
    const DeviceCells& d = sub->cells;
    c.b_max.resize(n);
    c.b_min.resize(n);
    c.dw_up.resize(n);
    c.dw_down.resize(n);
    c.p_up.assign(n, 0.0f);
    c.p_down.assign(n, 0.0f);
    sub->g.resize(static_cast<size_t>(2 * n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = 2 * i, m = p + 1;
      c.b_max[i] = d.b_max[p] - d.b_min[m];
      c.b_min[i] = d.b_min[p] - d.b_max[m];
      c.dw_up[i] = d.dw_up[p];
      c.dw_down[i] = d.dw_up[m];
      sub->g[p] = Rest(p, d);
      sub->g[m] = Rest(m, d);
    }
    sub->pulses.assign(static_cast<size_t>(n), 0);
    sub->reads.assign(static_cast<size_t>(n), 0);
    c.sub = std::move(sub);
  }

  // Exact programming: both devices at their mean reset, the difference added to one of them.
  void Programmed(float* w, int64_t n, const DeviceCells& c) const override {
    SubCells& s = *c.sub;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t p = 2 * i, m = p + 1;
      float gp = Rest(p, s.cells), gm = Rest(m, s.cells);
      const float diff = w[i] - (gp - gm);
      if (diff >= 0) {
        gp = Clip(gp + diff, p, s.cells);
      } else {
        gm = Clip(gm - diff, m, s.cells);
      }
      s.g[p] = gp;
      s.g[m] = gm;
      w[i] = gp - gm;
    }
  }

  float Pulse(float w, int64_t i, const DeviceCells& c, int n, int dir, const CounterRng& rng,
              uint64_t ctr) const override {
    (void)w;
    SubCells& s = *c.sub;
    const int64_t p = 2 * i, m = p + 1;
    const int64_t j = dir > 0 ? p : m;  // potentiation only: down pulses raise g-
    s.g[j] = inner_->Pulse(s.g[j], j, s.cells, n, 1, rng, ctr);
    if (refresh_) {
      s.reads[i] += 2;  // the check reads both devices
      if (NeedsRefresh(i, s)) Refresh(i, s, rng, ctr);
    }
    return s.g[p] - s.g[m];
  }

 private:
  static float Clip(float g, int64_t j, const DeviceCells& d) {
    return std::min(std::max(g, d.b_min[j]), d.b_max[j]);
  }
  float Rest(int64_t j, const DeviceCells& d) const {
    return Clip(static_cast<float>(params_.reset), j, d);
  }
  static float Normalized(float g, int64_t j, const DeviceCells& d) {
    const float range = d.b_max[j] - d.b_min[j];
    return range > 0 ? (g - d.b_min[j]) / range : 0.0f;
  }
  bool NeedsRefresh(int64_t i, const SubCells& s) const {
    const float a = Normalized(s.g[2 * i], 2 * i, s.cells);
    const float b = Normalized(s.g[2 * i + 1], 2 * i + 1, s.cells);
    return std::max(a, b) > upper_ && std::min(a, b) > lower_;
  }
  // Reset both devices (reset + reset_std xi, clipped), then program-and-verify the read
  // difference back with potentiation pulses on the device of the remaining error's sign.
  // Draws: a stream derived from the pulse's (seed, layer, step, cycle, cell) counter.
  void Refresh(int64_t i, SubCells& s, const CounterRng& rng, uint64_t ctr) const {
    const auto b = rng.Block(ctr + 200);  // counters ctr .. ctr + 63 are the pulses' own
    const CounterRng r(MixKey(b[0], b[1], b[2], b[3]), 0x72656672);
    const int64_t p = 2 * i, m = p + 1;
    const float target = s.g[p] - s.g[m];
    s.g[p] = Clip(inner_->ResetValue(p, r, 0), p, s.cells);
    s.g[m] = Clip(inner_->ResetValue(m, r, 1), m, s.cells);
    s.pulses[i] += 2;  // the two reset pulses
    const double eps = inner_->Granularity();
    for (int it = 0; it < iterations_; ++it) {
      const double e = target - (s.g[p] - s.g[m]);
      if (std::fabs(e) <= tolerance_ * eps) break;
      const int64_t j = e > 0 ? p : m;
      const int k = static_cast<int>(
          std::clamp<double>(std::nearbyint(std::fabs(e) / eps), 1.0, max_pulses_));
      s.g[j] = inner_->Pulse(s.g[j], j, s.cells, k, 1, r,
                             2 + static_cast<uint64_t>(it) * static_cast<uint64_t>(max_pulses_));
      s.pulses[i] += k;
      s.reads[i] += 2;  // the verify read of both devices
    }
  }

  std::unique_ptr<Device> inner_;
  bool refresh_;
  float upper_, lower_;
  int iterations_, max_pulses_;
  double tolerance_;
};

PIM_REGISTER(Device, OneSided, "one_sided",
             "pair of devices w = g+ - g-, potentiation only, refresh (aihwkit OneSidedUnitCell)");

}  // namespace
}  // namespace pim
