// Device role: the parameters every pulsed device shares and their device-to-device draws.
#include "pimtrain/device/device.h"

#include <cmath>

#include "pimtrain/base/error.h"

namespace pim {

// Streams of the per-cell draws (counter = cell index).
enum DrawStream : uint64_t {
  kDrawMax = 1,
  kDrawMin = 2,
  kDrawStep = 3,
  kDrawUpDown = 4,
  kDrawReset = 5,
};

Device::Device(const ConfigNode& p) {
  params_.dw_min = p.GetDouble("dw_min");
  params_.dw_min_dtod = p.GetDouble("dw_min_dtod");
  params_.dw_min_std = p.GetDouble("dw_min_std");
  params_.w_max = p.GetDouble("w_max");
  params_.w_min = p.GetDouble("w_min");
  params_.w_max_dtod = p.GetDouble("w_max_dtod");
  params_.w_min_dtod = p.GetDouble("w_min_dtod");
  params_.up_down = p.GetDouble("up_down");
  params_.up_down_dtod = p.GetDouble("up_down_dtod");
  params_.enforce_consistency = p.GetBool("enforce_consistency");
  params_.write_noise_std = p.GetDouble("write_noise_std");
  params_.reset = p.GetDouble("reset");
  params_.reset_dtod = p.GetDouble("reset_dtod");
  params_.reset_std = p.GetDouble("reset_std");
  if (params_.w_min > params_.w_max) {
    throw ConfigError(p.At("w_min").Where() + ": w_min " + p.At("w_min").text() +
                      " is above w_max " + p.At("w_max").text() + " (expected w_min <= w_max)");
  }
}

void Device::AddPulsedParams(Schema& s, const PulsedParams& d) {
  s.Add(Param::Float("dw_min").Default(d.dw_min).Range(0, 10).Doc(
      "mean weight change of one pulse at the symmetry point (device granularity)"));
  s.Add(Param::Float("dw_min_dtod").Default(d.dw_min_dtod).Range(0, 10).Doc(
      "device-to-device spread of dw_min, relative"));
  s.Add(Param::Float("dw_min_std").Default(d.dw_min_std).Range(0, 100).Doc(
      "cycle-to-cycle noise of each pulse's step, relative (1 + dw_min_std xi)"));
  s.Add(Param::Float("w_max").Default(d.w_max).Range(-100, 100).Doc("mean upper bound"));
  s.Add(Param::Float("w_min").Default(d.w_min).Range(-100, 100).Doc("mean lower bound"));
  s.Add(Param::Float("w_max_dtod").Default(d.w_max_dtod).Range(0, 10).Doc(
      "device-to-device spread of w_max, relative"));
  s.Add(Param::Float("w_min_dtod").Default(d.w_min_dtod).Range(0, 10).Doc(
      "device-to-device spread of w_min, relative"));
  s.Add(Param::Float("up_down").Default(d.up_down).Range(-1, 1).Doc(
      "up/down asymmetry: > 0 shrinks the down step, < 0 the up step"));
  s.Add(Param::Float("up_down_dtod").Default(d.up_down_dtod).Range(0, 10).Doc(
      "device-to-device spread of the asymmetry"));
  s.Add(Param::Bool("enforce_consistency").Default(d.enforce_consistency).Doc(
      "steps taken positive, bounds forced to w_min <= 0 <= w_max (aihwkit's Python default)"));
  s.Add(Param::Float("write_noise_std").Default(d.write_noise_std).Range(0, 1e4).Doc(
      "read weight = hidden weight + write_noise_std dw_min xi, redrawn when pulsed"));
  s.Add(Param::Float("reset").Default(d.reset).Range(-100, 100).Doc("mean reset value"));
  s.Add(Param::Float("reset_dtod").Default(d.reset_dtod).Range(0, 100).Doc(
      "device-to-device spread of the reset value, absolute"));
  s.Add(Param::Float("reset_std").Default(d.reset_std).Range(0, 100).Doc(
      "cycle-to-cycle spread of each reset, absolute"));
}

void Device::Draw(uint64_t key, int64_t n, DeviceCells& c) const {
  const PulsedParams& q = params_;
  c.b_max.resize(n);
  c.b_min.resize(n);
  c.dw_up.resize(n);
  c.dw_down.resize(n);
  c.p_up.assign(n, 0.0f);
  c.p_down.assign(n, 0.0f);
  const CounterRng r_max(key, kDrawMax), r_min(key, kDrawMin), r_step(key, kDrawStep),
      r_ud(key, kDrawUpDown);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t u = static_cast<uint64_t>(i);
    double hi = q.w_max * (1 + q.w_max_dtod * (q.w_max_dtod > 0 ? r_max.Normal(u) : 0.0f));
    double lo = q.w_min * (1 + q.w_min_dtod * (q.w_min_dtod > 0 ? r_min.Normal(u) : 0.0f));
    const double g = 1 + q.dw_min_dtod * (q.dw_min_dtod > 0 ? r_step.Normal(u) : 0.0f);
    const double r = q.up_down_dtod * (q.up_down_dtod > 0 ? r_ud.Normal(u) : 0.0f);
    double up = (std::min(q.up_down, 0.0) + g + r) * q.dw_min;
    double down = (-std::max(q.up_down, 0.0) + g - r) * q.dw_min;
    if (q.enforce_consistency) {
      up = std::fabs(up);
      down = std::fabs(down);
      hi = std::fabs(hi);
      lo = -std::fabs(lo);
    } else if (lo > hi) {
      hi = lo = 0.5 * (hi + lo);
    }
    c.b_max[i] = static_cast<float>(hi);
    c.b_min[i] = static_cast<float>(lo);
    c.dw_up[i] = static_cast<float>(up);
    c.dw_down[i] = static_cast<float>(down);
  }
}

void Device::PulseDrawn(float* w, const DeviceCells& c, const PulseBatch& b) const {
  (void)w, (void)c, (void)b;
  PIM_CHECK_MSG(false, "Device::PulseDrawn on a model that draws its own noise");
}

float Device::ResetValue(int64_t cell, const CounterRng& rng, uint64_t ctr) const {
  (void)cell;
  return static_cast<float>(params_.reset + params_.reset_std * rng.Normal(ctr));
}

}  // namespace pim
