// Pool2d: the window geometry, parameters and shape checks that max_pool2d and avg_pool2d share.
#pragma once

#include <string>

#include "pimtrain/base/config.h"
#include "pimtrain/base/error.h"
#include "pimtrain/base/schema.h"
#include "pimtrain/nn/layer.h"

namespace pim {

// Square windows of `kernel` over NHWC images, moved by `stride` (default: kernel), with a
// border of `padding` (<= kernel / 2, so every window holds at least one pixel).
class Pool2d : public Layer {
 public:
  // Each window lies inside one image.
  BatchCoupling batch_coupling() const override { return BatchCoupling::kPerSample; }

 protected:
  explicit Pool2d(const ConfigNode& p)
      : where_(p.Where()),
        k_(p.GetInt("kernel")),
        stride_(p.Has("stride") ? p.GetInt("stride") : k_),
        pad_(p.GetInt("padding")) {
    if (2 * pad_ > k_) {
      throw ConfigError(p.At("padding").Where() + ": padding " + std::to_string(pad_) +
                        " is more than half the kernel " + std::to_string(k_));
    }
  }

  // kernel, stride, padding; `padding_doc` says what the border holds.
  static Schema WindowSchema(const std::string& padding_doc) {
    Schema s;
    s.Add(Param::Int("kernel").Range(1, 1024).Doc("window height and width"));
    s.Add(Param::Int("stride").Range(1, 1024).Optional().Doc(
        "step between windows (default: kernel)"));
    s.Add(Param::Int("padding").Default(0).Range(0, 512).Doc(padding_doc));
    return s;
  }

  // Checks the (H, W, C) input, records the geometry and returns (OH, OW, C).
  Shape BuildWindows(const Shape& input, const char* name) {
    if (input.rank() != 3 || input.numel() <= 0) {
      throw ConfigError(where_ + ": " + name + " needs (height, width, channels) input, got " +
                        input.ToString());
    }
    h_ = input[0];
    w_ = input[1];
    c_ = input[2];
    if (h_ + 2 * pad_ < k_ || w_ + 2 * pad_ < k_) {
      throw ConfigError(where_ + ": kernel " + std::to_string(k_) + " is larger than the input " +
                        input.ToString());
    }
    oh_ = (h_ + 2 * pad_ - k_) / stride_ + 1;
    ow_ = (w_ + 2 * pad_ - k_) / stride_ + 1;
    return Shape{oh_, ow_, c_};
  }

  std::string where_;
  int64_t k_, stride_, pad_;
  int64_t h_ = 0, w_ = 0, c_ = 0, oh_ = 0, ow_ = 0;
};

}  // namespace pim
