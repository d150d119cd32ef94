// Loss role: turns logits and labels into a loss value and the output error dL/dlogits.
#pragma once

#include <cstdint>

#include "pimtrain/nn/tensor.h"

namespace pim {

struct LossResult {
  double loss_sum = 0;  // summed over the batch
  int64_t correct = 0;  // argmax(logits) == label
};

class Loss {
 public:
  static constexpr const char* kRoleName = "loss";
  virtual ~Loss() = default;
  // logits (N, K); labels N values in [0, K). Writes dlogits = dL/dlogits of the *mean* loss
  // over the batch when `dlogits` is non-null.
  virtual LossResult Compute(const Tensor& logits, const int32_t* labels, Tensor* dlogits) = 0;
};

}  // namespace pim
