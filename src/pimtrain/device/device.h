// Device role: the response of one analog cross-point device to a programming pulse (aihwkit's
// pulsed devices, NeuroSim's nonlinear LTP/LTD), with its device-to-device spreads drawn once
// per cell and its cycle-to-cycle noise drawn per pulse (docs/devices.md).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/base/schema.h"

namespace pim {

struct SubCells;  // device/unit_cell.h

// Per-cell parameters, drawn once when the array is programmed (structure of arrays, one entry
// per cell): the hard bounds b+ / b-, the step sizes Delta+ / Delta-, and two model-specific
// slots (LinearStep's slopes, PowStep's exponents, the NeuroSim curves' A).
struct DeviceCells {
  std::vector<float> b_max, b_min, dw_up, dw_down, p_up, p_down;
  // The same bounds and steps interleaved, one 16-byte record per cell (b-, b+, -Delta-,
  // Delta+; Pack() fills it from the arrays above), so a pulse touches one cache line of
  // parameters instead of three. The values are the arrays' own floats (the down step's sign
  // flip is exact). Empty until Pack(); DeviceArray packs its cells once they are drawn.
  std::vector<float> packed;
  void Pack() {
    const int64_t n = size();
    packed.resize(static_cast<size_t>(4 * n));
    for (int64_t i = 0; i < n; ++i) {
      packed[4 * i] = b_min[i];
      packed[4 * i + 1] = b_max[i];
      packed[4 * i + 2] = -dw_down[i];
      packed[4 * i + 3] = dw_up[i];
    }
  }
  // A unit cell's sub-devices (device/unit_cell.h; null: one device per weight). Their states
  // change with each pulse although the cells are passed const: they are the cell's state.
  std::shared_ptr<SubCells> sub;
  int64_t size() const { return static_cast<int64_t>(b_max.size()); }
};

// The parameters every pulsed device shares (spec section 2.1), in aihwkit's names.
struct PulsedParams {
  double dw_min = 0.001, dw_min_dtod = 0.3, dw_min_std = 0.3;
  double w_max = 0.6, w_min = -0.6, w_max_dtod = 0.3, w_min_dtod = 0.3;
  double up_down = 0, up_down_dtod = 0.01;
  bool enforce_consistency = true;
  double write_noise_std = 0;
  double reset = 0, reset_dtod = 0, reset_std = 0.01;
};

class Device {
 public:
  static constexpr const char* kRoleName = "device";
  virtual ~Device() = default;

  // Draws the per-cell parameters of n cells; cell i's draws come from counter i of `key`'s
  // streams, so the spreads are a function of the cell's coordinates only.
  virtual void Draw(uint64_t key, int64_t n, DeviceCells& cells) const;
  // The device granularity epsilon: the mean weight change of one pulse (spec 2.1).
  virtual double Granularity() const { return params_.dw_min; }
  // true: no pulses; the update is applied as the exact floating-point increment, unbounded.
  virtual bool ideal() const { return false; }

  // Applies `n` >= 1 pulses in one direction (dir > 0: up, dir < 0: down) to cell `cell` of
  // value w, each followed by the clip to its bounds; pulse p's cycle-to-cycle noise is
  // Normal(ctr + p) of `rng` (the caller keys it by seed, layer, step, update cycle and cell).
  virtual float Pulse(float w, int64_t cell, const DeviceCells& c, int n, int dir,
                      const CounterRng& rng, uint64_t ctr) const = 0;

  // Bulk pulses with normals drawn by the caller (stochastic_pulses draws them in vector
  // lanes): event e < b.count gives cell b.cell[e] b.n[e] pulses in direction b.dir[e], pulse p
  // with the normal b.xi[p * b.count + e], each clipped, in w (the hidden weights). Only where
  // drawn_normals() >= 0; the same arithmetic as Pulse with those normals.
  struct PulseBatch {
    const uint32_t* cell = nullptr;
    const uint8_t* n = nullptr;
    const int8_t* dir = nullptr;
    const float* xi = nullptr;
    int64_t count = 0;
  };
  virtual void PulseDrawn(float* w, const DeviceCells& c, const PulseBatch& b) const;
  // Normals one pulse takes in PulseDrawn (1, or 0 without cycle-to-cycle noise); -1: the model
  // draws its own (unit cells, NeuroSim) and PulseDrawn does not apply: use Pulse.
  virtual int drawn_normals() const { return -1; }

  // After exact programming set w[0..n) (clipped to the cells' bounds): a unit cell programs
  // its devices and writes back the weight they hold. One device per weight: nothing to do.
  virtual void Programmed(float* w, int64_t n, const DeviceCells& c) const {
    (void)w, (void)n, (void)c;
  }

  // The state a reset pulse puts cell `cell` in (rho_r + reset_std xi).
  float ResetValue(int64_t cell, const CounterRng& rng, uint64_t ctr) const;

  const PulsedParams& params() const { return params_; }
  double write_noise_std() const { return params_.write_noise_std; }

 protected:
  Device() = default;
  explicit Device(const ConfigNode& p);
  // The common parameters with this model's defaults.
  static void AddPulsedParams(Schema& s, const PulsedParams& defaults);

  PulsedParams params_;
};

// A pulse loop shared by the models: Derived::Step(w, cell, c, dir, xi) returns the new,
// unclipped value of one pulse; the loop clips after each pulse (aihwkit's order).
template <class Derived>
class PulsedDevice : public Device {
 public:
  float Pulse(float w, int64_t cell, const DeviceCells& c, int n, int dir, const CounterRng& rng,
              uint64_t ctr) const final {
    const float hi = c.b_max[cell], lo = c.b_min[cell];
    const auto& self = static_cast<const Derived&>(*this);
    for (int p = 0; p < n; ++p) {
      const float xi = sigma_ > 0 ? rng.Normal(ctr + static_cast<uint64_t>(p)) : 0.0f;
      w = self.Step(w, cell, c, dir, xi);
      w = std::min(std::max(w, lo), hi);
    }
    return w;
  }
  void PulseDrawn(float* w, const DeviceCells& c, const PulseBatch& b) const final {
    const auto& self = static_cast<const Derived&>(*this);
    if constexpr (requires { self.StepPacked(0.0f, nullptr, 0, 0.0f); }) {
      // A model with a step on the packed record (DeviceCells::packed): the same values from
      // one record per cell.
      if (!c.packed.empty()) {
        const float* pk = c.packed.data();
        // Consecutive events of one cell continue one chain in a register.
        for (int64_t e = 0; e < b.count;) {
          const uint32_t cell = b.cell[e];
          const float* rec = pk + 4 * static_cast<size_t>(cell);
          const float lo = rec[0], hi = rec[1];
          float v = w[cell];
          do {
            const int up = b.dir[e] > 0;
            const int n = b.n[e];
            for (int p = 0; p < n; ++p) {
              const float xi = sigma_ > 0 ? b.xi[p * b.count + e] : 0.0f;
              v = self.StepPacked(v, rec, up, xi);
              v = std::min(std::max(v, lo), hi);
            }
            ++e;
          } while (e < b.count && b.cell[e] == cell);
          w[cell] = v;
        }
        return;
      }
    }
    for (int64_t e = 0; e < b.count; ++e) {
      const int64_t cell = b.cell[e];
      const float hi = c.b_max[cell], lo = c.b_min[cell];
      float v = w[cell];
      for (int p = 0; p < b.n[e]; ++p) {
        const float xi = sigma_ > 0 ? b.xi[p * b.count + e] : 0.0f;
        v = self.Step(v, cell, c, b.dir[e], xi);
        v = std::min(std::max(v, lo), hi);
      }
      w[cell] = v;
    }
  }
  int drawn_normals() const final { return sigma_ > 0 ? 1 : 0; }

 protected:
  PulsedDevice() = default;
  explicit PulsedDevice(const ConfigNode& p)
      : Device(p), sigma_(static_cast<float>(params_.dw_min_std)) {}
  float sigma_ = 0;
};

}  // namespace pim
