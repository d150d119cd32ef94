// Bit-serial macro operand quantization: the fast kernels (AVX-512 / AVX2 bodies, scalar tails,
// register transposes) equal the reference bit for bit: the scale's maximum, nearest-even and
// stochastic quantization (plain and transposed), the 16-bit stored words with their rounded
// forward read, the weight read-back and the word transpose, on odd shapes laced with NaN,
// +-Inf, subnormals and ties, for every width and both signednesses.
#include "pimtrain/kernels/bitserial_quantize.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace pim::kernels {
namespace {

std::vector<float> Values(int64_t n, uint64_t key, float scale) {
  const CounterRng rng(key);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto b = rng.Block(static_cast<uint64_t>(i));
    const float sign = (b[1] & 1) ? -1.0f : 1.0f;
    switch (b[2] % 16) {
      case 0: v[i] = std::numeric_limits<float>::quiet_NaN(); break;
      case 1: v[i] = sign * std::numeric_limits<float>::infinity(); break;
      case 2: v[i] = sign * std::numeric_limits<float>::denorm_min() * 5; break;
      case 3: v[i] = sign * scale * (0.5f + static_cast<float>(b[3] % 8));  // ties
        break;
      case 4: v[i] = 0.0f; break;
      default: v[i] = sign * scale * 100.0f * CounterRng::ToUnitFloat(b[3]); break;
    }
  }
  return v;
}

TEST(BitSerialQuantizeTest, FastEqualsRefForEveryWidthSignednessAndRounding) {
  const CounterRng rng(404);
  uint64_t i = 0;
  for (int t = 0; t < 48; ++t) {
    const int64_t rows = 1 + static_cast<int64_t>(rng.Below(i++, 27));
    const int64_t cols = 1 + static_cast<int64_t>(rng.Below(i++, 53));
    const int64_t ld = cols + static_cast<int64_t>(rng.Below(i++, 3));
    const int bits = 1 + static_cast<int>(rng.Below(i++, 16));
    const Signedness sign = rng.Below(i++, 2) ? Signedness::kSigned : Signedness::kUnsigned;
    // Scales for which 2^-exp is a normal float, and (t % 8 == 7) ones for which it is not.
    const float scale = t % 8 == 7 ? 1e-38f : std::ldexp(1.0f, static_cast<int>(rng.Below(i++, 40)) - 20);
    const std::vector<float> data = Values(rows * ld, 900 + t, scale);
    const ConstMatrixView v(data.data(), rows, cols, ld);
    SCOPED_TRACE("case " + std::to_string(t) + ": " + std::to_string(rows) + "x" +
                 std::to_string(cols) + " bits " + std::to_string(bits) +
                 (sign == Signedness::kSigned ? " signed" : " unsigned"));
    const float m = ref::MaxForScale(v, sign);
    EXPECT_EQ(std::bit_cast<uint32_t>(fast::MaxForScale(v, sign)), std::bit_cast<uint32_t>(m));
    EXPECT_TRUE(std::isfinite(m));
    const PowerOfTwoQuantizer qz =
        t % 8 == 7 ? QuantizerForExp(-140, bits, sign) : QuantizerFor(m, bits, sign);
    for (Rounding r : {Rounding::kNearestEven, Rounding::kStochastic}) {
      for (bool transpose : {false, true}) {
        std::vector<int32_t> want(static_cast<size_t>(rows * cols)), got(want.size(), -99);
        ref::Quantize(v, qz, r, CounterRng(t), want.data(), transpose);
        fast::Quantize(v, qz, r, CounterRng(t), got.data(), transpose);
        EXPECT_EQ(got, want) << (r == Rounding::kNearestEven ? "nearest" : "stochastic")
                             << (transpose ? " transposed" : "");
        // Every q is v 2^-exp rounded (nearest even, or down or up when stochastic), clipped;
        // NaN -> 0.
        for (int64_t r0 = 0; r0 < rows; ++r0) {
          for (int64_t c0 = 0; c0 < cols; ++c0) {
            const double x = static_cast<double>(v.Row(r0)[c0]) * qz.inv_scale;
            const int32_t q = want[transpose ? c0 * rows + r0 : r0 * cols + c0];
            auto clip = [&](double t) { return std::min(std::max(t, qz.lo), qz.hi); };
            if (std::isnan(x)) {
              EXPECT_EQ(q, 0);
            } else if (r == Rounding::kNearestEven) {
              EXPECT_EQ(q, clip(std::nearbyint(x))) << x;
            } else {
              EXPECT_TRUE(q == clip(std::floor(x)) || q == clip(std::ceil(x))) << x << " " << q;
            }
          }
        }
      }
    }
  }
}

TEST(BitSerialQuantizeTest, StoredWordsForwardReadReadBackAndTransposeEqualTheReference) {
  const CounterRng rng(505);
  uint64_t i = 0;
  for (int t = 0; t < 40; ++t) {
    const int64_t rows = 1 + static_cast<int64_t>(rng.Below(i++, 35));
    const int64_t cols = 1 + static_cast<int64_t>(rng.Below(i++, 70));
    const int widths[] = {1, 2, 4, 8, 16};
    const int bs = widths[rng.Below(i++, 5)];
    const int bf = widths[rng.Below(i++, 5)] <= bs ? widths[rng.Below(i - 1, 5)] : bs;
    const Signedness sign = rng.Below(i++, 2) ? Signedness::kSigned : Signedness::kUnsigned;
    const std::vector<float> data = Values(rows * cols, 1900 + t, 0.01f);
    const ConstMatrixView v(data.data(), rows, cols, cols);
    SCOPED_TRACE("case " + std::to_string(t) + ": " + std::to_string(rows) + "x" +
                 std::to_string(cols) + " stored " + std::to_string(bs) + " forward " +
                 std::to_string(bf));
    const PowerOfTwoQuantizer qz = QuantizerFor(ref::MaxForScale(v, sign), bs, sign);
    ASSERT_TRUE(qz.float_ok);
    const int shift = bs - bf;
    const ForwardRead fr{shift, shift > 0 ? int32_t{1} << (shift - 1) : 0,
                         static_cast<int32_t>(IntMax(bf, sign))};
    const size_t size = static_cast<size_t>(rows * cols);
    std::vector<int16_t> ws(size), wf(size), gs(size, -1), gf(size, -1);
    ref::QuantizeWords(v, qz, sign, fr, ws.data(), wf.data());
    for (int64_t r = 0; r < rows; ++r) {
      fast::QuantizeWordsRow(v.Row(r), cols, qz, sign, fr, gs.data() + r * cols,
                             gf.data() + r * cols);
    }
    EXPECT_EQ(gs, ws);
    EXPECT_EQ(gf, wf);
    for (int exp : {qz.exp, -126, 111, -140, 120}) {  // the vector read-back and its fallback
      std::vector<float> want(size), got(size);
      ref::DequantizeWords(ws.data(), sign, exp, MatrixView(want.data(), rows, cols, cols));
      fast::DequantizeWords(ws.data(), sign, exp, MatrixView(got.data(), rows, cols, cols));
      for (size_t k = 0; k < size; ++k) {
        ASSERT_EQ(std::bit_cast<uint32_t>(got[k]), std::bit_cast<uint32_t>(want[k]))
            << "exp " << exp << " element " << k;
      }
    }
    std::vector<int16_t> tw(size), tg(size, -1);
    ref::TransposeWords(ws.data(), rows, cols, tw.data());
    fast::TransposeWords(ws.data(), rows, cols, tg.data());
    EXPECT_EQ(tg, tw);
  }
}

}  // namespace
}  // namespace pim::kernels
