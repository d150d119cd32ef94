// Number formats of floating-point digital CIM (ISSCC 2025 14.5 and its peers): INT4, INT8, the
// two OCP 8-bit floats E4M3 and E5M2, BF16, FP16 (and FP32 as a pass-through output format).
// Encode (round to nearest even, stochastic, toward zero), decode, and the sign / exponent /
// significand fields the pre-alignment unit works on. docs/fp_digital.md, "Formats".
#pragma once

#include <cstdint>
#include <string>

#include "pimtrain/numerics/fixed_point.h"

namespace pim::fp {

enum class Format { kInt4, kInt8, kE4M3, kE5M2, kBF16, kFP16, kFP32 };

// What a format holds. Floating-point codes are sign | exponent field | mantissa field (MSB to
// LSB); integer codes are two's-complement patterns of `bits` bits (no scale: a scale is the
// caller's shared exponent).
struct FormatInfo {
  const char* name;  // "bf16", "e4m3", ... (config spelling)
  int bits;          // code width
  bool is_int;
  int exp_bits = 0, man_bits = 0, bias = 0;  // floating point only
  // Codes for +-inf exist (IEEE-like: E5M2, BF16, FP16, FP32). E4M3 (OCP) has none: its only
  // non-finite codes are S.1111.111 (NaN), so its top binade holds finite values up to 448.
  bool has_inf = false;
  // Overflow behaviour of Encode by default: true saturates to the largest finite value (INT4,
  // INT8, E4M3); false rounds to +-inf as IEEE 754 does (E5M2, BF16, FP16, FP32). Encode can
  // be told to saturate instead (Overflow::kSaturate).
  bool saturates = false;
  int emin = 0;  // unbiased exponent of the smallest normal binade (= that of the subnormals)
  int emax = 0;  // unbiased exponent of the largest finite binade
  int32_t max_sig = 0;  // largest finite significand (hidden bit included) in binade emax
  double max_finite = 0;
};

const FormatInfo& Info(Format f);
// "int4", "int8", "e4m3", "e5m2", "bf16", "fp16", "fp32".
const char* Name(Format f);
// Parses a name (as above); returns false when unknown.
bool ParseFormat(const std::string& name, Format* f);
inline bool IsInt(Format f) { return f == Format::kInt4 || f == Format::kInt8; }

enum class Overflow { kFormatDefault, kSaturate };

// The fields of a code. value = (-1)^sign * sig * 2^(exp - man_bits) for finite codes, with
// exp the unbiased exponent (emin for subnormals and zero) and sig the significand with the
// hidden bit (0 for zero and subnormals' hidden bit). For integer formats sig = |value|, exp =
// man_bits = 0.
struct Fields {
  enum Kind { kZero, kFinite, kInf, kNaN };
  Kind kind = kZero;
  int sign = 0;
  int exp = 0;
  int32_t sig = 0;
};
Fields Unpack(Format f, uint32_t code);

// The value of a code. NaN codes give a quiet NaN, +-inf codes +-inf. Exact: every value of
// these formats is a float.
float Decode(Format f, uint32_t code);

// The code of x (any double; floats convert exactly). Rounding of the magnitude:
//   kNearestEven  ties to the even significand (IEEE 754 roundTiesToEven);
//   kStochastic   up with probability frac (the fraction of a quantum below |x|):
//                 up iff frac >= 1 - random * 2^-32, so E[result] = x up to 2^-32 of a quantum;
//   kTruncate     toward zero.
// The significand is rounded with an unbounded exponent first; a result past the largest
// finite value overflows: to +-inf (has_inf formats unless `overflow` is kSaturate) or to the
// largest finite value. Inputs: NaN -> the format's NaN (0 for integers), +-inf -> +-inf or
// the largest finite value (E4M3, integers, kSaturate). Values below half the smallest
// subnormal round to (signed) zero under kNearestEven.
uint32_t Encode(Format f, double x, Rounding rounding = Rounding::kNearestEven,
                uint32_t random = 0, Overflow overflow = Overflow::kFormatDefault);

// Decode(Encode(x)) as a float.
inline float RoundTo(Format f, double x, Rounding r = Rounding::kNearestEven, uint32_t random = 0,
                     Overflow o = Overflow::kFormatDefault) {
  return Decode(f, Encode(f, x, r, random, o));
}

// The exponent (unbiased, clamped to [emin, emax]) that the largest magnitude any rounding of
// a value in [-max_abs, max_abs] can reach: the exponent of the smallest format value >=
// max_abs. Layer-wise alignment takes it as the tensor's shared exponent when only the
// tensor's max |x| is known.
int CeilExponent(Format f, double max_abs);

// BF16 round-to-nearest-even of a float, by integer arithmetic on its bits (the usual
// 0x7FFF + lsb trick); equal to Encode(kBF16, x) for every float (tested). NaN -> 0x7FC0 with
// the sign.
inline uint16_t Bf16Nearest(uint32_t float_bits) {
  if ((float_bits & 0x7FFFFFFFu) > 0x7F800000u) {
    return static_cast<uint16_t>(((float_bits >> 16) & 0x8000u) | 0x7FC0u);
  }
  return static_cast<uint16_t>((float_bits + 0x7FFFu + ((float_bits >> 16) & 1u)) >> 16);
}

}  // namespace pim::fp
