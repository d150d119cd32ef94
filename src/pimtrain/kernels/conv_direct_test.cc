// Direct convolution: fast == ref bit for bit (FP and GC, 1 and 2 threads), and ref == the
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
  };
  ThreadPool two(2);
  uint64_t key = 300;
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
}

}  // namespace
}  // namespace pim::kernels
