// Fixed-point quantization with power-of-two scales, as a fixed-point PIM chip stores numbers.
#pragma once

#include <cstdint>

namespace pim {

enum class Signedness { kUnsigned, kSigned };
enum class Rounding { kNearestEven, kStochastic, kTruncate };

// The range of a `bits`-wide integer: signed two's complement [-2^(b-1), 2^(b-1)-1] or
// unsigned [0, 2^b - 1].
int64_t IntMin(int bits, Signedness s);
int64_t IntMax(int bits, Signedness s);

// The smallest power-of-two step 2^e such that max_abs / 2^e fits the integer range, i.e. the
// exponent a fixed-point chip would use for a tensor whose largest magnitude is max_abs.
// Returns 0 for max_abs == 0.
int PowerOfTwoExponent(double max_abs, int bits, Signedness s);

// round(x / 2^exp) clipped to the range; `uniform` in [0,1) drives stochastic rounding.
int64_t QuantizeToInt(float x, int exp, int bits, Signedness s, Rounding r, float uniform = 0.5f);

}  // namespace pim
