// Number formats: field layout, encode with three roundings, decode (docs/fp_digital.md).
// Sources: OCP 8-bit Floating Point Specification (OFP8) rev. 1.0, 2023 (E4M3: bias 7, no
// infinities, NaN = S.1111.111, max 448; E5M2: bias 15, IEEE-like inf/NaN, max 57344);
// IEEE 754-2019 binary16 / binary32; bfloat16 = the top half of binary32.
#include "pimtrain/numerics/formats.h"

#include <algorithm>
#include <bit>
#include <iterator>
#include <cmath>

#include "pimtrain/base/error.h"

namespace pim::fp {
namespace {

FormatInfo MakeFp(const char* name, int e, int m, bool has_inf, bool saturates) {
  FormatInfo i;
  i.name = name;
  i.bits = 1 + e + m;
  i.is_int = false;
  i.exp_bits = e;
  i.man_bits = m;
  i.bias = (1 << (e - 1)) - 1;
  i.has_inf = has_inf;
  i.saturates = saturates;
  i.emin = 1 - i.bias;
  // IEEE-like formats reserve the all-ones exponent field; E4M3 reserves only its top code.
  i.emax = has_inf ? ((1 << e) - 2) - i.bias : ((1 << e) - 1) - i.bias;
  i.max_sig = has_inf ? (1 << (m + 1)) - 1 : (1 << (m + 1)) - 2;
  i.max_finite = std::ldexp(static_cast<double>(i.max_sig), i.emax - m);
  return i;
}

FormatInfo MakeInt(const char* name, int bits) {
  FormatInfo i;
  i.name = name;
  i.bits = bits;
  i.is_int = true;
  i.saturates = true;
  i.max_sig = (1 << (bits - 1)) - 1;
  i.max_finite = i.max_sig;
  return i;
}

const FormatInfo kInfos[] = {
    MakeInt("int4", 4),
    MakeInt("int8", 8),
    MakeFp("e4m3", 4, 3, /*has_inf=*/false, /*saturates=*/true),
    MakeFp("e5m2", 5, 2, true, false),
    MakeFp("bf16", 8, 7, true, false),
    MakeFp("fp16", 5, 10, true, false),
    MakeFp("fp32", 8, 23, true, false),
};

// Rounds s >= 0 to an integer (as a double) by `r`; see Encode.
double RoundMagnitude(double s, Rounding r, uint32_t random) {
  const double fl = std::floor(s);
  switch (r) {
    case Rounding::kNearestEven:
      return std::nearbyint(s);  // the default rounding mode: ties to even
    case Rounding::kTruncate:
      return fl;
    case Rounding::kStochastic: {
      const double frac = s - fl;  // exact
      const double u = static_cast<double>(random) * 0x1p-32;
      return frac > 0 && frac >= 1.0 - u ? fl + 1.0 : fl;
    }
  }
  return fl;
}

uint32_t NanCode(Format f, uint32_t sign_bit) {
  switch (f) {
    case Format::kE4M3: return sign_bit | 0x7Fu;
    case Format::kE5M2: return sign_bit | 0x7Eu;
    case Format::kBF16: return sign_bit | 0x7FC0u;
    case Format::kFP16: return sign_bit | 0x7E00u;
    case Format::kFP32: return sign_bit | 0x7FC00000u;
    default: return 0;
  }
}

uint32_t Pack(const FormatInfo& in, uint32_t sign_bit, int exp, uint32_t sig) {
  const uint32_t hidden = 1u << in.man_bits;
  if (sig < hidden) return sign_bit | sig;  // subnormal or zero: exponent field 0
  return sign_bit | (static_cast<uint32_t>(exp + in.bias) << in.man_bits) | (sig - hidden);
}

}  // namespace

const FormatInfo& Info(Format f) { return kInfos[static_cast<int>(f)]; }
const char* Name(Format f) { return Info(f).name; }

bool ParseFormat(const std::string& name, Format* f) {
  for (int i = 0; i < static_cast<int>(std::size(kInfos)); ++i) {
    if (name == kInfos[i].name) {
      *f = static_cast<Format>(i);
      return true;
    }
  }
  return false;
}

Fields Unpack(Format f, uint32_t code) {
  const FormatInfo& in = Info(f);
  Fields r;
  if (in.is_int) {
    // Sign-extend the `bits`-wide two's-complement pattern.
    const int32_t v = static_cast<int32_t>(code << (32 - in.bits)) >> (32 - in.bits);
    r.sign = v < 0;
    r.sig = v < 0 ? -v : v;
    r.kind = v == 0 ? Fields::kZero : Fields::kFinite;
    return r;
  }
  const uint32_t man_mask = (1u << in.man_bits) - 1, exp_mask = (1u << in.exp_bits) - 1;
  r.sign = static_cast<int>((code >> (in.bits - 1)) & 1u);
  const uint32_t ef = (code >> in.man_bits) & exp_mask, mf = code & man_mask;
  if (in.has_inf && ef == exp_mask) {
    r.kind = mf == 0 ? Fields::kInf : Fields::kNaN;
    return r;
  }
  if (!in.has_inf && ef == exp_mask && mf == man_mask) {
    r.kind = Fields::kNaN;  // E4M3: S.1111.111 is the only NaN, there is no infinity
    return r;
  }
  r.exp = ef == 0 ? in.emin : static_cast<int>(ef) - in.bias;
  r.sig = static_cast<int32_t>(ef == 0 ? mf : (mf | (man_mask + 1)));
  r.kind = r.sig == 0 ? Fields::kZero : Fields::kFinite;
  return r;
}

float Decode(Format f, uint32_t code) {
  const FormatInfo& in = Info(f);
  if (f == Format::kBF16) return std::bit_cast<float>(code << 16);
  if (f == Format::kFP32) return std::bit_cast<float>(code);
  const Fields x = Unpack(f, code);
  if (in.is_int) return static_cast<float>(x.sign ? -x.sig : x.sig);
  const uint32_t sign_bit = static_cast<uint32_t>(x.sign) << 31;
  switch (x.kind) {
    case Fields::kZero: return std::bit_cast<float>(sign_bit);
    case Fields::kInf: return std::bit_cast<float>(sign_bit | 0x7F800000u);
    case Fields::kNaN: return std::bit_cast<float>(sign_bit | 0x7FC00000u);
    case Fields::kFinite: break;
  }
  // Build the float's bits: normalize the significand (subnormals of E4M3, E5M2 and FP16 are
  // normal floats), then place exponent and mantissa.
  int e = x.exp;
  uint32_t s = static_cast<uint32_t>(x.sig);
  const uint32_t hidden = 1u << in.man_bits;
  while (s < hidden) {
    s <<= 1;
    --e;
  }
  return std::bit_cast<float>(sign_bit | (static_cast<uint32_t>(e + 127) << 23) |
                              ((s - hidden) << (23 - in.man_bits)));
}

uint32_t Encode(Format f, double x, Rounding rounding, uint32_t random, Overflow overflow) {
  const FormatInfo& in = Info(f);
  const bool negative = std::signbit(x);
  const double a = std::fabs(x);
  if (in.is_int) {
    if (std::isnan(x)) return 0;
    const double lo = -static_cast<double>(in.max_sig) - 1, hi = in.max_sig;
    double n = std::isinf(a) ? a : RoundMagnitude(a, rounding, random);
    double v = negative ? -n : n;
    v = std::fmin(std::fmax(v, lo), hi);
    return static_cast<uint32_t>(static_cast<int32_t>(v)) & ((1u << in.bits) - 1);
  }
  const uint32_t sign_bit = negative ? 1u << (in.bits - 1) : 0u;
  const bool to_inf = in.has_inf && overflow == Overflow::kFormatDefault;
  const uint32_t inf_code = sign_bit | (((1u << in.exp_bits) - 1) << in.man_bits);
  const uint32_t max_code =
      Pack(in, sign_bit, in.emax, static_cast<uint32_t>(in.max_sig));
  if (std::isnan(x)) return NanCode(f, sign_bit);
  if (std::isinf(a)) return to_inf ? inf_code : max_code;
  if (a == 0) return sign_bit;
  // Quantum 2^(e - m) of |x|'s binade (the subnormal quantum below emin); s = |x| / quantum is
  // exact (a power-of-two scale of a double far from the double range's ends).
  int e = std::max(std::ilogb(a), in.emin);
  double n = RoundMagnitude(std::ldexp(a, in.man_bits - e), rounding, random);
  if (n >= std::ldexp(1.0, in.man_bits + 1)) {  // rounded up into the next binade
    n = std::ldexp(n, -1);                       // exactly 2^m
    ++e;
  }
  if (e > in.emax || (e == in.emax && n > in.max_sig)) return to_inf ? inf_code : max_code;
  return Pack(in, sign_bit, e, static_cast<uint32_t>(n));
}

int CeilExponent(Format f, double max_abs) {
  const FormatInfo& in = Info(f);
  PIM_CHECK_MSG(!in.is_int, "CeilExponent: integer formats have no exponent");
  if (!(max_abs > 0)) return in.emin;
  if (std::isinf(max_abs)) return in.emax;
  int e = std::max(std::ilogb(max_abs), in.emin);
  const double n = std::ceil(std::ldexp(max_abs, in.man_bits - e));
  if (n >= std::ldexp(1.0, in.man_bits + 1)) ++e;
  return std::min(e, in.emax);
}

}  // namespace pim::fp
