// Fast analog kernel, dataflow A's conversions: noise -> ADC -> shift -> accumulate for every
// bit line every input cycle, the scalar transfer's exact float steps 8 (AVX2) or 16
// (AVX-512) lanes at a time, and the small-noise shortcut that skips the inverse CDF where no
// central draw can move a code.

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/rng.h"

#include "pimtrain/kernels/fast/analog_worker.h"

// GCC 12 flags the AVX-512 intrinsics' internal _mm512_undefined_* operands (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace pim::kernels::fast::internal {

namespace {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
// 16 int32 codes widened to int64 and shifted left: lanes 0-7 in *lo, 8-15 in *hi.
inline void ShiftedHalves(__m512i code, __m128i shift, __m512i* lo, __m512i* hi) {
  *lo = _mm512_sll_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(code)), shift);
  *hi = _mm512_sll_epi64(_mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(code, 1)), shift);
}

// a[0..16) += sign (code << shift), sign = +-1: the digital shift-add of 16 conversions.
inline void AddShifted16(int64_t* a, __m512i code, __m128i shift, int64_t sign) {
  __m512i lo, hi;
  ShiftedHalves(code, shift, &lo, &hi);
  const __m512i a0 = _mm512_loadu_si512(a), a1 = _mm512_loadu_si512(a + 8);
  _mm512_storeu_si512(a, sign > 0 ? _mm512_add_epi64(a0, lo) : _mm512_sub_epi64(a0, lo));
  _mm512_storeu_si512(a + 8, sign > 0 ? _mm512_add_epi64(a1, hi) : _mm512_sub_epi64(a1, hi));
}

#endif

}  // namespace

// The row variants of the table's transfer_row (analog_worker.h): acc[i] += sign * (code <<
// shift) for the conversions of row inputs xi[0..n) (integer partial sums) or, xi null, xf[0..n),
// draws z (null: no noise), AdcTransfer::Convert's float steps lane by lane (no FMA). Return the
// clipped conversions. The AVX2 variant: 8 lanes a step, the scalar transfer for the rest.
int64_t TransferRowAvx2(const AdcTransfer& adc, const int32_t* xi, const float* xf, const float* z,
                        int64_t n, int shift, int64_t sign, int64_t* acc) {
  int64_t clipped = 0, i = 0;
  const __m256 vsigma = _mm256_set1_ps(adc.sigma), vinv = _mm256_set1_ps(adc.inv_lsb);
  const __m256 vmax = _mm256_set1_ps(adc.max_code), vzero = _mm256_setzero_ps();
  const __m256 vlo = _mm256_set1_ps(-0.5f), vhi = _mm256_set1_ps(adc.max_code + 0.5f);
  const __m256 vk = _mm256_set1_ps(adc.inl_k);
  const bool inl = adc.inl_k != 0.0f, noisy = adc.sigma != 0.0f && z != nullptr;
  const __m128i vshift = _mm_cvtsi32_si128(shift);
  for (; i + 8 <= n; i += 8) {
    __m256 v = xi != nullptr ? _mm256_cvtepi32_ps(_mm256_loadu_si256(
                                   reinterpret_cast<const __m256i*>(xi + i)))
                             : _mm256_loadu_ps(xf + i);
    if (noisy) v = _mm256_add_ps(v, _mm256_mul_ps(vsigma, _mm256_loadu_ps(z + i)));
    const __m256 t = _mm256_mul_ps(v, vinv);
    const __m256 out = _mm256_or_ps(_mm256_cmp_ps(t, vlo, _CMP_LT_OQ),
                                    _mm256_cmp_ps(t, vhi, _CMP_GT_OQ));
    clipped += __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(out)));
    __m256 tc = _mm256_min_ps(_mm256_max_ps(t, vzero), vmax);
    if (inl) {
      const __m256 pk = _mm256_mul_ps(vk, tc);
      const __m256 d = _mm256_sub_ps(vmax, tc);
      tc = _mm256_add_ps(tc, _mm256_mul_ps(pk, d));
    }
    __m256 cf = _mm256_round_ps(tc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    cf = _mm256_min_ps(_mm256_max_ps(cf, vzero), vmax);
    const __m256i code = _mm256_cvtps_epi32(cf);
    const __m256i lo =
        _mm256_sll_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(code)), vshift);
    const __m256i hi =
        _mm256_sll_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(code, 1)), vshift);
    __m256i* a = reinterpret_cast<__m256i*>(acc + i);
    const __m256i a0 = _mm256_loadu_si256(a), a1 = _mm256_loadu_si256(a + 1);
    _mm256_storeu_si256(a, sign > 0 ? _mm256_add_epi64(a0, lo) : _mm256_sub_epi64(a0, lo));
    _mm256_storeu_si256(a + 1, sign > 0 ? _mm256_add_epi64(a1, hi) : _mm256_sub_epi64(a1, hi));
  }
  for (; i < n; ++i) {
    const float x = xi != nullptr ? static_cast<float>(xi[i]) : xf[i];
    const AdcTransfer::Result r = adc.Convert(x, noisy ? z[i] : 0.0f);
    acc[i] += sign * (static_cast<int64_t>(r.code) << shift);
    clipped += r.clipped;
  }
  return clipped;
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// The AVX-512 variant: 16 lanes a step, then TransferRowAvx2 for the rest.
int64_t TransferRowAvx512(const AdcTransfer& adc, const int32_t* xi, const float* xf,
                          const float* z, int64_t n, int shift, int64_t sign, int64_t* acc) {
  int64_t clipped = 0, i = 0;
  const __m512 wsigma = _mm512_set1_ps(adc.sigma), winv = _mm512_set1_ps(adc.inv_lsb);
  const __m512 wmax = _mm512_set1_ps(adc.max_code), wzero = _mm512_setzero_ps();
  const __m512 wlo = _mm512_set1_ps(-0.5f), whi = _mm512_set1_ps(adc.max_code + 0.5f);
  const __m512 wk = _mm512_set1_ps(adc.inl_k);
  const bool inl = adc.inl_k != 0.0f, noisy = adc.sigma != 0.0f && z != nullptr;
  const __m128i wshift = _mm_cvtsi32_si128(shift);
  for (; i + 16 <= n; i += 16) {
    __m512 x = xi != nullptr ? _mm512_cvtepi32_ps(_mm512_loadu_si512(xi + i))
                             : _mm512_loadu_ps(xf + i);
    if (noisy) x = _mm512_add_ps(x, _mm512_mul_ps(wsigma, _mm512_loadu_ps(z + i)));
    const __m512 t = _mm512_mul_ps(x, winv);
    const __mmask16 out = _mm512_cmp_ps_mask(t, wlo, _CMP_LT_OQ) |
                          _mm512_cmp_ps_mask(t, whi, _CMP_GT_OQ);
    clipped += __builtin_popcount(static_cast<unsigned>(out));
    __m512 tc = _mm512_min_ps(_mm512_max_ps(t, wzero), wmax);
    if (inl) {
      const __m512 pk = _mm512_mul_ps(wk, tc);
      const __m512 d = _mm512_sub_ps(wmax, tc);
      tc = _mm512_add_ps(tc, _mm512_mul_ps(pk, d));
    }
    __m512 cf = _mm512_roundscale_ps(tc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    cf = _mm512_min_ps(_mm512_max_ps(cf, wzero), wmax);
    AddShifted16(acc + i, _mm512_cvtps_epi32(cf), wshift, sign);
  }
  return clipped + TransferRowAvx2(adc, xi != nullptr ? xi + i : nullptr,
                                   xi != nullptr ? nullptr : xf + i,
                                   z != nullptr ? z + i : nullptr, n - i, shift, sign, acc + i);
}
#endif

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// Dataflow A with small noise and a linear ADC, exactly: the code is a monotone function of the
// draw z (every float step is), so when the central region's extreme draws zlo, zhi give the
// same code and clipping side, every central draw does, and its inverse CDF need not be
// evaluated. Lanes where they differ get the full rational; tail draws (~5 %) are listed and
// converted after the slice's vector loop, 16 at a time, with the quantile table's z. With
// integer partial sums, one code per unit and every central draw moving the input by less
// than half a code (rounding included), the code is clamp(v, 0, M) and clipping is v > M: no
// float step at all. Same results as ConvertA.
void Worker::ConvertAShortcutAvx512(int64_t m, int64_t b, int h, int j,
                                    int64_t sign, bool integer) {
  const AdcTransfer& adc = p.readout.adc;
  const int64_t ncp = this->ncp;
  int64_t* const accp = acc.data();
  const int64_t len = S * ncp;
  uint32_t* const hs = uni.data();
  uint32_t* const list = tails.data();
  const uint64_t first = detail::NoiseIndex(m, blocks, b, h, cycles, j, len, 0);
  FillUniforms(p.noise_key, kNoiseStreamA, first, len, hs);
  // The draw of cell hh at draw index i (a refined cell's needs its refinement word).
  auto draw = [&](uint32_t hh, uint64_t i) {
    return RefinedCell(hh) ? GaussianRefined(hh, NoiseRefineWord(p.noise_key, kNoiseStreamA, i))
                           : GaussianFrom16(hh);
  };
  const float* src = ps.data() + j * len;
  const int32_t* isrc = psi.data() + j * len;
  const __m512 wsigma = _mm512_set1_ps(adc.sigma), winv = _mm512_set1_ps(adc.inv_lsb);
  const __m512 wmax = _mm512_set1_ps(adc.max_code), wzero = _mm512_setzero_ps();
  const __m512 wlo = _mm512_set1_ps(-0.5f), whi = _mm512_set1_ps(adc.max_code + 0.5f);
  const __m512 zlo = _mm512_set1_ps(GaussianFrom16(kGaussTail));
  const __m512 zhi = _mm512_set1_ps(GaussianFrom16(65535 - kGaussTail));
  const __m512i edge = _mm512_set1_epi32(static_cast<int>(kGaussTail));
  const __m512i span = _mm512_set1_epi32(static_cast<int>(65536 - 2 * kGaussTail));
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i hi_edge = _mm512_set1_epi32(static_cast<int>(65536 - kGaussTail) - 1);
  const __m512i hi_base = _mm512_set1_epi32(static_cast<int>(kTailHiBase));
  const float* table = GetGaussianTable().tail;
  // The transfer of 16 inputs x with draws z: codes, and the below / above clipping masks.
  auto convert = [&](__m512 x, __m512 z, __mmask16* below, __mmask16* above) {
    const __m512 t = _mm512_mul_ps(_mm512_add_ps(x, _mm512_mul_ps(wsigma, z)), winv);
    *below = _mm512_cmp_ps_mask(t, wlo, _CMP_LT_OQ);
    *above = _mm512_cmp_ps_mask(t, whi, _CMP_GT_OQ);
    const __m512 tc = _mm512_min_ps(_mm512_max_ps(t, wzero), wmax);
    __m512 cf = _mm512_roundscale_ps(tc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    cf = _mm512_min_ps(_mm512_max_ps(cf, wzero), wmax);
    return _mm512_cvtps_epi32(cf);
  };
  // |fl(v + fl(sigma z)) - v| <= sigma |z| (1 + 2^-24) + 2^-24 2^ceil(log2(vmax + 1)) for a
  // partial sum 0 <= v <= vmax; below 1/2 for every central z, x rounds to v (clamped to M).
  const double zmax = std::max(-static_cast<double>(GaussianFrom16(kGaussTail)),
                               static_cast<double>(GaussianFrom16(65535 - kGaussTail)));
  const double vmax = static_cast<double>(p.block) * ((1 << pd) - 1) * ((1 << pr) - 1);
  const bool exact_int =
      integer && adc.inv_lsb == 1.0f &&
      static_cast<double>(adc.sigma) * zmax * (1 + std::ldexp(1.0, -23)) +
              std::ldexp(1.0, static_cast<int>(std::ceil(std::log2(vmax + 1))) - 24) <
          0.5;
  const __m512i imax = _mm512_set1_epi32(static_cast<int32_t>(adc.max_code));
  int64_t clipped = 0, nt = 0;
  for (int q = 0; q < S; ++q) {
    const float* v = src + q * ncp;
    const int32_t* iv = isrc + q * ncp;
    const uint32_t* hq = hs + q * ncp;
    const int shift = j * pd + q * pr;
    const __m128i wshift = _mm_cvtsi32_si128(shift);
    int64_t cp = 0;
    for (; cp + 16 <= ncp; cp += 16) {
      const __m512i hv = _mm512_loadu_si512(hq + cp);
      const __mmask16 tail = _mm512_cmpge_epu32_mask(_mm512_sub_epi32(hv, edge), span);
      // Tail lanes are converted afterwards (their columns listed), the others with zlo.
      _mm512_storeu_si512(list + nt, _mm512_maskz_compress_epi32(
                                         tail, _mm512_add_epi32(_mm512_set1_epi32(
                                                                    static_cast<int>(cp)),
                                                                iota)));
      nt += __builtin_popcount(static_cast<unsigned>(tail));
      __m512i code;
      __mmask16 clip;
      if (exact_int) {
        const __m512i vi = _mm512_loadu_si512(iv + cp);
        code = _mm512_min_epi32(vi, imax);
        clip = _mm512_cmpgt_epi32_mask(vi, imax);
      } else {
      const __m512 x = integer ? _mm512_cvtepi32_ps(_mm512_loadu_si512(iv + cp))
                               : _mm512_loadu_ps(v + cp);
      __mmask16 b0, a0, b1, a1;
      code = convert(x, zlo, &b0, &a0);
      const __m512i code_hi = convert(x, zhi, &b1, &a1);
      const __mmask16 differ =
          _mm512_cmpneq_epi32_mask(code, code_hi) | static_cast<__mmask16>(b0 ^ b1) |
          static_cast<__mmask16>(a0 ^ a1);
      clip = b0 | a0;
      if ((differ & ~tail) != 0) {
        // Some central draws matter: the inverse CDF for this vector.
        const __m512 vhalf = _mm512_set1_ps(0.5f), vinv16 = _mm512_set1_ps(1.0f / 65536.0f);
        const __m512 t = _mm512_sub_ps(
            _mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(hv), vhalf), vinv16), vhalf);
        const __m512 r = _mm512_mul_ps(t, t);
        __m512 num = _mm512_set1_ps(kGaussA[0]), den = _mm512_set1_ps(kGaussB[0]);
        for (int i = 1; i < 6; ++i) {
          num = _mm512_add_ps(_mm512_mul_ps(num, r), _mm512_set1_ps(kGaussA[i]));
          den = _mm512_add_ps(_mm512_mul_ps(den, r), _mm512_set1_ps(i < 5 ? kGaussB[i] : 1.0f));
        }
        const __m512 z = _mm512_div_ps(_mm512_mul_ps(t, num), den);
        __mmask16 bz, az;
        code = convert(x, z, &bz, &az);
        clip = bz | az;
      }
      }
      code = _mm512_maskz_mov_epi32(static_cast<__mmask16>(~tail), code);
      clipped += __builtin_popcount(static_cast<unsigned>(clip & ~tail));
      AddShifted16(accp + cp, code, wshift, sign);
    }
    // The columns left over by the vector loop, one at a time.
    for (; cp < ncp; ++cp) {
      const AdcTransfer::Result r =
          adc.Convert(integer ? static_cast<float>(iv[cp]) : v[cp],
                      draw(hq[cp], first + static_cast<uint64_t>(q * ncp + cp)));
      accp[cp] += sign * (static_cast<int64_t>(r.code) << shift);
      clipped += r.clipped;
    }
    // The listed tail lanes, 16 at a time (distinct columns, so the scatter cannot collide).
    for (int64_t i = 0; i < nt; i += 16) {
      const __mmask16 live = nt - i >= 16 ? static_cast<__mmask16>(0xFFFF)
                                           : static_cast<__mmask16>((1u << (nt - i)) - 1);
      const __m512i cols = _mm512_maskz_loadu_epi32(live, list + i);
      const __m512 x =
          integer ? _mm512_cvtepi32_ps(_mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live,
                                                                  cols, iv, 4))
                  : _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, cols, v, 4);
      const __m512i hv =
          _mm512_mask_i32gather_epi32(_mm512_set1_epi32(0), live, cols, hq, 4);
      const __mmask16 hi_tail = _mm512_cmpgt_epi32_mask(hv, hi_edge);
      const __m512i tidx = _mm512_mask_sub_epi32(hv, hi_tail, hv, hi_base);
      __m512 z = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, tidx, table, 4);
      // Refined cells (~2.6 % of the tail lanes): their continuous draws, one by one.
      const __mmask16 refined = _mm512_mask_cmpge_epu32_mask(
          live, _mm512_sub_epi32(tidx, _mm512_set1_epi32(static_cast<int>(kGaussRefine))),
          _mm512_set1_epi32(static_cast<int>(2 * kGaussTail - 2 * kGaussRefine)));
      if (refined != 0) [[unlikely]] {
        alignas(64) float zs[16];
        alignas(64) uint32_t hs16[16], cs16[16];
        _mm512_store_ps(zs, z);
        _mm512_store_si512(hs16, hv);
        _mm512_store_si512(cs16, cols);
        for (int l = 0; l < 16; ++l) {
          if ((refined >> l) & 1)
            zs[l] =
                draw(hs16[l], first + static_cast<uint64_t>(q * ncp) + cs16[l]);
        }
        z = _mm512_load_ps(zs);
      }
      __mmask16 bz, az;
      const __m512i code =
          _mm512_maskz_mov_epi32(live, convert(x, z, &bz, &az));
      clipped += __builtin_popcount(static_cast<unsigned>((bz | az) & live));
      __m512i lo, hi;
      ShiftedHalves(code, wshift, &lo, &hi);
      const __m256i cl = _mm512_castsi512_si256(cols);
      const __m256i ch = _mm512_extracti64x4_epi64(cols, 1);
      const __mmask8 ml = static_cast<__mmask8>(live),
                     mh = static_cast<__mmask8>(live >> 8);
      const __m512i a0v =
          _mm512_mask_i32gather_epi64(_mm512_setzero_si512(), ml, cl, accp, 8);
      const __m512i a1v =
          _mm512_mask_i32gather_epi64(_mm512_setzero_si512(), mh, ch, accp, 8);
      _mm512_mask_i32scatter_epi64(
          accp, ml, cl,
          sign > 0 ? _mm512_add_epi64(a0v, lo) : _mm512_sub_epi64(a0v, lo), 8);
      _mm512_mask_i32scatter_epi64(
          accp, mh, ch,
          sign > 0 ? _mm512_add_epi64(a1v, hi) : _mm512_sub_epi64(a1v, hi), 8);
    }
    nt = 0;
  }
  c.adc_clipped += clipped;
  c.adc_conversions += len;
  c.sample_holds += len;
  c.shift_adds += len;
}
#endif

// Dataflow A read-out of cycle j: noise -> ADC -> shift -> accumulate, a slice row at a time by
// the table's transfer_row (or, with small noise, its convert_a_small_noise).
void Worker::ConvertA(int64_t m, int64_t b, int h, int j, int64_t sign, bool integer) {
  const AnalogKernels& kernels = Kernels();
  if (direct != nullptr) {
    ConvertADirect(m, b, h, j, sign);
    return;
  }
  if (shortcut) {
    (this->*kernels.convert_a_small_noise)(m, b, h, j, sign, integer);
    return;
  }
  if (table != nullptr) {
    ConvertATable(h, j, sign);
    return;
  }
  const AdcTransfer& adc = p.readout.adc;
  const int64_t ncp = this->ncp, len = S * ncp;
  const bool noisy = adc.sigma != 0.0f;
  const uint64_t first = detail::NoiseIndex(m, blocks, b, h, cycles, j, len, 0);
  if (noisy) FillNormalsDeferRefined(p.noise_key, kNoiseStreamA, first, len, z.data(), deferred);
  int64_t clipped = 0;
  for (int q = 0; q < S; ++q) {
    const int64_t at = j * len + q * ncp;
    clipped += kernels.transfer_row(adc, integer ? psi.data() + at : nullptr, ps.data() + at,
                                    noisy ? z.data() + q * ncp : nullptr, ncp, j * pd + q * pr,
                                    sign, acc.data());
  }
  if (noisy && !deferred.empty()) {
    // The refined draws were converted at their labels: replace those codes by the true ones.
    // A linear transfer is monotone in z (every float step is), so when the cell's bounds give
    // the same code and clipping, so does the draw, and its value is not needed.
    const RefinedEdges& edges = GetRefinedEdges();
    const bool monotone = adc.inl_k == 0.0f;
    for (const DeferredDraw& d : deferred) {
      const int64_t i = d.pos, q = i / ncp, cp = i - q * ncp;
      const float x = integer ? static_cast<float>(psi[static_cast<size_t>(j * len + i)])
                              : ps[static_cast<size_t>(j * len + i)];
      const AdcTransfer::Result label = adc.Convert(x, z[static_cast<size_t>(i)]);
      AdcTransfer::Result r{};
      bool known = false;
      if (monotone) {
        const uint32_t e = RefinedEdges::Index(d.h);
        const AdcTransfer::Result lo = adc.Convert(x, edges.lo[e]);
        const AdcTransfer::Result hi = adc.Convert(x, edges.hi[e]);
        known = lo.code == hi.code && lo.clipped == hi.clipped;
        r = lo;
      }
      if (!known) {
        r = adc.Convert(x, GaussianRefined(d.h, NoiseRefineWord(p.noise_key, kNoiseStreamA,
                                                                first + static_cast<uint64_t>(i))));
      }
      acc[static_cast<size_t>(cp)] += sign * (static_cast<int64_t>(r.code - label.code)
                                              << (j * pd + q * pr));
      clipped += static_cast<int64_t>(r.clipped) - static_cast<int64_t>(label.clipped);
    }
  }
  c.adc_clipped += clipped;
  c.adc_conversions += len;
  c.sample_holds += len;
  c.shift_adds += len;
}

}  // namespace pim::kernels::fast::internal

// ---- Noiseless dataflow A by a code table (branch aspeed7) -------------------------------------
namespace pim::kernels::fast::internal {

CodeTable::CodeTable(const AdcTransfer& adc, int64_t vmax_in) : vmax(vmax_in) {
  code.resize(static_cast<size_t>(vmax + 1));
  clipped.resize(static_cast<size_t>(vmax + 1));
  for (int64_t v = 0; v <= vmax; ++v) {
    // The definition's conversion of partial sum v without noise (ref::AnalogMatMul:
    // Convert(float(isum), 0)).
    const AdcTransfer::Result r = adc.Convert(static_cast<float>(v), 0.0f);
    code[static_cast<size_t>(v)] = r.code;
    clipped[static_cast<size_t>(v)] = r.clipped ? 1 : 0;
    max_code = std::max(max_code, r.code);
  }
  vclip = vmax + 1;
  for (int64_t v = 0; v <= vmax; ++v) {
    if (clipped[static_cast<size_t>(v)] != 0) {
      vclip = v;
      break;
    }
  }
  bool monotone = true;
  for (int64_t v = vclip; v <= vmax; ++v) monotone = monotone && clipped[static_cast<size_t>(v)] != 0;
  bytes = vmax <= 255 && max_code <= 255 && monotone;
  while (zero_to < vmax && code[static_cast<size_t>(zero_to + 1)] == 0 &&
         clipped[static_cast<size_t>(zero_to + 1)] == 0) {
    ++zero_to;
  }
  while (ident_to < vmax && code[static_cast<size_t>(ident_to + 1)] == ident_to + 1 &&
         clipped[static_cast<size_t>(ident_to + 1)] == 0) {
    ++ident_to;
  }
  if (bytes) {
    for (int64_t v = 0; v <= vmax; ++v) code8[v] = static_cast<uint8_t>(code[static_cast<size_t>(v)]);
  }
}

bool CodeTableApplies(const AnalogProblem& p) {
  return p.readout.dataflow == Dataflow::kA && p.readout.adc.sigma == 0.0f &&
         p.conductance == nullptr && !LosslessReadout(p) &&
         detail::MaxPartialSum(p) <= static_cast<double>(kCodeTableMaxV);
}

int64_t CodeTableSegmentScalar(const CodeTable& t, const int32_t* v32, const uint8_t* v8,
                               int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                               int64_t* acc, int32_t* acc32, int64_t vbound) {
  (void)vbound;
  int64_t clipped = 0;
  for (int q = 0; q < S; ++q) {
    const int shift = shift_j + q * pr;
    for (int64_t cp = 0; cp < ncp; ++cp) {
      const int64_t i = q * ncp + cp;
      const size_t v = v8 != nullptr ? v8[i] : static_cast<size_t>(v32[i]);
      const int64_t d = sign * (static_cast<int64_t>(t.code[v]) << shift);
      if (acc32 != nullptr) {
        acc32[cp] += static_cast<int32_t>(d);
      } else {
        acc[cp] += d;
      }
      clipped += t.clipped[v];
    }
  }
  return clipped;
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VBMI__)
namespace {
// 64 columns a step. Per slice the 64 partial sums as bytes, their codes by one VPERMI2B (sums
// below 128) or two and a blend on the sum's top bit, the clipped ones counted as v >= vclip.
// The slices' codes in groups of g (M sum_{q < g} 2^(q pr) <= 255) by Horner's rule in bytes
// (s = (s << pr) + code, top slice first), each group widened to 16 bits (kNarrow: M sum_q
// 2^(q pr) < 2^16) or int32 and added << (first slice pr); then one shift-add per column into
// the int32 accumulators (kAcc32) or the int64 ones.
template <bool kHi, bool kNarrow, bool kAcc32>
int64_t TableSegment(const CodeTable& t, const int32_t* v32, const uint8_t* v8, int64_t ncp,
                     int S, int pr, int shift_j, int64_t sign, int64_t* acc, int32_t* acc32,
                     int g) {
  const __m512i t0 = _mm512_loadu_si512(t.code8), t1 = _mm512_loadu_si512(t.code8 + 64);
  const __m512i t2 = _mm512_loadu_si512(t.code8 + 128), t3 = _mm512_loadu_si512(t.code8 + 192);
  const bool count_clip = t.vclip <= t.vmax;
  const __m512i vclip = _mm512_set1_epi8(static_cast<char>(std::min<int64_t>(t.vclip, 255)));
  const __m128i vshift = _mm_cvtsi32_si128(shift_j);
  const __m512i zero = _mm512_setzero_si512();
  int64_t clipped = 0;
  for (int64_t cp0 = 0; cp0 < ncp; cp0 += 64) {
    const int64_t nl = std::min<int64_t>(64, ncp - cp0);
    const __mmask64 lm = nl == 64 ? ~__mmask64{0} : (__mmask64{1} << nl) - 1;
    // The code of slice q's 64 sums (lanes past ncp: code[0], never stored).
    auto codes = [&](int q) {
      const int64_t i0 = q * ncp + cp0;
      __m512i v;
      if (v8 != nullptr) {
        v = _mm512_maskz_loadu_epi8(lm, v8 + i0);
      } else {
        __m128i b[4];
        for (int k = 0; k < 4; ++k) {
          b[k] = _mm512_cvtepi32_epi8(_mm512_maskz_loadu_epi32(
              static_cast<__mmask16>(lm >> (16 * k)), v32 + i0 + 16 * k));
        }
        v = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_inserti128_si256(_mm256_castsi128_si256(b[0]), b[1], 1)),
            _mm256_inserti128_si256(_mm256_castsi128_si256(b[2]), b[3], 1), 1);
      }
      __m512i c = _mm512_permutex2var_epi8(t0, v, t1);
      if (kHi) {
        c = _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), c, _mm512_permutex2var_epi8(t2, v, t3));
      }
      if (count_clip) {
        clipped += __builtin_popcountll(_mm512_mask_cmpge_epu8_mask(lm, v, vclip));
      }
      return c;
    };
    __m512i s[4] = {zero, zero, zero, zero};  // 16-bit: s[0], s[1]; int32: s[0..4)
    for (int q0 = 0; q0 < S; q0 += g) {
      const int q1 = std::min(S, q0 + g);
      __m512i h = codes(q1 - 1);
      for (int q = q1 - 2; q >= q0; --q) {
        for (int b = 0; b < pr; ++b) h = _mm512_add_epi8(h, h);
        h = _mm512_add_epi8(h, codes(q));
      }
      const __m128i qs = _mm_cvtsi32_si128(q0 * pr);
      if (kNarrow) {
        s[0] = _mm512_add_epi16(
            s[0], _mm512_sll_epi16(_mm512_cvtepu8_epi16(_mm512_castsi512_si256(h)), qs));
        s[1] = _mm512_add_epi16(
            s[1], _mm512_sll_epi16(_mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(h, 1)), qs));
      } else {
        // Immediate lane indices (a loop index is a constant only once the loop is unrolled,
        // which -O2 does not do).
        const __m128i h4[4] = {_mm512_castsi512_si128(h), _mm512_extracti32x4_epi32(h, 1),
                               _mm512_extracti32x4_epi32(h, 2), _mm512_extracti32x4_epi32(h, 3)};
        for (int k = 0; k < 4; ++k) {
          s[k] = _mm512_add_epi32(s[k], _mm512_sll_epi32(_mm512_cvtepu8_epi32(h4[k]), qs));
        }
      }
    }
    if (kAcc32) {
      // acc32[cp0 + 16 k ..] += sign * (sum << shift_j), 16 columns per vector.
      for (int k = 0; k < 4 && 16 * k < nl; ++k) {
        __m512i x = kNarrow ? _mm512_cvtepu16_epi32((k & 1) == 0
                                                        ? _mm512_castsi512_si256(s[k >> 1])
                                                        : _mm512_extracti64x4_epi64(s[k >> 1], 1))
                            : s[k];
        x = _mm512_sll_epi32(x, vshift);
        const __mmask16 am = static_cast<__mmask16>(lm >> (16 * k));
        int32_t* a = acc32 + cp0 + 16 * k;
        const __m512i a0 = _mm512_maskz_loadu_epi32(am, a);
        _mm512_mask_storeu_epi32(a, am,
                                 sign > 0 ? _mm512_add_epi32(a0, x) : _mm512_sub_epi32(a0, x));
      }
      continue;
    }
    // acc[cp0 + 8 k ..] += sign * (sum << shift_j), int64, 8 columns per vector.
    for (int k = 0; k < 8 && 8 * k < nl; ++k) {
      const __m512i x = kNarrow ? Widen16To64(s[k >> 2], k & 3) : Widen32To64(s[k >> 1], k & 1);
      ShiftAddInt64(acc + cp0, k, lm, x, vshift, sign);
    }
  }
  return clipped;
}
}  // namespace

int64_t CodeTableSegmentAvx512(const CodeTable& t, const int32_t* v32, const uint8_t* v8,
                               int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                               int64_t* acc, int32_t* acc32, int64_t vbound) {
  if (!t.bytes) {
    return CodeTableSegmentScalar(t, v32, v8, ncp, S, pr, shift_j, sign, acc, acc32, vbound);
  }
  // M sum_{q < n} 2^(q pr) (integers: S pr <= 16, M <= 255).
  auto most = [&](int n) {
    return static_cast<int64_t>(t.max_code) * (((int64_t{1} << (n * pr)) - 1) / ((1 << pr) - 1));
  };
  const bool narrow = most(S) < 65536;
  // Slices per byte group: M sum_{q < g} 2^(q pr) <= 255 (at least one: M <= 255).
  int g = 1;
  while (g < S && most(g + 1) <= 255) ++g;
  const bool hi = std::min(t.vmax, vbound) >= 128;
#define PIM_TABLE_SEGMENT(H, N, A) \
  return TableSegment<H, N, A>(t, v32, v8, ncp, S, pr, shift_j, sign, acc, acc32, g)
  if (acc32 != nullptr) {
    if (narrow) {
      if (hi) PIM_TABLE_SEGMENT(true, true, true);
      PIM_TABLE_SEGMENT(false, true, true);
    }
    if (hi) PIM_TABLE_SEGMENT(true, false, true);
    PIM_TABLE_SEGMENT(false, false, true);
  }
  if (narrow) {
    if (hi) PIM_TABLE_SEGMENT(true, true, false);
    PIM_TABLE_SEGMENT(false, true, false);
  }
  if (hi) PIM_TABLE_SEGMENT(true, false, false);
  PIM_TABLE_SEGMENT(false, false, false);
#undef PIM_TABLE_SEGMENT
}
#endif

void Worker::SetCodeTable(const CodeTable* t) {
  // Only the vector variant is worth it: without one, TransferRow's vector float steps are
  // faster than a scalar lookup per conversion.
  use_table8 = t != nullptr && t->bytes && Kernels().code_table_segment != nullptr;
  table = use_table8 ? t : nullptr;
  // The byte sums of the row counts / row sums go to psb.
  if (use_table8 && row_sums && psb.empty()) psb.resize(static_cast<size_t>(cycles * S * ncp));
  // A sample's codes add up in int32 when even all of them at the largest code could not
  // overflow it: blocks x phases x sum_j 2^(j pd) x max_code x sum_q 2^(q pr) < 2^31.
  if (use_table8) {
    const double bound = static_cast<double>(blocks) * (p.signed_inputs ? 2.0 : 1.0) *
                         (std::ldexp(1.0, cycles * pd) - 1.0) / (std::ldexp(1.0, pd) - 1.0) *
                         static_cast<double>(table->max_code) *
                         (std::ldexp(1.0, S * pr) - 1.0) / (std::ldexp(1.0, pr) - 1.0);
    if (bound < 2147483647.0) acc32.assign(static_cast<size_t>(ncp), 0);
    const int64_t unit = LinesBound(1);
    table_zero_lines = table->zero_to / unit;
    table_ident_lines = table->ident_to / unit;
    table_few_lines = std::max(table_zero_lines, table_ident_lines);
  }
}

void Worker::ConvertATableFewLines(int64_t r0, int h, int j, int64_t sign, int64_t nonzero,
                                   int64_t wn) {
  const int64_t len = S * ncp;
  c.adc_conversions += len;
  c.sample_holds += len;
  c.shift_adds += len;
  if (nonzero <= table_zero_lines) return;  // every code 0, none clipped
  // Every code equals its partial sum: sum_q code_q << (q pr) = sum_r chunk_r level[r][cp].
  const int64_t ncp = this->ncp;
  const int shift = j * pd;
  for (int64_t w = 0; w < wn; ++w) {
    uint64_t any = 0;
    for (int a = 0; a < pd && j * pd + a < p.x_bits; ++a) any |= XPlane(h, j * pd + a)[w];
    for (; any != 0; any &= any - 1) {
      const int bit = __builtin_ctzll(any);
      int64_t chunk = 0;
      for (int a = 0; a < pd && j * pd + a < p.x_bits; ++a) {
        chunk |= static_cast<int64_t>((XPlane(h, j * pd + a)[w] >> bit) & 1) << a;
      }
      const int32_t* lv = p.w + (r0 + 64 * w + bit) * ncp;
      const int64_t f = sign * (chunk << shift);
      if (!acc32.empty()) {
        int32_t* a32 = acc32.data();
        const int32_t f32 = static_cast<int32_t>(f);
        for (int64_t cp = 0; cp < ncp; ++cp) a32[cp] += f32 * lv[cp];
      } else {
        int64_t* a64 = acc.data();
        for (int64_t cp = 0; cp < ncp; ++cp) a64[cp] += f * lv[cp];
      }
    }
  }
}

void Worker::FoldTableAcc() {
  for (int64_t cp = 0; cp < ncp; ++cp) {
    acc[static_cast<size_t>(cp)] += acc32[static_cast<size_t>(cp)];
    acc32[static_cast<size_t>(cp)] = 0;
  }
}

void Worker::ConvertATable(int h, int j, int64_t sign) {
  (void)h;
  const int64_t len = S * ncp;
  const int32_t* v32 = psi.data() + j * len;
  const uint8_t* v8 = sums8 ? psb.data() + j * len : nullptr;
  const int64_t clipped =
      Kernels().code_table_segment(*table, v32, v8, ncp, S, pr, j * pd, sign, acc.data(),
                                   acc32.empty() ? nullptr : acc32.data(), table_vbound);
  c.adc_clipped += clipped;
  c.adc_conversions += len;
  c.sample_holds += len;
  c.shift_adds += len;
}

}  // namespace pim::kernels::fast::internal
