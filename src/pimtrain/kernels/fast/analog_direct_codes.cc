// Fast analog kernel, dataflow A's direct codes (detail::DirectCodes): each conversion's code is
// drawn from its law given the integer partial sum (detail::CodeLaw) with one 32-bit ARS word
// and a guide table indexed by (partial sum, top 8 bits of the word), instead of a Gaussian draw
// and the transfer's float steps. Buckets that hold a threshold (~1-3 % of the draws) are
// resolved by comparing the whole word, and the low word is drawn only where the high word
// equals a threshold's (~2^-32 per threshold). Equal bit for bit to ref::AnalogMatMulAsFast.

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "pimtrain/kernels/fast/analog_worker.h"

namespace pim::kernels::fast::internal {

DirectPlan::DirectPlan(const AdcTransfer& adc, int64_t vmax)
    : law(detail::MakeCodeLaw(adc, vmax)) {
  // Two entries of padding: the AVX2 gather reads 4 bytes at each 2-byte entry.
  constexpr int kBuckets = 1 << kGuideBits;
  guide.assign(static_cast<size_t>((vmax + 1) * kBuckets + 2), 0);
  for (int64_t v = 0; v <= vmax; ++v) {
    const uint64_t* b = law.bounds.data() + law.start[static_cast<size_t>(v)];
    const int64_t nb = law.start[static_cast<size_t>(v + 1)] - law.start[static_cast<size_t>(v)];
    // Buckets and thresholds walked together (both ascending): k thresholds lie at or below
    // the bucket's first uniform, k2 at or below its last.
    int64_t k = 0;
    for (uint64_t g = 0; g < kBuckets; ++g) {
      constexpr int sh = 64 - kGuideBits;
      const uint64_t first = g << sh, last = first | ((uint64_t{1} << sh) - 1);
      while (k < nb && b[k] <= first) ++k;
      int64_t k2 = k;
      while (k2 < nb && b[k2] <= last) ++k2;
      const int o1 = law.o_lo[static_cast<size_t>(v)] + static_cast<int>(k);
      const int o2 = law.o_lo[static_cast<size_t>(v)] + static_cast<int>(k2);
      const AdcTransfer::Result r = detail::CodeOfOutcome(o1, law.max_code);
      guide[static_cast<size_t>(v * kBuckets + static_cast<int64_t>(g))] = static_cast<uint16_t>(
          r.code | (r.clipped ? kGuideClip : 0) | (o1 != o2 ? kGuideUnsure : 0));
    }
  }
}

int DirectPlan::Outcome(int64_t v, uint32_t w1, uint64_t key, uint64_t i) const {
  int o = law.o_lo[static_cast<size_t>(v)];
  bool have_lo = false;
  uint32_t w2 = 0;
  for (uint32_t k = law.start[static_cast<size_t>(v)]; k < law.start[static_cast<size_t>(v + 1)];
       ++k) {
    const uint64_t bound = law.bounds[k];
    const uint32_t hb = static_cast<uint32_t>(bound >> 32);
    if (w1 > hb) {
      ++o;
    } else if (w1 < hb) {
      break;  // ascending: no later threshold is reached either
    } else {
      if (!have_lo) {
        w2 = detail::CodeWord(key, detail::kCodeStreamLo, i);
        have_lo = true;
      }
      o += ((static_cast<uint64_t>(w1) << 32) | w2) >= bound;
    }
  }
  return o;
}

namespace {
#if defined(__AES__)
inline __m128i RoundKey(const ArsKeys& ak, int r) {
#if defined(__AVX512F__) && defined(__VAES__)
  return _mm512_castsi512_si128(ak.k[r]);
#else
  return ak.k[r];
#endif
}
#endif
}  // namespace

void FillCodeWords(const ArsKeys& ak, uint64_t stream, uint64_t b0, int64_t nb, uint32_t* out) {
#if defined(__AES__)
  __m128i k[kArsRounds + 1];
  for (int r = 0; r <= kArsRounds; ++r) k[r] = RoundKey(ak, r);
  const int64_t s = static_cast<int64_t>(stream);
  int64_t q = 0;
  // Eight blocks in flight: AES rounds have a latency of several cycles and two units.
  for (; q + 8 <= nb; q += 8) {
    __m128i x[8];
    for (int t = 0; t < 8; ++t) {
      x[t] = _mm_xor_si128(_mm_set_epi64x(s, static_cast<int64_t>(b0 + q + t)), k[0]);
    }
    for (int r = 1; r < kArsRounds; ++r) {
      for (int t = 0; t < 8; ++t) x[t] = _mm_aesenc_si128(x[t], k[r]);
    }
    for (int t = 0; t < 8; ++t) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4 * (q + t)),
                       _mm_aesenclast_si128(x[t], k[kArsRounds]));
    }
  }
  for (; q < nb; ++q) {
    __m128i x = _mm_xor_si128(_mm_set_epi64x(s, static_cast<int64_t>(b0 + q)), k[0]);
    for (int r = 1; r < kArsRounds; ++r) x = _mm_aesenc_si128(x, k[r]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4 * q), _mm_aesenclast_si128(x, k[kArsRounds]));
  }
#else
  for (int64_t q = 0; q < nb; ++q) {
    const auto blk = Ars4x32(ak.key, stream, b0 + static_cast<uint64_t>(q));
    for (int t = 0; t < 4; ++t) out[4 * q + t] = blk[t];
  }
#endif
}

// ---- The variants of the table's direct_codes_segment (analog_worker.h) ------------------------
// One segment (cycle j of a block and phase): for the S slice rows of partial sums v[q ncp + cp]
// and high words w[q ncp + cp], acc[cp] += sign * sum_q (code << (q pr)) << shift_j, code and
// clipping from the guide entry of (v, w >> (32 - kGuideBits)); returns the entries' clipped
// count and lists the draws i = q ncp + cp of unsure entries in unsure[*nu ..] (the caller
// corrects them). The slices' codes add up in int32 first: sum_q code 2^(q pr) <= 4095 (2^16 - 1)
// < 2^31 (DirectCodes: at most 4095 codes, S pr <= 16).
int64_t DirectCodesSegmentScalar(const uint16_t* guide, const int32_t* v, const uint32_t* w,
                                 int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                                 int64_t* acc, int64_t cp0, uint32_t* unsure, int64_t* nu) {
  int64_t clipped = 0, k = *nu;
  for (int64_t cp = cp0; cp < ncp; ++cp) {
    int32_t sum = 0;
    for (int q = 0; q < S; ++q) {
      const int64_t i = q * ncp + cp;
      const uint32_t e = guide[(static_cast<uint32_t>(v[i]) << kGuideBits) |
                               (w[i] >> (32 - kGuideBits))];
      sum += static_cast<int32_t>(e & kGuideCode) << (q * pr);
      clipped += (e >> 12) & 1;
      unsure[k] = static_cast<uint32_t>(i);
      k += e >> 15;
    }
    acc[cp] += sign * (static_cast<int64_t>(sum) << shift_j);
  }
  *nu = k;
  return clipped;
}

#if defined(__AVX2__)
// 8 columns a step over all slices: the entries by one gather per slice, the slices' codes added
// in int32 vectors, one int64 shift-add per column; the scalar variant for the rest.
int64_t DirectCodesSegmentAvx2(const uint16_t* guide, const int32_t* v, const uint32_t* w,
                               int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                               int64_t* acc, int64_t cp0_in, uint32_t* unsure, int64_t* nu) {
  int64_t k = *nu, cp0 = cp0_in;
  const __m128i vshift = _mm_cvtsi32_si128(shift_j);
  const __m256i m16 = _mm256_set1_epi32(0xFFFF), mcode = _mm256_set1_epi32(kGuideCode);
  const __m256i one = _mm256_set1_epi32(1);
  const int* base = reinterpret_cast<const int*>(guide);
  __m256i clipv = _mm256_setzero_si256();
  for (; cp0 + 8 <= ncp; cp0 += 8) {
    __m256i sum = _mm256_setzero_si256();
    for (int q = 0; q < S; ++q) {
      const int64_t at = q * ncp + cp0;
      const __m256i vi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + at));
      const __m256i wi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + at));
      const __m256i idx = _mm256_or_si256(_mm256_slli_epi32(vi, kGuideBits),
                                          _mm256_srli_epi32(wi, 32 - kGuideBits));
      const __m256i e = _mm256_and_si256(_mm256_i32gather_epi32(base, idx, 2), m16);
      sum = _mm256_add_epi32(sum, _mm256_sll_epi32(_mm256_and_si256(e, mcode),
                                                   _mm_cvtsi32_si128(q * pr)));
      clipv = _mm256_add_epi32(clipv, _mm256_and_si256(_mm256_srli_epi32(e, 12), one));
      unsigned um = static_cast<unsigned>(
          _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32(e, 16))));
      while (um != 0) [[unlikely]] {
        unsure[k++] = static_cast<uint32_t>(at + __builtin_ctz(um));
        um &= um - 1;
      }
    }
    const __m256i lo =
        _mm256_sll_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(sum)), vshift);
    const __m256i hi =
        _mm256_sll_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(sum, 1)), vshift);
    __m256i* a = reinterpret_cast<__m256i*>(acc + cp0);
    const __m256i a0 = _mm256_loadu_si256(a), a1 = _mm256_loadu_si256(a + 1);
    _mm256_storeu_si256(a, sign > 0 ? _mm256_add_epi64(a0, lo) : _mm256_sub_epi64(a0, lo));
    _mm256_storeu_si256(a + 1, sign > 0 ? _mm256_add_epi64(a1, hi) : _mm256_sub_epi64(a1, hi));
  }
  alignas(32) int32_t c8[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(c8), clipv);
  int64_t clipped = 0;
  for (int l = 0; l < 8; ++l) clipped += c8[l];
  *nu = k;
  return clipped + DirectCodesSegmentScalar(guide, v, w, ncp, S, pr, shift_j, sign, acc, cp0,
                                            unsure, nu);
}
#endif

// Dataflow A's conversions of cycle j by direct codes: the segment's high words, each slice row
// through the table's direct_codes_segment, then the unsure entries resolved exactly.
void Worker::ConvertADirect(int64_t m, int64_t b, int h, int j, int64_t sign) {
  const int64_t ncp = this->ncp, len = S * ncp;
  const uint64_t first = detail::NoiseIndex(m, blocks, b, h, cycles, j, len, 0);
  const uint64_t off = first & 3;
  FillCodeWords(*ars, detail::kCodeStreamHi, first >> 2,
                static_cast<int64_t>((off + static_cast<uint64_t>(len) + 3) >> 2),
                code_words.data());
  const uint32_t* wseg = code_words.data() + off;
  const uint16_t* guide = direct->guide.data();
  int64_t nu = 0;
  int64_t clipped = Kernels().direct_codes_segment(guide, psi.data() + j * len, wseg, ncp, S, pr,
                                                   j * pd, sign, acc.data(), 0,
                                                   unsure_pos.data(), &nu);
  const int32_t* v = psi.data() + j * len;
  for (int64_t t = 0; t < nu; ++t) {
    const int64_t i = unsure_pos[static_cast<size_t>(t)], q = i / ncp, cp = i - q * ncp;
    const uint32_t e = guide[(static_cast<uint32_t>(v[i]) << kGuideBits) |
                             (wseg[i] >> (32 - kGuideBits))];
    const AdcTransfer::Result r = detail::CodeOfOutcome(
        direct->Outcome(v[i], wseg[i], p.noise_key, first + static_cast<uint64_t>(i)),
        direct->law.max_code);
    acc[static_cast<size_t>(cp)] +=
        sign * ((static_cast<int64_t>(r.code) - static_cast<int64_t>(e & kGuideCode))
                << (j * pd + q * pr));
    clipped += static_cast<int64_t>(r.clipped) - static_cast<int64_t>((e >> 12) & 1);
  }
  c.adc_clipped += clipped;
  c.adc_conversions += len;
  c.sample_holds += len;
  c.shift_adds += len;
}

}  // namespace pim::kernels::fast::internal
