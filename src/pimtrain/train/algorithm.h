// TrainingAlgorithm role: one training step, deciding where each layer's error comes from.
#pragma once

#include <cstdint>

#include "pimtrain/nn/loss.h"
#include "pimtrain/nn/model.h"
#include "pimtrain/nn/optimizer.h"
#include "pimtrain/train/checkpoint.h"

namespace pim {

struct StepResult {
  double loss_sum = 0;
  int64_t correct = 0;
};

class TrainingAlgorithm {
 public:
  static constexpr const char* kRoleName = "algorithm";
  virtual ~TrainingAlgorithm() = default;
  // Called once after the network is built.
  virtual void Setup(Network& net, uint64_t seed) {}
  // Runs FP, BP, GC and WU for one batch: x (N, sample...), labels N. `lr` is this step's rate.
  virtual StepResult TrainStep(Network& net, const Tensor& x, const int32_t* labels, Loss& loss,
                               Optimizer& opt, double lr, const StepContext& ctx) = 0;
  // The algorithm's own training state kept between steps (Tiki-Taka's H, choppers and fast
  // array; mixed precision's chi), for checkpoints, so that a resumed run is bit-identical.
  // Allocated in Setup; each call first brings the tensors up to date (a save reads them, a
  // load overwrites them and then calls RestoreState).
  virtual NamedTensors StateTensors() { return {}; }
  // After a checkpoint was loaded into StateTensors() and the macros were programmed: puts the
  // loaded state back where the algorithm keeps it (e.g. into the device arrays).
  virtual void RestoreState() {}
};

}  // namespace pim
