// Trainer: the epoch loop (shuffle, batch, train step, evaluate) over built components.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "pimtrain/cost/cost_model.h"
#include "pimtrain/nn/dataset.h"
#include "pimtrain/nn/loss.h"
#include "pimtrain/nn/model.h"
#include "pimtrain/nn/optimizer.h"
#include "pimtrain/train/algorithm.h"
#include "pimtrain/train/checkpoint.h"
#include "pimtrain/train/data_parallel.h"
#include "pimtrain/train/numeric_guard.h"

namespace pim {

struct EpochMetrics {
  int64_t epoch = 0;  // 1-based
  double train_loss = 0;
  double train_accuracy = 0;  // fraction in [0, 1]
  double test_loss = 0;
  double test_accuracy = 0;
  double learning_rate = 0;  // at the epoch's last step
  double seconds = 0;        // wall time of the training part of the epoch
  double eval_seconds = 0;
  // Layers on a PIM macro: per layer, the zero fractions of its operands and the hardware
  // actions of each training stage in this epoch, as a JSON array ("" when no layer is on a
  // macro).
  std::string hardware_json;
  // The same layers' counts per stage and macro structure, for the cost model.
  std::vector<LayerHardware> hardware;
  int64_t samples = 0;  // training samples in the epoch
  std::string cost_json;  // the cost model's headline figures of the epoch ("" without one)
  int64_t skipped_steps = 0;  // steps skipped for a non-finite value (train.on_nonfinite)
  std::string ToJsonLine() const;  // one metrics.jsonl line
};

struct EvalResult {
  double loss = 0;
  double accuracy = 0;
};

struct TrainerOptions {
  uint64_t seed = 1;
  int64_t epochs = 1;
  int64_t batch_size = 64;
  int64_t eval_batch_size = 1000;
  // NaN/Inf found before a step's weight update: skip the step (true) or stop the run.
  bool skip_nonfinite_steps = false;
  // mpirun: the ranks that split every batch (docs/scaling.md); nullptr or one rank: this
  // process runs the whole batch through the configured algorithm. The caller checks that the
  // run can be split (sim/session.cc): backprop, every batch at least one sample per rank.
  BatchGroup* group = nullptr;
};

// Progress within an epoch: (steps done, steps total, running mean loss, running accuracy).
using ProgressFn = std::function<void(int64_t, int64_t, double, double)>;

class Trainer {
 public:
  Trainer(Network& net, Optimizer& opt, Schedule& schedule, Loss& loss,
          TrainingAlgorithm& algorithm, const LoadedData& data, TrainerOptions options);

  // Trains epoch `epoch` (0-based) and evaluates on the test split.
  EpochMetrics RunEpoch(int64_t epoch, const ProgressFn& progress);
  EvalResult Evaluate(const Split& split);

  // Every tensor that defines the training state, in a fixed order, for checkpoints.
  NamedTensors StateTensors();
  // Collects (and resets) the macro layers' counts and sparsity as JSON ("" when none is on a
  // macro) and, when `hardware` is non-null, as structured counts for the cost model.
  std::string TakeHardwareJson(std::vector<LayerHardware>* hardware = nullptr);
  int64_t steps_per_epoch() const;

 private:
  // After a NaN/Inf was found in a step: returns if the step can be skipped (configured, the
  // fault came before WU, and no layer state took the bad value); throws NumericError otherwise.
  void SkipOrStop(const NonfiniteFault& fault, bool before_update, const StepContext& ctx);

  Network& net_;
  Optimizer& opt_;
  Schedule& schedule_;
  Loss& loss_;
  TrainingAlgorithm& algorithm_;
  const LoadedData& data_;
  TrainerOptions options_;
  Tensor batch_x_;
  std::vector<int32_t> batch_y_;
  std::unique_ptr<DataParallel> data_parallel_;  // set when options_.group has several ranks

  // The mean loss of the last training step that finished finite (named in divergence errors).
  double last_finite_loss_ = 0;
  int64_t last_finite_step_ = -1;
};

}  // namespace pim
