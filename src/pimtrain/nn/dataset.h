// Dataset role: loads a labelled train/test split into memory, normalized, channels last.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pimtrain/nn/tensor.h"

namespace pim {

struct Split {
  Tensor images;                // (N, H, W, C) float, normalized
  std::vector<int32_t> labels;  // N labels in [0, num_classes)
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};

struct LoadedData {
  std::string name;    // "fashion_mnist"
  Split train;
  Split test;
  Shape sample_shape;  // (H, W, C)
  int num_classes = 0;
};

class Dataset {
 public:
  static constexpr const char* kRoleName = "dataset";
  virtual ~Dataset() = default;
  // Reads and checks the files. IoError if a file is missing or unreadable; DataError naming
  // the file if its contents are malformed (bad magic, wrong dimensions, truncated, labels out
  // of range, image and label counts that differ).
  virtual LoadedData Load() = 0;
};

// The order of training samples in `epoch`: a seeded permutation (Fisher-Yates driven by the
// counter-based generator), identical for every thread count.
std::vector<int64_t> EpochOrder(uint64_t seed, int64_t epoch, int64_t n);

// Copies samples `indices[begin, end)` of `split` into x (batch, sample...) and y.
void GatherBatch(const Split& split, const std::vector<int64_t>& indices, int64_t begin,
                 int64_t end, Tensor& x, std::vector<int32_t>& y);

}  // namespace pim
