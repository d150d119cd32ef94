// Number formats and pre-alignment: every code of every 8- and 16-bit format against an
// independent decoder (fields -> ldexp), round trips, ties, overflow, subnormals, stochastic
// rounding; AlignVector against exact double arithmetic.
#include "pimtrain/numerics/formats.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "pimtrain/base/rng.h"
#include "pimtrain/numerics/prealign.h"

namespace pim::fp {
namespace {

// The reference decoder, written from the format definitions (OCP OFP8 rev 1.0 tables, IEEE
// 754 binary16, bfloat16) without the implementation's field code: value = (-1)^s *
// 2^(E - bias) * (1 + m / 2^M) for normal E, 2^(1 - bias) * (m / 2^M) for E = 0.
struct RefSpec {
  int e_bits, m_bits;
  bool ieee_specials;  // all-ones exponent is inf/NaN; else (E4M3) only S.1111.111 is NaN
};

double RefDecode(const RefSpec& f, uint32_t code) {
  const int total = 1 + f.e_bits + f.m_bits;
  const double sign = (code >> (total - 1)) & 1 ? -1.0 : 1.0;
  const uint32_t ef = (code >> f.m_bits) & ((1u << f.e_bits) - 1);
  const uint32_t mf = code & ((1u << f.m_bits) - 1);
  const int bias = (1 << (f.e_bits - 1)) - 1;
  const uint32_t all_ones = (1u << f.e_bits) - 1;
  if (f.ieee_specials && ef == all_ones) {
    return mf == 0 ? sign * std::numeric_limits<double>::infinity()
                   : std::numeric_limits<double>::quiet_NaN();
  }
  if (!f.ieee_specials && ef == all_ones && mf == (1u << f.m_bits) - 1) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  if (ef == 0) return sign * std::ldexp(static_cast<double>(mf), 1 - bias - f.m_bits);
  return sign * std::ldexp(1.0 + std::ldexp(static_cast<double>(mf), -f.m_bits),
                           static_cast<int>(ef) - bias);
}

void ExpectSame(double want, float got, uint32_t code, const char* name) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << name << " code " << code;
  } else {
    EXPECT_EQ(want, static_cast<double>(got)) << name << " code " << code;
    EXPECT_EQ(std::signbit(want), std::signbit(got)) << name << " code " << code;
  }
}

TEST(FormatsTest, EveryCodeDecodesLikeTheReference) {
  struct Case {
    Format f;
    RefSpec ref;
  };
  for (const Case& c : {Case{Format::kE4M3, {4, 3, false}}, Case{Format::kE5M2, {5, 2, true}},
                        Case{Format::kBF16, {8, 7, true}}, Case{Format::kFP16, {5, 10, true}}}) {
    const int bits = Info(c.f).bits;
    for (uint32_t code = 0; code < (1u << bits); ++code) {
      ExpectSame(RefDecode(c.ref, code), Decode(c.f, code), code, Name(c.f));
    }
  }
  // Integers: two's complement.
  for (uint32_t code = 0; code < 16; ++code) {
    EXPECT_EQ(Decode(Format::kInt4, code), code < 8 ? static_cast<float>(code) : code - 16.0f);
  }
  for (uint32_t code = 0; code < 256; ++code) {
    EXPECT_EQ(Decode(Format::kInt8, code), code < 128 ? static_cast<float>(code) : code - 256.0f);
  }
}

TEST(FormatsTest, FormatConstantsFollowTheSpecifications) {
  EXPECT_EQ(Info(Format::kE4M3).max_finite, 448.0);
  EXPECT_EQ(Info(Format::kE5M2).max_finite, 57344.0);
  EXPECT_EQ(Info(Format::kFP16).max_finite, 65504.0);
  EXPECT_EQ(Info(Format::kBF16).max_finite, std::ldexp(255.0, 120));  // (2 - 2^-7) 2^127
  EXPECT_EQ(Decode(Format::kE4M3, 0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(Decode(Format::kE5M2, 0x01), std::ldexp(1.0f, -16));
  EXPECT_EQ(Decode(Format::kFP16, 0x0001), std::ldexp(1.0f, -24));
  EXPECT_FALSE(Info(Format::kE4M3).has_inf);
  EXPECT_TRUE(Info(Format::kE4M3).saturates);
  EXPECT_FALSE(Info(Format::kE5M2).saturates);
  Format f;
  EXPECT_TRUE(ParseFormat("e5m2", &f));
  EXPECT_EQ(f, Format::kE5M2);
  EXPECT_FALSE(ParseFormat("fp8", &f));
}

TEST(FormatsTest, EncodeOfDecodeIsTheIdentity) {
  for (Format f : {Format::kInt4, Format::kInt8, Format::kE4M3, Format::kE5M2, Format::kBF16,
                   Format::kFP16}) {
    const int bits = Info(f).bits;
    for (uint32_t code = 0; code < (1u << bits); ++code) {
      const float v = Decode(f, code);
      if (std::isnan(v)) {
        EXPECT_TRUE(std::isnan(Decode(f, Encode(f, v)))) << Name(f) << " " << code;
        continue;
      }
      for (Rounding r : {Rounding::kNearestEven, Rounding::kTruncate, Rounding::kStochastic}) {
        EXPECT_EQ(Encode(f, v, r, 0xFFFFFFFFu), code) << Name(f) << " " << code;
      }
    }
  }
}

// All positive finite values of an 8-bit or 16-bit format, ascending.
std::vector<double> PositiveValues(Format f) {
  std::vector<double> out;
  const int bits = Info(f).bits;
  for (uint32_t code = 0; code < (1u << (bits - 1)); ++code) {
    const double v = Decode(f, code);
    if (std::isfinite(v)) out.push_back(v);
  }
  return out;
}

TEST(FormatsTest, NearestEvenTiesAndNeighbours) {
  for (Format f : {Format::kE4M3, Format::kE5M2, Format::kBF16, Format::kFP16}) {
    const std::vector<double> v = PositiveValues(f);
    for (size_t i = 0; i + 1 < v.size(); ++i) {
      const double lo = v[i], hi = v[i + 1], mid = (lo + hi) / 2;
      const uint32_t clo = Encode(f, lo), chi = Encode(f, hi);
      // The tie goes to the even code (its mantissa LSB is 0).
      EXPECT_EQ(Encode(f, mid), clo % 2 == 0 ? clo : chi) << Name(f) << " " << mid;
      EXPECT_EQ(Encode(f, std::nextafter(mid, 0.0)), clo) << Name(f);
      EXPECT_EQ(Encode(f, std::nextafter(mid, 1e300)), chi) << Name(f);
      EXPECT_EQ(Encode(f, -mid), Encode(f, mid) | (1u << (Info(f).bits - 1)));
      EXPECT_EQ(Encode(f, std::nextafter(hi, 0.0), Rounding::kTruncate), clo);
    }
  }
  // Integers: ties to even, clipping.
  EXPECT_EQ(Decode(Format::kInt8, Encode(Format::kInt8, 2.5)), 2.0f);
  EXPECT_EQ(Decode(Format::kInt8, Encode(Format::kInt8, -3.5)), -4.0f);
  EXPECT_EQ(Decode(Format::kInt8, Encode(Format::kInt8, 300.0)), 127.0f);
  EXPECT_EQ(Decode(Format::kInt8, Encode(Format::kInt8, -300.0)), -128.0f);
  EXPECT_EQ(Decode(Format::kInt4, Encode(Format::kInt4, -9.0)), -8.0f);
  EXPECT_EQ(Encode(Format::kInt4, std::nan("")), 0u);
}

TEST(FormatsTest, OverflowSaturatesOrGoesToInfinityAsEachFormatSays) {
  // E4M3 (OCP, saturating): past 448 and for inf, the largest finite code S.1111.110.
  for (double x : {449.0, 464.0, 465.0, 1e6, std::numeric_limits<double>::infinity()}) {
    EXPECT_EQ(Encode(Format::kE4M3, x), 0x7Eu) << x;
    EXPECT_EQ(Encode(Format::kE4M3, -x), 0xFEu) << x;
  }
  EXPECT_EQ(Encode(Format::kE4M3, std::nan("")) & 0x7F, 0x7Fu);
  // E5M2 (IEEE-like): the tie at 61440 (halfway from 57344 to 2^16) rounds to the even 2^16,
  // which overflows to inf; below it, 57344. kSaturate keeps the largest finite value.
  EXPECT_EQ(Encode(Format::kE5M2, 61440.0), 0x7Cu);
  EXPECT_EQ(Encode(Format::kE5M2, 61439.0), 0x7Bu);
  EXPECT_EQ(Encode(Format::kE5M2, 1e9, Rounding::kNearestEven, 0, Overflow::kSaturate), 0x7Bu);
  EXPECT_EQ(Encode(Format::kE5M2, -std::numeric_limits<double>::infinity()), 0xFCu);
  EXPECT_EQ(Encode(Format::kE5M2, 1e9, Rounding::kTruncate), 0x7Cu);  // past max: overflow
  EXPECT_EQ(Decode(Format::kFP16, Encode(Format::kFP16, 65520.0)),
            std::numeric_limits<float>::infinity());
  EXPECT_EQ(Decode(Format::kFP16, Encode(Format::kFP16, 65519.0)), 65504.0f);
  EXPECT_TRUE(std::isinf(Decode(Format::kBF16, Encode(Format::kBF16, 3.5e38))));
}

TEST(FormatsTest, SubnormalsRoundAtTheFixedQuantum) {
  const double q = std::ldexp(1.0, -9);  // E4M3 subnormal quantum
  EXPECT_EQ(Encode(Format::kE4M3, q / 2), 0u);                     // tie to even (zero)
  EXPECT_EQ(Encode(Format::kE4M3, q / 2 * 1.0001), 1u);            // just above the tie
  EXPECT_EQ(Encode(Format::kE4M3, 1.5 * q), 2u);                   // tie to even (2)
  EXPECT_EQ(Encode(Format::kE4M3, -q / 4), 0x80u);                 // signed zero
  EXPECT_EQ(Decode(Format::kE4M3, Encode(Format::kE4M3, 7.6 * q)), 8 * q);  // to the normal 2^-6
  EXPECT_EQ(Decode(Format::kBF16, Encode(Format::kBF16, std::ldexp(1.0, -130))),
            std::ldexp(1.0f, -130));  // a bfloat16 subnormal (2^-133 quantum)
}

TEST(FormatsTest, StochasticRoundingIsUnbiasedAndKeyedByTheRandomWord) {
  const double lo = 1.0, hi = 1.125;  // consecutive E4M3 values
  const double x = 1.03;              // 24 % of the way up
  EXPECT_EQ(Encode(Format::kE4M3, x, Rounding::kStochastic, 0), Encode(Format::kE4M3, lo));
  EXPECT_EQ(Encode(Format::kE4M3, x, Rounding::kStochastic, 0xFFFFFFFFu),
            Encode(Format::kE4M3, hi));
  CounterRng rng(7);
  double sum = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    sum += Decode(Format::kE4M3, Encode(Format::kE4M3, x, Rounding::kStochastic, rng.Block(i)[0]));
  }
  EXPECT_NEAR(sum / n, x, 0.003);  // 5 sigma of the mean of a 0.125 * Bernoulli(0.24)
  // Integers round the magnitude stochastically too.
  EXPECT_EQ(Decode(Format::kInt8, Encode(Format::kInt8, -2.25, Rounding::kStochastic, 0)), -2.0f);
  EXPECT_EQ(Decode(Format::kInt8, Encode(Format::kInt8, -2.25, Rounding::kStochastic, 0xF0000000u)),
            -3.0f);
}

TEST(FormatsTest, Bf16BitTrickEqualsTheEncoder) {
  CounterRng rng(11);
  for (uint32_t i = 0; i < (1u << 18); ++i) {
    const uint32_t bits = rng.Block(i)[0];
    const float x = std::bit_cast<float>(bits);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(Decode(Format::kBF16, Bf16Nearest(bits))));
    } else {
      ASSERT_EQ(Bf16Nearest(bits), Encode(Format::kBF16, x)) << std::hex << bits;
    }
  }
}

TEST(FormatsTest, CeilAndTensorScaleExponents) {
  EXPECT_EQ(CeilExponent(Format::kE4M3, 1.0), 0);
  EXPECT_EQ(CeilExponent(Format::kE4M3, 1.9), 1);   // any rounding may reach 2.0
  EXPECT_EQ(CeilExponent(Format::kE4M3, 1.8), 0);   // 1.875 is below 2
  EXPECT_EQ(CeilExponent(Format::kE4M3, 1e-9), -6);  // subnormal range: emin
  EXPECT_EQ(CeilExponent(Format::kE4M3, 1e9), 8);    // saturates at emax
  EXPECT_EQ(TensorScaleExponent(Format::kE4M3, 1.0), 8);  // 256 <= 448 < 512
  EXPECT_EQ(TensorScaleExponent(Format::kE5M2, 3e-3), 24);
  EXPECT_LE(std::ldexp(3e-3, 24), 57344.0);
  EXPECT_GT(std::ldexp(3e-3, 25), 57344.0);
  EXPECT_EQ(TensorScaleExponent(Format::kBF16, 0.0), 0);
}

// AlignVector against exact arithmetic: a_i = R(value_i / 2^t) with t = E* - (W - 2), R
// truncating toward zero or rounding half to even, the magnitude clipped to 2^(W-1) - 1.
TEST(PrealignTest, AlignedMantissasMatchExactArithmetic) {
  CounterRng rng(3);
  uint64_t ctr = 0;
  for (Format f : {Format::kE4M3, Format::kE5M2, Format::kBF16, Format::kFP16}) {
    for (int bits = 2; bits <= 16; ++bits) {
      for (AlignRounding r : {AlignRounding::kTruncate, AlignRounding::kNearestEven}) {
        for (int spread : {0, 3, 12, 40}) {
          const int len = 37;
          std::vector<uint32_t> codes(len);
          std::vector<int> offsets(len);
          for (int i = 0; i < len; ++i) {
            const auto b = rng.Block(ctr++);
            const double mag = std::ldexp(1.0 + (b[0] >> 8) * 0x1p-24,
                                          -static_cast<int>(b[1] % (spread + 1)));
            const double v = (b[2] & 1 ? -mag : mag) * (b[3] % 7 == 0 ? 0.0 : 1.0);
            codes[i] = Encode(f, i == 5 ? 1e4 * v : v, Rounding::kNearestEven, 0,
                              Overflow::kSaturate);  // element 5: one huge element
            offsets[i] = static_cast<int>(b[3] % 5) - 2;
          }
          for (bool use_offsets : {false, true}) {
            const int* o = use_offsets ? offsets.data() : nullptr;
            AlignCounts c;
            int shared = 0;
            const bool any = SharedExponent(f, codes.data(), len, 1, o, &shared, c);
            ASSERT_TRUE(any);
            std::vector<int32_t> a(len);
            const int t = AlignVector(f, codes.data(), len, 1, o, shared, bits, r, a.data(), 1, c);
            EXPECT_EQ(t, shared - (bits - 2));
            EXPECT_EQ(c.exponent_compares, len);
            const double max_mag = std::ldexp(1.0, bits - 1) - 1;
            for (int i = 0; i < len; ++i) {
              const double v = std::ldexp(static_cast<double>(Decode(f, codes[i])), o ? o[i] : 0);
              const double s = std::fabs(std::ldexp(v, -t));
              double q = r == AlignRounding::kTruncate ? std::floor(s) : std::nearbyint(s);
              q = std::min(q, max_mag);
              EXPECT_EQ(a[i], static_cast<int32_t>(v < 0 ? -q : q))
                  << Name(f) << " bits " << bits << " element " << i;
            }
          }
        }
      }
    }
  }
}

TEST(PrealignTest, CountsShiftsAndLostBits) {
  // E4M3 at 4 bits: M + 2 - W = 1. Values 8 (E 3), 1 (E 0), 0.5 (E -1), 0.
  std::vector<uint32_t> codes = {Encode(Format::kE4M3, 8.0), Encode(Format::kE4M3, 1.0),
                                 Encode(Format::kE4M3, 0.5), 0};
  AlignCounts c;
  int e = 0;
  ASSERT_TRUE(SharedExponent(Format::kE4M3, codes.data(), 4, 1, nullptr, &e, c));
  EXPECT_EQ(e, 3);
  std::vector<int32_t> a(4);
  const int t = AlignVector(Format::kE4M3, codes.data(), 4, 1, nullptr, e, 4,
                            AlignRounding::kTruncate, a.data(), 1, c);
  EXPECT_EQ(t, 1);
  EXPECT_EQ(a, (std::vector<int32_t>{4, 0, 0, 0}));  // 1.0 = 8 >> 4: lost entirely
  EXPECT_EQ(c.alignment_shifts, 3);                   // three nonzero, all shifted
  EXPECT_EQ(c.shifted_out_bits, 1 + 4 + 4);           // shifts 1, 4, 5 capped at 4 bits
  EXPECT_EQ(c.exponent_compares, 4);
  // Nearest: 1.0 / 2^1 = 0.5 rounds to even 0; 8 rounds to 4.
  std::vector<uint32_t> c2 = {Encode(Format::kE4M3, 8.0), Encode(Format::kE4M3, 3.0)};
  AlignVector(Format::kE4M3, c2.data(), 2, 1, nullptr, 3, 4, AlignRounding::kNearestEven,
              a.data(), 1, c);
  EXPECT_EQ(a[0], 4);
  EXPECT_EQ(a[1], 2);  // 3 / 2 = 1.5 -> 2
}

}  // namespace
}  // namespace pim::fp
