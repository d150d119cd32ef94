// Reference power-of-two quantization of the bit-serial macro's operands (bitserial_quantize.h):
// every element on its own, in double, as the equations write it.
#include <algorithm>
#include <cmath>
#include <limits>

#include "pimtrain/kernels/bitserial_quantize.h"

namespace pim::kernels {

PowerOfTwoQuantizer QuantizerForExp(int exp, int bits, Signedness sign) {
  PowerOfTwoQuantizer qz;
  qz.exp = exp;
  qz.inv_scale = std::ldexp(1.0, -exp);  // exact: a power of two
  qz.lo = static_cast<double>(IntMin(bits, sign));
  qz.hi = static_cast<double>(IntMax(bits, sign));
  qz.float_ok = -exp >= -126 && -exp <= 127;
  return qz;
}

PowerOfTwoQuantizer QuantizerFor(float max_abs, int bits, Signedness sign) {
  return QuantizerForExp(PowerOfTwoExponent(max_abs, bits, sign), bits, sign);
}

namespace ref {
namespace {

// round_half_even(v 2^-exp) clipped, NaN -> 0 (nearbyint rounds half to even in the default
// rounding mode; v 2^-exp is exact in double).
int32_t Nearest(const PowerOfTwoQuantizer& qz, float v) {
  double t = std::nearbyint(static_cast<double>(v) * qz.inv_scale);
  if (std::isnan(t)) return 0;
  return static_cast<int32_t>(std::min(std::max(t, qz.lo), qz.hi));
}

}  // namespace

float MaxForScale(ConstMatrixView v, Signedness sign) {
  float m = 0.0f;
  for (int64_t r = 0; r < v.rows; ++r) {
    for (int64_t c = 0; c < v.cols; ++c) {
      const float x = v.Row(r)[c];
      const float a = sign == Signedness::kSigned ? std::fabs(x) : x;
      if (std::isfinite(a) && a > m) m = a;
    }
  }
  return m;
}

void Quantize(ConstMatrixView v, const PowerOfTwoQuantizer& qz, Rounding rounding,
              const CounterRng& rng, int32_t* q, bool transpose) {
  const int64_t rows = v.rows, cols = v.cols;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float x = v.Row(r)[c];
      int32_t out;
      if (rounding == Rounding::kNearestEven) {
        out = Nearest(qz, x);
      } else {
        const double s = static_cast<double>(x) * qz.inv_scale;  // exact
        const uint64_t i = static_cast<uint64_t>(r * cols + c);
        const float u = CounterRng::ToUnitFloat(rng.Block(i >> 2)[i & 3]);
        const double t = std::floor(s + static_cast<double>(u));  // E[t] = s
        out = std::isnan(t) ? 0 : static_cast<int32_t>(std::min(std::max(t, qz.lo), qz.hi));
      }
      q[transpose ? c * rows + r : r * cols + c] = out;
    }
  }
}

void QuantizeWords(ConstMatrixView v, const PowerOfTwoQuantizer& qz, Signedness sign,
                   const ForwardRead& fr, int16_t* stored, int16_t* forward) {
  (void)sign;  // the low 16 bits of q: int16 or uint16 alike
  for (int64_t r = 0; r < v.rows; ++r) {
    for (int64_t c = 0; c < v.cols; ++c) {
      const int32_t q = Nearest(qz, v.Row(r)[c]);
      stored[r * v.cols + c] = static_cast<int16_t>(q);
      if (forward != nullptr) {
        forward[r * v.cols + c] =
            static_cast<int16_t>(std::min((q + fr.half) >> fr.shift, fr.fmax));
      }
    }
  }
}

void Dequantize(const int64_t* q, int exp, MatrixView y) {
  const double scale = std::ldexp(1.0, exp);
  for (int64_t r = 0; r < y.rows; ++r) {
    for (int64_t c = 0; c < y.cols; ++c) {
      y.Row(r)[c] = static_cast<float>(static_cast<double>(q[r * y.cols + c]) * scale);
    }
  }
}

void DequantizeWords(const int16_t* w, Signedness sign, int exp, MatrixView y) {
  const double scale = std::ldexp(1.0, exp);
  for (int64_t r = 0; r < y.rows; ++r) {
    for (int64_t c = 0; c < y.cols; ++c) {
      const int16_t word = w[r * y.cols + c];
      const int32_t v = sign == Signedness::kSigned ? int32_t{word}
                                                    : int32_t{static_cast<uint16_t>(word)};
      y.Row(r)[c] = static_cast<float>(v * scale);
    }
  }
}

void TransposeWords(const int16_t* src, int64_t rows, int64_t cols, int16_t* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
  }
}

}  // namespace ref
}  // namespace pim::kernels
