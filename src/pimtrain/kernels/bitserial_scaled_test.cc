// fast::BitSerialMatMulScaled: the float output equals scaling the exact integer product of the
// reference kernel afterwards, bit for bit, and the counts equal the reference's. W stored as
// 16-bit words read through a shift: fast == ref == the same W as plain int32, outputs and counts.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "pimtrain/base/parallel.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/bitserial.h"
#include "pimtrain/numerics/fixed_point.h"

namespace pim::kernels {
namespace {

std::vector<int32_t> RandomInts(int64_t count, int bits, Signedness s, uint64_t key) {
  const CounterRng rng(key);
  const int64_t lo = IntMin(bits, s), hi = IntMax(bits, s);
  std::vector<int32_t> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    // A fifth zeros (the sparse paths), some extremes (the exactness bounds), the rest uniform.
    const float u = rng.Uniform(3 * i);
    const int64_t r = static_cast<int64_t>(rng.Below(3 * i + 1, hi - lo + 1));
    v[i] = static_cast<int32_t>(u < 0.2f ? 0 : u < 0.3f ? (r % 2 ? lo : hi) : lo + r);
  }
  return v;
}

struct ScaledCase {
  int64_t m, k, n;
  int bx, bw;
  Signedness sign;
  int exp;
};

TEST(BitSerialScaled, FloatOutputEqualsTheScaledReferenceProductBitForBit) {
  // Small shapes that still reach every path: both loop orders (m < n and m >= n), one and two
  // passes, one and several k blocks, ragged tiles (the reference kernel is slow).
  const ScaledCase cases[] = {
      {6, 700, 40, 8, 8, Signedness::kSigned, -14},       // m < n, one pass, two k blocks
      {70, 64, 24, 8, 16, Signedness::kSigned, -20},      // m >= n (GC), one pass, one block
      {20, 100, 40, 8, 16, Signedness::kSigned, -3},      // m < n, 16b weights, one pass
      {17, 300, 21, 16, 16, Signedness::kSigned, 5},      // two passes (byte slices)
      {5, 1100, 9, 16, 16, Signedness::kUnsigned, -7},    // two passes, several k blocks
      {7, 5, 3, 1, 1, Signedness::kUnsigned, 0},          // tiny: ragged tiles only
      {40, 33, 17, 12, 4, Signedness::kSigned, -140},     // scale below the float range
      {3, 2048, 5, 15, 16, Signedness::kSigned, 90},      // large sums, scale above 2^64
      {50, 0, 20, 8, 8, Signedness::kSigned, 1},          // empty reduction: zeros
  };
  ThreadPool two(2);
  uint64_t key = 11;
  for (const ScaledCase& t : cases) {
    const std::string what = std::to_string(t.m) + "x" + std::to_string(t.k) + "x" +
                             std::to_string(t.n) + " x" + std::to_string(t.bx) + " w" +
                             std::to_string(t.bw) + " exp " + std::to_string(t.exp);
    const std::vector<int32_t> x = RandomInts(t.m * t.k, t.bx, t.sign, ++key);
    const std::vector<int32_t> w = RandomInts(t.k * t.n, t.bw, t.sign, ++key);
    BitSerialProblem p;
    p.m = t.m;
    p.k = t.k;
    p.n = t.n;
    p.x = {x.data(), t.k, 1, t.bx, t.sign};
    p.w = {w.data(), t.n, 1, t.bw, t.sign};
    p.tile_k = 128;
    p.tile_n = 8;
    std::vector<int64_t> y(static_cast<size_t>(t.m * t.n));
    p.y = y.data();
    p.ldy = t.n;
    BitSerialCounts ref_counts;
    ref::BitSerialMatMul(p, ref_counts);
    // The definition: exact integer -> double, exact power-of-two scale, one rounding to float.
    const double scale = std::ldexp(1.0, t.exp);
    std::vector<float> expected(static_cast<size_t>(t.m * (t.n + 3)), -1.0f);
    for (int64_t i = 0; i < t.m; ++i) {
      for (int64_t j = 0; j < t.n; ++j) {
        expected[i * (t.n + 3) + j] =
            static_cast<float>(static_cast<double>(y[i * t.n + j]) * scale);
      }
    }
    for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &two}) {
      std::vector<float> got(expected.size(), -1.0f);  // row stride n + 3: padding untouched
      std::fill(y.begin(), y.end(), -7);
      BitSerialCounts counts;
      fast::BitSerialMatMulScaled(p, t.exp, got.data(), t.n + 3, counts, pool);
      const std::string tag = what + (pool ? " 2 threads" : " 1 thread");
      ASSERT_EQ(got.size(), expected.size());
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(expected[i]))
            << tag << " at " << i << ": " << got[i] << " vs " << expected[i];
      }
      EXPECT_TRUE(counts == ref_counts) << tag;
    }
  }
}

struct WordsCase {
  int64_t m, k, n;
  int bx, stored_bits, shift;
  Signedness sign;
  int64_t tile_k, tile_n;
};

TEST(BitSerialWords16, ShiftedSixteenBitWordsEqualPlainInt32InFastAndRef) {
  const WordsCase cases[] = {
      {20, 300, 64, 8, 16, 8, Signedness::kSigned, 128, 8},     // T-PIM forward: top 8 of 16
      {9, 130, 40, 8, 16, 0, Signedness::kSigned, 128, 8},      // transposed read: whole words
      {17, 77, 33, 8, 16, 0, Signedness::kUnsigned, 64, 16},    // uint16 words (byte slices)
      {11, 90, 50, 16, 16, 0, Signedness::kSigned, 32, 8},      // two passes
      {8, 61, 35, 6, 12, 4, Signedness::kUnsigned, 16, 4},      // ragged panels, odd k
      {30, 40, 16, 8, 16, 15, Signedness::kSigned, 128, 16},    // only the sign bit left
      {5, 33, 70, 3, 16, 12, Signedness::kUnsigned, 128, 128},  // unsigned, 4 bits left
  };
  ThreadPool two(2);
  uint64_t key = 101;
  for (const WordsCase& t : cases) {
    const int read_bits = t.stored_bits - t.shift;
    const std::string what = std::to_string(t.m) + "x" + std::to_string(t.k) + "x" +
                             std::to_string(t.n) + " stored " + std::to_string(t.stored_bits) +
                             " >> " + std::to_string(t.shift);
    const std::vector<int32_t> x = RandomInts(t.m * t.k, t.bx, t.sign, ++key);
    const std::vector<int32_t> stored = RandomInts(t.k * t.n, t.stored_bits, t.sign, ++key);
    std::vector<int16_t> words(stored.size());
    std::vector<int32_t> plain(stored.size());
    for (size_t i = 0; i < stored.size(); ++i) {
      words[i] = static_cast<int16_t>(stored[i]);  // the low 16 bits (uint16 when unsigned)
      plain[i] = stored[i] >> t.shift;
    }
    BitSerialProblem p;
    p.m = t.m;
    p.k = t.k;
    p.n = t.n;
    p.x = {x.data(), t.k, 1, t.bx, t.sign};
    p.w = {plain.data(), t.n, 1, read_bits, t.sign};
    p.tile_k = t.tile_k;
    p.tile_n = t.tile_n;
    std::vector<int64_t> y_plain(static_cast<size_t>(t.m * t.n)), y(y_plain.size());
    p.y = y_plain.data();
    p.ldy = t.n;
    BitSerialCounts plain_counts;
    ref::BitSerialMatMul(p, plain_counts);

    p.w = {nullptr, t.n, 1, read_bits, t.sign};
    p.w.data16 = words.data();
    p.w.shift = t.shift;
    p.y = y.data();
    BitSerialCounts counts;
    ref::BitSerialMatMul(p, counts);
    EXPECT_EQ(y, y_plain) << what << " ref";
    EXPECT_TRUE(counts == plain_counts) << what << " ref";
    for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &two}) {
      std::fill(y.begin(), y.end(), -7);
      fast::BitSerialMatMul(p, counts, pool);
      const std::string tag = what + (pool ? " fast 2 threads" : " fast 1 thread");
      EXPECT_EQ(y, y_plain) << tag;
      EXPECT_TRUE(counts == plain_counts) << tag;
    }
  }
}

}  // namespace
}  // namespace pim::kernels
