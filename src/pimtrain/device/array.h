// DeviceArray: the analog devices of one weight matrix (rows x cols, one device per weight as
// `decomposition: native` stores it): their hidden and read weights, their per-cell drawn
// parameters, and the pulse entry point every update rule uses (docs/devices.md).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pimtrain/base/matrix_view.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/device/device.h"

namespace pim {

// Counter names an analog update adds (ActionCounts), with their units.
inline constexpr char kCountDevicePulses[] = "device_pulses";        // pulses: one programming
                                                                      // pulse on one cell
inline constexpr char kCountCellsPulsed[] = "device_cells_pulsed";    // cells: a cell receiving
                                                                      // >= 1 pulse in one cycle
inline constexpr char kCountPulseSlots[] = "device_pulse_slots";      // slots: one pulse period in
                                                                      // which an array's lines fire
inline constexpr char kCountVerifyReads[] = "device_verify_reads";    // cell reads of write-verify

class DeviceArray {
 public:
  // `key` keys the device-to-device draws (cell i: counter i), fixed for the array's life.
  DeviceArray(std::shared_ptr<const Device> device, int64_t rows, int64_t cols, uint64_t key);

  const Device& device() const { return *device_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t size() const { return rows_ * cols_; }
  // Exact programming: w clipped to each device's bounds (read noise-free; write noise drawn
  // from `noise_key` when the device has any).
  void Set(ConstMatrixView w, uint64_t noise_key);
  // Applies n > 0 pulses in direction dir (+1 up, -1 down) to cell i; `rng`/`ctr` key their
  // cycle-to-cycle noise (pulse p: ctr + p), and ctr keys the write-noise redraw.
  void Pulse(int64_t i, int n, int dir, const CounterRng& rng, uint64_t ctr) {
    hidden_[i] = device_->Pulse(hidden_[i], i, cells_, n, dir, rng, ctr);
    if (write_noise_ > 0) {
      read_[i] = hidden_[i] + write_noise_ * rng.Normal(ctr ^ (uint64_t{1} << 63));
    }
  }
  // Applies a batch of pulse events with caller-drawn normals (Device::PulseDrawn; only where
  // device().drawn_normals() >= 0); the write-noise redraw of event e's cell uses
  // CounterRng(key, stream[e]) at counter (cell << 8) ^ 2^63 (the cell's last event wins).
  void PulseDrawn(const Device::PulseBatch& b, uint64_t key, const uint32_t* stream) {
    device_->PulseDrawn(hidden_.data(), cells_, b);
    if (write_noise_ > 0) {
      for (int64_t e = 0; e < b.count; ++e) {
        const int64_t i = b.cell[e];
        const CounterRng rng(key, stream[e]);
        read_[i] = hidden_[i] + write_noise_ * rng.Normal((static_cast<uint64_t>(i) << 8) ^
                                                          (uint64_t{1} << 63));
      }
    }
  }
  // Prefetches the state and the drawn parameters of cells [begin, end) (a pulsed update's next
  // block of rows) into the cache.
  void Prefetch(int64_t begin, int64_t end) const {
    end = std::min(end, size());
    for (int64_t i = begin; i < end; i += 16) __builtin_prefetch(hidden_.data() + i, 0, 3);
    if (!cells_.packed.empty()) {
      for (int64_t i = begin; i < end; i += 4) {
        __builtin_prefetch(cells_.packed.data() + 4 * i, 0, 3);
      }
      return;
    }
    const float* arrays[4] = {cells_.b_max.data(), cells_.b_min.data(), cells_.dw_up.data(),
                              cells_.dw_down.data()};
    for (const float* p : arrays) {
      for (int64_t i = begin; i < end; i += 16) __builtin_prefetch(p + i, 0, 3);
    }
  }
  // Exact increment (the ideal device and `update: ideal`): w += dw, clipped.
  void Add(int64_t i, float dw) {
    hidden_[i] = std::min(std::max(hidden_[i] + dw, cells_.b_min[i]), cells_.b_max[i]);
    if (write_noise_ > 0) read_[i] = hidden_[i];
  }
  // The weights as programmed (hidden) and as a read sees them (with write noise).
  const float* hidden() const { return hidden_.data(); }
  float* mutable_hidden() { return hidden_.data(); }
  const float* read() const { return write_noise_ > 0 ? read_.data() : hidden_.data(); }
  // The read weights as stored (write noise on: their own values, else the hidden ones); a
  // checkpoint restores them so a resumed run reads what the uninterrupted one would.
  bool has_write_noise() const { return write_noise_ > 0; }
  float* mutable_read() { return write_noise_ > 0 ? read_.data() : hidden_.data(); }
  const DeviceCells& cells() const { return cells_; }
  double granularity() const { return device_->Granularity(); }

 private:
  std::shared_ptr<const Device> device_;
  int64_t rows_, cols_;
  DeviceCells cells_;
  std::vector<float> hidden_, read_;
  float write_noise_ = 0;  // write_noise_std * dw_min
};

// The state of an array after training as JSON, for the report's conductance plot: histograms
// (`bins` bins) of the weights the devices hold and, for bounded devices, of each device's
// normalized conductance g = (w - b-) / (b+ - b-) in [0, 1] (0: at its lower bound).
std::string DeviceStateJson(const DeviceArray& a, const std::string& name, int bins = 50);

}  // namespace pim
