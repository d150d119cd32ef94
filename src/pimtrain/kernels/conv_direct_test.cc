// Direct convolution: fast == ref bit for bit (FP, GC and BP, 1 and 2 threads), and ref == the
// im2col + GEMM definition of the same convolution up to rounding.
#include "pimtrain/kernels/conv_direct.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/gemm.h"
#include "pimtrain/kernels/im2col.h"

namespace pim::kernels {
namespace {

std::vector<float> Random(int64_t n, uint64_t key) {
  const CounterRng rng(key);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = 2.0f * rng.Uniform(i) - 1.0f;
  return v;
}

struct DirectCase {
  int64_t n, h, w, c, k, stride, pad, oc;
};

TEST(ConvDirect, FastEqualsRefBitForBitAndRefIsTheConvolution) {
  const DirectCase cases[] = {
      {3, 28, 28, 1, 5, 1, 2, 16},  // the CNN's first layer
      {2, 9, 7, 3, 3, 1, 1, 24},    // RGB-like, ragged pixel blocks, 16 + 8 channels
      {2, 11, 10, 2, 3, 2, 1, 8},   // stride 2
      {1, 6, 6, 4, 1, 1, 0, 32},    // 1x1
      {2, 8, 9, 1, 5, 3, 2, 40},    // stride 3, taps in 4 blocks plus one
      {2, 8, 9, 16, 3, 1, 1, 16},   // resnet20's 3x3 on 16 channels (144 taps), BP direct
      {2, 7, 5, 24, 3, 1, 1, 24},   // 16 + 8 channels both ways, BP direct
      {2, 9, 8, 16, 3, 2, 1, 32},   // resnet20's downsampling 3x3 (BP stays im2col)
      {1, 5, 6, 8, 3, 1, 2, 8},     // padding 2: BP's flipped kernel without padding
  };
  ThreadPool two(2);
  uint64_t key = 300;
  int bp_cases = 0;
  for (const DirectCase& t : cases) {
    ConvGeometry g;
    g.n = t.n;
    g.h = t.h;
    g.w = t.w;
    g.c = t.c;
    g.kh = g.kw = t.k;
    g.stride = t.stride;
    g.pad = t.pad;
    const std::string what = std::to_string(t.h) + "x" + std::to_string(t.w) + "x" +
                             std::to_string(t.c) + " k" + std::to_string(t.k) + " s" +
                             std::to_string(t.stride) + " p" + std::to_string(t.pad) + " oc" +
                             std::to_string(t.oc);
    ASSERT_TRUE(DirectConvFits(g, t.oc)) << what;
    const int64_t rows = g.n * g.rows_per_image(), width = g.col_width();
    const std::vector<float> x = Random(g.n * g.h * g.w * g.c, ++key);
    const std::vector<float> w = Random(width * t.oc, ++key);
    const std::vector<float> bias = Random(t.oc, ++key);
    const std::vector<float> dy = Random(rows * t.oc, ++key);

    // FP: fast == ref, with and without a bias; images split differently give the same bits.
    for (const float* b : {bias.data(), static_cast<const float*>(nullptr)}) {
      std::vector<float> y_ref(rows * t.oc, -9.0f), y_fast(rows * t.oc, -9.0f);
      ref::ConvDirectForward(g, x.data(), w.data(), b, t.oc, y_ref.data(), 0, g.n);
      fast::ConvDirectForward(g, x.data(), w.data(), b, t.oc, y_fast.data(), 0, 1);
      fast::ConvDirectForward(g, x.data(), w.data(), b, t.oc, y_fast.data(), 1, g.n);
      EXPECT_EQ(y_fast, y_ref) << what << (b ? " bias" : " no bias");
      if (b == nullptr) continue;
      // The convolution itself: im2col + reference GEMM (another summation order).
      std::vector<float> cols(rows * width), y_def(rows * t.oc);
      Im2col(g, x.data(), cols.data(), nullptr);
      for (int64_t r = 0; r < rows; ++r) {
        std::copy(bias.begin(), bias.end(), y_def.begin() + r * t.oc);
      }
      ref::Gemm({Trans::kNo, Trans::kNo, rows, t.oc, width, 1.0f, cols.data(), width, w.data(),
                 t.oc, 1.0f, y_def.data(), t.oc});
      for (size_t i = 0; i < y_def.size(); ++i) {
        ASSERT_NEAR(y_ref[i], y_def[i], 1e-5f * (width + 1)) << what << " at " << i;
      }
    }

    // BP (stride 1): fast == ref, images split differently; ref == col2im(dY W^T).
    if (DirectBackwardFits(g, t.oc)) {
      const int64_t in = g.n * g.h * g.w * g.c;
      std::vector<float> wt(width * t.oc), dx_ref(in, -9.0f), dx_fast(in, -9.0f);
      ref::ConvDirectBackward(g, dy.data(), w.data(), t.oc, dx_ref.data(), 0, g.n);
      fast::ConvDirectBackwardWeights(g, w.data(), t.oc, wt.data());
      fast::ConvDirectBackward(g, dy.data(), wt.data(), t.oc, dx_fast.data(), 0, 1);
      fast::ConvDirectBackward(g, dy.data(), wt.data(), t.oc, dx_fast.data(), 1, g.n);
      EXPECT_EQ(dx_fast, dx_ref) << what << " BP";
      std::vector<float> dcols(rows * width), dx_def(in);
      ref::Gemm({Trans::kNo, Trans::kYes, rows, width, t.oc, 1.0f, dy.data(), t.oc, w.data(),
                 t.oc, 0.0f, dcols.data(), width});
      Col2im(g, dcols.data(), dx_def.data(), nullptr);
      for (size_t i = 0; i < dx_def.size(); ++i) {
        ASSERT_NEAR(dx_ref[i], dx_def[i], 1e-5f * width) << what << " dX at " << i;
      }
      ++bp_cases;
    }

    // GC: fast == ref at 1 and 2 threads.
    std::vector<float> dw_ref(width * t.oc, -9.0f), dw1(width * t.oc, -9.0f),
        dw2(width * t.oc, -9.0f);
    ref::ConvDirectWeightGradient(g, x.data(), dy.data(), t.oc, dw_ref.data());
    fast::ConvDirectWeightGradient(g, x.data(), dy.data(), t.oc, dw1.data(), nullptr);
    fast::ConvDirectWeightGradient(g, x.data(), dy.data(), t.oc, dw2.data(), &two);
    EXPECT_EQ(dw1, dw_ref) << what;
    EXPECT_EQ(dw2, dw_ref) << what;
    std::vector<float> cols(rows * width), dw_def(width * t.oc);
    Im2col(g, x.data(), cols.data(), nullptr);
    ref::Gemm({Trans::kYes, Trans::kNo, width, t.oc, rows, 1.0f, cols.data(), width, dy.data(),
               t.oc, 0.0f, dw_def.data(), t.oc});
    for (size_t i = 0; i < dw_def.size(); ++i) {
      ASSERT_NEAR(dw_ref[i], dw_def[i], 1e-5f * rows) << what << " dW at " << i;
    }
  }
  EXPECT_EQ(bp_cases, 3);  // the 3x3 stride-1 cases on whole vectors of channels
}

}  // namespace
}  // namespace pim::kernels
