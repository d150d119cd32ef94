// `backprop`: the exact chain rule; every layer's output error comes from the layer above.
#include "pimtrain/base/registry.h"
#include "pimtrain/train/algorithm.h"
#include "pimtrain/train/numeric_guard.h"

namespace pim {
namespace {

class Backprop final : public TrainingAlgorithm {
 public:
  explicit Backprop(const ConfigNode&) {}
  static Schema GetSchema() { return Schema(); }

  StepResult TrainStep(Network& net, const Tensor& x, const int32_t* labels, Loss& loss,
                       Optimizer& opt, double lr, const StepContext& ctx) override {
    // FP. Non-finite values are caught where they first appear and before WU, so the step can
    // still be skipped (NonfiniteFound; the trainer decides). The scans cost O(elements), a
    // small fraction of the products that made them: each node's output is scanned right after
    // its FP, while it is still in cache, and the first non-finite one in node order is
    // reported once the whole FP has run (what CheckActivationsFinite after the FP reports:
    // every node's FP has written its state, e.g. batch-norm running statistics, as before),
    // each error right after its BP.
    int first_bad = -1;
    const Tensor& logits = net.Forward(x, ctx, [&](int i) {
      if (first_bad < 0) {
        const Tensor& y = net.activation(i + 1);
        if (FirstNonfinite(y.data(), y.numel()) >= 0) first_bad = i;
      }
    });
    if (first_bad >= 0) {
      CheckFinite(net.activation(first_bad + 1), net, first_bad, Stage::kForward, "output", ctx);
    }
    const int n = net.size();
    LossResult lr_result = loss.Compute(logits, labels, &net.error(n));
    CheckLossFinite(lr_result.loss_sum, ctx);
    // BP and GC, top layer first. The input layer's error is never needed.
    for (int i = n - 1; i >= 0; --i) {
      Layer& layer = net.layer(i);
      net.GatherError(i, ctx);  // graph fan-out: sum the consumers' errors (no-op in a stack)
      layer.ComputeGradient(net.error(i + 1), ctx);
      for (Parameter* p : layer.Parameters()) {
        CheckFinite(p->grad, net, i, Stage::kGradient, p->name + " gradient", ctx);
      }
      if (net.PropagatesError(i)) {
        net.PropagateError(i, ctx);
        for (const Tensor* e : net.PropagatedErrors(i)) {
          CheckFinite(*e, net, i, Stage::kBackward, "input error", ctx);
        }
      }
    }
    // WU
    opt.Step(lr);
    for (int i = 0; i < n; ++i) net.layer(i).CommitUpdate(ctx);
    return {lr_result.loss_sum, lr_result.correct};
  }
};

PIM_REGISTER(TrainingAlgorithm, Backprop, "backprop",
             "error backpropagation: each layer's error from the layer above (exact gradient)");

}  // namespace
}  // namespace pim
