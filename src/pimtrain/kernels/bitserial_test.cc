// Bit-serial PIM kernels: ref == exact integer math, fast == ref bit for bit (outputs and every
// count). The digital_bitserial macro's tests sit beside it (macro/impl/digital_bitserial_test.cc).
#include "pimtrain/kernels/bitserial.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/numerics/fixed_point.h"

namespace pim::kernels {
namespace {

// Random integers of a given width; `zero_fraction` of them are 0.
std::vector<int32_t> RandomInts(int64_t count, int bits, Signedness s, double zero_fraction,
                                uint64_t key) {
  CounterRng rng(key);
  const int64_t lo = IntMin(bits, s), hi = IntMax(bits, s);
  std::vector<int32_t> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const bool zero = rng.Uniform(2 * i) < zero_fraction;
    v[i] = zero
               ? 0
               : static_cast<int32_t>(lo + static_cast<int64_t>(rng.Below(2 * i + 1, hi - lo + 1)));
  }
  return v;
}

// Operands and output of one problem, owned.
struct Case {
  std::vector<int32_t> x, w;
  std::vector<int64_t> y;
  BitSerialProblem p;
};

// x is m x k row-major (or k-major when x_transposed), w is k x n row-major (or n x k when
// w_transposed): the kernel reads both through strides.
Case MakeCase(int64_t m, int64_t k, int64_t n, int bx, Signedness sx, int bw, Signedness sw,
              int64_t tile_k, int64_t tile_n, double x_zero, double w_zero, uint64_t key,
              bool x_transposed = false, bool w_transposed = false) {
  Case c;
  c.x = RandomInts(m * k, bx, sx, x_zero, MixKey(key, 1));
  c.w = RandomInts(k * n, bw, sw, w_zero, MixKey(key, 2));
  c.y.assign(static_cast<size_t>(m * n), -7);
  c.p.m = m;
  c.p.k = k;
  c.p.n = n;
  c.p.x =
      x_transposed ? IntOperand{c.x.data(), 1, m, bx, sx} : IntOperand{c.x.data(), k, 1, bx, sx};
  c.p.w =
      w_transposed ? IntOperand{c.w.data(), 1, k, bw, sw} : IntOperand{c.w.data(), n, 1, bw, sw};
  c.p.tile_k = tile_k;
  c.p.tile_n = tile_n;
  c.p.y = c.y.data();
  c.p.ldy = n;
  return c;
}

// The plain definition: y = x w in int64.
std::vector<int64_t> DotReference(const BitSerialProblem& p) {
  std::vector<int64_t> y(static_cast<size_t>(p.m * p.n), 0);
  for (int64_t i = 0; i < p.m; ++i) {
    for (int64_t j = 0; j < p.n; ++j) {
      int64_t s = 0;
      for (int64_t r = 0; r < p.k; ++r) s += int64_t{p.x.At(i, r)} * p.w.At(r, j);
      y[i * p.n + j] = s;
    }
  }
  return y;
}

void ExpectCountsEqual(const BitSerialCounts& a, const BitSerialCounts& b,
                       const std::string& what) {
  ActionCounts ca, cb;
  a.AddTo(ca);
  b.AddTo(cb);
  EXPECT_EQ(ca.counts(), cb.counts()) << what;
}

// Runs ref and fast (1 and 2 threads) and checks outputs and counts bit for bit, plus the int64
// definition.
void ExpectParity(Case& c, const std::string& what) {
  BitSerialCounts ref_counts;
  ref::BitSerialMatMul(c.p, ref_counts);
  const std::vector<int64_t> ref_y = c.y;
  EXPECT_EQ(ref_y, DotReference(c.p)) << what << " (ref vs int64 dot)";
  static ThreadPool two(2);
  for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &two}) {
    std::fill(c.y.begin(), c.y.end(), -7);
    BitSerialCounts fast_counts;
    fast::BitSerialMatMul(c.p, fast_counts, pool);
    const std::string tag = what + (pool ? " 2 threads" : " 1 thread");
    EXPECT_EQ(c.y, ref_y) << tag;
    EXPECT_TRUE(fast_counts == ref_counts) << tag;
    ExpectCountsEqual(fast_counts, ref_counts, tag);
  }
}

std::string Describe(int64_t m, int64_t k, int64_t n, int bx, Signedness sx, int bw,
                     Signedness sw) {
  auto sg = [](Signedness s) { return s == Signedness::kSigned ? "s" : "u"; };
  return std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n) + " x" +
         std::to_string(bx) + sg(sx) + " w" + std::to_string(bw) + sg(sw);
}

TEST(BitSerialKernel, FastEqualsRefForEveryWidthAndSignedness) {
  uint64_t key = 1;
  for (int bx = 1; bx <= 16; ++bx) {
    for (int bw : {1, 2, 4, 8, 16}) {
      for (Signedness s : {Signedness::kSigned, Signedness::kUnsigned}) {
        // Mixed signedness too: unsigned activations against signed weights.
        const Signedness sw = (bx % 3 == 0) ? Signedness::kSigned : s;
        // m < n and m > n take the fast kernel's two blocking orders.
        const int64_t m = (bx + bw) % 2 == 0 ? 7 : 19, n = 26 - m;
        Case c = MakeCase(m, 45, n, bx, s, bw, sw, 16, 8, 0.3, 0.2, ++key);
        ExpectParity(c, Describe(m, 45, n, bx, s, bw, sw));
      }
    }
  }
}

TEST(BitSerialKernel, FastEqualsRefOnOddShapesAndTiles) {
  struct Shape {
    int64_t m, k, n, tile_k, tile_n;
  };
  const Shape shapes[] = {{1, 1, 1, 256, 256},   {3, 257, 5, 256, 256},  {300, 5, 7, 4, 3},
                          {2, 600, 33, 128, 16}, {13, 1030, 3, 1000, 2}, {5, 17, 40, 1, 1},
                          {6, 16, 16, 16, 16},   {1, 2, 17, 3, 256},     {97, 31, 1, 7, 1},
                          {0, 5, 3, 2, 2},       {4, 0, 3, 2, 2},        {4, 5, 0, 2, 2}};
  uint64_t key = 1000;
  for (const Shape& s : shapes) {
    for (auto [bx, bw] : {std::pair{8, 8}, std::pair{16, 16}, std::pair{3, 4}}) {
      Case c = MakeCase(s.m, s.k, s.n, bx, Signedness::kSigned, bw, Signedness::kSigned, s.tile_k,
                        s.tile_n, 0.5, 0.3, ++key);
      ExpectParity(c, Describe(s.m, s.k, s.n, bx, Signedness::kSigned, bw, Signedness::kSigned) +
                          " tiles " + std::to_string(s.tile_k) + "x" + std::to_string(s.tile_n));
    }
  }
}

TEST(BitSerialKernel, FastEqualsRefOnStridedOperands) {
  uint64_t key = 2000;
  for (bool xt : {false, true}) {
    for (bool wt : {false, true}) {
      // m < n and m >= n take the kernel's two blocking orders.
      for (auto [m, n] : {std::pair<int64_t, int64_t>{11, 23}, {23, 11}}) {
        Case c = MakeCase(m, 70, n, 9, Signedness::kSigned, 16, Signedness::kSigned, 32, 8, 0.4,
                          0.4, ++key, xt, wt);
        ExpectParity(c, std::string("strided x=") + (xt ? "T" : "N") + " w=" + (wt ? "T" : "N") +
                            " m=" + std::to_string(m));
      }
    }
  }
}

TEST(BitSerialKernel, FastEqualsRefOnExtremeAndZeroOperands) {
  for (int bx : {1, 7, 8, 9, 16}) {
    for (int bw : {1, 8, 16}) {
      for (Signedness s : {Signedness::kSigned, Signedness::kUnsigned}) {
        const int32_t xmin = static_cast<int32_t>(IntMin(bx, s));
        const int32_t xmax = static_cast<int32_t>(IntMax(bx, s));
        const int32_t wmin = static_cast<int32_t>(IntMin(bw, s));
        const int32_t wmax = static_cast<int32_t>(IntMax(bw, s));
        const std::pair<int32_t, int32_t> fills[] = {{xmin, wmin}, {xmax, wmax}, {xmin, wmax},
                                                     {0, wmin},    {xmax, 0},    {0, 0}};
        for (auto [xv, wv] : fills) {
          Case c = MakeCase(5, 300, 18, bx, s, bw, s, 128, 8, 0, 0, 1);
          std::fill(c.x.begin(), c.x.end(), xv);
          std::fill(c.w.begin(), c.w.end(), wv);
          ExpectParity(c, Describe(5, 300, 18, bx, s, bw, s) + " fill " + std::to_string(xv) + "," +
                              std::to_string(wv));
        }
      }
    }
  }
}

TEST(BitSerialKernel, FastEqualsRefOnSparseInputs) {
  uint64_t key = 3000;
  for (double zero : {0.0, 0.5, 0.9, 0.99, 1.0}) {
    Case c = MakeCase(9, 200, 21, 8, Signedness::kSigned, 8, Signedness::kSigned, 16, 8, zero,
                      zero / 2, ++key);
    ExpectParity(c, "zero fraction " + std::to_string(zero));
  }
}

TEST(BitSerialKernel, FastIsExactWhereInt32WouldOverflow) {
  // 16b x 16b products reach 2^30; tens of thousands of them overflow int32 many times over.
  for (int32_t xv : {-32768, 32767}) {
    Case c =
        MakeCase(2, 40000, 20, 16, Signedness::kSigned, 16, Signedness::kSigned, 256, 256, 0, 0, 5);
    std::fill(c.x.begin(), c.x.end(), xv);
    std::fill(c.w.begin(), c.w.end(), -32768);
    BitSerialCounts counts;
    fast::BitSerialMatMul(c.p, counts, nullptr);
    EXPECT_EQ(c.y, DotReference(c.p));
    EXPECT_EQ(c.y[0], int64_t{40000} * xv * -32768);
  }
  for (auto [m, n] : {std::pair<int64_t, int64_t>{3, 17}, {17, 3}}) {
    Case c = MakeCase(m, 70000, n, 16, Signedness::kUnsigned, 16, Signedness::kUnsigned, 256, 256,
                      0.1, 0.1, 6);
    BitSerialCounts counts;
    fast::BitSerialMatMul(c.p, counts, nullptr);
    EXPECT_EQ(c.y, DotReference(c.p));
  }
}

// The fast kernel feeds operands that fit int16 whole (no byte slices) into one GEMM pass and
// sizes its int32 reduction blocks from the operands' widths (16b x 8b: one pass, blocks of at
// most 510 elements). Extreme fills over long reductions put every block at its worst case.
TEST(BitSerialKernel, FastIsExactAtTheSliceAndBlockBoundaries) {
  const Signedness S = Signedness::kSigned, U = Signedness::kUnsigned;
  struct Widths {
    int bx;
    Signedness sx;
    int bw;
    Signedness sw;
  };
  const Widths widths[] = {{16, S, 8, S}, {8, S, 16, S},  {16, S, 8, U},  {8, U, 16, S},
                           {15, U, 8, S}, {16, U, 8, S},  {12, S, 12, S}, {14, S, 14, S},
                           {16, S, 16, S}, {16, U, 16, S}, {9, S, 8, U},  {8, U, 8, U}};
  for (const Widths& wd : widths) {
    const int32_t xe[] = {static_cast<int32_t>(IntMin(wd.bx, wd.sx)),
                          static_cast<int32_t>(IntMax(wd.bx, wd.sx))};
    const int32_t we[] = {static_cast<int32_t>(IntMin(wd.bw, wd.sw)),
                          static_cast<int32_t>(IntMax(wd.bw, wd.sw))};
    for (auto [m, n] : {std::pair<int64_t, int64_t>{2, 19}, {19, 2}}) {  // both task layouts
      for (int32_t xv : xe) {
        for (int32_t wv : we) {
          const int64_t k = 70000;
          Case c = MakeCase(m, k, n, wd.bx, wd.sx, wd.bw, wd.sw, 256, 256, 0, 0, 8);
          std::fill(c.x.begin(), c.x.end(), xv);
          std::fill(c.w.begin(), c.w.end(), wv);
          BitSerialCounts counts;
          fast::BitSerialMatMul(c.p, counts, nullptr);
          const std::string what = Describe(m, k, n, wd.bx, wd.sx, wd.bw, wd.sw) + " fill " +
                                   std::to_string(xv) + "," + std::to_string(wv);
          const int64_t expect = k * xv * int64_t{wv};
          EXPECT_EQ(c.y, std::vector<int64_t>(static_cast<size_t>(m * n), expect)) << what;
        }
      }
    }
    // Random operands with one extreme row, against ref (counts too), around the block sizes.
    for (int64_t k : {1, 6, 7, 255, 256, 257, 509, 510, 511, 512, 513, 1021, 1531}) {
      Case c = MakeCase(3, k, 5, wd.bx, wd.sx, wd.bw, wd.sw, 128, 4, 0.2, 0.2, 9 + k);
      for (int64_t r = 0; r < k; ++r) {
        c.x[r] = xe[0];
        c.w[r * 5] = we[0];
      }
      ExpectParity(c, Describe(3, k, 5, wd.bx, wd.sx, wd.bw, wd.sw));
    }
  }
}

TEST(BitSerialKernel, FastIsExactOnLargeRandomProblems) {
  static ThreadPool two(2);
  struct Shape {
    int64_t m, k, n;
  };
  for (Shape s : {Shape{64, 784, 256}, Shape{300, 1100, 40}}) {
    Case c = MakeCase(s.m, s.k, s.n, 8, Signedness::kSigned, 8, Signedness::kSigned, 256, 256, 0.5,
                      0.1, 7);
    BitSerialCounts counts;
    fast::BitSerialMatMul(c.p, counts, &two);
    EXPECT_EQ(c.y, DotReference(c.p));
    EXPECT_EQ(counts.macs, s.m * s.k * s.n);
  }
}

TEST(BitSerialKernel, CountsFollowTheDocumentedModel) {
  // One sample, one array of 4 word lines x 2 columns, 4-bit signed inputs, 2-bit weights.
  // x = (1, 0, 2, 0): planes 0 and 1 carry bits, planes 2 and 3 are all zero -> 2 cycles, 2
  // skipped. w rows: (1, 0), (1, 1), (0, -1), (1, 1) -> word line 0 has one zero weight.
  std::vector<int32_t> x = {1, 0, 2, 0};
  std::vector<int32_t> w = {1, 0, 1, 1, 0, -1, 1, 1};
  std::vector<int64_t> y(2);
  BitSerialProblem p;
  p.m = 1;
  p.k = 4;
  p.n = 2;
  p.x = {x.data(), 4, 1, 4, Signedness::kSigned};
  p.w = {w.data(), 2, 1, 2, Signedness::kSigned};
  p.tile_k = 4;
  p.tile_n = 2;
  p.y = y.data();
  p.ldy = 2;
  BitSerialCounts c;
  ref::BitSerialMatMul(p, c);
  EXPECT_EQ(y, (std::vector<int64_t>{1, -2}));
  EXPECT_EQ(c.bitserial_cycles, 2);
  EXPECT_EQ(c.skipped_zero_cycles, 2);
  // Set input bits: x0 plane 0 (word line 0), x2 plane 1 (word line 2): one word line each.
  // Word line 0 has weights (1, 0): 1 nonzero -> 2 ANDs (2 slices), 1 zero -> 2 gated.
  // Word line 2 has weights (0, -1): the same.
  EXPECT_EQ(c.cell_and_ops, 4);
  EXPECT_EQ(c.gated_zero_weight_ops, 4);
  EXPECT_EQ(c.adder_tree_adds, 2 * 2 * 2 * 3);  // cycles x cols x slices x (rows - 1)
  EXPECT_EQ(c.shift_adds, 2 * 2 * 2);           // cycles x cols x slices
  EXPECT_EQ(c.tile_accumulations, 0);
  EXPECT_EQ(c.input_buffer_writes, 4);
  EXPECT_EQ(c.input_buffer_reads, 4);
  EXPECT_EQ(c.output_buffer_writes, 2);
  EXPECT_EQ(c.macs, 8);
  BitSerialCounts f;
  fast::BitSerialMatMul(p, f, nullptr);
  EXPECT_TRUE(f == c);
}

}  // namespace
}  // namespace pim::kernels
