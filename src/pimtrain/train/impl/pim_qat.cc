// `pim_qat`: PIM-QAT (Jin et al., arXiv 2209.08617) on analog_crossbar layers: the ADC quantizer
// in the training loop with a straight-through estimator, forward/backward rescaling (ADC range
// and digital gain calibrated to the partial sums), adjusted-precision training, and a
// calibration mode for deployment (ADC range + BN statistics re-estimated through the noisy,
// non-linear macro). Each piece is switchable; docs/analog.md gives the equations.
#include <string>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/macro/analog_config.h"
#include "pimtrain/nn/staged_matmul.h"
#include "pimtrain/train/algorithm.h"
#include "pimtrain/train/checkpoint.h"
#include "pimtrain/train/numeric_guard.h"

namespace pim {
namespace {

class PimQat final : public TrainingAlgorithm {
 public:
  explicit PimQat(const ConfigNode& p)
      : where_(p.Where()),
        calibrate_only_(p.GetString("mode") == "calibrate"),
        adc_in_loop_(p.GetBool("adc_in_loop")),
        ste_(p.GetBool("ste_backward")),
        rescale_range_(p.GetBool("rescale_range")),
        rescale_gain_(p.GetBool("rescale_gain")),
        calibrate_every_(p.GetInt("calibrate_every")),
        recalibrate_clipped_(p.GetDouble("recalibrate_clipped")),
        adjusted_bits_(static_cast<int>(p.GetInt("adjusted_bits"))),
        init_from_(p.GetString("init_from")) {}

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Enum("mode", {"train", "calibrate"}).Default("train").Doc(
        "train: PIM-QAT training; calibrate: deployment calibration only (ADC range and gain on "
        "the first batch, BN running statistics re-estimated through the analog model, no "
        "weight update)"));
    s.Add(Param::Bool("adc_in_loop").Default(true).Doc(
        "forward through the analog read-out (ADC, noise, non-linearity); false: the ideal "
        "quantized product (digital QAT)"));
    s.Add(Param::Bool("ste_backward").Default(true).Doc(
        "straight-through estimator: errors propagate through the ideal quantized product "
        "(dQ/dv = 1), not through the ADC"));
    s.Add(Param::Bool("rescale_range").Default(true).Doc(
        "forward rescaling: calibrate each layer's ADC full scale to its partial sums"));
    s.Add(Param::Bool("rescale_gain").Default(true).Doc(
        "least-squares digital output gain g per layer, applied in FP and, consistently, to BP "
        "and GC (backward rescaling)"));
    s.Add(Param::Int("calibrate_every").Default(200).Range(1, 1 << 30).Unit("steps").Doc(
        "steps between range/gain calibrations in training"));
    s.Add(Param::Float("recalibrate_clipped").Default(0.001).Range(0.0, 1.0).Doc(
        "recalibrate a layer's ADC range and gain at the next step when more than this fraction "
        "of its forward conversions clipped in a training step (0: only every calibrate_every "
        "steps). A clipped conversion of an offset-encoded column is not a saturation: the "
        "digital offset subtraction keeps growing, so the output falls as the true product "
        "rises and the straight-through gradient has the wrong sign (docs/analog.md, \"Why "
        "PIM-QAT diverged\")"));
    s.Add(Param::Int("adjusted_bits").Default(0).Range(-8, 8).Unit("bit").Doc(
        "adjusted-precision training: ADC bits added while training (deployment uses the "
        "configured bits)"));
    s.Add(Param::String("init_from").Default("\"\"").Doc(
        "checkpoint file or run directory whose model weights start the run (fine-tuning a "
        "digitally trained model, or calibrating one for deployment)"));
    return s;
  }

  void Setup(Network& net, uint64_t seed) override {
    for (int i = 0; i < net.size(); ++i) {
      StagedMatmul* m = net.layer(i).matmul();
      if (m == nullptr || !m->on_macro()) continue;
      if (auto* t = dynamic_cast<AnalogTunable*>(m->macro())) tunables_.push_back(t);
    }
    if (tunables_.empty()) {
      throw ConfigError(where_ + ": pim_qat needs layers on an analog macro (pim.macro.impl: " +
                        "analog_crossbar)");
    }
    for (AnalogTunable* t : tunables_) {
      if (calibrate_only_) {
        t->SetReadout(Direction::kForward, AnalogTunable::Readout::kAnalog);
        t->SetAdcBitsDelta(0);
      } else {
        t->SetReadout(Direction::kForward, adc_in_loop_ ? AnalogTunable::Readout::kAnalog
                                                        : AnalogTunable::Readout::kIdeal);
        if (ste_) t->SetReadout(Direction::kTransposed, AnalogTunable::Readout::kIdeal);
        t->SetAdcBitsDelta(adjusted_bits_);
      }
    }
    if (!init_from_.empty()) {
      std::string file = init_from_;
      if (FileExists(file + "/checkpoint.bin")) file += "/checkpoint.bin";
      if (!FileExists(file)) {
        throw IoError(where_ + ".init_from: " + init_from_ + ": no such checkpoint");
      }
      NamedTensors model;
      for (int i = 0; i < net.size(); ++i) {
        const std::string prefix = "layers." + std::to_string(i) + ".";
        for (auto* p : net.layer(i).Parameters()) model.emplace_back(prefix + p->name, &p->value);
        for (auto& [name, t] : net.layer(i).Buffers()) model.emplace_back(prefix + name, t);
      }
      LoadCheckpoint(file, model, TensorMatch::kByName);
      StepContext ctx;
      ctx.seed = seed;
      for (int i = 0; i < net.size(); ++i) {
        StagedMatmul* m = net.layer(i).matmul();
        if (m == nullptr || !m->on_macro()) continue;
        net.layer(i).CommitUpdate(ctx);
        m->TakeCounts();  // set-up, not training
      }
    }
  }

  StepResult TrainStep(Network& net, const Tensor& x, const int32_t* labels, Loss& loss,
                       Optimizer& opt, double lr, const StepContext& ctx) override {
    // Forward rescaling: the ADC ranges (and gains) follow the partial sums as training moves
    // them; in calibrate mode once, on the first batch.
    const bool due = calibrate_only_ ? steps_ == 0 : steps_ % calibrate_every_ == 0;
    if (due && (rescale_range_ || rescale_gain_) && (adc_in_loop_ || calibrate_only_)) {
      for (AnalogTunable* t : tunables_) t->RequestCalibration(rescale_range_, rescale_gain_);
    }
    ++steps_;
    for (AnalogTunable* t : tunables_) t->TakeForwardClipTally();  // drop evaluation's reads
    // FP through the macros (ADC in the loop); in calibrate mode this is the whole step: the
    // batch-norm layers re-estimate their statistics from these batches.
    // A calibrate-mode step is a calibration pass (its FP actions: Stage::kCalibration).
    StepContext fctx = ctx;
    fctx.calibration = calibrate_only_;
    const Tensor& logits = net.Forward(x, fctx);
    const int n = net.size();
    LossResult r = loss.Compute(logits, labels, calibrate_only_ ? nullptr : &net.error(n));
    CheckActivationsFinite(net, ctx);
    CheckLossFinite(r.loss_sum, ctx);
    if (calibrate_only_) return {r.loss_sum, r.correct};
    // A range the partial sums have outgrown (clipping) is recalibrated at the next step, on
    // the next batch; range and gain as configured.
    if (recalibrate_clipped_ > 0 && adc_in_loop_ && (rescale_range_ || rescale_gain_)) {
      for (AnalogTunable* t : tunables_) {
        const AnalogTunable::ClipTally c = t->TakeForwardClipTally();
        const double limit = recalibrate_clipped_ * static_cast<double>(c.conversions);
        if (c.conversions > 0 && static_cast<double>(c.clipped) > limit) {
          t->RequestCalibration(rescale_range_, rescale_gain_);
        }
      }
    }
    // BP (straight-through: the macros' transposed reads are ideal) and GC, top layer first.
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
    opt.Step(lr);
    for (int i = 0; i < n; ++i) net.layer(i).CommitUpdate(ctx);
    return {r.loss_sum, r.correct};
  }

 private:
  std::string where_;
  bool calibrate_only_, adc_in_loop_, ste_, rescale_range_, rescale_gain_;
  int64_t calibrate_every_;
  double recalibrate_clipped_;
  int adjusted_bits_;
  std::string init_from_;
  std::vector<AnalogTunable*> tunables_;
  int64_t steps_ = 0;
};

PIM_REGISTER(TrainingAlgorithm, PimQat, "pim_qat",
             "PIM-QAT: ADC quantizer in the loop (STE), ADC range/gain rescaling, adjusted "
             "precision, deployment calibration of ADC range and BN statistics");

}  // namespace
}  // namespace pim
