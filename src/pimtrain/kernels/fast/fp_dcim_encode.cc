// Fast operand encoding of the FP digital CIM (fp_dcim_encode.h): nearest-even rounding to the
// format and pre-alignment as bit arithmetic on the float encoding, in two fused passes per row
// (RoundToFormat: the rounded float and its exponent; AlignRow: the shifted mantissa, with the
// fp_dcim kernel's operand data on the side). AVX-512 and AVX2 bodies (digital_isa.h), a scalar
// tail with the same integer and float operations, and the generic encoder for the elements
// the bit arithmetic does not cover (non-finite, or scaled outside [2^-120, 2^100)).
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <mutex>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/kernels/fast/digital_isa.h"
#include "pimtrain/kernels/fp_dcim.h"
#include "pimtrain/kernels/fp_dcim_encode.h"

// GCC 12 flags the AVX-512 intrinsics' internal _mm512_undefined_* operands (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace pim::kernels::fast {
namespace internal {
namespace {

#if defined(__AVX512F__) && defined(__AVX512BW__)
// Horizontal sum and max of 16 int32 lanes, through memory (GCC 12's _mm512_reduce_* trip
// its own uninitialized-variable warnings).
inline int64_t SumLanes(__m512i v) {
  alignas(64) int32_t l[16];
  _mm512_store_si512(l, v);
  int64_t s = 0;
  for (int32_t x : l) s += x;
  return s;
}
inline int32_t MaxLanes(__m512i v) {
  alignas(64) int32_t l[16];
  _mm512_store_si512(l, v);
  int32_t m = l[0];
  for (int32_t x : l) m = std::max(m, x);
  return m;
}
#endif

}  // namespace

// The locals the loop bodies name (the bodies were one function before the split).
#define PIM_ROUND_LOCALS                                                               \
  const float* x = a.x;                                                                \
  const float scale = a.scale, magic = a.magic;                                        \
  const uint32_t half = a.half, keep = a.keep, emin_bits = a.emin_bits;                \
  const uint32_t max_bits = a.max_bits;                                                \
  const int drop = a.drop, emin = a.emin;                                              \
  const int32_t* o = a.o;                                                              \
  uint32_t* r = a.r;                                                                   \
  int32_t* e = a.e;                                                                    \
  const bool want_max = a.want_max;                                                    \
  int32_t* col_max = a.col_max;                                                        \
  int64_t bad = acc.bad; /* locals: stores through r, e may alias acc */              \
  int32_t m = acc.m;
#define PIM_ALIGN_LOCALS                                                               \
  const uint32_t* r = a.r;                                                             \
  const int32_t* o = a.o;                                                              \
  const int32_t* t = a.t;                                                              \
  const int32_t t_all = a.t_all;                                                       \
  const int32_t* shared = a.shared;                                                    \
  const int32_t shared_all = a.shared_all;                                             \
  const int32_t max_mag = a.max_mag, lost_cap = a.lost_cap, bias = a.bias;             \
  const int32_t emin = a.emin;                                                         \
  const bool nearest = a.nearest;                                                      \
  int32_t* out = a.out;                                                                \
  float* f32 = a.f32;                                                                  \
  int32_t* col_nz = a.col_nz;                                                          \
  const int pw = a.pw;                                                                 \
  int64_t& shifts = acc.shifts;                                                        \
  int64_t& lost = acc.lost;                                                            \
  int64_t& sat = acc.sat;                                                              \
  int64_t* row_nz = acc.row_nz;

#if defined(__AVX512F__) && defined(__AVX512BW__)
int64_t RoundBodyAvx512(const RoundArgs& a, int64_t i, int64_t n, RoundAcc& acc) {
  PIM_ROUND_LOCALS
  // The AVX2 loop below, 16 lanes at a time (the same operations, masks for blends).
  const __m512 vscale = _mm512_set1_ps(scale), vmagic = _mm512_set1_ps(magic);
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF), one = _mm512_set1_epi32(1);
  const __m512i big = _mm512_set1_epi32(0x717FFFFF), tiny = _mm512_set1_epi32(0x03800000);
  const __m512i vhalf = _mm512_set1_epi32(static_cast<int>(half));
  const __m512i vkeep = _mm512_set1_epi32(static_cast<int>(keep));
  const __m512i vemin_bits = _mm512_set1_epi32(static_cast<int>(emin_bits) - 1);
  const __m512i vmax = _mm512_set1_epi32(static_cast<int>(max_bits));
  const __m512i v127 = _mm512_set1_epi32(127), vemin = _mm512_set1_epi32(emin);
  const __m512i vnone = _mm512_set1_epi32(kNoExp);
  const __m128i vdrop = _mm_cvtsi32_si128(drop);
  __m512i vm = vnone;
  for (; i + 16 <= n; i += 16) {
    const __m512 y = _mm512_mul_ps(_mm512_loadu_ps(x + i), vscale);
    const __m512i u = _mm512_castps_si512(y);
    const __m512i a = _mm512_and_si512(u, abs_mask);
    const __m512i sign = _mm512_andnot_si512(abs_mask, u);
    const __mmask16 is_bad =
        _mm512_cmpgt_epi32_mask(a, big) |
        (_mm512_test_epi32_mask(a, a) & _mm512_cmpgt_epi32_mask(tiny, a));
    bad += is_bad;
    const __m512i lsb = _mm512_and_si512(_mm512_srl_epi32(a, vdrop), one);
    const __m512i normal =
        _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(a, vhalf), lsb), vkeep);
    const __m512i sub = _mm512_castps_si512(
        _mm512_sub_ps(_mm512_add_ps(_mm512_castsi512_ps(a), vmagic), vmagic));
    __m512i q =
        _mm512_mask_mov_epi32(sub, _mm512_cmpgt_epi32_mask(a, vemin_bits), normal);
    q = _mm512_min_epu32(q, vmax);
    _mm512_storeu_si512(r + i, _mm512_or_si512(q, sign));
    const __m512i ef = _mm512_srli_epi32(q, 23);
    __m512i ex = _mm512_max_epi32(_mm512_sub_epi32(_mm512_max_epi32(ef, one), v127), vemin);
    if (o != nullptr) ex = _mm512_add_epi32(ex, _mm512_loadu_si512(o + i));
    if (e != nullptr) _mm512_storeu_si512(e + i, ex);
    if (want_max || col_max != nullptr) {
      // Zeros have no exponent; bad lanes enter after their fix-up below.
      const __m512i cand =
          _mm512_mask_mov_epi32(vnone, _mm512_test_epi32_mask(q, q) & ~is_bad, ex);
      if (want_max) vm = _mm512_max_epi32(vm, cand);
      if (col_max != nullptr) {
        _mm512_storeu_si512(col_max + i,
                            _mm512_max_epi32(_mm512_loadu_si512(col_max + i), cand));
      }
    }
  }
  m = std::max(m, MaxLanes(vm));
  acc.bad = bad;
  acc.m = m;
  return i;
}

int64_t AlignBodyAvx512(const AlignArgs& a, int64_t i, int64_t n, AlignAcc& acc) {
  PIM_ALIGN_LOCALS
  // The AVX2 loop below, 16 lanes at a time with mask registers in place of the blends
  // (the same integer operations, so the same values and counts).
  const __m512i zero = _mm512_setzero_si512(), one = _mm512_set1_epi32(1);
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF), hidden = _mm512_set1_epi32(0x800000);
  const __m512i man_mask = _mm512_set1_epi32(0x7FFFFF), v127 = _mm512_set1_epi32(127);
  const __m512i v23 = _mm512_set1_epi32(23), v31 = _mm512_set1_epi32(31);
  const __m512i vmax = _mm512_set1_epi32(max_mag), vover = _mm512_set1_epi32(max_mag + 1);
  const __m512i vcap = _mm512_set1_epi32(lost_cap), vbias = _mm512_set1_epi32(bias);
  const __m512i vt_all = _mm512_set1_epi32(t_all), vsh_all = _mm512_set1_epi32(shared_all);
  const __m512i vemin = _mm512_set1_epi32(emin), v15 = _mm512_set1_epi32(15);
  __m512i vshifts = zero, vlost = zero, vsat = zero;
  __m512i vnz0 = zero, vnz1 = zero, vnz2 = zero, vnz3 = zero;  // nonzero nibbles (cache)
  for (; i + 16 <= n; i += 16) {
    const __m512i ri = _mm512_loadu_si512(r + i);
    const __m512i q = _mm512_and_si512(ri, abs_mask);
    const __m512i ef = _mm512_srli_epi32(q, 23);
    const __m512i fm = _mm512_and_si512(q, man_mask);
    const __m512i f = _mm512_mask_or_epi32(fm, _mm512_test_epi32_mask(ef, ef), fm, hidden);
    const __m512i efu = _mm512_sub_epi32(_mm512_max_epi32(ef, one), v127);
    __m512i ex = _mm512_max_epi32(efu, vemin);
    __m512i rsh = _mm512_sub_epi32(t != nullptr ? _mm512_loadu_si512(t + i) : vt_all, efu);
    if (o != nullptr) {
      const __m512i oi = _mm512_loadu_si512(o + i);
      ex = _mm512_add_epi32(ex, oi);
      rsh = _mm512_sub_epi32(rsh, oi);
    }
    rsh = _mm512_add_epi32(rsh, v23);
    const __m512i sh = _mm512_max_epi32(_mm512_min_epi32(rsh, v31), one);
    __m512i a = _mm512_srlv_epi32(f, sh);
    if (nearest) {
      const __m512i sh1 = _mm512_sub_epi32(sh, one);
      const __m512i guard = _mm512_and_si512(_mm512_srlv_epi32(f, sh1), one);
      const __m512i below = _mm512_sub_epi32(_mm512_sllv_epi32(one, sh1), one);
      const __mmask16 sticky = _mm512_test_epi32_mask(f, below);
      const __m512i odd_or_sticky =
          _mm512_mask_mov_epi32(_mm512_and_si512(a, one), sticky, one);
      a = _mm512_add_epi32(a, _mm512_and_si512(guard, odd_or_sticky));
    }
    // rsh <= 0: above a layer-wise exponent, saturates (0 stays 0).
    const __mmask16 left = _mm512_cmplt_epi32_mask(rsh, one);
    a = _mm512_mask_mov_epi32(a, left,
                              _mm512_maskz_mov_epi32(_mm512_test_epi32_mask(f, f), vover));
    vsat = _mm512_mask_add_epi32(vsat, _mm512_cmpgt_epi32_mask(a, vmax), vsat, one);
    a = _mm512_min_epi32(a, vmax);
    const __m512i neg = _mm512_srai_epi32(ri, 31);
    const __m512i signed_a = _mm512_sub_epi32(_mm512_xor_si512(a, neg), neg);
    _mm512_storeu_si512(out + i, signed_a);
    const __mmask16 nz = _mm512_test_epi32_mask(q, q);
    const __m512i si = _mm512_add_epi32(
        _mm512_sub_epi32(shared != nullptr ? _mm512_loadu_si512(shared + i) : vsh_all, ex),
        vbias);
    vshifts = _mm512_mask_add_epi32(vshifts, nz & _mm512_test_epi32_mask(si, si), vshifts,
                                    one);
    vlost = _mm512_mask_add_epi32(vlost, nz, vlost,
                                  _mm512_min_epi32(_mm512_max_epi32(si, zero), vcap));
    if (pw > 0) {
      _mm512_storeu_ps(f32 + i, _mm512_cvtepi32_ps(signed_a));
      // Named accumulators (not an array indexed in a loop) so they stay in registers.
      auto count = [&](int d, __m512i& acc) {
        // kernels::Nibble: low nibbles unsigned, the top one arithmetic.
        const __m128i shd = _mm_cvtsi32_si128(4 * d);
        const __m512i nib = d == pw - 1
                                ? _mm512_sra_epi32(signed_a, shd)
                                : _mm512_and_si512(_mm512_srl_epi32(signed_a, shd), v15);
        const __mmask16 nzd = _mm512_test_epi32_mask(nib, nib);
        int32_t* cn = col_nz + d * n + i;
        const __m512i c = _mm512_loadu_si512(cn);
        _mm512_storeu_si512(cn, _mm512_mask_add_epi32(c, nzd, c, one));
        acc = _mm512_mask_add_epi32(acc, nzd, acc, one);
      };
      count(0, vnz0);
      if (pw > 1) count(1, vnz1);
      if (pw > 2) count(2, vnz2);
      if (pw > 3) count(3, vnz3);
    }
  }
  shifts += SumLanes(vshifts);
  lost += SumLanes(vlost);
  sat += SumLanes(vsat);
  const __m512i vnz[4] = {vnz0, vnz1, vnz2, vnz3};
  for (int d = 0; d < pw; ++d) row_nz[d] += SumLanes(vnz[d]);
  return i;
}
#endif

int64_t RoundBodyAvx2(const RoundArgs& a, int64_t i, int64_t n, RoundAcc& acc) {
  PIM_ROUND_LOCALS
  const __m256i vnone = _mm256_set1_epi32(kNoExp);
  __m256i vm = vnone;
  const __m256 vscale = _mm256_set1_ps(scale), vmagic = _mm256_set1_ps(magic);
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), one = _mm256_set1_epi32(1);
  const __m256i big = _mm256_set1_epi32(0x717FFFFF), tiny = _mm256_set1_epi32(0x03800000);
  const __m256i vhalf = _mm256_set1_epi32(static_cast<int>(half));
  const __m256i vkeep = _mm256_set1_epi32(static_cast<int>(keep));
  const __m256i vemin_bits = _mm256_set1_epi32(static_cast<int>(emin_bits) - 1);
  const __m256i vmax = _mm256_set1_epi32(static_cast<int>(max_bits));
  const __m256i v127 = _mm256_set1_epi32(127), vemin = _mm256_set1_epi32(emin);
  const __m128i vdrop = _mm_cvtsi32_si128(drop);
  for (; i + 8 <= n; i += 8) {
    const __m256 y = _mm256_mul_ps(_mm256_loadu_ps(x + i), vscale);
    const __m256i u = _mm256_castps_si256(y);
    const __m256i a = _mm256_and_si256(u, abs_mask);
    const __m256i sign = _mm256_andnot_si256(abs_mask, u);
    const __m256i is_bad = _mm256_or_si256(
        _mm256_cmpgt_epi32(a, big),
        _mm256_andnot_si256(_mm256_cmpeq_epi32(a, _mm256_setzero_si256()),
                            _mm256_cmpgt_epi32(tiny, a)));
    bad += _mm256_movemask_ps(_mm256_castsi256_ps(is_bad));
    const __m256i lsb = _mm256_and_si256(_mm256_srl_epi32(a, vdrop), one);
    const __m256i normal =
        _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(a, vhalf), lsb), vkeep);
    const __m256i sub = _mm256_castps_si256(_mm256_sub_ps(
        _mm256_add_ps(_mm256_castsi256_ps(a), vmagic), vmagic));
    __m256i q = _mm256_blendv_epi8(sub, normal, _mm256_cmpgt_epi32(a, vemin_bits));
    q = _mm256_min_epu32(q, vmax);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(r + i), _mm256_or_si256(q, sign));
    const __m256i ef = _mm256_srli_epi32(q, 23);
    __m256i ex = _mm256_max_epi32(_mm256_sub_epi32(_mm256_max_epi32(ef, one), v127), vemin);
    if (o != nullptr) {
      ex = _mm256_add_epi32(ex, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(o + i)));
    }
    if (e != nullptr) _mm256_storeu_si256(reinterpret_cast<__m256i*>(e + i), ex);
    if (want_max || col_max != nullptr) {
      // Zeros have no exponent; bad lanes enter after their fix-up below.
      const __m256i skip =
          _mm256_or_si256(_mm256_cmpeq_epi32(q, _mm256_setzero_si256()), is_bad);
      const __m256i cand = _mm256_blendv_epi8(ex, vnone, skip);
      if (want_max) vm = _mm256_max_epi32(vm, cand);
      if (col_max != nullptr) {
        __m256i* cm = reinterpret_cast<__m256i*>(col_max + i);
        _mm256_storeu_si256(cm, _mm256_max_epi32(_mm256_loadu_si256(cm), cand));
      }
    }
  }
  alignas(32) int32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), vm);
  for (int32_t l : lanes) m = std::max(m, l);
  acc.bad = bad;
  acc.m = m;
  return i;
}

int64_t AlignBodyAvx2(const AlignArgs& a, int64_t i, int64_t n, AlignAcc& acc) {
  PIM_ALIGN_LOCALS
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF), one = _mm256_set1_epi32(1);
  const __m256i zero = _mm256_setzero_si256(), hidden = _mm256_set1_epi32(0x800000);
  const __m256i man_mask = _mm256_set1_epi32(0x7FFFFF), v127 = _mm256_set1_epi32(127);
  const __m256i v23 = _mm256_set1_epi32(23), v31 = _mm256_set1_epi32(31);
  const __m256i vmax = _mm256_set1_epi32(max_mag), vover = _mm256_set1_epi32(max_mag + 1);
  const __m256i vcap = _mm256_set1_epi32(lost_cap), vbias = _mm256_set1_epi32(bias);
  __m256i vshifts = zero, vlost = zero, vsat = zero;
  __m256i vzeros[4] = {zero, zero, zero, zero};  // zero nibbles per lane (cache)
  const int64_t avx2_start = i;
  const __m256i vt_all = _mm256_set1_epi32(t_all), vsh_all = _mm256_set1_epi32(shared_all);
  const __m256i vemin = _mm256_set1_epi32(emin);
  for (; i + 8 <= n; i += 8) {
    const __m256i ri = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + i));
    const __m256i q = _mm256_and_si256(ri, abs_mask);
    const __m256i ef = _mm256_srli_epi32(q, 23);
    const __m256i ef_zero = _mm256_cmpeq_epi32(ef, zero);
    const __m256i f =
        _mm256_or_si256(_mm256_and_si256(q, man_mask), _mm256_andnot_si256(ef_zero, hidden));
    const __m256i efu = _mm256_sub_epi32(_mm256_max_epi32(ef, one), v127);
    __m256i ex = _mm256_max_epi32(efu, vemin);  // RoundRow's e: the format exponent + o
    if (o != nullptr) {
      ex = _mm256_add_epi32(ex, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(o + i)));
    }
    const __m256i ti =
        t != nullptr ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t + i)) : vt_all;
    __m256i rsh = _mm256_sub_epi32(ti, efu);
    if (o != nullptr) {
      rsh = _mm256_sub_epi32(rsh, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(o + i)));
    }
    rsh = _mm256_add_epi32(rsh, v23);
    const __m256i sh = _mm256_max_epi32(_mm256_min_epi32(rsh, v31), one);
    __m256i a = _mm256_srlv_epi32(f, sh);
    if (nearest) {
      const __m256i sh1 = _mm256_sub_epi32(sh, one);
      const __m256i guard = _mm256_and_si256(_mm256_srlv_epi32(f, sh1), one);
      const __m256i below = _mm256_sub_epi32(_mm256_sllv_epi32(one, sh1), one);
      const __m256i sticky = _mm256_andnot_si256(
          _mm256_cmpeq_epi32(_mm256_and_si256(f, below), zero), one);
      a = _mm256_add_epi32(
          a, _mm256_and_si256(guard, _mm256_or_si256(sticky, _mm256_and_si256(a, one))));
    }
    const __m256i f_zero = _mm256_cmpeq_epi32(f, zero);
    const __m256i left = _mm256_cmpgt_epi32(one, rsh);  // rsh <= 0
    a = _mm256_blendv_epi8(a, _mm256_andnot_si256(f_zero, vover), left);
    const __m256i over = _mm256_cmpgt_epi32(a, vmax);
    vsat = _mm256_sub_epi32(vsat, over);
    a = _mm256_min_epi32(a, vmax);
    const __m256i neg = _mm256_srai_epi32(ri, 31);
    const __m256i signed_a = _mm256_sub_epi32(_mm256_xor_si256(a, neg), neg);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), signed_a);
    if (pw > 0) {
      _mm256_storeu_ps(f32 + i, _mm256_cvtepi32_ps(signed_a));
      // Unrolled over the (at most 4) nibbles so the counters stay in registers.
#pragma GCC unroll 4
      for (int d = 0; d < 4; ++d) {
        if (d >= pw) break;
        // kernels::Nibble: low nibbles unsigned, the top one arithmetic.
        const __m128i sh = _mm_cvtsi32_si128(4 * d);
        const __m256i nib = d == pw - 1 ? _mm256_sra_epi32(signed_a, sh)
                                        : _mm256_and_si256(_mm256_srl_epi32(signed_a, sh),
                                                           _mm256_set1_epi32(15));
        const __m256i is_zero = _mm256_cmpeq_epi32(nib, zero);  // -1 where zero
        __m256i* cn = reinterpret_cast<__m256i*>(col_nz + d * n + i);
        // +1 where nonzero: add 1, then add the -1 of the zero lanes.
        _mm256_storeu_si256(
            cn, _mm256_add_epi32(_mm256_loadu_si256(cn), _mm256_add_epi32(one, is_zero)));
        vzeros[d] = _mm256_sub_epi32(vzeros[d], is_zero);
      }
    }
    const __m256i nz = _mm256_andnot_si256(_mm256_cmpeq_epi32(q, zero), _mm256_set1_epi32(-1));
    const __m256i si = _mm256_add_epi32(
        _mm256_sub_epi32(
            shared != nullptr ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(shared + i))
                              : vsh_all,
            ex),
        vbias);
    vshifts = _mm256_sub_epi32(
        vshifts, _mm256_andnot_si256(_mm256_cmpeq_epi32(si, zero), nz));
    vlost = _mm256_add_epi32(
        vlost, _mm256_and_si256(nz, _mm256_min_epi32(_mm256_max_epi32(si, zero), vcap)));
  }
  alignas(32) int32_t l1[8], l2[8], l3[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(l1), vshifts);
  _mm256_store_si256(reinterpret_cast<__m256i*>(l2), vlost);
  _mm256_store_si256(reinterpret_cast<__m256i*>(l3), vsat);
  for (int j = 0; j < 8; ++j) {
    shifts += l1[j];
    lost += l2[j];
    sat += l3[j];
  }
  for (int d = 0; d < pw; ++d) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(l1), vzeros[d]);
    int64_t zeros = 0;
    for (int j = 0; j < 8; ++j) zeros += l1[j];
    row_nz[d] += (i - avx2_start) - zeros;
  }
  return i;
}

#undef PIM_ROUND_LOCALS
#undef PIM_ALIGN_LOCALS

}  // namespace internal

namespace {

using internal::kNoExp;

// The constants of the fast encoder for one format (bit arithmetic on floats).
struct FastFormat {
  uint32_t max_bits = 0;   // bits of the largest finite value (saturation)
  uint32_t emin_bits = 0;  // bits of 2^emin (below: the subnormal quantum)
  int drop = 0;            // float mantissa bits below the format's
  float magic = 0;         // 2^(emin - M + 23): adding and subtracting it rounds to the quantum
  int emin = 0, man = 0;
};
FastFormat MakeFastFormat(fp::Format f) {
  const fp::FormatInfo& in = fp::Info(f);
  FastFormat ff;
  ff.max_bits = std::bit_cast<uint32_t>(static_cast<float>(in.max_finite));
  ff.emin_bits = std::bit_cast<uint32_t>(std::ldexp(1.0f, in.emin));
  ff.drop = 23 - in.man_bits;
  ff.magic = std::ldexp(1.0f, in.emin - in.man_bits + 23);
  ff.emin = in.emin;
  ff.man = in.man_bits;
  return ff;
}

// Pass 1 over n contiguous elements: the value scaled by 2^s and rounded to nearest even in
// the format, saturating, as float bits r[i] (sign included), and its format exponent plus
// offset, e[i] = max(E_float, emin) + o[i] (e is unused for zeros; e may be null: AlignRow
// recomputes it from r). Elements the bit arithmetic does not cover (non-finite, or scaled
// outside [2^-120, 2^100)) go through the generic encoder. Exact: x * 2^s is exact in that
// range.
//
// Optionally also the largest e over the nonzero results, the vector's shared exponent
// (*emax, kNoExp when all are zero), or the same maximum per position across calls
// (col_max[i] = max(col_max[i], e[i]) for nonzero r[i]): folded into this pass instead of
// re-reading r and e. Elements fixed up by the generic encoder enter with their final value.
void RoundRow(const float* x, int64_t n, int s, fp::Format f, const FastFormat& ff,
              const int32_t* o, uint32_t* r, int32_t* e, int32_t* emax = nullptr,
              int32_t* col_max = nullptr) {
  internal::RoundArgs a;
  a.x = x;
  a.scale = std::ldexp(1.0f, s);
  a.magic = ff.magic;
  const bool bf16 = f == fp::Format::kBF16;
  a.half = bf16 ? 0x7FFFu : (1u << (ff.drop - 1)) - 1u;
  a.drop = bf16 ? 16 : ff.drop;
  a.keep = ~((1u << a.drop) - 1u);
  // BF16: the bit rounding covers the whole float range, subnormals included.
  a.emin_bits = bf16 ? 0u : ff.emin_bits;
  a.max_bits = ff.max_bits;
  a.emin = ff.emin;
  a.o = o;
  a.r = r;
  a.e = e;
  a.want_max = emax != nullptr;
  a.col_max = col_max;
  internal::RoundAcc acc;
  // 2^s below float's least subnormal rounds to 0, and x * 0 would read as an exact 0: then
  // every element goes through the generic encoder (2^s above float's range is inf, and every
  // product inf or NaN, which the bit arithmetic already hands over).
  const bool scale_ok = s >= -149;
  int64_t i = scale_ok ? 0 : n;
  if (!scale_ok) acc.bad = 1;
  const internal::DigitalKernels& k = internal::Digital();
  if (k.round_body != nullptr && scale_ok) i = k.round_body(a, i, n, acc);
  i = internal::RoundBodyAvx2(a, i, n, acc);
  const float scale = a.scale;
  const uint32_t half = a.half, keep = a.keep, emin_bits = a.emin_bits;
  const int drop = a.drop;
  int32_t m = acc.m;
  int64_t bad = acc.bad;
  for (; i < n; ++i) {
    const float y = x[i] * scale;
    const uint32_t u = std::bit_cast<uint32_t>(y);
    const uint32_t a = u & 0x7FFFFFFFu, sign = u & 0x80000000u;
    bad += (a > 0x717FFFFFu) | ((a != 0) & (a < 0x03800000u));
    const uint32_t normal = (a + half + ((a >> drop) & 1u)) & keep;
    const uint32_t sub =
        std::bit_cast<uint32_t>((std::bit_cast<float>(a) + ff.magic) - ff.magic);
    const uint32_t q = std::min(a >= emin_bits ? normal : sub, ff.max_bits);
    r[i] = q | sign;
    const int32_t ei = std::max(std::max(static_cast<int32_t>(q >> 23), 1) - 127, ff.emin) +
                       (o ? o[i] : 0);
    if (e != nullptr) e[i] = ei;
    const bool is_bad = (a > 0x717FFFFFu) | ((a != 0) & (a < 0x03800000u));
    if (q != 0 && !is_bad) {
      m = std::max(m, ei);
      if (col_max != nullptr) col_max[i] = std::max(col_max[i], ei);
    }
  }
  if (emax != nullptr) *emax = m;
  if (bad == 0) return;
  for (int64_t j = 0; j < n; ++j) {
    const float xj = x[j];
    const uint32_t a = std::bit_cast<uint32_t>(xj * scale) & 0x7FFFFFFFu;
    if (scale_ok && std::isfinite(xj) && a <= 0x717FFFFFu && (a == 0 || a >= 0x03800000u)) {
      continue;
    }
    const float v = fp::Decode(f, fp::Encode(f, std::isnan(xj) ? 0.0 : std::ldexp(double{xj}, s),
                                             Rounding::kNearestEven, 0, fp::Overflow::kSaturate));
    r[j] = std::bit_cast<uint32_t>(v);
    const uint32_t q = r[j] & 0x7FFFFFFFu;
    const int32_t ej =
        std::max(std::max(static_cast<int32_t>(q >> 23), 1) - 127, ff.emin) + (o ? o[j] : 0);
    if (e != nullptr) e[j] = ej;
    if (q != 0) {
      if (emax != nullptr) *emax = std::max(*emax, ej);
      if (col_max != nullptr) col_max[j] = std::max(col_max[j], ej);
    }
  }
}

// Pass 2: a[i] = R(|r_i| 2^(o_i - t_i)) from the float's 24-bit significand F and exponent
// Ef: a right shift of F by t - o - Ef + 23 with guard and sticky bits (the same value and
// rounding as AlignVector's shift of the format significand), saturated; and AlignVector's
// counts (s_i = E* - E_i + M + 2 - W, E_i + o_i = e_i, RoundRow's e recomputed here from r
// rather than stored and streamed back). t and shared are per element, or (null) one value
// t_all / shared_all for the whole vector (a row: no arrays to fill and stream).
//
// With `cache`, the same pass also writes the kernel's exact float copy of the row and its
// nonzero-nibble counts (per column, incremented, and the row's total), while the values are
// in registers: the weights' caches or the operand data of a Multiply (DcimProblem::x_f32,
// x_nz).
struct RowCache {
  float* f32 = nullptr;       // n floats
  int32_t* col_nz = nullptr;  // nibbles x n, incremented
  int64_t* row_nz = nullptr;  // nibble d's count at row_nz[d * row_stride]
  int64_t row_stride = 0;
  int nibbles = 0;
};
void AlignRow(int64_t n, const uint32_t* r, const int32_t* o, const int32_t* t, int32_t t_all,
              const int32_t* shared, int32_t shared_all, int bits, bool nearest,
              const FastFormat& ff, int32_t* out, fp::AlignCounts& c,
              const RowCache* cache = nullptr) {
  internal::AlignArgs a;
  a.r = r;
  a.o = o;
  a.t = t;
  a.t_all = t_all;
  a.shared = shared;
  a.shared_all = shared_all;
  a.max_mag = (int32_t{1} << (bits - 1)) - 1;
  a.lost_cap = ff.man + 1;
  a.bias = ff.man + 2 - bits;
  a.emin = ff.emin;
  a.nearest = nearest;
  a.out = out;
  if (cache != nullptr) {
    a.f32 = cache->f32;
    a.col_nz = cache->col_nz;
    a.pw = cache->nibbles;
  }
  const int pw = a.pw;
  const int32_t max_mag = a.max_mag, lost_cap = a.lost_cap, bias = a.bias;
  internal::AlignAcc acc;
  int64_t i = 0;
  const internal::DigitalKernels& k = internal::Digital();
  if (k.align_body != nullptr) i = k.align_body(a, i, n, acc);
  i = internal::AlignBodyAvx2(a, i, n, acc);
  int64_t shifts = acc.shifts, lost = acc.lost, sat = acc.sat;
  int64_t* row_nz = acc.row_nz;
  for (; i < n; ++i) {
    const uint32_t q = r[i] & 0x7FFFFFFFu;
    const int32_t ef = static_cast<int32_t>(q >> 23);
    const int32_t f = static_cast<int32_t>((q & 0x7FFFFFu) | (ef != 0 ? 0x800000u : 0u));
    const int32_t efu = std::max(ef, 1) - 127;
    const int32_t rsh = (t ? t[i] : t_all) - (o ? o[i] : 0) - efu + 23;
    const int32_t sh = std::max(std::min(rsh, 31), 1);
    int32_t a = f >> sh;
    if (nearest) {
      const int32_t guard = (f >> (sh - 1)) & 1;
      const int32_t sticky = (f & ((int32_t{1} << (sh - 1)) - 1)) != 0;
      a += guard & (sticky | (a & 1));
    }
    if (rsh <= 0) a = f != 0 ? max_mag + 1 : 0;  // above a layer-wise exponent: saturates
    const int32_t over = a > max_mag;
    sat += over;
    a = over ? max_mag : a;
    out[i] = (r[i] >> 31) ? -a : a;
    if (cache != nullptr) {
      cache->f32[i] = static_cast<float>(out[i]);
      for (int d = 0; d < pw; ++d) {
        const int32_t nz = kernels::Nibble(out[i], d, pw) != 0;
        cache->col_nz[d * n + i] += nz;
        row_nz[d] += nz;
      }
    }
    if (q != 0) {
      const int32_t ei = std::max(efu, ff.emin) + (o ? o[i] : 0);
      const int32_t si = (shared ? shared[i] : shared_all) - ei + bias;
      shifts += si != 0;
      lost += std::min(std::max(si, 0), lost_cap);
    }
  }
  c.alignment_shifts += shifts;
  c.shifted_out_bits += lost;
  c.saturated += sat;
  if (cache != nullptr) {
    for (int d = 0; d < pw; ++d) cache->row_nz[d * cache->row_stride] = row_nz[d];
  }
}

// Row i of the aligned matrix out (rows x cols) into the side outputs, with its per-column
// nonzero-nibble counts added into col_nz (nibbles x cols, int32).
void SideRow(const int32_t* out, int64_t rows, int64_t cols, int64_t i, int pw,
             const EncodeSideOutputs& side, int32_t* col_nz) {
  const int32_t* row = out + i * cols;
  for (int d = 0; d < pw; ++d) {
    // Nibble d of each value (see kernels::Nibble), branch-free so the loop vectorizes.
    const int sh = 4 * d;
    const int32_t mask = d == pw - 1 ? -1 : 15;
    int32_t* cn = col_nz + d * cols;
    int32_t count = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const int32_t nz = ((row[c] >> sh) & mask) != 0;
      count += nz;
      cn[c] += nz;
    }
    if (side.row_nz != nullptr) side.row_nz[d * rows + i] = count;
  }
  if (side.f32 != nullptr) {
    float* dst = side.f32 + i * cols;
    for (int64_t c = 0; c < cols; ++c) dst[c] = static_cast<float>(row[c]);
  }
  if (side.f64 != nullptr) {
    double* dst = side.f64 + i * cols;
    for (int64_t c = 0; c < cols; ++c) dst[c] = row[c];
  }
}

}  // namespace

void EncodeSideOutputsOf(const int32_t* a, int64_t rows, int64_t cols, int bits,
                         const EncodeSideOutputs& side) {
  const int pw = kernels::NumNibbles(bits);
  std::vector<int32_t> col_nz(static_cast<size_t>(pw * cols), 0);
  for (int64_t i = 0; i < rows; ++i) SideRow(a, rows, cols, i, pw, side, col_nz.data());
  if (side.col_nz != nullptr) {
    for (size_t j = 0; j < col_nz.size(); ++j) side.col_nz[j] += col_nz[j];
  }
}

void EncodeAlignMatrix(ConstMatrixView v, bool by_rows, const EncodeSpec& spec, const int* o,
                       int32_t* out, int* exps, fp::AlignCounts& counts, ThreadPool* pool,
                       const EncodeSideOutputs& side, uint32_t* r) {
  PIM_CHECK(!fp::IsInt(spec.format) && spec.rounding == Rounding::kNearestEven);
  const FastFormat ff = MakeFastFormat(spec.format);
  const int64_t rows = v.rows, cols = v.cols;
  const int s = spec.scale_exp;
  const bool layer = spec.layer, nearest = spec.align_rounding == fp::AlignRounding::kNearestEven;
  const int pw = kernels::NumNibbles(spec.bits);
  std::mutex mu;
  auto chunks = [&](auto fn) {
    // Chunks of at least 2^19 elements: the encode and align cost about a nanosecond per
    // element, and waking the pool's workers costs more than a smaller chunk saves.
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 19) / std::max<int64_t>(1, cols));
    if (pool != nullptr) {
      pool->ParallelFor(rows, grain, fn);
    } else {
      fn(0, rows);
    }
  };
  auto exponent_of = [&](int32_t emax) { return emax == kNoExp ? 0 : emax; };  // all zero
  // The side outputs not fused into AlignRow (doubles, or more than 4 nibbles).
  auto side_row = [&](int64_t i, int32_t* col_nz) {
    SideRow(out, rows, cols, i, pw, side, col_nz);
  };
  const bool any_side = side.f32 != nullptr || side.f64 != nullptr || side.col_nz != nullptr ||
                        side.row_nz != nullptr;
  // Floats and counts of at most 4 nibbles come out of AlignRow itself.
  const bool fused = any_side && side.f32 != nullptr && side.f64 == nullptr && pw <= 4;
  if (by_rows) {
    chunks([&](int64_t r0, int64_t r1) {
      fp::AlignCounts local;
      std::vector<int32_t> col_nz(static_cast<size_t>(any_side ? pw * cols : 0), 0);
      int64_t row_nz[4];  // per-row counts when side.row_nz is null
      for (int64_t i = r0; i < r1; ++i) {
        uint32_t* ri = r + i * cols;
        int32_t emax = kNoExp;
        RoundRow(v.Row(i), cols, s, spec.format, ff, o, ri, nullptr, layer ? nullptr : &emax);
        const int32_t shared = layer ? spec.layer_exp : exponent_of(emax);
        exps[i] = shared - (spec.bits - 2);
        RowCache rc;
        if (fused) {
          rc.f32 = side.f32 != nullptr ? side.f32 + i * cols : nullptr;
          rc.col_nz = col_nz.data();
          rc.row_nz = side.row_nz != nullptr ? side.row_nz + i : row_nz;
          rc.row_stride = side.row_nz != nullptr ? rows : 1;
          rc.nibbles = pw;
        }
        AlignRow(cols, ri, o, nullptr, exps[i], nullptr, shared, spec.bits, nearest, ff,
                 out + i * cols, local, fused ? &rc : nullptr);
        if (any_side && !fused) side_row(i, col_nz.data());
        local.exponent_compares += cols;
      }
      std::lock_guard<std::mutex> lock(mu);
      counts += local;
      // Integer sums: the same totals whatever the split.
      if (side.col_nz != nullptr) {
        for (size_t j = 0; j < col_nz.size(); ++j) side.col_nz[j] += col_nz[j];
      }
    });
    return;
  }
  // Columns: round everything while taking each column's maximum exponent (per chunk, then
  // merged: max is order-free, so the result does not depend on the split), then align row
  // by row.
  std::vector<int32_t> shared(static_cast<size_t>(cols), kNoExp), t(static_cast<size_t>(cols));
  chunks([&](int64_t r0, int64_t r1) {
    std::vector<int32_t> local(static_cast<size_t>(layer ? 0 : cols), kNoExp);
    for (int64_t i = r0; i < r1; ++i) {
      RoundRow(v.Row(i), cols, s, spec.format, ff, nullptr, r + i * cols, nullptr, nullptr,
               layer ? nullptr : local.data());
    }
    if (layer) return;
    std::lock_guard<std::mutex> lock(mu);
    for (int64_t j = 0; j < cols; ++j) shared[j] = std::max(shared[j], local[j]);
  });
  if (layer) {
    std::fill(shared.begin(), shared.end(), spec.layer_exp);
  } else {
    for (int32_t& x : shared) x = exponent_of(x);
  }
  for (int64_t j = 0; j < cols; ++j) {
    t[j] = shared[j] - (spec.bits - 2);
    exps[j] = t[j];
  }
  counts.exponent_compares += rows * cols;
  chunks([&](int64_t r0, int64_t r1) {
    fp::AlignCounts local;
    std::vector<int32_t> col_nz(static_cast<size_t>(any_side ? pw * cols : 0), 0);
    int64_t row_nz[4];  // per-row counts when side.row_nz is null
    for (int64_t i = r0; i < r1; ++i) {
      RowCache rc;
      if (fused) {
        rc.f32 = side.f32 != nullptr ? side.f32 + i * cols : nullptr;
        rc.col_nz = col_nz.data();
        rc.row_nz = side.row_nz != nullptr ? side.row_nz + i : row_nz;
        rc.row_stride = side.row_nz != nullptr ? rows : 1;
        rc.nibbles = pw;
      }
      AlignRow(cols, r + i * cols, nullptr, t.data(), 0, shared.data(), 0, spec.bits, nearest,
               ff, out + i * cols, local, fused ? &rc : nullptr);
      if (any_side && !fused) side_row(i, col_nz.data());
    }
    std::lock_guard<std::mutex> lock(mu);
    counts += local;
    // Integer sums: the same totals whatever the split.
    if (side.col_nz != nullptr) {
      for (size_t j = 0; j < col_nz.size(); ++j) side.col_nz[j] += col_nz[j];
    }
  });
}

void RoundToFormat(const float* x, int64_t n, int s, fp::Format f, uint32_t* out_bits) {
  RoundRow(x, n, s, f, MakeFastFormat(f), nullptr, out_bits, nullptr);
}

}  // namespace pim::kernels::fast
