// Fast analog kernel, sparse tails: in a lossless read-out only the draws that can move a code
// are visited (docs/analog.md, "Sparse tails"): ARS-7 words (vector AES), the geometric gaps
// between tail events, their table indices, and each event's correction to the exact product.

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

// Words 64 b .. 64 b + 63 of a sparse-tail stream (detail::SparseTailWord): ARS blocks
// 16 b .. 16 b + 15, four per 512-bit register with VAES.
void SparseWords64(const ArsKeys& ak, uint64_t stream, uint64_t b, uint32_t* out) {
#if defined(__AVX512F__) && defined(__VAES__)
  ArsBlocks16(ak, static_cast<int64_t>(stream), static_cast<int64_t>(16 * b), out);
#elif defined(__AES__)
  for (uint64_t q = 0; q < 16; ++q) {
    __m128i x = _mm_xor_si128(_mm_set_epi64x(static_cast<int64_t>(stream),
                                             static_cast<int64_t>(16 * b + q)),
                              ak.k[0]);
    for (int r = 1; r < kArsRounds; ++r) x = _mm_aesenc_si128(x, ak.k[r]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4 * q),
                     _mm_aesenclast_si128(x, ak.k[kArsRounds]));
  }
#else
  for (uint64_t k = 0; k < 64; ++k) out[k] = detail::SparseTailWord(ak.key, stream, 64 * b + k);
#endif
}

// detail::GapLength of the 64 gap words 64 b .. 64 b + 63 of `stream` into len[0..64): with
// AVX-512, the binary search 16 words at a time, the thresholds looked up by permutes.

void GapLengths64(const ArsKeys& ak, uint64_t stream, uint64_t b, const TailPlan& plan,
                  const GapTables& gt, uint32_t* len) {
  alignas(64) uint32_t u[64];
  SparseWords64(ak, stream, b, u);
#if defined(__AVX512F__)
  (void)plan;
  const __m512i v32 = _mm512_set1_epi32(static_cast<int32_t>(gt.v32));
  const __m512i v16 = _mm512_set1_epi32(static_cast<int32_t>(gt.v16));
  const __m512i v48 = _mm512_set1_epi32(static_cast<int32_t>(gt.v48));
  const __m512i T8 = _mm512_load_si512(gt.t8), T4 = _mm512_load_si512(gt.t4);
  const __m512i T2 = _mm512_load_si512(gt.t2), T1a = _mm512_load_si512(gt.t1);
  const __m512i T1b = _mm512_load_si512(gt.t1 + 16);
  // The four vectors' searches side by side: each step waits on the one before it.
  __m512i uv[4], g[4];
  for (int v = 0; v < 4; ++v) {
    uv[v] = _mm512_load_si512(u + 16 * v);
    const __mmask16 m32 = _mm512_cmplt_epu32_mask(uv[v], v32);
    g[v] = _mm512_maskz_mov_epi32(m32, _mm512_set1_epi32(32));
    const __m512i t = _mm512_mask_blend_epi32(m32, v16, v48);
    g[v] = _mm512_mask_add_epi32(g[v], _mm512_cmplt_epu32_mask(uv[v], t), g[v],
                                 _mm512_set1_epi32(16));
  }
  // Steps 8, 4, 2: the threshold of g + s from the table at g / (2 s).
  for (const auto& [s, table] : {std::pair{8, T8}, std::pair{4, T4}, std::pair{2, T2}}) {
    const int shift = __builtin_ctz(2 * s);
    for (int v = 0; v < 4; ++v) {
      const __m512i t = _mm512_permutexvar_epi32(_mm512_srli_epi32(g[v], shift), table);
      g[v] = _mm512_mask_add_epi32(g[v], _mm512_cmplt_epu32_mask(uv[v], t), g[v],
                                   _mm512_set1_epi32(s));
    }
  }
  for (int v = 0; v < 4; ++v) {
    __m512i t = _mm512_permutex2var_epi32(T1a, _mm512_srli_epi32(g[v], 1), T1b);
    g[v] = _mm512_mask_add_epi32(g[v], _mm512_cmplt_epu32_mask(uv[v], t), g[v],
                                 _mm512_set1_epi32(1));
    _mm512_storeu_si512(len + 16 * v, g[v]);
  }
#else
  (void)gt;
  for (int k = 0; k < 64; ++k) len[k] = static_cast<uint32_t>(detail::GapLength(plan, u[k]));
#endif
}

// CorrectTails' events: draw i = pos[t] with partial sum v = partial(i) and code offset
// e = etab[idx[t]] converts to code = clamp(v + e, 0, top), and sign (code - v) << jshift goes
// into corr[i] (the slice's shift comes when the sample's corrections are folded). kUnsafeTail
// draws go to `unsafe`. Returns the clipped conversions.
template <class Corr, class Partial>
int64_t ApplyTails(const int32_t* __restrict pos, const uint32_t* __restrict idx, int64_t n,
                   const Partial& partial, const int32_t* __restrict etab, int32_t top,
                   int jshift, int32_t sgn, Corr* __restrict corr,
                   std::vector<UnsafeTail>& unsafe) {
  int64_t clipped = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int32_t i = pos[t];
    const int32_t v = partial(i), e = etab[idx[t]];
    if (e == kUnsafeTail) [[unlikely]] {
      unsafe.push_back({i, idx[t], v, t});
      continue;
    }
    const int32_t sum = v + e, code = std::min(std::max(sum, 0), top);
    corr[i] += static_cast<Corr>(sgn * (code - v)) << jshift;
    clipped += static_cast<uint32_t>(sum) > static_cast<uint32_t>(top);
  }
  return clipped;
}

#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
// ApplyTails for 1-bit DACs and cells and WN-word blocks (partial sum of draw i =
// popcount(x & plane words WN i ..)), 16 events at a time. The plane words are read by plain
// loads and inserts and the corrections updated by scalar read-modify-writes: on the Zen 5
// this was tuned on, VPGATHERQQ took twice as long per event, and a gather + scatter of the
// corrections a third longer (microbenchmarks, bench/results_analog.md). A segment's events
// are distinct draws. kUnsafeTail lanes go to `unsafe` one by one (their correction here is 0).
template <int WN>
int64_t ApplyTailsSimple16(const int32_t* pos, const uint32_t* idx, int64_t n,
                           const uint64_t* wblock, uint64_t x0, uint64_t x1, const TailPlan& plan,
                           int32_t top, int jshift, int32_t sgn, int32_t* corr,
                           std::vector<UnsafeTail>& unsafe) {
  int64_t clipped = 0;
  const __m512i topv = _mm512_set1_epi32(top), zero = _mm512_setzero_si512();
  const __m512i unsafe_v = _mm512_set1_epi32(kUnsafeTail);
  const __m512i x0v = _mm512_set1_epi64(static_cast<int64_t>(x0));
  const __m512i x01v = _mm512_set_epi64(static_cast<int64_t>(x1), static_cast<int64_t>(x0),
                                        static_cast<int64_t>(x1), static_cast<int64_t>(x0),
                                        static_cast<int64_t>(x1), static_cast<int64_t>(x0),
                                        static_cast<int64_t>(x1), static_cast<int64_t>(x0));
  const __m512i pair_order =
      _mm512_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
  const __m128i js = _mm_cvtsi32_si128(jshift);
  const __m512i centre = _mm512_set1_epi32(static_cast<int32_t>(kGaussTail));
  const __m512i minus1 = _mm512_set1_epi32(-1), plus1 = _mm512_set1_epi32(1);
  const __m512i ulo = _mm512_set1_epi32(static_cast<int32_t>(plan.unsafe_lo));
  const __m512i lo = _mm512_set1_epi32(static_cast<int32_t>(plan.lo));
  const __m512i uhb = _mm512_set1_epi32(static_cast<int32_t>(plan.hi - kTailHiBase));
  const __m512i uhe = _mm512_set1_epi32(static_cast<int32_t>(plan.unsafe_hi));
  const __m512i olo = _mm512_set1_epi32(static_cast<int32_t>(plan.outer_lo));
  const __m512i ohi = _mm512_set1_epi32(static_cast<int32_t>(plan.outer_hi));
  const int32_t* const etab = plan.e.data();
  for (int64_t t = 0; t < n; t += 16) {
    const int64_t left = std::min<int64_t>(16, n - t);
    const __mmask16 live = static_cast<__mmask16>((1u << left) - 1);
    const __m512i iv = _mm512_maskz_loadu_epi32(live, pos + t);
    const __m512i xv = _mm512_maskz_loadu_epi32(live, idx + t);
    __m512i e;
    __mmask16 bad;
    if (plan.unit) {
      // -1 below the centre, +1 above; the unsafe ones are two index ranges.
      e = _mm512_mask_blend_epi32(_mm512_cmpge_epu32_mask(xv, centre), minus1, plus1);
      bad = (_mm512_mask_cmpge_epu32_mask(live, xv, ulo) & _mm512_cmplt_epu32_mask(xv, lo)) |
            (_mm512_mask_cmpge_epu32_mask(live, xv, uhb) & _mm512_cmplt_epu32_mask(xv, uhe)) |
            _mm512_mask_cmplt_epu32_mask(live, xv, olo) |
            _mm512_mask_cmpge_epu32_mask(live, xv, ohi);
    } else {
      e = _mm512_mask_i32gather_epi32(zero, live, xv, etab, 4);
      bad = _mm512_mask_cmpeq_epi32_mask(live, e, unsafe_v);
    }
    // Partial sums: the events' plane words by plain loads (AMD's vector gathers took twice as
    // long here), 16 at a time; dead lanes read draw 0 and are masked below.
    alignas(64) int32_t ip[16];
    _mm512_store_si512(ip, iv);
    __m512i v;
    if constexpr (WN == 2) {
      // Event l's two words side by side, four events per register; popcounts of (x & w)
      // summed per event (unpack the word-0 and word-1 counts of two registers, add).
      __m512i q[4];
      for (int k = 0; k < 4; ++k) {
        const int32_t* pk = ip + 4 * k;
        __m512i z = _mm512_castsi128_si512(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(wblock + 2 * pk[0])));
        for (int l = 1; l < 4; ++l) {
          const __m128i wl = _mm_loadu_si128(reinterpret_cast<const __m128i*>(wblock + 2 * pk[l]));
          z = l == 1 ? _mm512_inserti64x2(z, wl, 1)
              : l == 2 ? _mm512_inserti64x2(z, wl, 2)
                       : _mm512_inserti64x2(z, wl, 3);
        }
        q[k] = _mm512_popcnt_epi64(_mm512_and_si512(z, x01v));
      }
      // Qwords of s01: events 0, 4, 1, 5, 2, 6, 3, 7 (s23: 8 more); back to event order.
      const __m512i s01 = _mm512_add_epi64(_mm512_unpacklo_epi64(q[0], q[1]),
                                           _mm512_unpackhi_epi64(q[0], q[1]));
      const __m512i s23 = _mm512_add_epi64(_mm512_unpacklo_epi64(q[2], q[3]),
                                           _mm512_unpackhi_epi64(q[2], q[3]));
      v = _mm512_permutexvar_epi32(
          pair_order, _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(s01)),
                                         _mm512_cvtepi64_epi32(s23), 1));
    } else {
      __m512i v64[2];
      for (int half = 0; half < 2; ++half) {
        const int32_t* ph = ip + 8 * half;
        __m128i a[4];
        for (int k = 0; k < 4; ++k) {
          a[k] = _mm_insert_epi64(_mm_cvtsi64_si128(static_cast<int64_t>(wblock[ph[2 * k]])),
                                  static_cast<int64_t>(wblock[ph[2 * k + 1]]), 1);
        }
        const __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(a[0]), a[1], 1);
        const __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(a[2]), a[3], 1);
        v64[half] = _mm512_popcnt_epi64(
            _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), x0v));
      }
      v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(v64[0])),
                             _mm512_cvtepi64_epi32(v64[1]), 1);
    }
    const __m512i sum = _mm512_add_epi32(v, e);
    const __m512i code = _mm512_min_epi32(_mm512_max_epi32(sum, zero), topv);
    __m512i d = _mm512_sub_epi32(code, v);
    if (sgn < 0) d = _mm512_sub_epi32(zero, d);
    if (bad != 0) [[unlikely]] {
      alignas(64) int32_t vs[16];
      _mm512_store_si512(vs, v);
      for (int l = 0; l < 16; ++l) {
        if ((bad >> l) & 1) unsafe.push_back({pos[t + l], idx[t + l], vs[l], t + l});
      }
      d = _mm512_maskz_mov_epi32(static_cast<__mmask16>(~bad), d);  // corrected in full later
    }
    clipped += __builtin_popcount(
        _mm512_mask_cmpgt_epu32_mask(static_cast<__mmask16>(live & ~bad), sum, topv));
    // The corrections: plain read-modify-writes (faster than a gather and a scatter here).
    alignas(64) int32_t ds[16];
    _mm512_store_si512(ds, _mm512_sll_epi32(d, js));
    for (int64_t l = 0; l < left; ++l) corr[ip[l]] += ds[l];
  }
  return clipped;
}
#endif

}  // namespace

// Lossless dataflow A, cycle j: no draw in [lo, hi) can move a code, so only the segment's
// sparse-tail events (detail::SparseTails; ~4.5 % of the conversions at sigma = 1/4 LSB) are
// converted, each from its own partial sum; code - partial sum, shifted by j pd, goes into
// corr (folded into acc, the corrections to the exact product, at the end of the sample).
void Worker::CorrectTails(int64_t m, int64_t b, int h, int j, int64_t sign) {
  const AdcTransfer& adc = p.readout.adc;
  const int64_t ncp = this->ncp, len = S * ncp, wn = words;
  const uint64_t refine = detail::SparseTailStream(m, blocks, b, h, cycles, j, 2);
  const int32_t* const etab = plan->e.data();
  const int32_t top = static_cast<int32_t>(adc.max_code);
  const uint64_t* xp[8] = {};
  for (int a = 0; a < pd; ++a) {
    const int t = j * pd + a;
    if (t < p.x_bits) xp[a] = XPlane(h, t);
  }
  const uint64_t* const wblock = pw.Plane(b, 0, 0);
  const int32_t sgn = static_cast<int32_t>(sign);
  const uint8_t* const slice = slice_of.data();
  // The partial sum of draw i, as PopcountSums computes it.
  auto partial = [&](int64_t i) -> int32_t {
    const int64_t q = slice[i], col = i - q * ncp;
    int32_t v = 0;
    for (int a = 0; a < pd; ++a) {
      if (xp[a] == nullptr) continue;
      for (int bb = 0; bb < pr; ++bb) {
        const uint64_t* wc = pw.Plane(b, q * pr + bb, col);
        int32_t cnt = 0;
        for (int64_t w = 0; w < wn; ++w) {
          cnt += static_cast<int32_t>(__builtin_popcountll(xp[a][w] & wc[w]));
        }
        v += cnt << (a + bb);
      }
    }
    return v;
  };
  // 1-bit DACs and cells, blocks of <= 128 rows: the weight plane of draw i (= q ncp + cp) is
  // plane word i * words of the block, no division needed.
  const bool simple = pd == 1 && pr == 1 && wn <= 2 && xp[0] != nullptr;
  const uint64_t x0 = simple ? xp[0][0] : 0, x1 = simple && wn == 2 ? xp[0][1] : 0;
  auto partial1 = [wblock, x0](int64_t i) {
    return static_cast<int32_t>(__builtin_popcountll(x0 & wblock[i]));
  };
  auto partial2 = [wblock, x0, x1](int64_t i) {
    const uint64_t* wc = wblock + 2 * i;
    return static_cast<int32_t>(__builtin_popcountll(x0 & wc[0]) +
                                __builtin_popcountll(x1 & wc[1]));
  };
  const int64_t n = SparseTailEvents(m, b, h, j, len);
  const int js = j * pd;
  const int32_t* const pos = ev_pos.data();
  const uint32_t* const idx = ev_idx.data();
  // The draws next to a half-integer code boundary: the full transfer.
  auto fix_unsafe = [&](auto* corrp) {
    using Corr = std::remove_pointer_t<decltype(corrp)>;
    int64_t clipped_unsafe = 0;
    for (const UnsafeTail& ut : unsafe) {
      const AdcTransfer::Result res = adc.Convert(
          static_cast<float>(ut.v),
          detail::SparseTailValue(p.noise_key, refine, static_cast<uint64_t>(ut.ev), ut.idx));
      corrp[ut.i] += static_cast<Corr>(sgn * (res.code - ut.v)) << js;
      clipped_unsafe += res.clipped;
    }
    unsafe.clear();
    return clipped_unsafe;
  };
  int64_t clipped = 0;
  if (!narrow_corr) {
    int64_t* const corrp = corr64.data();
    clipped = ApplyTails(pos, idx, n, partial, etab, top, js, sgn, corrp, unsafe);
    clipped += fix_unsafe(corrp);
  } else {
    int32_t* const corrp = corr32.data();
    // 1-bit DACs and cells: 16 events at a time where the CPU can (WN words per block row).
    auto apply_simple = [&](auto wn_words, const auto& part) -> int64_t {
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
      (void)part;
      return ApplyTailsSimple16<decltype(wn_words)::value>(pos, idx, n, wblock, x0, x1, *plan,
                                                           top, js, sgn, corrp, unsafe);
#else
      (void)wn_words;
      return ApplyTails(pos, idx, n, part, etab, top, js, sgn, corrp, unsafe);
#endif
    };
    clipped = simple && wn == 1
                  ? apply_simple(std::integral_constant<int, 1>{}, partial1)
              : simple
                  ? apply_simple(std::integral_constant<int, 2>{}, partial2)
                  : ApplyTails(pos, idx, n, partial, etab, top, js, sgn, corrp,
                               unsafe);
    clipped += fix_unsafe(corrp);
  }
  c.adc_clipped += clipped;
}

// The tail events of segment (m, b, h, j) into ev_pos / ev_idx: detail::SparseTailEvents'
// walk, its words 64 at a time; with AVX-512 the walk 16 gap words at a time (a prefix sum of
// their advances, the events' positions compressed out) and the events' indices 16 at a time.
int64_t Worker::SparseTailEvents(int64_t m, int64_t b, int h, int j, int64_t len) {
  const TailPlan& tp = *plan;
  if (tp.tails == 0) return 0;
  const uint64_t gaps = detail::SparseTailStream(m, blocks, b, h, cycles, j, 0);
  const uint64_t events = detail::SparseTailStream(m, blocks, b, h, cycles, j, 1);
  const uint32_t tails = tp.tails;
  alignas(64) uint32_t gl[64], ew[64];
  int32_t* const pos = ev_pos.data();
  uint32_t* const idx = ev_idx.data();
  int64_t n = 0;
#if defined(__AVX512F__)
  const __m512i cont_len = _mm512_set1_epi32(kGapSteps), one = _mm512_set1_epi32(1);
  const __m512i zero = _mm512_setzero_si512();
  const __m512i lenv = _mm512_set1_epi32(static_cast<int32_t>(len));
  const __m512i last = _mm512_set1_epi32(15);
  int32_t at = -1;  // the last conversion passed
  for (uint64_t batch = 0; at + 1 < len; ++batch) {
    GapLengths64(*ars, gaps, batch, tp, *gap_tables, gl);
    // Per vector the prefix sums of the advances (g + 1 to the next event, kGapSteps for a
    // continued gap) and their total, all independent of `at`; then one add per vector
    // carries the position along. Positions past len are dropped (the walk had ended there).
    __m512i x[4], total[4];
    __mmask16 cont[4];
    for (int v = 0; v < 4; ++v) {
      const __m512i g = _mm512_load_si512(gl + 16 * v);
      cont[v] = _mm512_cmpeq_epi32_mask(g, cont_len);
      __m512i y = _mm512_mask_blend_epi32(cont[v], _mm512_add_epi32(g, one), cont_len);
      y = _mm512_add_epi32(y, _mm512_alignr_epi32(y, zero, 15));
      y = _mm512_add_epi32(y, _mm512_alignr_epi32(y, zero, 14));
      y = _mm512_add_epi32(y, _mm512_alignr_epi32(y, zero, 12));
      y = _mm512_add_epi32(y, _mm512_alignr_epi32(y, zero, 8));
      x[v] = y;
      total[v] = _mm512_permutexvar_epi32(last, y);
    }
    __m512i base = _mm512_set1_epi32(at);
    for (int v = 0; v < 4; ++v) {
      const __m512i at_v = _mm512_add_epi32(x[v], base);
      const __mmask16 live =
          static_cast<__mmask16>(~cont[v]) & _mm512_cmplt_epi32_mask(at_v, lenv);
      _mm512_storeu_si512(pos + n, _mm512_maskz_compress_epi32(live, at_v));
      n += __builtin_popcount(live);
      base = _mm512_add_epi32(base, total[v]);
    }
    at = _mm_cvtsi128_si32(_mm512_castsi512_si128(base));
  }
#else
  int64_t at = -1;
  for (uint64_t batch = 0;; ++batch) {
    GapLengths64(*ars, gaps, batch, tp, *gap_tables, gl);
    for (int k = 0; k < 64; ++k) {
      const int64_t g = gl[k];
      if (g == kGapSteps) [[unlikely]] {
        at += kGapSteps;
        if (at + 1 >= len) break;
        continue;
      }
      at += g + 1;
      if (at >= len) break;
      pos[n++] = static_cast<int32_t>(at);
    }
    if (at + 1 >= len) break;
  }
#endif
  // The events' tail draws: slot sl = (u tails) >> 32 of event word u, and its table index
  // TailIndex(TailDraw(tp, sl)) = sl + (sl >= lo ? hi - lo - kTailHiBase : 0).
  for (int64_t t0 = 0; t0 < n; t0 += 64) {
    SparseWords64(*ars, events, static_cast<uint64_t>(t0) >> 6, ew);
    const int64_t tn = std::min<int64_t>(64, n - t0);
#if defined(__AVX512F__)
    // The high words of u tails: even lanes' products shifted down, odd lanes' in place.
    const __m512i tv = _mm512_set1_epi32(static_cast<int32_t>(tails));
    const __m512i lov = _mm512_set1_epi32(static_cast<int32_t>(tp.lo));
    const __m512i upv = _mm512_set1_epi32(static_cast<int32_t>(tp.hi - tp.lo - kTailHiBase));
    for (int64_t t = 0; t < tn; t += 16) {
      const __m512i u = _mm512_load_si512(ew + t);
      const __m512i pe = _mm512_mul_epu32(u, tv);
      const __m512i po = _mm512_mul_epu32(_mm512_srli_epi64(u, 32), tv);
      const __m512i sl = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po);
      const __m512i ix = _mm512_mask_add_epi32(sl, _mm512_cmpge_epu32_mask(sl, lov), sl, upv);
      _mm512_mask_storeu_epi32(idx + t0 + t,
                               static_cast<__mmask16>((1u << std::min<int64_t>(16, tn - t)) - 1),
                               ix);
    }
#else
    for (int64_t t = 0; t < tn; ++t) {
      const uint32_t sl = static_cast<uint32_t>((static_cast<uint64_t>(ew[t]) * tails) >> 32);
      idx[t0 + t] = TailIndex(detail::TailDraw(tp, sl));
    }
#endif
  }
  return n;
}

}  // namespace pim::kernels::fast::internal
