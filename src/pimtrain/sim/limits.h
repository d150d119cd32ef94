// Resource limits: a config that cannot fit in memory, or whose epoch would take absurdly long,
// is refused up front with an estimate (a ConfigError), before the model is allocated.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "pimtrain/base/config.h"
#include "pimtrain/base/schema.h"
#include "pimtrain/nn/dataset.h"

namespace pim {

// What a run will need, from the config and the data's shape alone (no allocation). Every term
// is a lower bound: buffers a layer keeps internally (im2col columns, masks, macro arrays) are
// not counted, and a layer or model the estimator does not know ends the walk (complete =
// false). So a refusal is never a false alarm, only some oversized runs slip through.
struct ResourceEstimate {
  double parameters = 0;        // trainable values
  double model_bytes = 0;       // parameters, their gradients and the optimizer's state (fp32)
  double activation_bytes = 0;  // each layer's output (at the larger batch) and its error
  double data_bytes = 0;        // the loaded splits (fp32)
  double forward_macs_per_sample = 0;
  // One epoch: FP, BP and GC over the training set (3x the forward products) plus the
  // forward pass over the test set.
  double macs_per_epoch = 0;
  bool complete = true;
  std::string stopped_at;  // where the walk stopped when !complete

  double total_bytes() const { return model_bytes + activation_bytes + data_bytes; }
};

ResourceEstimate EstimateResources(const ConfigNode& config, const LoadedData& data);

// The `limits:` section of the root config.
std::shared_ptr<const Schema> LimitsSchema();

// Physical memory, capped by the address-space and data-segment limits (ulimit -v, -d).
double AvailableMemoryBytes();

// Throws ConfigError (one line: the estimate against the limit, and the key to change it) if the
// run would need more memory than limits.max_memory_bytes (0: AvailableMemoryBytes()) or more
// than limits.max_macs_per_epoch multiply-accumulates per epoch (0: no limit).
void CheckResourceLimits(const ConfigNode& config, const LoadedData& data);

// "12.0 TB", "512 MiB"-style sizes for messages.
std::string HumanBytes(double bytes);

}  // namespace pim
