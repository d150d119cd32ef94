// DataParallel: one training step (backprop) or evaluation forward pass with the batch split
// over the ranks of a BatchGroup, bit-identical to one process holding the whole batch
// (docs/scaling.md). Walks stacks and graph models alike, node by node in Network's order.
#pragma once

#include <cstdint>
#include <utility>
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
//   BP of the kPerSample nodes (linear and conv2d on a macro, relu, pooling, flatten, add,
//   concat, ...) on its shard, rows [ShardBegin(r), ShardBegin(r + 1));
// - a macro scales inputs per tensor: the shard's max |x| goes through AllMax (exact);
// - GC of a weighted kPerSample layer: its input and output error are gathered, and each rank
//   computes a block of dW's rows over the whole batch (StepContext::gradient_group; exact
//   integer sums on a macro); the blocks are gathered;
// - every other reduction over the batch runs on the whole batch, gathered on every rank, in the
//   code and the order of one process: bias gradients, the loss and its metrics, and whole
//   kCoupled nodes (batch norm, dropout, FP32 weighted layers); the GC of a kCoupled node with
//   parameters (off a macro) runs on one rank, its owner (the ranks take the nodes in turn,
//   balanced by forward MACs), whose gradients are then gathered (bit copies);
// - fan-out: a node read by several consumers gets the sum of their errors, in consumer order,
//   row by row on the shards (the same per-element sums as one process);
// - WU is repeated by every rank on the same gradients, so the weights stay the same everywhere.
// Gathers copy bits, so no float sum depends on the split: results equal one process's for any
// rank count. Counts: each rank counts its shard's FP and BP actions and its block of GC; the
// repeated work (WU, coupled nodes, dY written into the GC array) is counted by rank 0 alone
// (StepContext::record_counts), and the trainer sums the ranks' counts at the epoch's end.
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
  // Sends the gradients of node i's parameters from rank `owner` to every rank (bit copies).
  void ShareGradients(int i, int owner);
  // Shard bounds, buffers and the consumers of every node, for a batch of `batch`.
  void Prepare(Network& net, const Tensor& x);
  bool PerSample(int i) const {
    return net_->layer(i).batch_coupling() == BatchCoupling::kPerSample;
  }
  // This rank's rows of node j's output (j = -1: the data).
  const Tensor& Shard(int j) const { return j < 0 ? x_shard_ : acts_[j]; }
  // The whole batch of node j's output (j = -1: the data): a coupled node's own output, else
  // gathered (collective; once per step and node).
  const Tensor& Whole(int j);
  // Where node `node`'s BP writes the (shard) error of its input `slot`.
  Tensor* ErrorSlot(int node, int slot);
  // errs_[i] = the sum of the errors node i's consumers propagated to it (fan-out only).
  void SumFanOut(int i, const StepContext& ctx);
  // Throws the same NonfiniteFound on every rank if any rank's `local` fault is set (the lowest
  // layer wins, then the lowest rank, i.e. the first element in one process's batch order).
  void Agree(const NonfiniteFault* local, const StepContext& ctx);
  bool FindInShard(const Tensor& t, int layer, Stage stage, const char* tensor,
                   NonfiniteFault* f) const;
  // The context for work every rank repeats on the whole batch.
  StepContext Repeated(const StepContext& ctx) const;

  BatchGroup& group_;
  Network* net_ = nullptr;
  const Tensor* x_ = nullptr;
  int64_t batch_ = 0;            // samples in the current batch
  int64_t begin_ = 0, end_ = 0;  // this rank's shard of the current batch
  Tensor x_shard_;
  std::vector<Tensor> acts_;       // acts_[i]: the shard of node i's output
  std::vector<Tensor> whole_;      // whole_[i]: node i's whole output (see Whole)
  std::vector<char> whole_valid_;  // whether whole_[i] holds this step's
  std::vector<Tensor> errs_;       // errs_[i]: the shard of the error at node i's output
  std::vector<std::vector<Tensor>> edge_errs_;  // [node][slot], where the producer fans out
  std::vector<std::vector<std::pair<int, int>>> consumers_;  // per node: (consumer, slot)
  // Per node: the rank that computes a kCoupled node's GC (-1: every rank, or not such a node).
  std::vector<int> gc_owner_;
  std::vector<Tensor> full_dx_;    // a coupled node's whole input errors, per slot
  Tensor sink_;                    // errors at the network input (never read)
  Tensor dlogits_, dy_;
  std::vector<float> share_;       // ShareGradients' buffer
};

}  // namespace pim
