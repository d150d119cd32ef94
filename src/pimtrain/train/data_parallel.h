// DataParallel: one training step (backprop) or evaluation forward pass with the batch split
// over the ranks of a BatchGroup, bit-identical to one process holding the whole batch
// (docs/scaling.md).
#pragma once

#include <cstdint>
#include <vector>

#include "pimtrain/nn/batch_group.h"
#include "pimtrain/nn/loss.h"
#include "pimtrain/nn/model.h"
#include "pimtrain/nn/optimizer.h"
#include "pimtrain/train/algorithm.h"
#include "pimtrain/train/numeric_guard.h"

namespace pim {

// How a step spreads over the ranks (docs/scaling.md, "How a step spreads"):
// - every rank reads the whole batch from its own copy of the data (no message) and runs FP and
//   BP of the kPerSample layers (linear, conv2d, relu, pooling, flatten) on its shard, rows
//   [ShardBegin(r), ShardBegin(r + 1));
// - a macro scales inputs per tensor: the shard's max |x| goes through AllMax (exact);
// - every reduction over the batch runs on the whole batch, gathered on every rank, in the code
//   and the order of one process: GC of weights and biases (the layer's own GC code on the
//   gathered input and output error), the loss and its metrics, and whole kCoupled layers
//   (batch norm, dropout);
// - WU is repeated by every rank on the same gradients, so the weights stay the same everywhere.
// Gathers copy bits, so no float sum depends on the split: results equal one process's for any
// rank count. Counts: each rank counts its shard's FP and BP actions; the repeated work (GC,
// WU, coupled layers) is counted by rank 0 alone (StepContext::record_counts), and the trainer
// sums the ranks' counts at the epoch's end.
class DataParallel {
 public:
  explicit DataParallel(BatchGroup& group) : group_(group) {}

  // One backprop step on the batch `x` (N, sample...), labels N (the whole batch, on every
  // rank). The same result, weights and layer state on every rank.
  StepResult TrainStep(Network& net, const Tensor& x, const int32_t* labels, Loss& loss,
                       Optimizer& opt, double lr, const StepContext& ctx);
  // FP of the whole batch `x`, split as in TrainStep; the logits of the whole batch.
  const Tensor& Forward(Network& net, const Tensor& x, const StepContext& ctx);

  BatchGroup& group() { return group_; }

 private:
  // Throws the same NonfiniteFound on every rank if any rank's `local` fault is set (the lowest
  // layer wins, then the lowest rank, i.e. the first element in one process's batch order).
  void Agree(const NonfiniteFault* local, Network& net, const StepContext& ctx);
  bool FindInShard(const Tensor& t, int layer, Stage stage, const char* tensor,
                   NonfiniteFault* f) const;
  // The context for work every rank repeats on the whole batch.
  StepContext Repeated(const StepContext& ctx) const;

  BatchGroup& group_;
  int64_t begin_ = 0, end_ = 0;  // this rank's shard of the current batch
  std::vector<Tensor> acts_;     // acts_[i]: the shard of layer i's input
  std::vector<Tensor> errs_;     // errs_[i]: the shard of the error at layer i's input
  std::vector<Tensor> full_in_, full_out_;  // whole-batch input / output of kCoupled layers
  Tensor logits_, dlogits_, dy_, dx_, gc_x_;
};

}  // namespace pim
