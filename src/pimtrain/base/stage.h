// The four training stages every PIM training chip runs, each on its own hardware path, and the
// calibration passes (ADC range search, BN statistics) that some chips and algorithms add.
#pragma once

namespace pim {

enum class Stage {
  kForward = 0,   // FP: Y = X W
  kBackward = 1,  // BP: error propagation, dX = dY W^T
  kGradient = 2,  // GC: gradient calculation, dW = X^T dY
  kUpdate = 3,    // WU: weight update, written back into storage
  // Calibration passes: reads and digital reference work that set read-out ranges or batch-norm
  // statistics rather than compute the network (docs/cost.md, "Calibration passes"); priced
  // like FP, serial with the compute.
  kCalibration = 4,
};
inline constexpr int kNumStages = 5;

inline const char* StageName(Stage s) {
  switch (s) {
    case Stage::kForward: return "forward";
    case Stage::kBackward: return "backward";
    case Stage::kGradient: return "gradient";
    case Stage::kUpdate: return "update";
    case Stage::kCalibration: return "calibration";
  }
  return "?";
}

}  // namespace pim
