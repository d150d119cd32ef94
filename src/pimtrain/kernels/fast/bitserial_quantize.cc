// Fast power-of-two quantization of the bit-serial macro's operands (bitserial_quantize.h):
// float lanes (AVX-512 or AVX2 bodies, digital_isa.h) with the reference's rounding (vroundps
// rounds half to even, v 2^-exp is exact in float when the quantizer is float_ok), scalar tails
// in double, 8 x 8 register transposes.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "pimtrain/kernels/bitserial_quantize.h"
#include "pimtrain/kernels/fast/digital_isa.h"

// GCC 12 flags the AVX-512 intrinsics' internal _mm512_undefined_* operands (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace pim::kernels::fast {
namespace {

// The scalar form of the lanes' rounding (the tails): the same value as a lane.
inline int32_t Nearest(const PowerOfTwoQuantizer& qz, float v) {
  double t = std::nearbyint(static_cast<double>(v) * qz.inv_scale);
  t = t != t ? 0.0 : std::min(std::max(t, qz.lo), qz.hi);
  return static_cast<int32_t>(t);
}

// v * 2^-exp rounded half to even, clipped, NaN -> 0, 8 at a time (float_ok only).
inline __m256i Nearest8(const float* v, __m256 vscale, __m256 vlo, __m256 vhi) {
  __m256 t = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v), vscale),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 is_num = _mm256_cmp_ps(t, t, _CMP_ORD_Q);
  t = _mm256_and_ps(_mm256_min_ps(_mm256_max_ps(t, vlo), vhi), is_num);
  return _mm256_cvtps_epi32(t);
}
struct Lanes8 {
  __m256 scale, lo, hi;
  explicit Lanes8(const PowerOfTwoQuantizer& qz)
      : scale(_mm256_set1_ps(static_cast<float>(qz.inv_scale))),
        lo(_mm256_set1_ps(static_cast<float>(qz.lo))),
        hi(_mm256_set1_ps(static_cast<float>(qz.hi))) {}
  __m256i operator()(const float* v) const { return Nearest8(v, scale, lo, hi); }
};

#if defined(__AVX512F__) && defined(__AVX512BW__)
struct Lanes16 {
  __m512 scale, lo, hi;
  explicit Lanes16(const PowerOfTwoQuantizer& qz)
      : scale(_mm512_set1_ps(static_cast<float>(qz.inv_scale))),
        lo(_mm512_set1_ps(static_cast<float>(qz.lo))),
        hi(_mm512_set1_ps(static_cast<float>(qz.hi))) {}
  // Nearest8, 16 at a time.
  __m512i operator()(const float* v) const {
    __m512 t = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(v), scale),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __mmask16 is_num = _mm512_cmp_ps_mask(t, t, _CMP_ORD_Q);
    t = _mm512_maskz_mov_ps(is_num, _mm512_min_ps(_mm512_max_ps(t, lo), hi));
    return _mm512_cvtps_epi32(t);
  }
};
#endif

// Transposes the 8 x 8 int32 block in r[0..7] in place.
inline void Transpose8x8(__m256i r[8]) {
  __m256i t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
  }
  __m256i u[8];
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
    r[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
  }
}

#if defined(__AVX512F__) && defined(__AVX512BW__)
// Transposes the two 8 x 8 int32 blocks held in the 256-bit halves of r[0..7] at once: afterwards
// the low half of r[i] is row i of the transposed low block and the high half row i of the
// transposed high block. The unpacks work within 128-bit lanes as in Transpose8x8; the last step
// gathers 128-bit lanes across registers with vpermt2q instead of vperm2i128.
inline void Transpose8x8Pair(__m512i r[8]) {
  __m512i t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  __m512i u[8];
  for (int i = 0; i < 8; i += 4) {
    u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // Lane 0 (2) of u[i] and of u[i + 4] make the low (high) half of r[i]; lanes 1 and 3 likewise
  // make r[i + 4] (qword indices 8..15 pick the second operand).
  const __m512i even = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
  const __m512i odd = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_permutex2var_epi64(u[i], even, u[i + 4]);
    r[i + 4] = _mm512_permutex2var_epi64(u[i], odd, u[i + 4]);
  }
}
#endif

// Eight int32 lanes -> eight 16-bit words (the low 128 bits), exact for values in the int16 range
// (is_signed) or in [0, 65535] (unsigned).
inline __m128i Narrow16(__m256i v, bool is_signed) {
  const __m256i p = is_signed ? _mm256_packs_epi32(v, v) : _mm256_packus_epi32(v, v);
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(p, 0x08));  // lanes 0 and 2
}

}  // namespace

namespace internal {

float MaxForScaleRowAvx2(const float* row, int64_t n, Signedness sign) {
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 vmax = _mm256_setzero_ps();
  float max_abs = 0;
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    __m256 a = _mm256_loadu_ps(row + c);
    if (sign == Signedness::kSigned) a = _mm256_and_ps(a, abs_mask);
    // NaN and inf fail a < inf: those lanes add 0.
    a = _mm256_and_ps(a, _mm256_cmp_ps(a, inf, _CMP_LT_OQ));
    vmax = _mm256_max_ps(vmax, a);
  }
  for (; c < n; ++c) {
    const float a = sign == Signedness::kSigned ? std::fabs(row[c]) : row[c];
    max_abs = a < std::numeric_limits<float>::infinity() && a > max_abs ? a : max_abs;
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  for (float l : lanes) max_abs = std::max(max_abs, l);
  return max_abs;
}

int64_t QuantizeBodyAvx2(const PowerOfTwoQuantizer& qz, const float* v, int64_t c, int64_t n,
                         int32_t* out) {
  const Lanes8 lanes(qz);
  for (; c + 8 <= n; c += 8) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), lanes(v + c));
  }
  return c;
}

int64_t WordsBodyAvx2(const PowerOfTwoQuantizer& qz, const float* v, int64_t c, int64_t n,
                      const WordArgs& w) {
  const Lanes8 lanes(qz);
  const __m256i vhalf = _mm256_set1_epi32(w.half), vfmax = _mm256_set1_epi32(w.fmax);
  const __m128i vshift = _mm_cvtsi32_si128(w.shift);
  for (; c + 8 <= n; c += 8) {
    const __m256i b = lanes(v + c);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(w.stored + c), Narrow16(b, w.is_signed));
    if (w.forward != nullptr) {
      const __m256i f =
          _mm256_min_epi32(_mm256_sra_epi32(_mm256_add_epi32(b, vhalf), vshift), vfmax);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(w.forward + c), Narrow16(f, w.is_signed));
    }
  }
  return c;
}

int64_t QuantizeTransposedBodyAvx2(const PowerOfTwoQuantizer& qz, const float* v, int64_t ld,
                                   int64_t c0, int64_t c_end, int64_t rows_out, int64_t r0,
                                   int32_t* q) {
  const Lanes8 lanes(qz);
  for (; c0 + 8 <= c_end; c0 += 8) {
    __m256i b[8];
    for (int i = 0; i < 8; ++i) b[i] = lanes(v + i * ld + c0);
    Transpose8x8(b);
    for (int j = 0; j < 8; ++j) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + (c0 + j) * rows_out + r0), b[j]);
    }
  }
  return c0;
}

int64_t DequantizeWordsBodyAvx2(const int16_t* src, bool is_signed, float scale, int64_t c,
                                int64_t n, float* row) {
  const __m256 vscale = _mm256_set1_ps(scale);
  for (; c + 8 <= n; c += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + c));
    const __m256i v = is_signed ? _mm256_cvtepi16_epi32(h) : _mm256_cvtepu16_epi32(h);
    _mm256_storeu_ps(row + c, _mm256_mul_ps(_mm256_cvtepi32_ps(v), vscale));
  }
  return c;
}

#if defined(__AVX512F__) && defined(__AVX512BW__)
float MaxForScaleRowAvx512(const float* row, int64_t n, Signedness sign) {
  const __m512 zinf = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  __m512 zmax = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 16 <= n; c += 16) {
    __m512 a = _mm512_loadu_ps(row + c);
    if (sign == Signedness::kSigned) a = _mm512_abs_ps(a);
    // NaN and inf fail a < inf: those lanes keep their running maximum.
    zmax = _mm512_mask_max_ps(zmax, _mm512_cmp_ps_mask(a, zinf, _CMP_LT_OQ), zmax, a);
  }
  return std::max(_mm512_reduce_max_ps(zmax), MaxForScaleRowAvx2(row + c, n - c, sign));
}

int64_t QuantizeBodyAvx512(const PowerOfTwoQuantizer& qz, const float* v, int64_t c, int64_t n,
                           int32_t* out) {
  const Lanes16 lanes(qz);
  for (; c + 16 <= n; c += 16) _mm512_storeu_si512(out + c, lanes(v + c));
  return c;
}

int64_t WordsBodyAvx512(const PowerOfTwoQuantizer& qz, const float* v, int64_t c, int64_t n,
                        const WordArgs& w) {
  const Lanes16 lanes(qz);
  const __m512i zhalf = _mm512_set1_epi32(w.half), zfmax = _mm512_set1_epi32(w.fmax);
  const __m128i vshift = _mm_cvtsi32_si128(w.shift);
  // vpmovdw keeps the low 16 bits, exact for values in the stored range.
  for (; c + 16 <= n; c += 16) {
    const __m512i b = lanes(v + c);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w.stored + c), _mm512_cvtepi32_epi16(b));
    if (w.forward != nullptr) {
      const __m512i f =
          _mm512_min_epi32(_mm512_sra_epi32(_mm512_add_epi32(b, zhalf), vshift), zfmax);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w.forward + c), _mm512_cvtepi32_epi16(f));
    }
  }
  return c;
}

int64_t QuantizeTransposedBodyAvx512(const PowerOfTwoQuantizer& qz, const float* v, int64_t ld,
                                     int64_t c0, int64_t c_end, int64_t rows_out, int64_t r0,
                                     int32_t* q) {
  const Lanes16 lanes(qz);
  // 8 x 16 blocks: two 8 x 8 blocks side by side, quantized 16 wide, transposed together.
  for (; c0 + 16 <= c_end; c0 += 16) {
    __m512i b[8];
    for (int i = 0; i < 8; ++i) b[i] = lanes(v + i * ld + c0);
    Transpose8x8Pair(b);
    for (int j = 0; j < 8; ++j) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + (c0 + j) * rows_out + r0),
                          _mm512_castsi512_si256(b[j]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + (c0 + 8 + j) * rows_out + r0),
                          _mm512_extracti64x4_epi64(b[j], 1));
    }
  }
  return c0;
}

int64_t DequantizeWordsBodyAvx512(const int16_t* src, bool is_signed, float scale, int64_t c,
                                  int64_t n, float* row) {
  const __m512 zscale = _mm512_set1_ps(scale);
  for (; c + 16 <= n; c += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c));
    const __m512i v = is_signed ? _mm512_cvtepi16_epi32(h) : _mm512_cvtepu16_epi32(h);
    _mm512_storeu_ps(row + c, _mm512_mul_ps(_mm512_cvtepi32_ps(v), zscale));
  }
  return c;
}
#endif

}  // namespace internal

float MaxForScale(ConstMatrixView v, Signedness sign) {
  const auto row_max = internal::Digital().max_for_scale_row;
  float m = 0.0f;
  // A maximum: any split of v and any order give the same value.
  for (int64_t r = 0; r < v.rows; ++r) m = std::max(m, row_max(v.Row(r), v.cols, sign));
  return m;
}

void Quantize(ConstMatrixView v, const PowerOfTwoQuantizer& qz, Rounding rounding,
              const CounterRng& rng, int32_t* q, bool transpose) {
  const int64_t rows = v.rows, cols = v.cols;
  if (rounding != Rounding::kNearestEven) {
    // Stochastic rounding: one uniform per element, no lane form (the reference's loop).
    ref::Quantize(v, qz, rounding, rng, q, transpose);
    return;
  }
  const internal::DigitalKernels& k = internal::Digital();
  const bool vec = qz.float_ok;
  if (!transpose) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = v.Row(r);
      int32_t* out = q + r * cols;
      int64_t c = 0;
      if (vec) {
        if (k.quantize_body != nullptr) c = k.quantize_body(qz, row, c, cols, out);
        c = internal::QuantizeBodyAvx2(qz, row, c, cols, out);
      }
      for (; c < cols; ++c) out[c] = Nearest(qz, row[c]);
    }
    return;
  }
  // Transposed: 8 x 8 blocks quantized as 8 rows, transposed in registers.
  const int64_t r8 = vec ? rows / 8 * 8 : 0, c8 = vec ? cols / 8 * 8 : 0;
  for (int64_t r0 = 0; r0 < r8; r0 += 8) {
    int64_t c0 = 0;
    const float* block = v.Row(r0);
    if (k.quantize_transposed_body != nullptr) {
      c0 = k.quantize_transposed_body(qz, block, v.ld, c0, c8, rows, r0, q);
    }
    internal::QuantizeTransposedBodyAvx2(qz, block, v.ld, c0, c8, rows, r0, q);
    for (int64_t r = r0; r < r0 + 8; ++r) {
      for (int64_t c = c8; c < cols; ++c) q[c * rows + r] = Nearest(qz, v.Row(r)[c]);
    }
  }
  for (int64_t r = r8; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) q[c * rows + r] = Nearest(qz, v.Row(r)[c]);
  }
}

void QuantizeWordsRow(const float* v, int64_t n, const PowerOfTwoQuantizer& qz, Signedness sign,
                      const ForwardRead& fr, int16_t* stored, int16_t* forward) {
  internal::WordArgs w;
  w.stored = stored;
  w.forward = forward;
  w.shift = fr.shift;
  w.half = fr.half;
  w.fmax = fr.fmax;
  w.is_signed = sign == Signedness::kSigned;
  const internal::DigitalKernels& k = internal::Digital();
  const int64_t c8 = n / 8 * 8;
  int64_t c = 0;
  if (k.words_body != nullptr) c = k.words_body(qz, v, c, c8, w);
  c = internal::WordsBodyAvx2(qz, v, c, c8, w);
  for (; c < n; ++c) {
    const int32_t q = Nearest(qz, v[c]);
    stored[c] = static_cast<int16_t>(q);
    if (forward != nullptr) forward[c] = static_cast<int16_t>(std::min((q + fr.half) >> fr.shift, fr.fmax));
  }
}

// |w| < 2^16 converts to float exactly; when 2^exp is a normal float and the products stay
// below 2^128 (no underflow, no overflow), the float product is exact too, so it equals the
// double product rounded to float.
void DequantizeWords(const int16_t* w, Signedness sign, int exp, MatrixView y) {
  const double scale = std::ldexp(1.0, exp);
  const bool vec = exp >= -126 && exp <= 111;
  const bool is_signed = sign == Signedness::kSigned;
  const internal::DigitalKernels& k = internal::Digital();
  for (int64_t r = 0; r < y.rows; ++r) {
    float* row = y.Row(r);
    const int16_t* src = w + r * y.cols;
    int64_t c = 0;
    if (vec) {
      const float fscale = static_cast<float>(scale);
      if (k.dequantize_words_body != nullptr) {
        c = k.dequantize_words_body(src, is_signed, fscale, c, y.cols, row);
      }
      c = internal::DequantizeWordsBodyAvx2(src, is_signed, fscale, c, y.cols, row);
    }
    for (; c < y.cols; ++c) {
      const int32_t v = is_signed ? int32_t{src[c]} : int32_t{static_cast<uint16_t>(src[c])};
      row[c] = static_cast<float>(v * scale);
    }
  }
}

// 8 x 8 blocks of words, widened (the raw 16 bits, zero-extended), transposed in registers and
// narrowed back; the edges element by element.
void TransposeWords(const int16_t* src, int64_t rows, int64_t cols, int16_t* dst) {
  const int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (int64_t r0 = 0; r0 < r8; r0 += 8) {
    for (int64_t c0 = 0; c0 < c8; c0 += 8) {
      __m256i b[8];
      for (int i = 0; i < 8; ++i) {
        b[i] = _mm256_cvtepu16_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + (r0 + i) * cols + c0)));
      }
      Transpose8x8(b);
      for (int j = 0; j < 8; ++j) {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (c0 + j) * rows + r0),
                         Narrow16(b[j], /*is_signed=*/false));
      }
    }
    for (int64_t r = r0; r < r0 + 8; ++r) {
      for (int64_t c = c8; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
    }
  }
  for (int64_t r = r8; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
  }
}

}  // namespace pim::kernels::fast
