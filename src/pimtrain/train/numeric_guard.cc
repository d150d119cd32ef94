// Numeric fault checks: a scan for NaN/Inf and the messages naming where it was found.
#include "pimtrain/train/numeric_guard.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstdio>
#include <cstring>

#include "pimtrain/macro/analog_config.h"
#include "pimtrain/nn/staged_matmul.h"

namespace pim {
namespace {

const char* StageAbbrev(Stage s) {
  switch (s) {
    case Stage::kForward: return "FP";
    case Stage::kBackward: return "BP";
    case Stage::kGradient: return "GC";
    case Stage::kUpdate: return "WU";
    case Stage::kCalibration: return "calibration";
  }
  return "?";
}

NonfiniteFault MakeFault(const StepContext& ctx, Stage stage) {
  NonfiniteFault f;
  f.stage = stage;
  f.step = ctx.step;
  f.epoch = ctx.epoch;
  return f;
}

std::string Short(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g", v);
  return buf;
}

// Fills the layer's magnitudes and whether it runs on an analog macro.
void DescribeLayer(Network& net, int layer, NonfiniteFault& f) {
  Layer& l = net.layer(layer);
  float w = 0;
  bool any = false;
  for (Parameter* p : l.Parameters()) {
    w = std::max(w, MaxFiniteAbsOf(p->value.data(), p->value.numel()));
    any = true;
  }
  if (any) f.max_abs_weight = w;
  const Tensor& in = net.activation(layer);
  const Tensor& out = net.activation(layer + 1);
  f.max_abs_input = MaxFiniteAbsOf(in.data(), in.numel());
  f.max_abs_output = MaxFiniteAbsOf(out.data(), out.numel());
  StagedMatmul* m = l.matmul();
  f.analog = m != nullptr && m->on_macro() && dynamic_cast<AnalogTunable*>(m->macro()) != nullptr;
}

}  // namespace

float MaxFiniteAbsOf(const float* x, int64_t n) {
  float m = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (a <= std::numeric_limits<float>::max()) m = std::max(m, a);  // false for NaN and Inf
  }
  return m;
}

std::string NonfiniteFault::Advice() const {
  std::string knobs;
  if (analog && stage == Stage::kForward) {
    knobs = "the ADC range first (pim.macro.adc.range: calibrated; with train.algorithm pim_qat, "
            "calibrate_every / recalibrate_clipped), then the learning rate "
            "(train.optimizer.learning_rate) and the noise (pim.macro.thermal_noise.sigma)";
  } else if (analog) {
    knobs = "the learning rate (train.optimizer.learning_rate), then the ADC range "
            "(pim.macro.adc.range) and the noise (pim.macro.thermal_noise.sigma)";
  } else {
    knobs = "the learning rate (train.optimizer.learning_rate) and the data scale "
            "(data.normalize)";
  }
  return "look at " + knobs + "; docs/analog.md, \"When training diverges\"";
}

std::string NonfiniteFault::Describe() const {
  std::string what = std::isnan(value) ? "NaN" : value > 0 ? "+Inf" : "-Inf";
  std::string where = layer < 0 ? std::string("the training loss")
                                : "layer " + std::to_string(layer) + " (" + layer_summary + ") " +
                                      tensor + " [element " + std::to_string(index) + "]";
  return what + " in " + where + " at stage " + StageAbbrev(stage) + " (" +
         StageName(stage) + "), step " + std::to_string(step) + " (epoch " +
         std::to_string(epoch + 1) + ")" + Growth();
}

std::string NonfiniteFault::Growth() const {
  std::string g;
  auto add = [&](const char* name, float v) {
    if (v < 0) return;
    g += (g.empty() ? "; largest finite |" : ", |") + std::string(name) + "| " + Short(v);
  };
  add("weight", max_abs_weight);
  add("input", max_abs_input);
  add("output", max_abs_output);
  if (last_finite_step >= 0) {
    g += "; last finite loss " + Short(last_finite_loss) + " (step " +
         std::to_string(last_finite_step) + ")";
  }
  return g;
}

int64_t FirstNonfinite(const float* x, int64_t n) {
  // IEEE 754 binary32: NaN and +-Inf are exactly the patterns whose 8 exponent bits are all 1.
  constexpr uint32_t kExponent = 0x7f800000u;
  constexpr int64_t kBlock = 4096;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    uint32_t any = 0;
    for (int64_t i = b; i < e; ++i) {
      uint32_t bits;
      std::memcpy(&bits, x + i, sizeof(bits));
      any |= static_cast<uint32_t>((bits & kExponent) == kExponent);
    }
    if (any != 0) {
      for (int64_t i = b; i < e; ++i) {
        if (!std::isfinite(x[i])) return i;
      }
    }
  }
  return -1;
}

void CheckFinite(const Tensor& t, Network& net, int layer, Stage stage, const std::string& tensor,
                 const StepContext& ctx) {
  const int64_t i = FirstNonfinite(t.data(), t.numel());
  if (i < 0) return;
  NonfiniteFault f = MakeFault(ctx, stage);
  f.layer = layer;
  f.layer_summary = net.layer(layer).Summary();
  f.tensor = tensor;
  f.index = i;
  f.value = t.data()[i];
  DescribeLayer(net, layer, f);
  throw NonfiniteFound(std::move(f));
}

void CheckLossFinite(double loss_sum, const StepContext& ctx) {
  if (std::isfinite(loss_sum)) return;
  NonfiniteFault f = MakeFault(ctx, Stage::kForward);
  f.tensor = "loss";
  f.value = static_cast<float>(loss_sum);
  throw NonfiniteFound(std::move(f));
}

void CheckActivationsFinite(Network& net, const StepContext& ctx) {
  for (int i = 0; i < net.size(); ++i) {
    CheckFinite(net.activation(i + 1), net, i, Stage::kForward, "output", ctx);
  }
}

void CheckStateFinite(Network& net, const StepContext& ctx) {
  for (int i = 0; i < net.size(); ++i) {
    for (Parameter* p : net.layer(i).Parameters()) {
      CheckFinite(p->value, net, i, Stage::kUpdate, p->name, ctx);
    }
    for (auto& [name, t] : net.layer(i).Buffers()) {
      CheckFinite(*t, net, i, Stage::kForward, name, ctx);
    }
  }
}

}  // namespace pim
