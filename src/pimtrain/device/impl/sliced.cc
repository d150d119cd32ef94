// `sliced` unit cell (aihwkit VectorUnitCell): each weight is k devices of one response model
// with significance factors gamma, w = sum_q gamma_q g_q; the pulses of an update go to one
// device (policy single_fixed, the device `update_index`) or to all of them (policy all).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/device/unit_cell.h"

namespace pim {
namespace {

class Sliced final : public UnitCellDevice {
 public:
  explicit Sliced(const ConfigNode& p)
      : inner_(Registry<Device>::Create(p.At("device"))),
        k_(static_cast<int>(p.GetInt("devices"))),
        all_(p.GetString("policy") == "all"),
        index_(static_cast<int>(p.GetInt("update_index"))) {
    const std::string impl = p.At("device").GetString("impl");
    if (inner_->ideal() || dynamic_cast<const UnitCellDevice*>(inner_.get()) != nullptr) {
      throw ConfigError(p.At("device").Where() + ": impl " + impl +
                        " cannot be a sliced cell's device (expected a pulsed device model)");
    }
    for (double v : p.At("gamma").AsDoubleList()) gamma_.push_back(static_cast<float>(v));
    if (gamma_.empty()) gamma_.assign(static_cast<size_t>(k_), 1.0f / static_cast<float>(k_));
    if (static_cast<int>(gamma_.size()) != k_ ||
        std::any_of(gamma_.begin(), gamma_.end(), [](float g) { return !(g > 0); })) {
      throw ConfigError(p.At("gamma").Where() + ": " + std::to_string(gamma_.size()) +
                        " factors for devices " + std::to_string(k_) +
                        " (expected one positive factor per device, or [] for 1/devices each)");
    }
    if (index_ >= k_) {
      throw ConfigError(p.At("update_index").Where() + ": " + std::to_string(index_) +
                        " is not a device of the cell (expected 0 .. devices - 1 = " +
                        std::to_string(k_ - 1) + ")");
    }
    params_ = inner_->params();
    // Programming order: the most significant device first (stable for equal factors).
    order_.resize(static_cast<size_t>(k_));
    std::iota(order_.begin(), order_.end(), 0);
    std::stable_sort(order_.begin(), order_.end(),
                     [&](int a, int b) { return gamma_[a] > gamma_[b]; });
  }
  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Component("device", "device").Default("{impl: soft_bounds}").Doc(
        "response model of every device of the cell (each with its own draws)"));
    s.Add(Param::Int("devices").Default(2).Range(2, 8).Unit("devices").Doc(
        "devices per weight"));
    s.Add(Param::FloatList("gamma").Default("[]").Doc(
        "significance factor of each device, w = sum gamma_q g_q ([]: 1/devices each, "
        "aihwkit's gamma_vec default)"));
    s.Add(Param::Enum("policy", {"single_fixed", "all"}).Default("single_fixed").Doc(
        "single_fixed: every pulse goes to device update_index; all: to every device "
        "(aihwkit VectorUnitCellUpdatePolicy SingleFixed / All)"));
    s.Add(Param::Int("update_index").Default(0).Range(0, 7).Doc(
        "the device single_fixed updates (aihwkit first_update_idx)"));
    return s;
  }

  // The mean weight change of one pulse of the update.
  double Granularity() const override {
    if (!all_) return gamma_[index_] * inner_->Granularity();
    double g = 0;
    for (float v : gamma_) g += v * inner_->Granularity();
    return g;
  }

  void Draw(uint64_t key, int64_t n, DeviceCells& c) const override {
    auto sub = std::make_shared<SubCells>();
    sub->k = k_;
    inner_->Draw(MixKey(key, 0x736c6963), k_ * n, sub->cells);
    const DeviceCells& d = sub->cells;
    c.b_max.assign(n, 0.0f);
    c.b_min.assign(n, 0.0f);
    c.dw_up.assign(n, 0.0f);
    c.dw_down.assign(n, 0.0f);
    c.p_up.assign(n, 0.0f);
    c.p_down.assign(n, 0.0f);
    sub->g.assign(static_cast<size_t>(k_ * n), 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      for (int q = 0; q < k_; ++q) {
        const int64_t j = i * k_ + q;
        c.b_max[i] += gamma_[q] * d.b_max[j];
        c.b_min[i] += gamma_[q] * d.b_min[j];
        if (all_ || q == index_) {
          c.dw_up[i] += gamma_[q] * d.dw_up[j];
          c.dw_down[i] += gamma_[q] * d.dw_down[j];
        }
      }
    }
    sub->pulses.assign(static_cast<size_t>(n), 0);
    sub->reads.assign(static_cast<size_t>(n), 0);
    c.sub = std::move(sub);
  }

  // Exact programming: the most significant device takes what it can hold, the next the rest.
  void Programmed(float* w, int64_t n, const DeviceCells& c) const override {
    SubCells& s = *c.sub;
    for (int64_t i = 0; i < n; ++i) {
      float rest = w[i], held = 0;
      for (int q : order_) {
        const int64_t j = i * k_ + q;
        const float g = std::min(std::max(rest / gamma_[q], s.cells.b_min[j]), s.cells.b_max[j]);
        s.g[j] = g;
        rest -= gamma_[q] * g;
      }
      for (int q = 0; q < k_; ++q) held += gamma_[q] * s.g[i * k_ + q];
      w[i] = held;
    }
  }

  float Pulse(float w, int64_t i, const DeviceCells& c, int n, int dir, const CounterRng& rng,
              uint64_t ctr) const override {
    (void)w;
    SubCells& s = *c.sub;
    if (!all_) {
      const int64_t j = i * k_ + index_;
      s.g[j] = inner_->Pulse(s.g[j], j, s.cells, n, dir, rng, ctr);
    } else {
      for (int q = 0; q < k_; ++q) {
        const int64_t j = i * k_ + q;
        if (q == 0) {
          s.g[j] = inner_->Pulse(s.g[j], j, s.cells, n, dir, rng, ctr);
        } else {  // device q's own cycle-to-cycle draws: a stream derived from the pulse's key
          const auto b = rng.Block(ctr + 200 + static_cast<uint64_t>(q));
          const CounterRng r(MixKey(b[0], b[1], b[2], b[3]), 0x736c);
          s.g[j] = inner_->Pulse(s.g[j], j, s.cells, n, dir, r, 0);
        }
      }
      s.pulses[i] += (k_ - 1) * n;  // the rule counted one device's pulses
    }
    float held = 0;
    for (int q = 0; q < k_; ++q) held += gamma_[q] * s.g[i * k_ + q];
    return held;
  }

 private:
  std::unique_ptr<Device> inner_;
  int k_;
  bool all_;
  int index_;
  std::vector<float> gamma_;
  std::vector<int> order_;
};

PIM_REGISTER(Device, Sliced, "sliced",
             "k devices per weight, w = sum gamma_q g_q, one or all updated (aihwkit "
             "VectorUnitCell)");

}  // namespace
}  // namespace pim
