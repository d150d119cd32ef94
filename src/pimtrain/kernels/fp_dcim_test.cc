// FP digital CIM kernels: ref accurate == exact integer dot products renormalized by the
// format encoder; fast == ref bit for bit (outputs and every count) across widths, reduction
// lengths, tree sizes, approximate settings, output formats and thread counts; the broken-array
// multiplier and LOA adder on hand-worked cases; the cyclic mapping's reads.
#include "pimtrain/kernels/fp_dcim.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <vector>

#include "pimtrain/base/rng.h"
#include "pimtrain/numerics/formats.h"

namespace pim::kernels {
namespace {

struct Case {
  std::vector<int32_t> x, w;
  std::vector<int> xe, we;
  std::vector<float> y;
  DcimProblem p;
};

// x: m x k, w: k x n stored transposed when w_t (n x k) to exercise strides.
Case MakeCase(int64_t m, int64_t k, int64_t n, int bx, int bw, double zero, int exp_range,
              uint64_t key, bool w_t) {
  CounterRng rng(key);
  uint64_t ctr = 0;
  auto draw = [&](int bits) {
    const auto b = rng.Block(ctr++);
    if (CounterRng::ToUnitFloat(b[0]) < zero) return int32_t{0};
    const int64_t lo = -(int64_t{1} << (bits - 1)), span = int64_t{1} << bits;
    // Half the draws from the extremes, where the tree ranges are tight.
    if (b[2] % 4 == 0) return static_cast<int32_t>(b[3] & 1 ? lo : lo + span - 1);
    return static_cast<int32_t>(lo + static_cast<int64_t>(b[1] % span));
  };
  Case c;
  c.x.resize(m * k);
  c.w.resize(k * n);
  for (auto& v : c.x) v = draw(bx);
  for (auto& v : c.w) v = draw(bw);
  for (int64_t i = 0; i < m; ++i)
    c.xe.push_back(static_cast<int>(rng.Below(ctr++, 2 * exp_range + 1)) - exp_range);
  for (int64_t j = 0; j < n; ++j)
    c.we.push_back(static_cast<int>(rng.Below(ctr++, 2 * exp_range + 1)) - exp_range);
  c.y.assign(m * n, -1.0f);
  c.p.m = m;
  c.p.k = k;
  c.p.n = n;
  c.p.x = {c.x.data(), k, 1, bx};
  c.p.w = w_t ? DcimOperand{c.w.data(), 1, k, bw} : DcimOperand{c.w.data(), n, 1, bw};
  c.p.x_exp = c.xe.data();
  c.p.w_exp = c.we.data();
  c.p.y = c.y.data();
  c.p.ldy = n;
  return c;
}

std::vector<uint32_t> Bits(const std::vector<float>& v) {
  std::vector<uint32_t> out;
  for (float f : v) out.push_back(std::bit_cast<uint32_t>(f));
  return out;
}

TEST(FpDcimTest, RefAccurateIsTheExactSumRoundedToTheOutputFormat) {
  uint64_t key = 1;
  for (fp::Format out : {fp::Format::kBF16, fp::Format::kFP16, fp::Format::kFP32,
                         fp::Format::kE4M3, fp::Format::kE5M2}) {
    for (int bits : {4, 8, 12}) {
      for (int exp_range : {3, 40, 140}) {  // 140: overflow and underflow of every format
        Case c = MakeCase(3, 150, 5, bits, bits, 0.2, exp_range, key++, false);
        c.p.out_format = out;
        DcimCounts counts;
        ref::DcimMatMul(c.p, counts);
        for (int64_t i = 0; i < c.p.m; ++i) {
          for (int64_t j = 0; j < c.p.n; ++j) {
            int64_t s = 0;
            for (int64_t r = 0; r < c.p.k; ++r) s += int64_t{c.p.x.At(i, r)} * c.p.w.At(r, j);
            const float want =
                fp::RoundTo(out, std::ldexp(static_cast<double>(s), c.xe[i] + c.we[j]));
            EXPECT_EQ(std::bit_cast<uint32_t>(c.y[i * c.p.n + j]), std::bit_cast<uint32_t>(want))
                << fp::Name(out) << " bits " << bits << " s " << s;
          }
        }
        EXPECT_EQ(counts.macs, 3 * 150 * 5);
        EXPECT_EQ(counts.multiplier_ops + counts.gated_zero_ops,
                  3 * 150 * 5 * NumNibbles(bits) * NumNibbles(bits));
        // 150 = 64 + 64 + 22: three tree passes per nibble pair.
        EXPECT_EQ(counts.adder_tree_adds, 15 * NumNibbles(bits) * NumNibbles(bits) * (150 - 3));
        EXPECT_EQ(counts.tree_accumulations, 15 * 2);
        EXPECT_EQ(counts.normalizations, 15);
      }
    }
  }
}

TEST(FpDcimTest, FastEqualsRefInOutputsAndCounts) {
  ThreadPool two(2);
  uint64_t key = 100;
  int cases = 0;
  for (int bx : {2, 4, 5, 8, 11, 12, 16}) {
    for (int bw : {3, 4, 8, 9, 16}) {
      for (int64_t k : {1, 63, 64, 65, 200}) {
        const int variant = static_cast<int>(key % 6);
        Case c = MakeCase(5, k, 7, bx, bw, variant == 0 ? 0.6 : 0.1, 20, key++, variant % 2);
        c.p.tree_inputs = variant == 3 ? 16 : (variant == 5 ? 7 : 64);
        c.p.out_format = variant == 4 ? fp::Format::kFP32 : fp::Format::kBF16;
        if (variant >= 2) {
          c.p.approx.enabled = true;
          c.p.approx.dropped_columns = static_cast<int>(key % 8);
          c.p.approx.or_bits = static_cast<int>((key / 8) % 6);
          c.p.approx.bias_compensation = key % 3 != 0;
        }
        DcimCounts want;
        ref::DcimMatMul(c.p, want);
        const std::vector<float> ref_y = c.y;
        for (ThreadPool* pool : {static_cast<ThreadPool*>(nullptr), &two}) {
          std::fill(c.y.begin(), c.y.end(), -1.0f);
          DcimCounts got;
          fast::DcimMatMul(c.p, got, pool);
          EXPECT_EQ(Bits(c.y), Bits(ref_y)) << "bx " << bx << " bw " << bw << " k " << k
                                            << " variant " << variant;
          EXPECT_TRUE(got == want) << "bx " << bx << " bw " << bw << " k " << k;
        }
        ++cases;
      }
    }
  }
  EXPECT_EQ(cases, 7 * 5 * 5);
}

TEST(FpDcimTest, BrokenArrayMultiplierAndLowerPartOrAdder) {
  std::vector<int32_t> x = {7}, w = {7};
  std::vector<float> y(1);
  DcimProblem p;
  p.m = p.k = p.n = 1;
  p.x = {x.data(), 1, 1, 4};
  p.w = {w.data(), 1, 1, 4};
  p.y = y.data();
  p.ldy = 1;
  p.out_format = fp::Format::kFP32;
  p.approx = {true, 2, 0, false};
  DcimCounts c;
  ref::DcimMatMul(p, c);
  // 7 x 7 = 49; the terms a0b0, a0b1, a1b0 (1 + 2 + 2) are dropped.
  EXPECT_EQ(y[0], 44.0f);
  EXPECT_EQ(c.approx_dropped_terms, 3);
  p.approx.bias_compensation = true;  // + round(5 / 4) = 1 per performed multiply
  ref::DcimMatMul(p, c);
  EXPECT_EQ(y[0], 45.0f);
  // Signed operands: -8 x 7 keeps its Baugh-Wooley terms; the dropped ones are a_i b_j, i,j<2:
  // -8 = 1000b has no low bits, so nothing is lost.
  x[0] = -8;
  p.approx.bias_compensation = false;
  ref::DcimMatMul(p, c);
  EXPECT_EQ(y[0], -56.0f);
  // LOA with 2 OR bits: 3 + 1 -> low (3 | 1) & 3 = 3, carry a1 & b1 = 0, high 0: 3 (exact 4).
  std::vector<int32_t> x2 = {1, 1}, w2 = {3, 1};
  p.k = 2;
  p.x = {x2.data(), 2, 1, 4};
  p.w = {w2.data(), 1, 1, 4};
  p.tree_inputs = 2;
  p.approx = {true, 0, 2, false};
  ref::DcimMatMul(p, c);
  EXPECT_EQ(y[0], 3.0f);
  DcimCounts fc;
  fast::DcimMatMul(p, fc, nullptr);
  EXPECT_EQ(y[0], 3.0f);
  // 8-bit operands: only the low nibble pair is approximated. 112 = 0x70 has a zero low
  // nibble, so 112 x 112 is exact; 113 x 113 loses the low pair's a0b0 (1 x 1).
  std::vector<int32_t> x3 = {112}, w3 = {112};
  p.k = 1;
  p.x = {x3.data(), 1, 1, 8};
  p.w = {w3.data(), 1, 1, 8};
  p.tree_inputs = 64;
  p.approx = {true, 1, 0, false};
  ref::DcimMatMul(p, c);
  EXPECT_EQ(y[0], 12544.0f);
  x3[0] = w3[0] = 113;
  DcimCounts c3;
  ref::DcimMatMul(p, c3);
  EXPECT_EQ(y[0], 113.0f * 113.0f - 1.0f);
  EXPECT_EQ(c3.approx_dropped_terms, 1);
  p.k = 2;
  p.x = {x2.data(), 2, 1, 4};
  p.w = {w2.data(), 1, 1, 4};
  p.tree_inputs = 2;
  // Approximate mode with nothing approximated is the accurate MAC.
  p.approx = {true, 0, 0, false};
  ref::DcimMatMul(p, c);
  EXPECT_EQ(y[0], 4.0f);
}

TEST(FpDcimTest, CyclicMappingReadsRowsAndDiagonals) {
  const int64_t rows = 37, cols = 45, n = 16;
  CounterRng rng(5);
  std::vector<int32_t> s(rows * cols);
  for (int64_t i = 0; i < rows * cols; ++i) s[i] = static_cast<int32_t>(rng.Below(i, 1000)) + 1;
  CyclicArray a;
  a.Store(s.data(), rows, cols, n);
  ASSERT_EQ(a.row_blocks(), 3);
  ASSERT_EQ(a.col_blocks(), 3);
  std::vector<int32_t> port(n), idx(n), rot(n);
  for (int64_t t = 0; t < n; ++t) idx[t] = static_cast<int32_t>(t);
  for (int64_t bj = 0; bj < 3; ++bj) {
    for (int64_t bi = 0; bi < 3; ++bi) {
      for (int64_t u = 0; u < n; ++u) {
        // A row read is row u of the block rotated by u: rotating the input's indices by u
        // lines element v of the row up with input v.
        a.ReadRow(bj, bi, u, port.data());
        CyclicArray::Rotate(idx.data(), n, u, rot.data());
        for (int64_t p = 0; p < n; ++p) {
          const int64_t r = bj * n + u, c = bi * n + rot[p];
          EXPECT_EQ(port[p], r < rows && c < cols ? s[r * cols + c] : 0);
        }
        // A diagonal read is column v = u of the block rotated by v: a row of S^T.
        a.ReadDiagonal(bj, bi, u, port.data());
        for (int64_t p = 0; p < n; ++p) {
          const int64_t r = bj * n + rot[p], c = bi * n + u;
          EXPECT_EQ(port[p], r < rows && c < cols ? s[r * cols + c] : 0);
        }
      }
    }
  }
  EXPECT_EQ(DroppedTermsPerMultiply(0), 0);
  EXPECT_EQ(DroppedTermsPerMultiply(3), 6);
  EXPECT_EQ(DroppedTermsPerMultiply(7), 16);
}

}  // namespace
}  // namespace pim::kernels
