// FP digital CIM operand encoding: the fast encoder (bit arithmetic, AVX-512 / AVX2 bodies and
// scalar tails) equals the reference (fp::Encode, SharedExponent, AlignVector per element) bit
// for bit, in mantissas, exponents, counts and side outputs, on random matrices laced with NaN,
// +-Inf, float subnormals, FLT_MAX and ties, for every floating-point format, widths 2..16, both
// alignments and align roundings, exponent offsets, scales out of every format's range (and of
// float's), odd shapes, rows or columns as vectors, at 1 and 2 threads.
#include "pimtrain/kernels/fp_dcim_encode.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "pimtrain/kernels/bitserial_quantize.h"
#include "pimtrain/kernels/fp_dcim.h"

namespace pim::kernels {
namespace {

// Values spread over many binades with specials: NaN, +-Inf, float subnormals, FLT_MAX, zeros,
// exact halves of a format ULP (ties) and numbers near the subnormal boundary of every format.
std::vector<float> Values(int64_t n, uint64_t key, double special_rate) {
  const CounterRng rng(key);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const auto b = rng.Block(static_cast<uint64_t>(i));
    const float u = CounterRng::ToUnitFloat(b[0]);
    const float sign = (b[1] & 1) ? -1.0f : 1.0f;
    if (u < special_rate) {
      switch (b[2] % 9) {
        case 0: v[i] = std::numeric_limits<float>::quiet_NaN(); break;
        case 1: v[i] = sign * std::numeric_limits<float>::infinity(); break;
        case 2: v[i] = sign * std::numeric_limits<float>::denorm_min() * (1 + b[3] % 1000); break;
        case 3: v[i] = sign * std::numeric_limits<float>::max(); break;
        case 4: v[i] = 0.0f * sign; break;
        case 5: v[i] = sign * std::ldexp(1.0f + 1.0f / 256 + 1.0f / 512, static_cast<int>(b[3] % 40) - 20); break;
        case 6: v[i] = sign * std::ldexp(1.0f, -static_cast<int>(b[3] % 30) - 120); break;
        case 7: v[i] = sign * std::ldexp(1.5f, static_cast<int>(b[3] % 16) - 20); break;
        default: v[i] = sign * std::ldexp(1.0f + 1.0f / 16, static_cast<int>(b[3] % 200) - 100); break;
      }
    } else {
      // Mostly within a few binades (as activations are), a few far out.
      const int spread = b[2] % 8 == 0 ? 60 : 6;
      v[i] = sign * std::ldexp(1.0f + CounterRng::ToUnitFloat(b[3]),
                               static_cast<int>(b[1] % (2 * spread + 1)) - spread);
    }
  }
  return v;
}

struct EncodeCase {
  fp::Format format;
  int bits;
  fp::AlignRounding align;
  bool layer, by_rows, offsets;
  int scale_exp;
  int64_t rows, cols;
  double special_rate;
};

std::string Describe(const EncodeCase& c) {
  return std::string(fp::Name(c.format)) + " bits " + std::to_string(c.bits) +
         (c.align == fp::AlignRounding::kNearestEven ? " nearest" : " truncate") +
         (c.layer ? " layer" : " vector") + (c.by_rows ? " rows" : " columns") +
         (c.offsets ? " offsets" : "") + " s " + std::to_string(c.scale_exp) + " " +
         std::to_string(c.rows) + "x" + std::to_string(c.cols);
}

// Runs the reference and the fast encoder on one case and compares everything.
void Check(const EncodeCase& c, uint64_t key, ThreadPool* pool) {
  SCOPED_TRACE(Describe(c));
  const int64_t rows = c.rows, cols = c.cols, ld = cols + 3;  // strided rows
  std::vector<float> data = Values(rows * ld, key, c.special_rate);
  const ConstMatrixView v(data.data(), rows, cols, ld);
  const int64_t count = c.by_rows ? rows : cols, len = c.by_rows ? cols : rows;
  std::vector<int> offsets;
  if (c.offsets) {
    const CounterRng rng(key ^ 0x0FF5);
    for (int64_t e = 0; e < len; ++e) {
      offsets.push_back(static_cast<int>(rng.Below(static_cast<uint64_t>(e), 9)) - 4);
    }
  }
  const int* o = c.offsets ? offsets.data() : nullptr;
  EncodeSpec spec;
  spec.format = c.format;
  spec.bits = c.bits;
  spec.align_rounding = c.align;
  spec.scale_exp = c.scale_exp;
  spec.layer = c.layer;
  if (c.layer) {
    const float max_abs = ref::MaxForScale(v, Signedness::kSigned);
    spec.layer_exp = fp::CeilExponent(c.format, std::ldexp(double{max_abs}, c.scale_exp));
  }
  // Reference: vector-major.
  const EncodeVectors ev = c.by_rows ? EncodeVectors{data.data(), rows, cols, ld, 1, cols, 1, o}
                                     : EncodeVectors{data.data(), cols, rows, 1, ld, 1, cols, o};
  std::vector<int32_t> ra(static_cast<size_t>(rows * cols));
  std::vector<int> rexp(static_cast<size_t>(count));
  fp::AlignCounts rc;
  ref::EncodeAlign(ev, spec, CounterRng(key), ra.data(), rexp.data(), rc, nullptr);
  // Fast: v's layout, with every side output.
  const int pw = NumNibbles(c.bits);
  std::vector<int32_t> fa(static_cast<size_t>(rows * cols), -7);
  std::vector<int> fexp(static_cast<size_t>(count), -7);
  std::vector<uint32_t> scratch(static_cast<size_t>(rows * cols));
  std::vector<float> f32(static_cast<size_t>(rows * cols), -1.0f);
  std::vector<double> f64(static_cast<size_t>(rows * cols), -1.0);
  std::vector<int64_t> col_nz(static_cast<size_t>(pw * cols), 0), row_nz(static_cast<size_t>(pw * rows), -1);
  EncodeSideOutputs side;
  side.f32 = f32.data();
  side.col_nz = col_nz.data();
  if (!c.by_rows) {
    side.row_nz = row_nz.data();
    if (c.bits > 12) side.f64 = f64.data();  // the unfused side pass (doubles)
  }
  fp::AlignCounts fc;
  fast::EncodeAlignMatrix(v, c.by_rows, spec, o, fa.data(), fexp.data(), fc, pool, side,
                          scratch.data());
  EXPECT_EQ(fexp, rexp);
  EXPECT_EQ(fc, rc) << "compares " << fc.exponent_compares << " / " << rc.exponent_compares
                    << ", shifts " << fc.alignment_shifts << " / " << rc.alignment_shifts
                    << ", lost " << fc.shifted_out_bits << " / " << rc.shifted_out_bits
                    << ", saturated " << fc.saturated << " / " << rc.saturated;
  int64_t mismatches = 0;
  std::vector<int64_t> want_col(static_cast<size_t>(pw * cols), 0), want_row(static_cast<size_t>(pw * rows), 0);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      const int32_t want = c.by_rows ? ra[i * cols + j] : ra[j * rows + i];
      const int32_t got = fa[i * cols + j];
      if (got != want && ++mismatches <= 5) {
        ADD_FAILURE() << "element (" << i << ", " << j << ") x " << v.Row(i)[j] << ": fast "
                      << got << ", ref " << want;
      }
      EXPECT_EQ(f32[i * cols + j], static_cast<float>(want));
      if (side.f64 != nullptr) {
        EXPECT_EQ(f64[i * cols + j], static_cast<double>(want));
      }
      for (int d = 0; d < pw; ++d) {
        const bool nz = Nibble(want, d, pw) != 0;
        want_col[d * cols + j] += nz;
        want_row[d * rows + i] += nz;
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
  EXPECT_EQ(col_nz, want_col);
  if (side.row_nz != nullptr) {
    EXPECT_EQ(row_nz, want_row);
  }
}

TEST(FpDcimEncodeTest, FastEqualsRefOnRandomMatricesWithSpecialsAtOneAndTwoThreads) {
  ThreadPool two(2);
  const fp::Format formats[] = {fp::Format::kE4M3, fp::Format::kE5M2, fp::Format::kBF16,
                                fp::Format::kFP16};
  const CounterRng rng(2020);
  uint64_t i = 0;
  for (int t = 0; t < 64; ++t) {
    EncodeCase c;
    c.format = formats[t % 4];
    c.bits = 2 + static_cast<int>(rng.Below(i++, 15));  // 2..16
    c.align = rng.Below(i++, 2) ? fp::AlignRounding::kNearestEven : fp::AlignRounding::kTruncate;
    c.layer = rng.Below(i++, 3) == 0;
    c.by_rows = rng.Below(i++, 2) == 1;
    c.offsets = c.by_rows && !c.layer && rng.Below(i++, 2) == 1;  // BP folds offsets, vector-wise
    // Tensor scales as the macro takes them (into the top of the format), and out of range.
    const int scales[] = {0, 0, 9, -7, 30, -30, 100, -120};
    c.scale_exp = scales[rng.Below(i++, 8)];
    // Odd shapes: tails of every vector body (16, 8 lanes and scalar).
    c.rows = 1 + static_cast<int64_t>(rng.Below(i++, 40));
    c.cols = 1 + static_cast<int64_t>(rng.Below(i++, 75));
    c.special_rate = t % 3 == 0 ? 0.0 : t % 3 == 1 ? 0.05 : 0.4;
    Check(c, 7000 + t, t % 2 ? &two : nullptr);
  }
}

// A whole vector of float subnormals, an all-zero vector, all-NaN and all-Inf vectors: the
// shared exponent of a vector without finite nonzero elements, and saturation everywhere.
TEST(FpDcimEncodeTest, FastEqualsRefOnDegenerateVectors) {
  const float specials[] = {std::numeric_limits<float>::denorm_min() * 3, 0.0f,
                            std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::max()};
  for (fp::Format f : {fp::Format::kE4M3, fp::Format::kE5M2, fp::Format::kBF16,
                       fp::Format::kFP16}) {
    for (float x : specials) {
      for (int s : {0, 40, -40}) {
        SCOPED_TRACE(std::string(fp::Name(f)) + " x " + std::to_string(x) + " s " +
                     std::to_string(s));
        const int64_t n = 37;
        std::vector<float> data(static_cast<size_t>(n), x);
        data[5] = 1.0f;  // one ordinary element in the second vector below
        const ConstMatrixView v(data.data(), 1, n, n);
        EncodeSpec spec;
        spec.format = f;
        spec.bits = 8;
        spec.scale_exp = s;
        std::vector<int32_t> ra(n), fa(n);
        int rexp = 0, fexp = 0;
        fp::AlignCounts rc, fc;
        const EncodeVectors ev{data.data() + 6, 1, n - 6, n, 1, n, 1, nullptr};
        ref::EncodeAlign(ev, spec, CounterRng(1), ra.data(), &rexp, rc, nullptr);
        std::vector<uint32_t> scratch(n);
        fast::EncodeAlignMatrix(ConstMatrixView(data.data() + 6, 1, n - 6, n), true, spec,
                                nullptr, fa.data(), &fexp, fc, nullptr, {}, scratch.data());
        EXPECT_EQ(fexp, rexp);
        EXPECT_EQ(fc, rc);
        EXPECT_EQ(std::vector<int32_t>(fa.begin(), fa.begin() + (n - 6)),
                  std::vector<int32_t>(ra.begin(), ra.begin() + (n - 6)));
      }
    }
  }
}

// The GC operands' rounding: every float format, scales from far below to far above float's
// own exponent range (the fast encoder's power-of-two multiplier is then 0 or inf).
TEST(FpDcimEncodeTest, RoundToFormatFastEqualsRefAtEveryScale) {
  const std::vector<float> x = Values(301, 99, 0.3);
  for (fp::Format f : {fp::Format::kE4M3, fp::Format::kE5M2, fp::Format::kBF16,
                       fp::Format::kFP16}) {
    for (int s : {-300, -160, -150, -149, -140, -127, -126, -60, 0, 17, 60, 127, 128, 140, 300}) {
      SCOPED_TRACE(std::string(fp::Name(f)) + " s " + std::to_string(s));
      std::vector<float> want(x.size());
      std::vector<uint32_t> got(x.size());
      ref::RoundToFormat(x.data(), static_cast<int64_t>(x.size()), s, f, want.data());
      fast::RoundToFormat(x.data(), static_cast<int64_t>(x.size()), s, f, got.data());
      int64_t bad = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        if (std::bit_cast<uint32_t>(want[i]) != got[i] && ++bad <= 3) {
          ADD_FAILURE() << "x " << x[i] << ": fast " << std::bit_cast<float>(got[i]) << ", ref "
                        << want[i];
        }
      }
      EXPECT_EQ(bad, 0);
    }
  }
}

// The encoder at scales out of float's exponent range, through a whole aligned matrix.
TEST(FpDcimEncodeTest, FastEqualsRefAtScalesBeyondTheFloatRange) {
  for (int s : {-200, -151, -150, 128, 150, 200}) {
    for (fp::Format f : {fp::Format::kBF16, fp::Format::kE4M3}) {
      EncodeCase c{f, 8, fp::AlignRounding::kTruncate, false, true, false, s, 5, 29, 0.1};
      Check(c, 3000 + static_cast<uint64_t>(s + 300), nullptr);
      c.by_rows = false;
      Check(c, 4000 + static_cast<uint64_t>(s + 300), nullptr);
    }
  }
}

}  // namespace
}  // namespace pim::kernels
