// DataParallel implementation: shards for the per-sample nodes, gathers for every reduction.
#include "pimtrain/train/data_parallel.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

#include "pimtrain/nn/staged_matmul.h"

namespace pim {
namespace {

// A fault as a fixed-size record for AllGather (layer max: no fault on that rank).
struct FaultRecord {
  int64_t layer = std::numeric_limits<int64_t>::max();  // max: none
  int64_t index = 0;
  int64_t stage = 0;
  float value = 0;
  int32_t is_input_error = 0;
};

}  // namespace

StepContext DataParallel::Repeated(const StepContext& ctx) const {
  StepContext rep = ctx;
  rep.group = nullptr;  // the whole batch is here: nothing to reduce over the ranks
  rep.record_counts = group_.rank() == 0;
  return rep;
}

void DataParallel::Agree(const NonfiniteFault* local, const StepContext& ctx) {
  FaultRecord mine;
  if (local != nullptr) {
    mine.layer = local->layer;
    mine.index = local->index;
    mine.stage = static_cast<int64_t>(local->stage);
    mine.value = local->value;
    mine.is_input_error = local->tensor == "input error" ? 1 : 0;
  }
  // One max over the ranks when nothing is wrong.
  if (group_.AllMax(local != nullptr ? 1.0f : 0.0f) == 0.0f) return;
  const std::string all =
      group_.AllGather(std::string_view(reinterpret_cast<const char*>(&mine), sizeof(mine)));
  FaultRecord best;
  for (size_t r = 0; (r + 1) * sizeof(FaultRecord) <= all.size(); ++r) {
    FaultRecord f;
    std::memcpy(&f, all.data() + r * sizeof(FaultRecord), sizeof(f));
    if (f.layer < best.layer) best = f;  // ties keep the lower rank: the earlier sample
  }
  NonfiniteFault f;
  f.layer = static_cast<int>(best.layer);
  f.layer_summary = net_->layer(f.layer).Summary();
  f.stage = static_cast<Stage>(best.stage);
  f.tensor = best.is_input_error != 0 ? "input error" : "output";
  f.index = best.index;
  f.value = best.value;
  f.step = ctx.step;
  f.epoch = ctx.epoch;
  throw NonfiniteFound(std::move(f));
}

// The first non-finite element of the shard `t` of layer `layer`'s tensor, with its index in
// the whole batch; false if none.
bool DataParallel::FindInShard(const Tensor& t, int layer, Stage stage, const char* tensor,
                               NonfiniteFault* f) const {
  const int64_t bad = FirstNonfinite(t.data(), t.numel());
  if (bad < 0) return false;
  f->layer = layer;
  f->stage = stage;
  f->tensor = tensor;
  f->index = begin_ * t.shape().DropFirst().numel() + bad;
  f->value = t.data()[bad];
  return true;
}

void DataParallel::Prepare(Network& net, const Tensor& x) {
  const int n = net.size();
  const int64_t batch = x.shape()[0];
  net_ = &net;
  x_ = &x;
  batch_ = batch;
  begin_ = ShardBegin(batch, group_.rank(), group_.size());
  end_ = ShardBegin(batch, group_.rank() + 1, group_.size());
  SliceRows(x, begin_, end_, x_shard_);
  acts_.resize(n);
  whole_.resize(n);
  whole_valid_.assign(n, 0);
  errs_.resize(n);
  if (static_cast<int>(consumers_.size()) != n) {
    // GC owners of the coupled nodes with parameters off a macro (FP32 linear / conv2d, batch
    // and layer norm, position embedding): each to the rank with the least forward MACs so far
    // (ties: the lowest rank), in node order. Their GC is the code of one process on the whole
    // batch, whichever rank runs it. Nodes on a macro keep their counted GC on every rank.
    gc_owner_.assign(n, -1);
    std::vector<int64_t> load(group_.size(), 0);
    for (int i = 0; i < n; ++i) {
      Layer& l = net.layer(i);
      if (l.batch_coupling() == BatchCoupling::kPerSample || l.Parameters().empty()) continue;
      if (l.matmul() != nullptr && l.matmul()->on_macro()) continue;
      const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
      gc_owner_[i] = r;
      load[r] += std::max<int64_t>(1, l.ForwardMacsPerSample());
    }
    consumers_.assign(n, {});
    edge_errs_.assign(n, {});
    for (int i = 0; i < n; ++i) {
      const auto& in = net.node_inputs(i);
      edge_errs_[i].resize(in.size());
      for (size_t k = 0; k < in.size(); ++k) {
        if (in[k] >= 0) consumers_[in[k]].emplace_back(i, static_cast<int>(k));
      }
    }
  }
}

void DataParallel::ShareGradients(int i, int owner) {
  const auto params = net_->layer(i).Parameters();
  int64_t total = 0;
  for (const Parameter* p : params) total += p->grad.numel();
  share_.resize(static_cast<size_t>(total));
  if (group_.rank() == owner) {
    int64_t at = 0;
    for (const Parameter* p : params) {
      std::memcpy(share_.data() + at, p->grad.data(),
                  static_cast<size_t>(p->grad.numel()) * sizeof(float));
      at += p->grad.numel();
    }
  }
  // Only the owner sends (its part starts at offset 0: the ranks before it send nothing).
  std::vector<int64_t> bytes(static_cast<size_t>(group_.size()), 0);
  bytes[static_cast<size_t>(owner)] = total * static_cast<int64_t>(sizeof(float));
  group_.AllGatherInto(nullptr, bytes, share_.data());
  if (group_.rank() == owner) return;
  int64_t at = 0;
  for (Parameter* p : params) {
    std::memcpy(p->grad.data(), share_.data() + at,
                static_cast<size_t>(p->grad.numel()) * sizeof(float));
    at += p->grad.numel();
  }
}

const Tensor& DataParallel::Whole(int j) {
  if (j < 0) return *x_;
  if (!whole_valid_[j]) {
    GatherRows(acts_[j], batch_, group_, whole_[j]);
    whole_valid_[j] = 1;
  }
  return whole_[j];
}

Tensor* DataParallel::ErrorSlot(int node, int slot) {
  const int j = net_->node_inputs(node)[slot];
  if (j < 0) return &sink_;
  if (consumers_[j].size() == 1) return &errs_[j];
  return &edge_errs_[node][slot];
}

void DataParallel::SumFanOut(int i, const StepContext& ctx) {
  const auto& cons = consumers_[i];
  if (cons.size() <= 1) return;
  // As Network::GatherError: per element, the consumers' contributions in consumer order.
  Tensor& out = errs_[i];
  out.Resize(acts_[i].shape());
  std::vector<const float*> parts;
  for (const auto& [c, k] : cons) {
    PIM_CHECK_MSG(edge_errs_[c][k].numel() == out.numel(), "graph edge error shape");
    parts.push_back(edge_errs_[c][k].data());
  }
  SumErrorsInOrder(parts, out, ctx);
}

const Tensor& DataParallel::Forward(Network& net, const Tensor& x, const StepContext& ctx) {
  Prepare(net, x);
  const int n = net.size();
  StepContext shard = ctx;
  shard.group = &group_;
  const StepContext rep = Repeated(ctx);
  std::vector<const Tensor*> xs;
  for (int i = 0; i < n; ++i) {
    Layer& layer = net.layer(i);
    const auto& in = net.node_inputs(i);
    const bool single = in.size() == 1 && layer.num_inputs() == 1;
    if (PerSample(i)) {
      if (single) {
        layer.Forward(Shard(in[0]), acts_[i], shard);
      } else {
        xs.clear();
        for (int j : in) xs.push_back(&Shard(j));
        layer.ForwardInputs(xs, acts_[i], shard);
      }
      continue;
    }
    // The whole batch in (the data itself, a coupled node's output, or a gather), the node run
    // as one process runs it, this rank's rows kept.
    xs.clear();
    for (int j : in) xs.push_back(&Whole(j));
    if (single) {
      layer.Forward(*xs[0], whole_[i], rep);
    } else {
      layer.ForwardInputs(xs, whole_[i], rep);
    }
    whole_valid_[i] = 1;
    SliceRows(whole_[i], begin_, end_, acts_[i]);
  }
  return Whole(n - 1);
}

StepResult DataParallel::TrainStep(Network& net, const Tensor& x, const int32_t* labels,
                                   Loss& loss, Optimizer& opt, double lr,
                                   const StepContext& ctx) {
  const int n = net.size();
  // FP
  const Tensor& logits = Forward(net, x, ctx);
  StepContext shard = ctx;
  shard.group = &group_;
  const StepContext rep = Repeated(ctx);
  // GC of the weighted per-sample layers: each rank a block of dW's rows, each counting its own.
  StepContext gc = rep;
  gc.gradient_group = &group_;
  gc.record_counts = true;
  // The faults one process finds, in its order: every node's output (node 0 first), the loss,
  // then from the top node down its gradients (the same on every rank) and its input errors.
  {
    NonfiniteFault f;
    bool found = false;
    for (int i = 0; i < n && !found; ++i) {
      found = FindInShard(acts_[i], i, Stage::kForward, "output", &f);
    }
    Agree(found ? &f : nullptr, ctx);
  }
  LossResult result = loss.Compute(logits, labels, &dlogits_);
  CheckLossFinite(result.loss_sum, ctx);
  SliceRows(dlogits_, begin_, end_, errs_[n - 1]);
  // BP and GC, top node first; errors at the network input are never needed.
  std::vector<Tensor*> dxs;
  for (int i = n - 1; i >= 0; --i) {
    Layer& layer = net.layer(i);
    const auto& in = net.node_inputs(i);
    const bool single = in.size() == 1 && layer.num_inputs() == 1;
    const bool propagates = net.PropagatesError(i);
    SumFanOut(i, ctx);
    if (!PerSample(i)) {
      GatherRows(errs_[i], batch_, group_, dy_);
      if (gc_owner_[i] < 0) {
        layer.ComputeGradient(dy_, rep);
      } else {
        if (group_.rank() == gc_owner_[i]) layer.ComputeGradient(dy_, rep);
        ShareGradients(i, gc_owner_[i]);
      }
      for (Parameter* p : layer.Parameters()) {
        CheckFinite(p->grad, net, i, Stage::kGradient, p->name + " gradient", ctx);
      }
      if (!propagates) continue;
      full_dx_.resize(in.size());
      if (single) {
        layer.PropagateError(dy_, full_dx_[0], rep);
      } else {
        dxs.clear();
        for (auto& t : full_dx_) dxs.push_back(&t);
        layer.PropagateErrorInputs(dy_, dxs, rep);
      }
      // The whole errors are the same everywhere: checked as one process checks them.
      for (size_t k = 0; k < in.size(); ++k) {
        if (in[k] < 0) continue;
        CheckFinite(full_dx_[k], net, i, Stage::kBackward, "input error", ctx);
        SliceRows(full_dx_[k], begin_, end_, *ErrorSlot(i, static_cast<int>(k)));
      }
      continue;
    }
    if (!layer.Parameters().empty()) {
      PIM_CHECK_MSG(single, "a per-sample layer with parameters reads one input");
      GatherRows(errs_[i], batch_, group_, dy_);
      layer.ComputeGradientForBatch(Whole(in[0]), dy_, gc);
      for (Parameter* p : layer.Parameters()) {
        CheckFinite(p->grad, net, i, Stage::kGradient, p->name + " gradient", ctx);
      }
    }
    if (!propagates) continue;
    if (single) {
      layer.PropagateError(errs_[i], *ErrorSlot(i, 0), shard);
    } else {
      dxs.clear();
      for (size_t k = 0; k < in.size(); ++k) dxs.push_back(ErrorSlot(i, static_cast<int>(k)));
      layer.PropagateErrorInputs(errs_[i], dxs, shard);
    }
    for (size_t k = 0; k < in.size(); ++k) {
      if (in[k] < 0) continue;
      NonfiniteFault f;
      const bool found = FindInShard(*ErrorSlot(i, static_cast<int>(k)), i, Stage::kBackward,
                                     "input error", &f);
      Agree(found ? &f : nullptr, ctx);
    }
  }
  // WU, the same on every rank.
  opt.Step(lr);
  for (int i = 0; i < n; ++i) net.layer(i).CommitUpdate(rep);
  return {result.loss_sum, result.correct};
}

}  // namespace pim
