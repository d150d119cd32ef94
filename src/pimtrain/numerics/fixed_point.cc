// Fixed-point quantization implementation.
#include "pimtrain/numerics/fixed_point.h"

#include <algorithm>
#include <cmath>

#include "pimtrain/base/error.h"

namespace pim {

int64_t IntMin(int bits, Signedness s) {
  PIM_CHECK(bits >= 1 && bits <= 32);
  return s == Signedness::kSigned ? -(int64_t{1} << (bits - 1)) : 0;
}

int64_t IntMax(int bits, Signedness s) {
  PIM_CHECK(bits >= 1 && bits <= 32);
  return s == Signedness::kSigned ? (int64_t{1} << (bits - 1)) - 1 : (int64_t{1} << bits) - 1;
}

int PowerOfTwoExponent(double max_abs, int bits, Signedness s) {
  if (!(max_abs > 0)) return 0;
  double top = static_cast<double>(IntMax(bits, s));
  if (top <= 0) top = 1;  // 1-bit signed holds {-1, 0}: scale by the magnitude
  // smallest e with max_abs / 2^e <= top
  int e = static_cast<int>(std::ceil(std::log2(max_abs / top)));
  while (std::ldexp(max_abs, -e) > top) ++e;
  while (std::ldexp(max_abs, -(e - 1)) <= top) --e;
  return e;
}

int64_t QuantizeToInt(float x, int exp, int bits, Signedness s, Rounding r, float uniform) {
  double v = std::ldexp(static_cast<double>(x), -exp);
  double q;
  switch (r) {
    case Rounding::kNearestEven: q = std::nearbyint(v); break;
    case Rounding::kStochastic: q = std::floor(v + static_cast<double>(uniform)); break;
    case Rounding::kTruncate: q = std::trunc(v); break;
    default: q = v;
  }
  q = std::clamp(q, static_cast<double>(IntMin(bits, s)), static_cast<double>(IntMax(bits, s)));
  return static_cast<int64_t>(q);
}

}  // namespace pim
