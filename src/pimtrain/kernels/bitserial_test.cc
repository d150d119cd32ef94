// Bit-serial PIM kernels and the digital_bitserial macro: ref == exact integer math, fast == ref
// bit for bit (outputs and every count), and the macro's quantization, tiling and sparsity.
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

// --- The macro -----------------------------------------------------------------------------

std::unique_ptr<Macro> MakeMacro(const std::string& yaml) {
  return Registry<Macro>::CreateFrom(ParseYaml(yaml, "test"));
}

// Random floats in [-scale, scale) with `zero_fraction` exact zeros.
std::vector<float> RandomFloats(int64_t count, float scale, double zero_fraction, uint64_t key) {
  CounterRng rng(key);
  std::vector<float> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    v[i] =
        rng.Uniform(2 * i) < zero_fraction ? 0.0f : scale * (2.0f * rng.Uniform(2 * i + 1) - 1.0f);
  }
  return v;
}

double MaxAbs(const std::vector<float>& v) {
  double m = 0;
  for (float a : v) m = std::max(m, static_cast<double>(std::fabs(a)));
  return m;
}

// Independent model of the macro's arithmetic: per-tensor power-of-two quantization, an int64
// GEMM, one rounding to float.
struct QuantizedMatrix {
  std::vector<int64_t> q;
  int exp;
};
QuantizedMatrix QuantizeIndependently(const std::vector<float>& v, int bits) {
  QuantizedMatrix out;
  out.exp = PowerOfTwoExponent(MaxAbs(v), bits, Signedness::kSigned);
  for (float a : v) {
    out.q.push_back(QuantizeToInt(a, out.exp, bits, Signedness::kSigned, Rounding::kNearestEven));
  }
  return out;
}

constexpr int64_t kB = 5, kR = 70, kC = 37;

class BitSerialMacroTest : public ::testing::Test {
 protected:
  void SetUp() override {
    w_ = RandomFloats(kR * kC, 0.3f, 0.2, 11);
    x_ = RandomFloats(kB * kR, 2.0f, 0.3, 12);
    e_ = RandomFloats(kB * kC, 0.01f, 0.3, 13);
  }
  std::vector<float> w_, x_, e_;
};

TEST_F(BitSerialMacroTest, ForwardEqualsQuantizedGemmWithTopWeightBits) {
  auto macro = MakeMacro(
      "{impl: digital_bitserial, rows: 32, cols: 16, input_bits: 8, "
      "weight_bits: 8, weight_bits_backward: 16}");
  ActionCounts counts;
  macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, counts);
  EXPECT_EQ(counts.Get("weight_writes"), kR * kC * 16);
  std::vector<float> y(kB * kC);
  macro->Multiply(ConstMatrixView(x_.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                  Direction::kForward, RunContext{}, counts);
  QuantizedMatrix xq = QuantizeIndependently(x_, 8), wq = QuantizeIndependently(w_, 16);
  for (int64_t b = 0; b < kB; ++b) {
    for (int64_t c = 0; c < kC; ++c) {
      int64_t s = 0;
      for (int64_t r = 0; r < kR; ++r) s += xq.q[b * kR + r] * (wq.q[r * kC + c] >> 8);
      const float expect =
          static_cast<float>(std::ldexp(static_cast<double>(s), xq.exp + wq.exp + 8));
      ASSERT_EQ(y[b * kC + c], expect) << b << "," << c;
    }
  }
  EXPECT_EQ(counts.Get("macs"), kB * kR * kC);
  EXPECT_EQ(counts.Get("tile_accumulations"), kB * kC * 2);  // 70 rows = 3 blocks of 32
}

TEST_F(BitSerialMacroTest, ForwardWeightReadNearestRoundsTheDroppedBits) {
  auto macro = MakeMacro(
      "{impl: digital_bitserial, weight_bits: 4, weight_bits_backward: 16, "
      "forward_weight_read: nearest}");
  ActionCounts counts;
  macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, counts);
  std::vector<float> y(kB * kC);
  macro->Multiply(ConstMatrixView(x_.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                  Direction::kForward, RunContext{}, counts);
  QuantizedMatrix xq = QuantizeIndependently(x_, 8), wq = QuantizeIndependently(w_, 16);
  for (int64_t b = 0; b < kB; ++b) {
    for (int64_t c = 0; c < kC; ++c) {
      int64_t s = 0;
      for (int64_t r = 0; r < kR; ++r) {
        s += xq.q[b * kR + r] * std::min<int64_t>((wq.q[r * kC + c] + 2048) >> 12, 7);
      }
      ASSERT_EQ(y[b * kC + c],
                static_cast<float>(std::ldexp(static_cast<double>(s), xq.exp + wq.exp + 12)));
    }
  }
}

TEST_F(BitSerialMacroTest, NonFiniteInputsClipOrVanishWithoutSettingTheScale) {
  auto macro = MakeMacro("{impl: digital_bitserial, rows: 32, cols: 16}");
  ActionCounts counts;
  macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, counts);
  std::vector<float> x = x_;
  x[3] = std::numeric_limits<float>::infinity();
  x[20] = -std::numeric_limits<float>::infinity();
  x[41] = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> y(kB * kC);
  macro->Multiply(ConstMatrixView(x.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                  Direction::kForward, RunContext{}, counts);
  // The scale comes from the finite values; +inf -> 127, -inf -> -128, NaN -> 0.
  std::vector<float> finite = x_;
  finite[3] = finite[20] = finite[41] = 0.0f;
  QuantizedMatrix xq = QuantizeIndependently(finite, 8), wq = QuantizeIndependently(w_, 16);
  xq.q[3] = 127;
  xq.q[20] = -128;
  for (int64_t b = 0; b < kB; ++b) {
    for (int64_t c = 0; c < kC; ++c) {
      int64_t s = 0;
      for (int64_t r = 0; r < kR; ++r) s += xq.q[b * kR + r] * (wq.q[r * kC + c] >> 8);
      ASSERT_EQ(y[b * kC + c],
                static_cast<float>(std::ldexp(static_cast<double>(s), xq.exp + wq.exp + 8)));
    }
  }
}

TEST_F(BitSerialMacroTest, TransposedEqualsStoredWeightsTransposed) {
  auto macro = MakeMacro(
      "{impl: digital_bitserial, rows: 32, cols: 16, error_bits: 12, "
      "weight_bits: 4, weight_bits_backward: 16}");
  ActionCounts counts;
  macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, counts);
  std::vector<float> dx(kB * kR);
  macro->Multiply(ConstMatrixView(e_.data(), kB, kC, kC), MatrixView{dx.data(), kB, kR, kR},
                  Direction::kTransposed, RunContext{}, counts);
  QuantizedMatrix eq = QuantizeIndependently(e_, 12), wq = QuantizeIndependently(w_, 16);
  for (int64_t b = 0; b < kB; ++b) {
    for (int64_t r = 0; r < kR; ++r) {
      int64_t s = 0;
      for (int64_t c = 0; c < kC; ++c) s += eq.q[b * kC + c] * wq.q[r * kC + c];
      const float expect = static_cast<float>(std::ldexp(static_cast<double>(s), eq.exp + wq.exp));
      ASSERT_EQ(dx[b * kR + r], expect) << b << "," << r;
    }
  }
  // Reduction over 37 columns in blocks of 16: 3 blocks, 2 merges per output.
  EXPECT_EQ(counts.Get("tile_accumulations"), kB * kR * 2);
  // ReadWeights returns the stored 16-bit weights.
  std::vector<float> back(kR * kC);
  macro->ReadWeights(MatrixView{back.data(), kR, kC, kC});
  for (int64_t i = 0; i < kR * kC; ++i) {
    ASSERT_EQ(back[i], static_cast<float>(std::ldexp(static_cast<double>(wq.q[i]), wq.exp)));
  }
}

TEST_F(BitSerialMacroTest, GradientCalcEqualsQuantizedOuterProductSum) {
  auto macro = MakeMacro(
      "{impl: digital_bitserial, rows: 4, cols: 8, input_bits: 8, "
      "gradient_bits: 16}");
  std::vector<float> dw(kR * kC);
  ActionCounts counts;
  macro->GradientCalc(ConstMatrixView(x_.data(), kB, kR, kR),
                      ConstMatrixView(e_.data(), kB, kC, kC), MatrixView{dw.data(), kR, kC, kC},
                      RunContext{}, counts);
  QuantizedMatrix xq = QuantizeIndependently(x_, 8), eq = QuantizeIndependently(e_, 16);
  for (int64_t r = 0; r < kR; ++r) {
    for (int64_t c = 0; c < kC; ++c) {
      int64_t s = 0;
      for (int64_t b = 0; b < kB; ++b) s += xq.q[b * kR + r] * eq.q[b * kC + c];
      const float expect = static_cast<float>(std::ldexp(static_cast<double>(s), xq.exp + eq.exp));
      ASSERT_EQ(dw[r * kC + c], expect) << r << "," << c;
    }
  }
  EXPECT_EQ(counts.Get("gc_operand_writes"), kB * kC * 16);
  EXPECT_EQ(counts.Get("macs"), kB * kR * kC);
  EXPECT_EQ(counts.Get("tile_accumulations"), kR * kC * 1);  // batch 5 on 4 word lines: 2 blocks
}

TEST_F(BitSerialMacroTest, GradientCalcOnStridedBatchesEqualsQuantizedOuterProductSum) {
  // A batch of 21 (the macro transposes X in 8 x 8 blocks, plus edges), X read through a row
  // stride wider than its 70 features, a NaN and infinities among them.
  constexpr int64_t kBatch = 21, kLd = kR + 3;
  auto macro = MakeMacro("{impl: digital_bitserial, rows: 16, cols: 8, gradient_bits: 16}");
  std::vector<float> x = RandomFloats(kBatch * kLd, 2.0f, 0.3, 14);
  std::vector<float> e = RandomFloats(kBatch * kC, 0.01f, 0.3, 15);
  x[3 * kLd + 9] = std::numeric_limits<float>::quiet_NaN();
  x[17 * kLd + 64] = std::numeric_limits<float>::infinity();
  x[20 * kLd + 69] = -std::numeric_limits<float>::infinity();
  std::vector<float> x_dense;  // the logical kBatch x kR matrix
  for (int64_t b = 0; b < kBatch; ++b) {
    x_dense.insert(x_dense.end(), x.begin() + b * kLd, x.begin() + b * kLd + kR);
  }
  std::vector<float> finite = x_dense;
  for (float& v : finite) v = std::isfinite(v) ? v : 0.0f;
  const int xexp = PowerOfTwoExponent(MaxAbs(finite), 8, Signedness::kSigned);
  std::vector<float> dw(kR * kC);
  ActionCounts counts;
  macro->GradientCalc(ConstMatrixView(x.data(), kBatch, kR, kLd),
                      ConstMatrixView(e.data(), kBatch, kC, kC), MatrixView{dw.data(), kR, kC, kC},
                      RunContext{}, counts);
  QuantizedMatrix eq = QuantizeIndependently(e, 16);
  for (int64_t r = 0; r < kR; ++r) {
    for (int64_t c = 0; c < kC; ++c) {
      int64_t s = 0;
      for (int64_t b = 0; b < kBatch; ++b) {
        const float v = x_dense[b * kR + r];  // NaN -> 0, infinities clip
        const int64_t xq =
            std::isnan(v) ? 0
                          : QuantizeToInt(v, xexp, 8, Signedness::kSigned, Rounding::kNearestEven);
        s += xq * eq.q[b * kC + c];
      }
      const float expect = static_cast<float>(std::ldexp(static_cast<double>(s), xexp + eq.exp));
      ASSERT_EQ(dw[r * kC + c], expect) << r << "," << c;
    }
  }
  EXPECT_EQ(counts.Get("macs"), kBatch * kR * kC);
}

TEST_F(BitSerialMacroTest, TilingKeepsNumbersAndAddsTileAccumulations) {
  auto one = MakeMacro("{impl: digital_bitserial, rows: 1024, cols: 1024}");
  auto tiled = MakeMacro("{impl: digital_bitserial, rows: 16, cols: 8}");
  ActionCounts c1, c2;
  one->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, c1);
  tiled->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, c2);
  for (Direction dir : {Direction::kForward, Direction::kTransposed}) {
    const bool fwd = dir == Direction::kForward;
    const std::vector<float>& in = fwd ? x_ : e_;
    const int64_t k = fwd ? kR : kC, n = fwd ? kC : kR;
    std::vector<float> y1(kB * n), y2(kB * n);
    ActionCounts a1, a2;
    one->Multiply(ConstMatrixView(in.data(), kB, k, k), MatrixView{y1.data(), kB, n, n}, dir,
                  RunContext{}, a1);
    tiled->Multiply(ConstMatrixView(in.data(), kB, k, k), MatrixView{y2.data(), kB, n, n}, dir,
                    RunContext{}, a2);
    EXPECT_EQ(y1, y2);
    EXPECT_EQ(a1.Get("tile_accumulations"), 0);
    EXPECT_GT(a2.Get("tile_accumulations"), 0);
    EXPECT_EQ(a1.Get("macs"), a2.Get("macs"));
  }
}

TEST_F(BitSerialMacroTest, ZeroInputsSkipCyclesAndZeroWeightsGateOps) {
  auto macro = MakeMacro("{impl: digital_bitserial, rows: 16, cols: 16}");
  ActionCounts pc;
  macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, pc);
  std::vector<float> dense = RandomFloats(kB * kR, 1.0f, 0.0, 21), sparse = dense;
  for (int64_t b = 0; b < kB; ++b) {
    // Word lines 16..47 (two whole row blocks) carry zeros, so all their planes are skipped;
    // scattered zeros elsewhere save ANDs only.
    for (int64_t r = 0; r < kR; ++r) {
      if ((r >= 16 && r < 48) || r % 5 == 3) sparse[b * kR + r] = 0;
    }
  }
  sparse[0] = dense[0] = 1.0f;  // same scale for both
  std::vector<float> y(kB * kC);
  ActionCounts cd, cs;
  macro->Multiply(ConstMatrixView(dense.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                  Direction::kForward, RunContext{}, cd);
  macro->Multiply(ConstMatrixView(sparse.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                  Direction::kForward, RunContext{}, cs);
  EXPECT_LT(cs.Get("bitserial_cycles"), cd.Get("bitserial_cycles"));
  EXPECT_GT(cs.Get("skipped_zero_cycles"), cd.Get("skipped_zero_cycles"));
  EXPECT_EQ(cs.Get("bitserial_cycles") + cs.Get("skipped_zero_cycles"),
            cd.Get("bitserial_cycles") + cd.Get("skipped_zero_cycles"));
  EXPECT_LT(cs.Get("cell_and_ops"), cd.Get("cell_and_ops"));
  EXPECT_EQ(cs.Get("macs"), cd.Get("macs"));

  // More zero weights: more gated ops, fewer ANDs.
  std::vector<float> w_sparse = w_;
  for (int64_t i = 0; i < kR * kC; i += 2) w_sparse[i] = 0;
  auto macro2 = MakeMacro("{impl: digital_bitserial, rows: 16, cols: 16}");
  macro2->Program(ConstMatrixView(w_sparse.data(), kR, kC, kC), RunContext{}, pc);
  ActionCounts cw;
  macro2->Multiply(ConstMatrixView(dense.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                   Direction::kForward, RunContext{}, cw);
  EXPECT_GT(cw.Get("gated_zero_weight_ops"), cd.Get("gated_zero_weight_ops"));
  EXPECT_LT(cw.Get("cell_and_ops"), cd.Get("cell_and_ops"));
  EXPECT_EQ(cw.Get("gated_zero_weight_ops") + cw.Get("cell_and_ops"),
            cd.Get("gated_zero_weight_ops") + cd.Get("cell_and_ops"));
}

TEST_F(BitSerialMacroTest, RefAndFastKernelsAgreeThroughTheMacroWithStochasticRounding) {
  const std::string common =
      "rows: 16, cols: 8, input_bits: 5, error_bits: 11, weight_bits: 2, "
      "rounding: stochastic, weight_rounding: stochastic, gradient_bits: 8";
  auto fast_macro = MakeMacro("{impl: digital_bitserial, kernel: fast, " + common + "}");
  auto ref_macro = MakeMacro("{impl: digital_bitserial, kernel: ref, " + common + "}");
  ThreadPool two(2);
  RunContext ctx{.seed = 9, .step = 3, .layer = 2, .stage = Stage::kForward, .pool = &two};
  ActionCounts cf, cr;
  fast_macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, cf);
  ref_macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, cr);
  std::vector<float> yf(kB * kC), yr(kB * kC), df(kB * kR), dr(kB * kR), gf(kR * kC), gr(kR * kC);
  fast_macro->Multiply(ConstMatrixView(x_.data(), kB, kR, kR), MatrixView{yf.data(), kB, kC, kC},
                       Direction::kForward, ctx, cf);
  ref_macro->Multiply(ConstMatrixView(x_.data(), kB, kR, kR), MatrixView{yr.data(), kB, kC, kC},
                      Direction::kForward, ctx, cr);
  ctx.stage = Stage::kBackward;
  fast_macro->Multiply(ConstMatrixView(e_.data(), kB, kC, kC), MatrixView{df.data(), kB, kR, kR},
                       Direction::kTransposed, ctx, cf);
  ref_macro->Multiply(ConstMatrixView(e_.data(), kB, kC, kC), MatrixView{dr.data(), kB, kR, kR},
                      Direction::kTransposed, ctx, cr);
  ctx.stage = Stage::kGradient;
  fast_macro->GradientCalc(ConstMatrixView(x_.data(), kB, kR, kR),
                           ConstMatrixView(e_.data(), kB, kC, kC),
                           MatrixView{gf.data(), kR, kC, kC}, ctx, cf);
  ref_macro->GradientCalc(ConstMatrixView(x_.data(), kB, kR, kR),
                          ConstMatrixView(e_.data(), kB, kC, kC), MatrixView{gr.data(), kR, kC, kC},
                          ctx, cr);
  EXPECT_EQ(yf, yr);
  EXPECT_EQ(df, dr);
  EXPECT_EQ(gf, gr);
  EXPECT_EQ(cf, cr);
}

TEST_F(BitSerialMacroTest, StochasticRoundingIsKeyedByContextNotByThreads) {
  auto macro = MakeMacro("{impl: digital_bitserial, input_bits: 3, rounding: stochastic}");
  ActionCounts counts;
  macro->Program(ConstMatrixView(w_.data(), kR, kC, kC), RunContext{}, counts);
  ThreadPool two(2);
  auto run = [&](int64_t step, ThreadPool* pool) {
    std::vector<float> y(kB * kC);
    RunContext ctx{.seed = 1, .step = step, .layer = 0, .stage = Stage::kForward, .pool = pool};
    macro->Multiply(ConstMatrixView(x_.data(), kB, kR, kR), MatrixView{y.data(), kB, kC, kC},
                    Direction::kForward, ctx, counts);
    return y;
  };
  EXPECT_EQ(run(4, nullptr), run(4, &two));
  EXPECT_NE(run(4, nullptr), run(5, nullptr));
}

TEST(BitSerialMacroConfig, RejectsWeightWidthsThatAreNotPowersOfTwo) {
  try {
    MakeMacro("{impl: digital_bitserial, weight_bits: 3}");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("weight_bits"), std::string::npos) << e.what();
  }
  EXPECT_THROW(MakeMacro("{impl: digital_bitserial, gradient_bits: 12}"), ConfigError);
  EXPECT_THROW(MakeMacro("{impl: digital_bitserial, weight_bits: 16, weight_bits_backward: 8}"),
               ConfigError);
  EXPECT_THROW(MakeMacro("{impl: digital_bitserial, input_bits: 17}"), ConfigError);
  EXPECT_NO_THROW(MakeMacro("{impl: digital_bitserial, input_bits: 13, weight_bits: 2}"));
}

}  // namespace
}  // namespace pim::kernels
