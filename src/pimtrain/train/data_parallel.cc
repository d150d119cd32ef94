// DataParallel implementation: shards for the per-sample layers, gathers for every reduction.
#include "pimtrain/train/data_parallel.h"

#include <cstring>
#include <limits>

namespace pim {
namespace {

// A fault as a fixed-size record for AllGather (layer -1 in `none`: no fault on that rank).
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

void DataParallel::Agree(const NonfiniteFault* local, Network& net, const StepContext& ctx) {
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
  f.layer_summary = net.layer(f.layer).Summary();
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

const Tensor& DataParallel::Forward(Network& net, const Tensor& x, const StepContext& ctx) {
  const int n = net.size();
  const int64_t batch = x.shape()[0];
  begin_ = ShardBegin(batch, group_.rank(), group_.size());
  end_ = ShardBegin(batch, group_.rank() + 1, group_.size());
  acts_.resize(n + 1);
  errs_.resize(n + 1);
  full_in_.resize(n);
  full_out_.resize(n);
  StepContext shard = ctx;
  shard.group = &group_;
  const StepContext rep = Repeated(ctx);
  SliceRows(x, begin_, end_, acts_[0]);
  for (int i = 0; i < n; ++i) {
    Layer& layer = net.layer(i);
    if (layer.batch_coupling() == BatchCoupling::kPerSample) {
      layer.Forward(acts_[i], acts_[i + 1], shard);
      continue;
    }
    // The whole batch in: the data itself for the first layer, a gather otherwise.
    const Tensor* in = &x;
    if (i > 0) {
      GatherRows(acts_[i], group_, full_in_[i]);
      in = &full_in_[i];
    }
    layer.Forward(*in, full_out_[i], rep);
    SliceRows(full_out_[i], begin_, end_, acts_[i + 1]);
  }
  GatherRows(acts_[n], group_, logits_);
  return logits_;
}

StepResult DataParallel::TrainStep(Network& net, const Tensor& x, const int32_t* labels,
                                   Loss& loss, Optimizer& opt, double lr,
                                   const StepContext& ctx) {
  const int n = net.size();
  // FP
  Forward(net, x, ctx);
  StepContext shard = ctx;
  shard.group = &group_;
  const StepContext rep = Repeated(ctx);
  const auto per_sample = [&](int i) {
    return net.layer(i).batch_coupling() == BatchCoupling::kPerSample;
  };
  // The faults one process finds, in its order: every layer's output (layer 0 first), the loss,
  // then from the top layer down its gradients (the same on every rank) and its input error.
  {
    NonfiniteFault f;
    bool found = false;
    for (int i = 0; i < n && !found; ++i) {
      found = FindInShard(acts_[i + 1], i, Stage::kForward, "output", &f);
    }
    Agree(found ? &f : nullptr, net, ctx);
  }
  LossResult result = loss.Compute(logits_, labels, &dlogits_);
  CheckLossFinite(result.loss_sum, ctx);
  SliceRows(dlogits_, begin_, end_, errs_[n]);
  // BP and GC, top layer first; the input layer's error is never needed.
  for (int i = n - 1; i >= 0; --i) {
    Layer& layer = net.layer(i);
    const bool has_parameters = !layer.Parameters().empty();
    if (!per_sample(i) || has_parameters) GatherRows(errs_[i + 1], group_, dy_);
    if (!per_sample(i)) {
      layer.ComputeGradient(dy_, rep);
      for (Parameter* p : layer.Parameters()) {
        CheckFinite(p->grad, net, i, Stage::kGradient, p->name + " gradient", ctx);
      }
      if (i > 0) {
        layer.PropagateError(dy_, dx_, rep);
        CheckFinite(dx_, net, i, Stage::kBackward, "input error", ctx);  // the same everywhere
        SliceRows(dx_, begin_, end_, errs_[i]);
      }
      continue;
    }
    if (has_parameters) {
      // The whole batch's input: the data, a coupled layer's whole output, or a gather.
      const Tensor* x_full = &x;
      if (i > 0) {
        if (!per_sample(i - 1)) {
          x_full = &full_out_[i - 1];
        } else {
          GatherRows(acts_[i], group_, gc_x_);
          x_full = &gc_x_;
        }
      }
      layer.ComputeGradientForBatch(*x_full, dy_, rep);
      for (Parameter* p : layer.Parameters()) {
        CheckFinite(p->grad, net, i, Stage::kGradient, p->name + " gradient", ctx);
      }
    }
    if (i > 0) {
      layer.PropagateError(errs_[i + 1], errs_[i], shard);
      NonfiniteFault f;
      const bool found = FindInShard(errs_[i], i, Stage::kBackward, "input error", &f);
      Agree(found ? &f : nullptr, net, ctx);
    }
  }
  // WU, the same on every rank.
  opt.Step(lr);
  for (int i = 0; i < n; ++i) net.layer(i).CommitUpdate(rep);
  return {result.loss_sum, result.correct};
}

}  // namespace pim
