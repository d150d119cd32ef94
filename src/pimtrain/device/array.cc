// DeviceArray: per-cell draws at creation, exact programming.
#include "pimtrain/device/array.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

namespace pim {

DeviceArray::DeviceArray(std::shared_ptr<const Device> device, int64_t rows, int64_t cols,
                         uint64_t key)
    : device_(std::move(device)), rows_(rows), cols_(cols) {
  device_->Draw(key, rows * cols, cells_);
  cells_.Pack();
  hidden_.assign(static_cast<size_t>(rows * cols), 0.0f);
  write_noise_ = static_cast<float>(device_->write_noise_std() * device_->params().dw_min);
  if (write_noise_ > 0) read_.assign(hidden_.size(), 0.0f);
}

void DeviceArray::Set(ConstMatrixView w, uint64_t noise_key) {
  const CounterRng rng(noise_key, 0x77);
  for (int64_t r = 0; r < rows_; ++r) {
    const float* row = w.Row(r);
    for (int64_t c = 0; c < cols_; ++c) {
      const int64_t i = r * cols_ + c;
      hidden_[i] = std::min(std::max(row[c], cells_.b_min[i]), cells_.b_max[i]);
      if (write_noise_ > 0) {
        read_[i] = hidden_[i] + write_noise_ * rng.Normal(static_cast<uint64_t>(i));
      }
    }
  }
  if (cells_.sub != nullptr) {  // a unit cell (unit_cell.h) programs its devices
    device_->Programmed(hidden_.data(), size(), cells_);
    if (write_noise_ > 0) {
      for (int64_t i = 0; i < size(); ++i) {
        read_[i] = hidden_[i] + write_noise_ * rng.Normal(static_cast<uint64_t>(i));
      }
    }
  }
}

namespace {

nlohmann::ordered_json Histogram(const std::vector<double>& v, double lo, double hi, int bins) {
  if (!(hi > lo)) hi = lo + 1e-6;
  std::vector<int64_t> counts(static_cast<size_t>(bins), 0);
  for (double x : v) {
    const int b = static_cast<int>(std::floor((x - lo) / (hi - lo) * bins));
    ++counts[static_cast<size_t>(std::clamp(b, 0, bins - 1))];
  }
  auto edges = nlohmann::ordered_json::array();
  for (int b = 0; b <= bins; ++b) edges.push_back(lo + (hi - lo) * b / bins);
  return {{"edges", edges}, {"counts", counts}};
}

}  // namespace

std::string DeviceStateJson(const DeviceArray& a, const std::string& name, int bins) {
  const int64_t n = a.size();
  std::vector<double> w(static_cast<size_t>(n)), g;
  double lo = 0, hi = 0;
  bool bounded = n > 0;
  for (int64_t i = 0; i < n; ++i) {
    w[i] = a.hidden()[i];
    lo = std::min(lo, w[i]);
    hi = std::max(hi, w[i]);
    bounded &= a.cells().b_max[i] - a.cells().b_min[i] < 1e20f;
  }
  nlohmann::ordered_json j;
  j["array"] = name;
  j["cells"] = n;
  j["weight"] = Histogram(w, lo, hi, bins);
  if (bounded) {
    g.resize(w.size());
    int64_t at_min = 0, at_max = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double b0 = a.cells().b_min[i], b1 = a.cells().b_max[i];
      g[i] = b1 > b0 ? (w[i] - b0) / (b1 - b0) : 0.5;
      at_min += w[i] <= b0;
      at_max += w[i] >= b1;
    }
    j["conductance"] = Histogram(g, 0.0, 1.0, bins);
    j["at_lower_bound"] = at_min;
    j["at_upper_bound"] = at_max;
  }
  return j.dump();
}

}  // namespace pim
