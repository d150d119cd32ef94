// digital_bitserial: T-PIM's digital 8T-SRAM macro (Heo et al., CICC 2022 / JSSC 58(3) 2023):
// 1-bit AND cells, exact adder trees and shift-add, bit-serial inputs, power-of-two scales.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/base/scratch.h"
#include "pimtrain/kernels/bitserial.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/numerics/fixed_point.h"

// GCC 12 flags the AVX-512 intrinsics' internal _mm512_undefined_* operands (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace pim {
namespace {

PIM_DECLARE_COUNTERS(
    DigitalBitSerialCounters, "macro/digital_bitserial",
    {"weight_writes", "cell write", "WU", "cells written when the weights are programmed"},
    {"array_cells_allocated", "cell", "WU", "cells of the arrays the layout occupies (occupancy)"},
    {"array_cells_used", "cell", "WU", "cells holding weight bits (occupancy)"},
    {"gc_operand_writes", "cell write", "GC", "error bits written into the GC array (dY)"});

enum class KernelChoice { kFast, kRef };
// How the forward direction reads the top `weight_bits` of the stored `weight_bits_backward`:
// kTruncate drives only the top bit columns (floor); kNearest adds half an LSB first.
enum class WeightRead { kTruncate, kNearest };

// Stream ids for stochastic rounding (one per tensor a call quantizes).
constexpr uint64_t kStreamInput = 1;
constexpr uint64_t kStreamGradX = 2;
constexpr uint64_t kStreamGradDy = 3;
constexpr uint64_t kStreamProgram = 4;

// With AVX-512 (F for the float work, BW for 16-bit words) the elementwise passes (scale
// search, quantization, weight read-back) run 16 lanes at a time: on a core with full-width
// 512-bit units that halves their instructions. Same arithmetic, same results.
#if defined(__AVX512F__) && defined(__AVX512BW__)
#define PIM_DBS_ZMM 1
#endif

bool IsPowerOfTwoWidth(int64_t b) { return b == 1 || b == 2 || b == 4 || b == 8 || b == 16; }

// Reads a weight width and checks it is one of T-PIM's configurable widths {1, 2, 4, 8, 16}.
int WeightWidth(const ConfigNode& p, const char* key) {
  const ConfigNode& n = p.At(key);
  const int64_t b = n.AsInt();
  if (!IsPowerOfTwoWidth(b)) {
    throw ConfigError(n.Where() + ": " + n.text() + " is not one of {1, 2, 4, 8, 16} (T-PIM's " +
                      "configurable arithmetic units combine power-of-two bit columns)");
  }
  return static_cast<int>(b);
}

// One tensor's power-of-two quantization: q = round(v / 2^exp) clipped to the `bits`-wide range;
// NaN -> 0, +-inf clip.
struct Quantizer {
  int exp = 0;
  double inv_scale = 1, lo = 0, hi = 0;
  // 2^-exp is a normal float: the float path applies (it is unless max |v| is near the float
  // range's ends).
  bool float_ok = false;
  __m256 vscale, vlo, vhi;
#if defined(PIM_DBS_ZMM)
  __m512 zscale, zlo, zhi;
#endif

  // Round to nearest even: s = v * 2^-exp is exact; nearbyint rounds half to even (the default
  // rounding mode).
  int32_t Nearest(float v) const {
    double t = std::nearbyint(static_cast<double>(v) * inv_scale);
    t = t != t ? 0.0 : std::min(std::max(t, lo), hi);
    return static_cast<int32_t>(t);
  }
  // The same arithmetic in float, 8 at a time (float_ok only): v * 2^-exp is exact (a power-of-
  // two scale, and the result is far from overflow), vroundps rounds half to even, NaN -> 0.
  __m256i Nearest8(const float* v) const {
    __m256 t = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v), vscale),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m256 is_num = _mm256_cmp_ps(t, t, _CMP_ORD_Q);
    t = _mm256_and_ps(_mm256_min_ps(_mm256_max_ps(t, vlo), vhi), is_num);
    return _mm256_cvtps_epi32(t);
  }
#if defined(PIM_DBS_ZMM)
  // Nearest8, 16 at a time.
  __m512i Nearest16(const float* v) const {
    __m512 t = _mm512_roundscale_ps(_mm512_mul_ps(_mm512_loadu_ps(v), zscale),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __mmask16 is_num = _mm512_cmp_ps_mask(t, t, _CMP_ORD_Q);
    t = _mm512_maskz_mov_ps(is_num, _mm512_min_ps(_mm512_max_ps(t, zlo), zhi));
    return _mm512_cvtps_epi32(t);
  }
#endif
};

// The scale of v for `bits`-wide integers: exp = PowerOfTwoExponent(max |v|) (max(v, 0) when
// unsigned) over the finite elements (non-finite values do not set the scale).
// max |v| (or max v when unsigned, at least 0) over the finite elements: NaN and inf fail
// `a < inf`. A maximum: any split of v and any order give the same value.
float MaxForScale(ConstMatrixView v, Signedness sign) {
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 vmax = _mm256_setzero_ps();
  float max_abs = 0;
#if defined(PIM_DBS_ZMM)
  const __m512 zinf = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  __m512 zmax = _mm512_setzero_ps();
#endif
  for (int64_t r = 0; r < v.rows; ++r) {
    const float* row = v.Row(r);
    int64_t c = 0;
#if defined(PIM_DBS_ZMM)
    for (; c + 16 <= v.cols; c += 16) {
      __m512 a = _mm512_loadu_ps(row + c);
      if (sign == Signedness::kSigned) a = _mm512_abs_ps(a);
      // NaN and inf fail a < inf: those lanes keep their running maximum.
      zmax = _mm512_mask_max_ps(zmax, _mm512_cmp_ps_mask(a, zinf, _CMP_LT_OQ), zmax, a);
    }
#endif
    for (; c + 8 <= v.cols; c += 8) {
      __m256 a = _mm256_loadu_ps(row + c);
      if (sign == Signedness::kSigned) a = _mm256_and_ps(a, abs_mask);
      a = _mm256_and_ps(a, _mm256_cmp_ps(a, inf, _CMP_LT_OQ));
      vmax = _mm256_max_ps(vmax, a);
    }
    for (; c < v.cols; ++c) {
      const float a = sign == Signedness::kSigned ? std::fabs(row[c]) : row[c];
      max_abs = a < std::numeric_limits<float>::infinity() && a > max_abs ? a : max_abs;
    }
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, vmax);
  for (float l : lanes) max_abs = std::max(max_abs, l);
#if defined(PIM_DBS_ZMM)
  max_abs = std::max(max_abs, _mm512_reduce_max_ps(zmax));
#endif
  return max_abs;
}

// The quantizer with scale 2^exp for `bits`-wide integers.
Quantizer QuantizerForExp(int exp, int bits, Signedness sign) {
  Quantizer qz;
  qz.exp = exp;
  qz.inv_scale = std::ldexp(1.0, -qz.exp);  // exact: a power of two
  qz.lo = static_cast<double>(IntMin(bits, sign));
  qz.hi = static_cast<double>(IntMax(bits, sign));
  qz.float_ok = -qz.exp >= -126 && -qz.exp <= 127;
  qz.vscale = _mm256_set1_ps(static_cast<float>(qz.inv_scale));
  qz.vlo = _mm256_set1_ps(static_cast<float>(qz.lo));
  qz.vhi = _mm256_set1_ps(static_cast<float>(qz.hi));
#if defined(PIM_DBS_ZMM)
  qz.zscale = _mm512_set1_ps(static_cast<float>(qz.inv_scale));
  qz.zlo = _mm512_set1_ps(static_cast<float>(qz.lo));
  qz.zhi = _mm512_set1_ps(static_cast<float>(qz.hi));
#endif
  return qz;
}

// The quantizer of a tensor whose MaxForScale is max_abs.
Quantizer QuantizerFor(float max_abs, int bits, Signedness sign) {
  return QuantizerForExp(PowerOfTwoExponent(max_abs, bits, sign), bits, sign);
}

Quantizer MakeQuantizer(ConstMatrixView v, int bits, Signedness sign) {
  return QuantizerFor(MaxForScale(v, sign), bits, sign);
}

// Rows of a weight matrix per parallel chunk of Program and ReadWeights: ~16K elements.
int64_t RowGrain(int64_t cols) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols)); }

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

#if defined(PIM_DBS_ZMM)
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

// Quantizes v (rows x cols) into q to `bits`-wide integers with one power-of-two scale for the
// whole tensor and returns the exponent (see Quantizer). Stochastic rounding draws element i
// (row-major logical index) from `rng`. With `transpose`, q is written cols x rows. A finite
// `max_abs` >= 0 is the MaxForScale of the whole tensor v is a slice of (RunContext::
// input_max_abs), so that slicing a batch does not change the scale.
int Quantize(ConstMatrixView v, int bits, Signedness sign, Rounding rounding, const CounterRng& rng,
             int32_t* q, bool transpose = false, float max_abs = -1.0f) {
  const Quantizer qz = max_abs >= 0 && max_abs < std::numeric_limits<float>::infinity()
                           ? QuantizerFor(max_abs, bits, sign)
                           : MakeQuantizer(v, bits, sign);
  const int64_t rows = v.rows, cols = v.cols;
  if (rounding == Rounding::kNearestEven) {
    const bool vec = qz.float_ok;
    if (!transpose) {
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = v.Row(r);
        int32_t* out = q + r * cols;
        int64_t c = 0;
        if (vec) {
#if defined(PIM_DBS_ZMM)
          for (; c + 16 <= cols; c += 16) _mm512_storeu_si512(out + c, qz.Nearest16(row + c));
#endif
          for (; c + 8 <= cols; c += 8) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + c), qz.Nearest8(row + c));
          }
        }
        for (; c < cols; ++c) out[c] = qz.Nearest(row[c]);
      }
      return qz.exp;
    }
    // Transposed: 8 x 8 blocks quantized as 8 rows, transposed in registers.
    const int64_t r8 = vec ? rows / 8 * 8 : 0, c8 = vec ? cols / 8 * 8 : 0;
    for (int64_t r0 = 0; r0 < r8; r0 += 8) {
      int64_t c0 = 0;
#if defined(PIM_DBS_ZMM)
      // 8 x 16 blocks: two 8 x 8 blocks side by side, quantized 16 wide, transposed together.
      for (; c0 + 16 <= c8; c0 += 16) {
        __m512i b[8];
        for (int i = 0; i < 8; ++i) b[i] = qz.Nearest16(v.Row(r0 + i) + c0);
        Transpose8x8Pair(b);
        for (int j = 0; j < 8; ++j) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + (c0 + j) * rows + r0),
                              _mm512_castsi512_si256(b[j]));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + (c0 + 8 + j) * rows + r0),
                              _mm512_extracti64x4_epi64(b[j], 1));
        }
      }
#endif
      for (; c0 < c8; c0 += 8) {
        __m256i b[8];
        for (int i = 0; i < 8; ++i) b[i] = qz.Nearest8(v.Row(r0 + i) + c0);
        Transpose8x8(b);
        for (int j = 0; j < 8; ++j) {
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + (c0 + j) * rows + r0), b[j]);
        }
      }
      for (int64_t r = r0; r < r0 + 8; ++r) {
        for (int64_t c = c8; c < cols; ++c) q[c * rows + r] = qz.Nearest(v.Row(r)[c]);
      }
    }
    for (int64_t r = r8; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) q[c * rows + r] = qz.Nearest(v.Row(r)[c]);
    }
    return qz.exp;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = v.Row(r);
    for (int64_t c = 0; c < cols; ++c) {
      const double s = static_cast<double>(row[c]) * qz.inv_scale;  // exact
      const uint64_t i = static_cast<uint64_t>(r * cols + c);
      const float u = CounterRng::ToUnitFloat(rng.Block(i >> 2)[i & 3]);
      double t = std::floor(s + static_cast<double>(u));  // E[t] = s
      t = t != t ? 0.0 : std::min(std::max(t, qz.lo), qz.hi);
      q[transpose ? c * rows + r : r * cols + c] = static_cast<int32_t>(t);
    }
  }
  return qz.exp;
}

// y = q * 2^exp in float: q -> double is exact (|q| < 2^53), the power-of-two scale is exact,
// and the conversion to float rounds once, to nearest even. `bound` is a bound on |q|: below
// 2^51 the conversion runs 4 at a time (int64 -> double through the 1.5 * 2^52 offset, exact
// there), with the same double arithmetic.
void Dequantize(const int64_t* q, int exp, double bound, MatrixView y) {
  const double scale = std::ldexp(1.0, exp);
  const bool vec = bound < 0x1p51;
  const __m256i magic_i = _mm256_set1_epi64x(0x4338000000000000);  // 0x1.8p52
  const __m256d magic_d = _mm256_set1_pd(0x1.8p52);
  const __m256d vscale = _mm256_set1_pd(scale);
  for (int64_t r = 0; r < y.rows; ++r) {
    float* row = y.Row(r);
    const int64_t* src = q + r * y.cols;
    int64_t c = 0;
    if (vec) {
      for (; c + 8 <= y.cols; c += 8) {
        __m128 half[2];
        for (int h = 0; h < 2; ++h) {
          const __m256i v =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c + 4 * h));
          const __m256d d =
              _mm256_sub_pd(_mm256_castsi256_pd(_mm256_add_epi64(v, magic_i)), magic_d);
          half[h] = _mm256_cvtpd_ps(_mm256_mul_pd(d, vscale));
        }
        _mm256_storeu_ps(row + c, _mm256_set_m128(half[1], half[0]));
      }
    }
    for (; c < y.cols; ++c) {
      row[c] = static_cast<float>(static_cast<double>(src[c]) * scale);
    }
  }
}

// A bound on |y| of a k-long product of `bx`- and `bw`-bit operands.
double ProductBound(int64_t k, int bx, int bw) {
  return static_cast<double>(k) * std::ldexp(1.0, bx) * std::ldexp(1.0, bw);
}

class DigitalBitSerialMacro final : public Macro {
 public:
  explicit DigitalBitSerialMacro(const ConfigNode& p) {
    spec_.rows = p.GetInt("rows");
    spec_.cols = p.GetInt("cols");
    spec_.arrays_per_core = p.GetInt("arrays_per_core");
    spec_.cores = p.GetInt("cores");
    spec_.input_bits = static_cast<int>(p.GetInt("input_bits"));
    spec_.weight_bits = WeightWidth(p, "weight_bits");
    spec_.weight_bits_backward = WeightWidth(p, "weight_bits_backward");
    gradient_bits_ = WeightWidth(p, "gradient_bits");
    spec_.gradient_bits = gradient_bits_;
    const int64_t eb = p.GetInt("error_bits");
    error_bits_ = eb == 0 ? spec_.input_bits : static_cast<int>(eb);
    spec_.error_bits = error_bits_;
    if (spec_.weight_bits > spec_.weight_bits_backward) {
      const ConfigNode& n = p.At("weight_bits");
      throw ConfigError(n.Where() + ": " + n.text() + " exceeds weight_bits_backward (" +
                        std::to_string(spec_.weight_bits_backward) +
                        "): the forward direction reads the top bits of the stored weights");
    }
    sign_ = p.GetBool("signed") ? Signedness::kSigned : Signedness::kUnsigned;
    input_rounding_ =
        p.GetString("rounding") == "stochastic" ? Rounding::kStochastic : Rounding::kNearestEven;
    weight_rounding_ = p.GetString("weight_rounding") == "stochastic" ? Rounding::kStochastic
                                                                      : Rounding::kNearestEven;
    weight_read_ = p.GetString("forward_weight_read") == "nearest" ? WeightRead::kNearest
                                                                   : WeightRead::kTruncate;
    spec_.master_weights = p.GetBool("master_weights");
    kernel_ = p.GetString("kernel") == "ref" ? KernelChoice::kRef : KernelChoice::kFast;
  }

  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("rows")
              .Default(256)
              .Range(1, 1 << 20)
              .Doc("word lines per array: the reduction extent of one adder tree [assume]"));
    s.Add(Param::Int("cols")
              .Default(256)
              .Range(1, 1 << 20)
              .Doc("weight columns per array (each weight_bits_backward bit lines wide) [assume]"));
    s.Add(Param::Int("arrays_per_core")
              .Default(1)
              .Range(1, 1 << 16)
              .Doc("arrays working in parallel in one core"));
    s.Add(Param::Int("cores").Default(1).Range(1, 1 << 16).Doc("cores (T-PIM has 5)"));
    s.Add(Param::Int("input_bits")
              .Default(8)
              .Range(1, 16)
              .Unit("bit")
              .Doc("bit-serial width of forward inputs (activations) and of X on the GC path"));
    s.Add(Param::Int("error_bits")
              .Default(0)
              .Range(0, 16)
              .Unit("bit")
              .Doc("bit-serial width of transposed-direction inputs (errors); 0 = input_bits"));
    s.Add(Param::Int("weight_bits")
              .Default(8)
              .Range(1, 16)
              .Unit("bit")
              .Doc("forward weight width, one of {1, 2, 4, 8, 16}: the top bits of the "
                   "stored weights"));
    s.Add(Param::Int("weight_bits_backward")
              .Default(16)
              .Range(1, 16)
              .Unit("bit")
              .Doc("stored weight width, read whole in the transposed direction; one of "
                   "{1, 2, 4, 8, 16}"));
    s.Add(Param::Int("gradient_bits")
              .Default(16)
              .Range(1, 16)
              .Unit("bit")
              .Doc("width of dY stored in the GC array, one of {1, 2, 4, 8, 16} [assume]"));
    s.Add(Param::Bool("signed").Default(true).Doc(
        "two's-complement operands (MSB plane weighs -2^(b-1)); false: unsigned, negatives clip "
        "to 0"));
    s.Add(Param::Enum("rounding", {"nearest", "stochastic"})
              .Default("nearest")
              .Doc("rounding of inputs, errors and GC operands to integers"));
    s.Add(Param::Enum("weight_rounding", {"nearest", "stochastic"})
              .Default("nearest")
              .Doc("rounding of weights when programmed (stochastic keyed by the run context: "
                   "seed, layer, step, stage)"));
    s.Add(Param::Bool("master_weights")
              .Default(true)
              .Doc("keep FP32 master weights outside the array (false: the array is the only "
                   "copy, updates are written into it, as T-PIM's on-chip WU does)"));
    s.Add(Param::Enum("forward_weight_read", {"truncate", "nearest"})
              .Default("truncate")
              .Doc("how the forward direction reads the top weight_bits of the stored weights: "
                   "truncate (only the top bit columns are driven: floor) or nearest (half an "
                   "LSB added)"));
    s.Add(Param::Enum("kernel", {"fast", "ref"})
              .Default("fast")
              .Doc("fast: exact integer GEMM with counts from statistics; ref: the "
                   "cycle-by-cycle loops (identical results, slow)"));
    return s;
  }

  const MacroSpec& spec() const override { return spec_; }
  CounterSet Counters() const override {
    return CounterSet::Union("macro/digital_bitserial", {&kernels::BitSerialKernelCounters(),
                                                         &DigitalBitSerialCounters()});
  }

  void SetRowSegment(int64_t rows_per_segment) override {
    PIM_CHECK_MSG(rows_per_segment >= 0, "SetRowSegment: negative segment");
    next_row_segment_ = rows_per_segment;
  }

  void Program(ConstMatrixView w, const RunContext& ctx, ActionCounts& counts) override {
    rows_ = w.rows;
    cols_ = w.cols;
    row_segment_ = next_row_segment_;
    const int bs = spec_.weight_bits_backward, bf = spec_.weight_bits;
    const CounterRng rng = Rng(ctx, kStreamProgram);
    const size_t size = static_cast<size_t>(rows_ * cols_);
    // Forward weights: the top bf of the bs stored bits, w_f = floor(w_s / 2^(bs - bf)) (an
    // arithmetic shift: the low bit columns are simply not driven), or with kNearest
    // floor((w_s + 2^(bs-bf-1)) / 2^(bs-bf)) clipped to the bf-bit range. Scale 2^(exp + bs - bf).
    // Truncation is the kernel's shifted read of the stored words; only kNearest keeps a copy.
    const int shift = bs - bf;
    const bool nearest_read = shift > 0 && weight_read_ == WeightRead::kNearest;
    const int32_t fmax = static_cast<int32_t>(IntMax(bf, sign_));
    const int32_t half = nearest_read ? int32_t{1} << (shift - 1) : 0;
    auto forward = [&](int32_t v) { return std::min((v + half) >> shift, fmax); };
    forward_shift_ = nearest_read ? 0 : shift;
    stored_.resize(size);
    forward_.resize(nearest_read ? size : 0);
    transposed_valid_ = false;  // built by the first transposed read (TransposedWeights)
    // One pass writes the stored weights (and the rounded forward weights). The transposed read
    // sees the same bits through a cols x rows copy (contiguous reads for the kernel), made when
    // a transposed read first needs it: a layer whose input error nobody reads (the first
    // layer) never does, and its copy would be a third of this pass's memory traffic.
    // Elementwise work (and a maximum) over independent rows: split over the pool's threads.
    ThreadPool& pool = ctx.pool != nullptr ? *ctx.pool : DefaultPool();
    const bool is_signed = sign_ == Signedness::kSigned;
    const int64_t c8 = cols_ / 8 * 8;
    const __m256i vhalf = _mm256_set1_epi32(half), vfmax = _mm256_set1_epi32(fmax);
    const __m128i vshift = _mm_cvtsi32_si128(shift);
    std::mutex max_mu;
    // Round to nearest with quantizer qz (float_ok), row by row: 8 (16) columns at a time, the
    // tail element by element (the same rounding). With `max_out`, the same pass also takes the
    // maximum that sets the scale, each row's just before it is quantized (the row is then read
    // from L1): one pass over the weights instead of two.
    auto quantize_rows = [&](const Quantizer& qz, float* max_out) {
      pool.ParallelFor(rows_, RowGrain(cols_), [&](int64_t r0, int64_t r1) {
        float chunk_max = 0.0f;
        for (int64_t r = r0; r < r1; ++r) {
          const float* row = w.Row(r);
          if (max_out != nullptr) {
            chunk_max =
                std::max(chunk_max, MaxForScale(ConstMatrixView(row, 1, cols_, w.ld), sign_));
          }
          int16_t* st = stored_.data() + r * cols_;
          int64_t c = 0;
#if defined(PIM_DBS_ZMM)
          // 16 at a time; vpmovdw keeps the low 16 bits, exact for values in the stored range.
          const __m512i zhalf = _mm512_set1_epi32(half), zfmax = _mm512_set1_epi32(fmax);
          for (; c + 16 <= c8; c += 16) {
            const __m512i b = qz.Nearest16(row + c);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(st + c), _mm512_cvtepi32_epi16(b));
            if (nearest_read) {
              const __m512i f =
                  _mm512_min_epi32(_mm512_sra_epi32(_mm512_add_epi32(b, zhalf), vshift), zfmax);
              _mm256_storeu_si256(reinterpret_cast<__m256i*>(forward_.data() + r * cols_ + c),
                                  _mm512_cvtepi32_epi16(f));
            }
          }
#endif
          for (; c < c8; c += 8) {
            const __m256i b = qz.Nearest8(row + c);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(st + c), Narrow16(b, is_signed));
            if (nearest_read) {
              const __m256i f =
                  _mm256_min_epi32(_mm256_sra_epi32(_mm256_add_epi32(b, vhalf), vshift), vfmax);
              _mm_storeu_si128(reinterpret_cast<__m128i*>(forward_.data() + r * cols_ + c),
                               Narrow16(f, is_signed));
            }
          }
          for (int64_t c = c8; c < cols_; ++c) st[c] = static_cast<int16_t>(qz.Nearest(row[c]));
        }
        if (max_out != nullptr) {
          std::lock_guard<std::mutex> lock(max_mu);
          *max_out = std::max(*max_out, chunk_max);  // a maximum: the same in any order
        }
      });
    };
    // The scale rarely changes from one update to the next: quantize with the last one while
    // taking the maximum, and keep the result if the maximum gives that same scale (then it is
    // exactly what quantizing afterwards would give); otherwise quantize again.
    bool vectorized = false, done = false;
    if (weight_rounding_ == Rounding::kNearestEven && has_last_exp_) {
      const Quantizer guess = QuantizerForExp(last_weight_exp_, bs, sign_);
      if (guess.float_ok) {
        float max_abs = 0.0f;
        quantize_rows(guess, &max_abs);
        done = vectorized = PowerOfTwoExponent(max_abs, bs, sign_) == guess.exp;
      }
    }
    if (!done) {
      float max_abs = 0.0f;
      pool.ParallelFor(rows_, RowGrain(cols_), [&](int64_t r0, int64_t r1) {
        const float m = MaxForScale(ConstMatrixView(w.Row(r0), r1 - r0, cols_, w.ld), sign_);
        std::lock_guard<std::mutex> lock(max_mu);
        max_abs = std::max(max_abs, m);  // a maximum: the same in any order
      });
      const Quantizer qz = QuantizerFor(max_abs, bs, sign_);
      if (weight_rounding_ == Rounding::kNearestEven && qz.float_ok) {
        quantize_rows(qz, nullptr);
        vectorized = true;
      } else {
        int32_t* q = wq_.Get(rows_ * cols_);
        Quantize(w, bs, sign_, weight_rounding_, rng, q);
        for (size_t i = 0; i < size; ++i) stored_[i] = static_cast<int16_t>(q[i]);
      }
      last_weight_exp_ = qz.exp;
      has_last_exp_ = true;
    }
    weight_exp_ = last_weight_exp_;
    forward_exp_ = weight_exp_ + shift;
    if (nearest_read) {
      const int64_t cv = vectorized ? c8 : 0;  // forward_ written by the vector pass up to here
      for (int64_t r = 0; r < rows_; ++r) {
        for (int64_t c = cv; c < cols_; ++c) {
          forward_[r * cols_ + c] = static_cast<int16_t>(forward(StoredAt(r * cols_ + c)));
        }
      }
    }
    counts.Add("weight_writes", rows_ * cols_ * bs);  // every cell of every stored weight
    // Occupancy: the layout takes row tiles (cut within row segments) x column tiles arrays of
    // rows x cols weights, each bs cells wide; the stored weights fill rows_ x cols_ of them.
    const int64_t arrays = kernels::NumBlocks(rows_, spec_.rows, row_segment_) *
                           kernels::NumBlocks(cols_, spec_.cols, 0);
    counts.Add("array_cells_allocated", arrays * spec_.rows * spec_.cols * bs);
    counts.Add("array_cells_used", rows_ * cols_ * bs);
  }

  // The structure the cost model prices (bitserial_sram, docs/cost.md).
  std::map<std::string, double> HardwareParams() const override {
    return {{"rows", static_cast<double>(spec_.rows)},
            {"cols", static_cast<double>(spec_.cols)},
            {"bitlines", static_cast<double>(spec_.cols * spec_.weight_bits_backward)},
            {"arrays_total", static_cast<double>(spec_.arrays_per_core * spec_.cores)},
            {"input_bits", static_cast<double>(spec_.input_bits)},
            {"error_bits", static_cast<double>(error_bits_)},
            {"weight_bits", static_cast<double>(spec_.weight_bits)},
            {"weight_bits_backward", static_cast<double>(spec_.weight_bits_backward)},
            {"gradient_bits", static_cast<double>(gradient_bits_)}};
  }

  void Multiply(ConstMatrixView x, MatrixView y, Direction dir, const RunContext& ctx,
                ActionCounts& counts) override {
    const bool fwd = dir == Direction::kForward;
    const int64_t k = fwd ? rows_ : cols_, n = fwd ? cols_ : rows_;
    PIM_CHECK_MSG(x.cols == k && y.cols == n && x.rows == y.rows,
                  "Multiply: operand shapes do not match the programmed weights");
    const int bits = fwd ? spec_.input_bits : error_bits_;
    int32_t* xq = xq_.Get(x.rows * x.cols);
    // The tensor's max |x| is its MaxForScale only for signed inputs.
    const int ex = Quantize(x, bits, sign_, input_rounding_, Rng(ctx, kStreamInput), xq, false,
                            sign_ == Signedness::kSigned ? ctx.input_max_abs : -1.0f);
    kernels::BitSerialProblem p;
    p.m = x.rows;
    p.k = k;
    p.n = n;
    p.x = {xq, k, 1, bits, sign_};
    if (fwd) {
      p.w = {nullptr, cols_, 1, spec_.weight_bits, sign_};
      p.w.data16 = forward_.empty() ? stored_.data() : forward_.data();
      p.w.shift = forward_shift_;
      p.tile_k = spec_.rows;  // reduction over word lines
      p.tile_n = spec_.cols;
      p.segment_k = row_segment_;  // each segment's rows start on fresh arrays
    } else {
      // T-PIM's transposed path: the same cells read column-wise; the reduction runs over the
      // array's columns and the outputs are its rows, at the full stored width.
      p.w = {nullptr, rows_, 1, spec_.weight_bits_backward, sign_};
      p.w.data16 = TransposedWeights();
      p.tile_k = spec_.cols;
      p.tile_n = spec_.rows;
      // The stored rows are this read's outputs: segments only cut the output blocks (more
      // arrays see each input plane); the reduction over the columns is tiled as before.
      p.segment_n = row_segment_;
    }
    p.y = yq_.Get(p.m * n);
    p.ldy = n;
    Run(p, ex + (fwd ? forward_exp_ : weight_exp_), y, ctx, counts);
  }

  // GC path [assume]: dY (batch x cols) is written into a GC array at gradient_bits per element,
  // the batch on its word lines; each column of X (one input feature over the batch) is streamed
  // bit-serially at input_bits. dW[r][c] = sum_b x[b][r] dy[b][c]: the reduction runs over the
  // batch, outputs are dW's rows (one per streamed vector) times its columns.
  void GradientCalc(ConstMatrixView x, ConstMatrixView dy, MatrixView dw, const RunContext& ctx,
                    ActionCounts& counts) override {
    PIM_CHECK_MSG(x.rows == dy.rows && dw.rows == x.cols && dw.cols == dy.cols,
                  "GradientCalc: operand shapes do not match");
    const int64_t batch = x.rows;
    int32_t* xq = xq_.Get(x.rows * x.cols);
    int32_t* dyq = dyq_.Get(dy.rows * dy.cols);
    // x may be a block of the columns of a whole x (a GC split over processes): scaled as the
    // whole tensor is (input_max_abs), as Multiply scales slices of a batch.
    const int ex = Quantize(x, spec_.input_bits, sign_, input_rounding_, Rng(ctx, kStreamGradX),
                            xq, /*transpose=*/true,
                            sign_ == Signedness::kSigned ? ctx.input_max_abs : -1.0f);
    const int edy =
        Quantize(dy, gradient_bits_, sign_, input_rounding_, Rng(ctx, kStreamGradDy), dyq);
    kernels::BitSerialProblem p;
    p.m = x.cols;
    p.k = batch;
    p.n = dy.cols;
    p.x = {xq, batch, 1, spec_.input_bits, sign_};
    p.w = {dyq, dy.cols, 1, gradient_bits_, sign_};
    p.tile_k = spec_.rows;
    p.tile_n = spec_.cols;
    p.y = yq_.Get(p.m * p.n);
    p.ldy = p.n;
    if (ctx.count_shared_actions) {
      counts.Add("gc_operand_writes", batch * dy.cols * gradient_bits_);  // dY into the GC array
    }
    Run(p, ex + edy, dw, ctx, counts);
  }

  void ReadWeights(MatrixView w) const override {
    PIM_CHECK_MSG(w.rows == rows_ && w.cols == cols_, "ReadWeights: shape mismatch");
    const double scale = std::ldexp(1.0, weight_exp_);
    // |stored| < 2^16 converts to float exactly; when 2^weight_exp_ is a normal float and the
    // products stay below 2^128 (no underflow, no overflow), the float product is exact too, so
    // it equals the double product rounded to float.
    const bool vec = weight_exp_ >= -126 && weight_exp_ <= 111;
    const __m256 vscale = _mm256_set1_ps(static_cast<float>(scale));
    const bool is_signed = sign_ == Signedness::kSigned;
    // Independent rows, split over the process-wide pool (the interface passes no context).
    DefaultPool().ParallelFor(rows_, RowGrain(cols_), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        float* row = w.Row(r);
        const int16_t* src = stored_.data() + r * cols_;
        int64_t c = 0;
        if (vec) {
#if defined(PIM_DBS_ZMM)
          const __m512 zscale = _mm512_set1_ps(static_cast<float>(scale));
          for (; c + 16 <= cols_; c += 16) {
            const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c));
            const __m512i v = is_signed ? _mm512_cvtepi16_epi32(h) : _mm512_cvtepu16_epi32(h);
            _mm512_storeu_ps(row + c, _mm512_mul_ps(_mm512_cvtepi32_ps(v), zscale));
          }
#endif
          for (; c + 8 <= cols_; c += 8) {
            const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + c));
            const __m256i v = is_signed ? _mm256_cvtepi16_epi32(h) : _mm256_cvtepu16_epi32(h);
            _mm256_storeu_ps(row + c, _mm256_mul_ps(_mm256_cvtepi32_ps(v), vscale));
          }
        }
        for (; c < cols_; ++c) row[c] = static_cast<float>(StoredAt(r * cols_ + c) * scale);
      }
    });
  }

 private:
  static CounterRng Rng(const RunContext& ctx, uint64_t stream) {
    return CounterRng(MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer),
                             static_cast<uint64_t>(ctx.step), static_cast<uint64_t>(ctx.stage)),
                      stream);
  }

  // A stored word as the integer it holds (int16 when signed, uint16 when unsigned).
  int32_t StoredAt(int64_t i) const {
    return sign_ == Signedness::kSigned ? int32_t{stored_[i]}
                                        : int32_t{static_cast<uint16_t>(stored_[i])};
  }

  // stored_ transposed (cols x rows), made once per Program: 8 x 8 blocks of words, widened
  // (the raw 16 bits, zero-extended), transposed in registers and narrowed back; the edges
  // element by element.
  const int16_t* TransposedWeights() {
    if (transposed_valid_) return stored_t_.data();
    stored_t_.resize(stored_.size());
    const int64_t r8 = rows_ / 8 * 8, c8 = cols_ / 8 * 8;
    for (int64_t r0 = 0; r0 < r8; r0 += 8) {
      for (int64_t c0 = 0; c0 < c8; c0 += 8) {
        __m256i b[8];
        for (int i = 0; i < 8; ++i) {
          b[i] = _mm256_cvtepu16_epi32(_mm_loadu_si128(
              reinterpret_cast<const __m128i*>(stored_.data() + (r0 + i) * cols_ + c0)));
        }
        Transpose8x8(b);
        for (int j = 0; j < 8; ++j) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(stored_t_.data() + (c0 + j) * rows_ + r0),
                           Narrow16(b[j], /*is_signed=*/false));
        }
      }
      for (int64_t r = r0; r < r0 + 8; ++r) {
        for (int64_t c = c8; c < cols_; ++c) stored_t_[c * rows_ + r] = stored_[r * cols_ + c];
      }
    }
    for (int64_t r = r8; r < rows_; ++r) {
      for (int64_t c = 0; c < cols_; ++c) stored_t_[c * rows_ + r] = stored_[r * cols_ + c];
    }
    transposed_valid_ = true;
    return stored_t_.data();
  }

  // The exact product, dequantized into y: y = p.y * 2^exp (the fast kernel scales each
  // element as it finishes it, with the same arithmetic as Dequantize).
  void Run(const kernels::BitSerialProblem& p, int exp, MatrixView y, const RunContext& ctx,
           ActionCounts& counts) const {
    kernels::BitSerialCounts c;
    if (kernel_ == KernelChoice::kRef) {
      kernels::ref::BitSerialMatMul(p, c);
      Dequantize(p.y, exp, ProductBound(p.k, p.x.bits, p.w.bits), y);
    } else {
      kernels::fast::BitSerialMatMulScaled(p, exp, y.data, y.ld, c,
                                           ctx.pool != nullptr ? ctx.pool : &DefaultPool());
    }
    c.AddTo(counts);
  }

  MacroSpec spec_;
  int error_bits_ = 8;
  int gradient_bits_ = 16;
  Signedness sign_ = Signedness::kSigned;
  Rounding input_rounding_ = Rounding::kNearestEven;
  Rounding weight_rounding_ = Rounding::kNearestEven;
  WeightRead weight_read_ = WeightRead::kTruncate;
  KernelChoice kernel_ = KernelChoice::kFast;

  int64_t rows_ = 0, cols_ = 0;
  int64_t next_row_segment_ = 0;   // set by SetRowSegment, takes effect at Program
  int64_t row_segment_ = 0;        // the programmed layout's row segment (0: dense)
  int weight_exp_ = 0;             // stored weight = stored_ * 2^weight_exp_
  int forward_exp_ = 0;            // forward weight = forward_ * 2^forward_exp_
  // The scale exponent of the last Program (a guess for the next one; see Program).
  int last_weight_exp_ = 0;
  bool has_last_exp_ = false;
  // The stored words (at most 16 bits: int16 when signed, uint16 when unsigned), half the memory
  // traffic of int32 in Program, ReadWeights and the kernel's packing.
  std::vector<int16_t> stored_;    // rows x cols at weight_bits_backward
  std::vector<int16_t> stored_t_;  // the same, cols x rows (valid when transposed_valid_)
  bool transposed_valid_ = false;
  // The forward read: stored_ >> forward_shift_ (truncation), or, with forward_weight_read
  // nearest, the rounded top bits in forward_ (forward_shift_ 0).
  std::vector<int16_t> forward_;
  int forward_shift_ = 0;
  // Per-call scratch (quantized operands, integer results), kept to avoid reallocation.
  Scratch<int32_t> xq_, dyq_, wq_;
  Scratch<int64_t> yq_;
};

PIM_REGISTER(Macro, DigitalBitSerialMacro, "digital_bitserial",
             "T-PIM digital 8T-SRAM macro: bit-serial inputs, 1-bit AND cells, exact adder trees");

}  // namespace
}  // namespace pim
