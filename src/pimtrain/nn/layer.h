// Layer role: one network layer with the four training stages kept apart (FP, BP, GC, WU).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/nn/tensor.h"

namespace pim {

enum class Mode { kTrain, kEval };

class StagedMatmul;
class BatchGroup;

// A trainable tensor and its gradient (same shape). GC writes `grad` (overwrites, no
// accumulation across steps); the optimizer reads it in WU.
struct Parameter {
  std::string name;  // "weight", "bias", "gamma", "beta"
  Tensor value;
  Tensor grad;
};

// Per-step context handed to every stage.
struct StepContext {
  uint64_t seed = 0;    // run seed
  int64_t step = 0;     // global training step (batches since the start of the run)
  int64_t epoch = 0;
  Mode mode = Mode::kTrain;
  ThreadPool* pool = nullptr;
  // Data-parallel runs (docs/scaling.md): the ranks that split this batch (nullptr: one process
  // holds the whole batch). Stages then see this rank's shard of the samples, and a reduction
  // over the batch goes through the group.
  BatchGroup* group = nullptr;
  // False on the ranks other than 0 for work every rank repeats on the whole batch (GC, WU,
  // layers run unsplit): its hardware actions are counted once, by rank 0.
  bool record_counts = true;
  // A calibration pass (PIM-QAT's BN calibration: forward passes that only re-estimate
  // statistics): the macros' FP actions are counted under Stage::kCalibration.
  bool calibration = false;
  // GC in a data-parallel run (docs/scaling.md): the ranks that split a weighted layer's
  // gradient product dW = X^T dY by dW's rows, each computing its block over the whole batch,
  // the blocks then gathered (bit copies). Only where each element of dW is the same whatever
  // rows share the call (a macro's exact integer sums); nullptr: one process computes it all.
  BatchGroup* gradient_group = nullptr;
};

// How a layer's FP and BP depend on the batch. kPerSample: each sample's output and input error
// depend on that sample alone (and the weights), so the ranks of a data-parallel run each run
// their shard. kCoupled (the default, always correct): statistics over the batch (batch norm)
// or draws keyed by the position in the batch (dropout); the data-parallel step runs such a
// layer on the whole batch gathered on every rank.
enum class BatchCoupling { kPerSample, kCoupled };

// The pool a stage runs its parallel loops on (the process-wide one when the context has none).
inline ThreadPool& PoolOf(const StepContext& ctx) { return ctx.pool ? *ctx.pool : DefaultPool(); }

class Layer {
 public:
  static constexpr const char* kRoleName = "layer";
  virtual ~Layer() = default;

  // Called once before use with the per-sample input shape (no batch dimension, channels last:
  // (H, W, C) for images, (F) for vectors). Creates and initializes the parameters
  // deterministically from `init_key` and returns the per-sample output shape. Throws
  // ConfigError (naming the layer) when the input shape does not fit.
  virtual Shape Build(const Shape& input, uint64_t init_key) = 0;

  // FP. `x` is (N, input...) and must stay alive and unchanged until this step's backward
  // stages are done (layers may keep a pointer to it). Resizes and fills `y`.
  virtual void Forward(const Tensor& x, Tensor& y, const StepContext& ctx) = 0;

  // BP: the error at this layer's input from the error at its output. Resizes and fills `dx`.
  // Only called after Forward in the same step with Mode::kTrain.
  virtual void PropagateError(const Tensor& dy, Tensor& dx, const StepContext& ctx) = 0;

  // GC: gradients of this layer's parameters from its output error (writes Parameter::grad).
  virtual void ComputeGradient(const Tensor& dy, const StepContext& ctx) {}

  // See BatchCoupling. A layer that returns kPerSample and has parameters implements
  // ComputeGradientForBatch.
  virtual BatchCoupling batch_coupling() const { return BatchCoupling::kCoupled; }
  // GC over a whole batch `x` (N, input...) of which the last Forward saw only a shard: the same
  // gradients ComputeGradient(dy) gives after Forward(x). Leaves the layer ready for
  // PropagateError of the shard it last ran forward.
  virtual void ComputeGradientForBatch(const Tensor& x, const Tensor& dy,
                                       const StepContext& ctx) {
    PIM_CHECK_MSG(false, "ComputeGradientForBatch on a layer that does not split its batch");
  }

  // WU: called after the optimizer has written new parameter values, so that a layer can
  // write them into its storage (e.g. reprogram a macro). No-op for FP32 layers.
  virtual void CommitUpdate(const StepContext& ctx) {}

  // Trainable parameters (stable order) and non-trainable state saved in checkpoints.
  virtual std::vector<Parameter*> Parameters() { return {}; }
  virtual std::vector<std::pair<std::string, Tensor*>> Buffers() { return {}; }

  // The weighted products of this layer (linear, conv2d), which a PIM macro can run; nullptr for
  // layers without weights. After attaching a macro, call CommitUpdate to program it.
  virtual StagedMatmul* matmul() { return nullptr; }

  // Layers that read several tensors (add, concat, attention products; used in graph models).
  // num_inputs(): 1 for ordinary layers, k for exactly k inputs, -1 for any number >= 2. The
  // defaults forward the single-input stages, so a one-input layer needs none of these.
  virtual int num_inputs() const { return 1; }
  virtual Shape BuildInputs(const std::vector<Shape>& inputs, uint64_t init_key) {
    return Build(inputs.at(0), init_key);
  }
  virtual void ForwardInputs(const std::vector<const Tensor*>& xs, Tensor& y,
                             const StepContext& ctx) {
    Forward(*xs.at(0), y, ctx);
  }
  // BP into one error tensor per input (each resized and overwritten).
  virtual void PropagateErrorInputs(const Tensor& dy, const std::vector<Tensor*>& dxs,
                                    const StepContext& ctx) {
    PropagateError(dy, *dxs.at(0), ctx);
  }

  // A one-line summary such as "linear 784 -> 256".
  virtual std::string Summary() const = 0;
  // Multiply-accumulates per sample in the forward pass (for reports and benchmarks).
  virtual int64_t ForwardMacsPerSample() const { return 0; }

  // Whether any layer reads the error this layer's PropagateError writes. Network clears it for
  // the layers with no parameterized layer below them (the first linear after a flatten): their
  // input error feeds no gradient, so a weighted layer then skips its BP product, as a chip
  // would, and writes zeros into dx. True for a layer used on its own.
  void set_input_error_needed(bool needed) { input_error_needed_ = needed; }
  bool input_error_needed() const { return input_error_needed_; }

 private:
  bool input_error_needed_ = true;
};

}  // namespace pim
