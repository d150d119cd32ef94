// Numeric fault checks: a scan for NaN/Inf and the messages naming where it was found.
#include "pimtrain/train/numeric_guard.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace pim {
namespace {

const char* StageAbbrev(Stage s) {
  switch (s) {
    case Stage::kForward: return "FP";
    case Stage::kBackward: return "BP";
    case Stage::kGradient: return "GC";
    case Stage::kUpdate: return "WU";
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

}  // namespace

std::string NonfiniteFault::Describe() const {
  std::string what = std::isnan(value) ? "NaN" : value > 0 ? "+Inf" : "-Inf";
  std::string where = layer < 0 ? std::string("the training loss")
                                : "layer " + std::to_string(layer) + " (" + layer_summary + ") " +
                                      tensor + " [element " + std::to_string(index) + "]";
  return what + " in " + where + " at stage " + StageAbbrev(stage) + " (" +
         StageName(stage) + "), step " + std::to_string(step) + " (epoch " +
         std::to_string(epoch + 1) + ")";
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
