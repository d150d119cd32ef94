// DeviceArray: per-cell draws at creation, exact programming.
#include "pimtrain/device/array.h"

#include <algorithm>

namespace pim {

DeviceArray::DeviceArray(std::shared_ptr<const Device> device, int64_t rows, int64_t cols,
                         uint64_t key)
    : device_(std::move(device)), rows_(rows), cols_(cols) {
  device_->Draw(key, rows * cols, cells_);
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
}

}  // namespace pim
