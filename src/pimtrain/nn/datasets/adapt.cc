// Pad / resize / channel replication of byte images (see adapt.h).
#include "pimtrain/nn/datasets/adapt.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "pimtrain/base/error.h"

namespace pim {

ImageAdaptation ImageAdaptation::FromParams(const ConfigNode& p) {
  ImageAdaptation a;
  a.size = p.GetInt("size");
  a.fit = p.GetString("fit") == "resize" ? Fit::kResize : Fit::kPad;
  a.channels = p.GetInt("channels");
  return a;
}

void AddImageAdaptationParams(Schema& s) {
  s.Add(Param::Int("size").Default(0).Range(0, 4096)
            .Doc("make images size x size (0 = as stored), e.g. 32 for CIFAR-shaped models"));
  s.Add(Param::Enum("fit", {"pad", "resize"}).Default("pad")
            .Doc("how to reach size: centred zero padding, or bilinear resizing"));
  s.Add(Param::Int("channels").Default(0).Range(0, 64)
            .Doc("replicate a grey image into this many channels (0 = as stored), e.g. 3"));
}

void AdaptImages(ByteImages& im, const ImageAdaptation& a, const std::string& where) {
  if (!a.active()) return;
  const int64_t h = im.sample_shape[0], w = im.sample_shape[1], c = im.sample_shape[2];
  const int64_t side_h = a.size > 0 ? a.size : h, side_w = a.size > 0 ? a.size : w;
  const int64_t oc = a.channels > 0 ? a.channels : c;
  if (a.channels > 0 && c != 1 && a.channels != c) {
    throw ConfigError(where + ".channels: " + std::to_string(a.channels) +
                      " channels from images of " + std::to_string(c) +
                      " (replication starts from one channel)");
  }
  if (a.size > 0 && a.fit == Fit::kPad && (a.size < h || a.size < w)) {
    throw ConfigError(where + ".size: " + std::to_string(a.size) + " is smaller than the " +
                      std::to_string(h) + "x" + std::to_string(w) +
                      " images; padding cannot shrink them (fit: resize can)");
  }
  const int64_t n = im.size();
  std::vector<uint8_t> out(static_cast<size_t>(n * side_h * side_w * oc), 0);
  const int64_t top = (side_h - h) / 2, left = (side_w - w) / 2;
  for (int64_t s = 0; s < n; ++s) {
    const uint8_t* src = im.pixels.data() + s * h * w * c;
    uint8_t* dst = out.data() + s * side_h * side_w * oc;
    for (int64_t y = 0; y < side_h; ++y) {
      for (int64_t x = 0; x < side_w; ++x) {
        for (int64_t k = 0; k < oc; ++k) {
          const int64_t ck = c == 1 ? 0 : k;
          uint8_t v = 0;
          if (a.size == 0 || a.fit == Fit::kPad) {
            const int64_t sy = y - (a.size ? top : 0), sx = x - (a.size ? left : 0);
            if (sy >= 0 && sy < h && sx >= 0 && sx < w) v = src[(sy * w + sx) * c + ck];
          } else {
            // Half-pixel centres: source coordinate (y + 0.5) * h / side - 0.5, clamped.
            const double fy = std::max(0.0, (y + 0.5) * h / side_h - 0.5);
            const double fx = std::max(0.0, (x + 0.5) * w / side_w - 0.5);
            const int64_t y0 = std::min<int64_t>(static_cast<int64_t>(fy), h - 1);
            const int64_t x0 = std::min<int64_t>(static_cast<int64_t>(fx), w - 1);
            const int64_t y1 = std::min(y0 + 1, h - 1), x1 = std::min(x0 + 1, w - 1);
            const double dy = fy - y0, dx = fx - x0;
            auto at = [&](int64_t yy, int64_t xx) { return static_cast<double>(src[(yy * w + xx) * c + ck]); };
            const double val = (1 - dy) * ((1 - dx) * at(y0, x0) + dx * at(y0, x1)) +
                               dy * ((1 - dx) * at(y1, x0) + dx * at(y1, x1));
            v = static_cast<uint8_t>(std::clamp(std::lround(val), 0L, 255L));
          }
          dst[(y * side_w + x) * oc + k] = v;
        }
      }
    }
  }
  im.pixels = std::move(out);
  im.sample_shape = Shape{side_h, side_w, oc};
}

}  // namespace pim
