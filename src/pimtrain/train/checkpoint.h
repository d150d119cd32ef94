// Checkpoints: every tensor of a run (parameters, buffers, optimizer state) plus the run's
// progress, in one file written atomically and verified with a CRC-32 when read.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "pimtrain/nn/tensor.h"

namespace pim {

// Named tensors to save or to fill on load (the live model's tensors, in a fixed order).
using NamedTensors = std::vector<std::pair<std::string, Tensor*>>;

struct CheckpointInfo {
  int64_t epochs_done = 0;
  std::string metrics_jsonl;  // the metrics lines written so far, so a resumed run continues them
  std::string config_yaml;    // the resolved config of the run
};

// File layout: "PIMCKPT1" | u32 header length | header JSON | tensor payloads (float32 LE, in
// header order) | u32 CRC-32 of everything before it.
void SaveCheckpoint(const std::string& path, const CheckpointInfo& info, const NamedTensors& t);

enum class TensorMatch {
  kExact,   // the file holds exactly these tensors, in this order (resume)
  kByName,  // the file holds at least these tensors; others are ignored (eval: no optimizer)
};

// Reads `path`, checks magic, length and CRC, and that its tensors match `t` (names and shapes),
// then fills them. DataError (naming the file and the mismatch) otherwise; the live tensors are
// untouched unless everything checks out.
CheckpointInfo LoadCheckpoint(const std::string& path, const NamedTensors& t,
                              TensorMatch match = TensorMatch::kExact);

// Reads only the header (for `eval` and resume checks).
CheckpointInfo ReadCheckpointInfo(const std::string& path);

}  // namespace pim
