// Image adaptation: padding, bilinear resizing, channel replication, and the 32x32x3
// Fashion-MNIST a CIFAR-shaped model reads.
#include "pimtrain/nn/datasets/adapt.h"

#include <gtest/gtest.h>

#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/nn/dataset.h"

namespace pim {
namespace {

ByteImages Ramp(int64_t n, int64_t h, int64_t w) {
  ByteImages im;
  im.sample_shape = Shape{h, w, 1};
  for (int64_t s = 0; s < n; ++s) {
    im.labels.push_back(static_cast<int32_t>(s));
    for (int64_t i = 0; i < h * w; ++i) im.pixels.push_back(static_cast<uint8_t>(10 * s + i));
  }
  return im;
}

TEST(AdaptTest, PadsCentredWithZerosAndReplicatesChannels) {
  ByteImages im = Ramp(2, 2, 2);
  ImageAdaptation a;
  a.size = 4;
  a.channels = 3;
  AdaptImages(im, a, "data");
  ASSERT_EQ(im.sample_shape, Shape({4, 4, 3}));
  ASSERT_EQ(im.pixels.size(), 2u * 4 * 4 * 3);
  auto px = [&](int64_t s, int64_t y, int64_t x, int64_t c) {
    return im.pixels[((s * 4 + y) * 4 + x) * 3 + c];
  };
  EXPECT_EQ(px(0, 0, 0, 0), 0);
  EXPECT_EQ(px(1, 1, 1, 0), 10);  // sample 1's first pixel at the centre's top-left
  EXPECT_EQ(px(1, 2, 2, 2), 13);
  EXPECT_EQ(px(1, 3, 3, 1), 0);
  for (int c = 0; c < 3; ++c) EXPECT_EQ(px(1, 1, 2, c), 11);
}

TEST(AdaptTest, ResizesBilinearlyWithHalfPixelCentres) {
  ByteImages im = Ramp(1, 2, 2);  // [[0, 1], [2, 3]]
  ImageAdaptation a;
  a.size = 4;
  a.fit = Fit::kResize;
  AdaptImages(im, a, "data");
  ASSERT_EQ(im.sample_shape, Shape({4, 4, 1}));
  // PyTorch: interpolate([[0,1],[2,3]], size=4, mode='bilinear', align_corners=False) rows are
  // [0, .25, .75, 1], [.5, .75, 1.25, 1.5], ... ; x 100 to see the rounding.
  ByteImages big = Ramp(1, 2, 2);
  for (auto& p : big.pixels) p = static_cast<uint8_t>(p * 80);
  AdaptImages(big, a, "data");
  const int expect[4] = {0, 20, 60, 80};
  for (int x = 0; x < 4; ++x) EXPECT_EQ(big.pixels[x], expect[x]) << x;
  EXPECT_EQ(big.pixels[4 * 3 + 3], 240);
  a.size = 1;
  a.fit = Fit::kPad;
  EXPECT_THROW(AdaptImages(im, a, "data"), ConfigError);
}

TEST(AdaptTest, FashionMnistLoadsAs32x32x3) {
  if (!FileExists("/usr/share/datasets/fashion-mnist")) GTEST_SKIP() << "no Fashion-MNIST";
  auto ds = Registry<Dataset>::CreateFrom(ParseYaml(
      "{impl: fashion_mnist, train_limit: 16, test_limit: 8, size: 32, channels: 3}", "test"));
  LoadedData d = ds->Load();
  ASSERT_EQ(d.sample_shape, Shape({32, 32, 3}));
  ASSERT_EQ(d.train.images.shape(), Shape({16, 32, 32, 3}));
  // The border is the padding value; the three channels are equal.
  const Tensor& x = d.train.images;
  EXPECT_EQ(x[0], x[3 * 33]);
  const int64_t centre = (16 * 32 + 16) * 3;
  EXPECT_EQ(x[centre], x[centre + 1]);
  EXPECT_EQ(x[centre], x[centre + 2]);
}

}  // namespace
}  // namespace pim
