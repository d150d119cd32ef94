// The four training stages every PIM training chip runs, each on its own hardware path.
#pragma once

namespace pim {

enum class Stage {
  kForward = 0,   // FP: Y = X W
  kBackward = 1,  // BP: error propagation, dX = dY W^T
  kGradient = 2,  // GC: gradient calculation, dW = X^T dY
  kUpdate = 3,    // WU: weight update, written back into storage
};
inline constexpr int kNumStages = 4;

inline const char* StageName(Stage s) {
  switch (s) {
    case Stage::kForward: return "forward";
    case Stage::kBackward: return "backward";
    case Stage::kGradient: return "gradient";
    case Stage::kUpdate: return "update";
  }
  return "?";
}

}  // namespace pim
