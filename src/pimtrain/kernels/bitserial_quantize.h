// Power-of-two quantization of the bit-serial digital macro's operands (digital_bitserial,
// T-PIM): one scale 2^exp per tensor, exp from the tensor's max |v| over its finite elements,
// q = clip(round_half_even(v 2^-exp)) to the `bits`-wide range, NaN -> 0, +-inf clip; the
// stored 16-bit weight words and their rounded forward read; the dequantization y = q 2^exp;
// the transpose of the stored words. ref/ is the definition, element by element; fast/ runs
// 16 (AVX-512) or 8 (AVX2) lanes by the dispatch table (kernels/fast/digital_dispatch.cc) and
// transposes 8 x 8 blocks in registers. Both agree bit for bit. docs/numerics.md.
#pragma once

#include <cmath>
#include <cstdint>

#include "pimtrain/base/matrix_view.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/numerics/fixed_point.h"

namespace pim::kernels {

// One tensor's quantizer: q = round(v * inv_scale) clipped to [lo, hi], inv_scale = 2^-exp.
struct PowerOfTwoQuantizer {
  int exp = 0;
  double inv_scale = 1, lo = 0, hi = 0;
  // 2^-exp is a normal float: the float (vector) path applies, it is unless max |v| is near the
  // float range's ends. v * 2^-exp is then exact in float as in double.
  bool float_ok = false;
};
// The quantizer with scale 2^exp for `bits`-wide integers of the given signedness.
PowerOfTwoQuantizer QuantizerForExp(int exp, int bits, Signedness sign);
// The quantizer of a tensor whose MaxForScale is max_abs: exp = PowerOfTwoExponent(max_abs).
PowerOfTwoQuantizer QuantizerFor(float max_abs, int bits, Signedness sign);

// The rounded forward read of a stored word w (the top bits of a wider weight):
// min((w + half) >> shift, fmax) (half 0: truncation, the low bit columns are not driven).
struct ForwardRead {
  int shift = 0;
  int32_t half = 0, fmax = 0;
};

namespace ref {
// max |v| (max(v, 0) when unsigned) over the finite elements (NaN and inf set no scale).
float MaxForScale(ConstMatrixView v, Signedness sign);
// q[r][c] (transpose: q[c][r]) of v with quantizer qz; stochastic: floor(v 2^-exp + u), u the
// uniform of element r * cols + c of `rng` (E[q] = v 2^-exp before clipping).
void Quantize(ConstMatrixView v, const PowerOfTwoQuantizer& qz, Rounding rounding,
              const CounterRng& rng, int32_t* q, bool transpose);
// The stored words of v (nearest even; rows x cols, row-major): the low 16 bits of q, and when
// `forward` is set, the forward read of each word (ForwardRead) as a word too.
void QuantizeWords(ConstMatrixView v, const PowerOfTwoQuantizer& qz, Signedness sign,
                   const ForwardRead& fr, int16_t* stored, int16_t* forward);
// y = float(double(q) 2^exp): q rows x y.cols, dense (the fast kernel's BitSerialMatMulScaled
// delivers its product so, fused).
void Dequantize(const int64_t* q, int exp, MatrixView y);
// y = float(w 2^exp), w a stored word (int16 signed, uint16 unsigned), rows x y.cols, dense.
void DequantizeWords(const int16_t* w, Signedness sign, int exp, MatrixView y);
// dst (cols x rows) = src (rows x cols) transposed.
void TransposeWords(const int16_t* src, int64_t rows, int64_t cols, int16_t* dst);
}  // namespace ref

namespace fast {
float MaxForScale(ConstMatrixView v, Signedness sign);
// Nearest even in float lanes when qz.float_ok; stochastic rounding, and quantizers without
// float_ok, element by element (the reference's arithmetic).
void Quantize(ConstMatrixView v, const PowerOfTwoQuantizer& qz, Rounding rounding,
              const CounterRng& rng, int32_t* q, bool transpose);
// One row of ref::QuantizeWords (qz.float_ok required): `forward` may be null.
void QuantizeWordsRow(const float* v, int64_t n, const PowerOfTwoQuantizer& qz, Signedness sign,
                      const ForwardRead& fr, int16_t* stored, int16_t* forward);
void DequantizeWords(const int16_t* w, Signedness sign, int exp, MatrixView y);
void TransposeWords(const int16_t* src, int64_t rows, int64_t cols, int16_t* dst);
}  // namespace fast

}  // namespace pim::kernels
