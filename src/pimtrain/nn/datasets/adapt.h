// Adapting byte images to a model's input: pad or resize to a square side, replicate channels
// (Fashion-MNIST's 28x28x1 as 32x32x3 for CIFAR-shaped networks).
#pragma once

#include <cstdint>
#include <string>

#include "pimtrain/base/config.h"
#include "pimtrain/base/schema.h"
#include "pimtrain/nn/datasets/idx.h"

namespace pim {

enum class Fit {
  kPad,     // centred, zero (black) border; the side must not shrink
  kResize,  // bilinear, half-pixel centres (PyTorch's interpolate, align_corners=False)
};

struct ImageAdaptation {
  int64_t size = 0;      // output height = width; 0 keeps the stored size
  Fit fit = Fit::kPad;
  int64_t channels = 0;  // 0 keeps the stored channels; else 1 -> `channels` copies
  bool active() const { return size > 0 || channels > 0; }
  static ImageAdaptation FromParams(const ConfigNode& params);
};

// Adds size, fit and channels to a data set's schema.
void AddImageAdaptationParams(Schema& schema);
// Applies `a` to every image in place. ConfigError (naming `where`) when padding would shrink the
// images or channel replication starts from more than one channel.
void AdaptImages(ByteImages& images, const ImageAdaptation& a, const std::string& where);

}  // namespace pim
