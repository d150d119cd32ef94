// Optimizer role (the arithmetic of the WU stage) and learning-rate schedules.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pimtrain/nn/layer.h"

namespace pim {

class Optimizer {
 public:
  static constexpr const char* kRoleName = "optimizer";
  virtual ~Optimizer() = default;
  // Binds the parameters to update and allocates per-parameter state (zeroed).
  virtual void Attach(const std::vector<Parameter*>& params) = 0;
  // value -= f(grad, state) at learning rate `lr`.
  virtual void Step(double lr) = 0;
  // The learning rate from the config (schedules scale it).
  virtual double base_learning_rate() const = 0;
  // State tensors in a fixed order, for checkpoints.
  virtual std::vector<Tensor*> State() = 0;
};

class Schedule {
 public:
  static constexpr const char* kRoleName = "schedule";
  virtual ~Schedule() = default;
  // Multiplier of the base learning rate at `epoch` (0-based) + `fraction` in [0, 1) of it,
  // for a run of `total_epochs`.
  virtual double Factor(int64_t epoch, double fraction, int64_t total_epochs) const = 0;
};

}  // namespace pim
