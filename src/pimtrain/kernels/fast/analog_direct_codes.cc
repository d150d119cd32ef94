// Fast analog kernel, dataflow A's direct codes (detail::DirectCodes): each conversion's code is
// drawn from its law given the integer partial sum (detail::CodeLaw) with one 64-bit uniform U
// (detail::CodeUniform) compared against the law's thresholds, instead of a Gaussian draw and the
// transfer's float steps. Two ways to compare, the same outcome:
// - the window (AVX-512, partial sums below 192): U's top 16 bits (their own stream) against the
//   16-bit tops of K thresholds around the partial sum's most likely code, 32 conversions per
//   vector, the thresholds looked up by permutes; a conversion whose top bits equal a
//   threshold's, or fall outside the window, is listed and counted exactly against all
//   thresholds with its whole U (~1e-4 of the draws); where the law is shift-invariant (a unit
//   step: every v's law is one law shifted by v), the shift form instead: one list of
//   thresholds for all v, searched by a branchless binary search of permutes, the code
//   clamp(v + c(U), 0, M);
// - the guide table (any build): U's top 32 bits index a guide by (partial sum, top 10 bits);
//   buckets that hold a threshold (~1-3 %) are resolved with the top 32 bits, and the low
//   bits are drawn only where those equal a threshold's (~2^-32 per threshold).
// Equal bit for bit to ref::AnalogMatMulAsFast.

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/kernels/fast/analog_worker.h"

// GCC 12 flags the AVX-512 intrinsics' internal _mm512_undefined_* operands (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

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
  BuildWindow(vmax);
  BuildShift(vmax);
}

// The shift form (analog_worker.h; docs/analog.md, "Shift-invariant laws"): the law of the v with
// the most thresholds, s and g = o_lo - v, taken as everyone's, and kept only if every v's
// outcome equals clamp(v + g + #{k : U >= s_k}, 0, M + 2) for every U. Both sides are
// nondecreasing step functions of U, constant from each of their breakpoints to the next, so
// equality at U = 0 and at every breakpoint of either (v's thresholds and s) is equality
// everywhere.
void DirectPlan::BuildShift(int64_t vmax) {
  shift_steps = -1;
  if (win_k == 0) return;  // the same domain as the window (partial sums below 192)
  auto count = [&](int64_t v) {
    return static_cast<int64_t>(law.start[static_cast<size_t>(v + 1)] -
                                law.start[static_cast<size_t>(v)]);
  };
  auto bounds = [&](int64_t v) { return law.bounds.data() + law.start[static_cast<size_t>(v)]; };
  int64_t vs = 0;
  for (int64_t v = 1; v <= vmax; ++v) {
    if (count(v) > count(vs)) vs = v;
  }
  const std::vector<uint64_t> sl(bounds(vs), bounds(vs) + count(vs));
  const int64_t g = law.o_lo[static_cast<size_t>(vs)] - vs, top = law.max_code + 2;
  auto shifted = [&](int64_t v, uint64_t u) {
    int64_t c = v + g;
    for (const uint64_t x : sl) c += u >= x;
    return std::clamp<int64_t>(c, 0, top);
  };
  for (int64_t v = 0; v <= vmax; ++v) {
    if (shifted(v, 0) != ExactOutcome(v, 0)) return;
    for (int64_t k = 0; k < count(v); ++k) {
      if (shifted(v, bounds(v)[k]) != ExactOutcome(v, bounds(v)[k])) return;
    }
    for (const uint64_t x : sl) {
      if (shifted(v, x) != ExactOutcome(v, x)) return;
    }
  }
  // The tops: those of 0 are passed by every h16 > 0, those of 0xFFFF by no h16 < 0xFFFF.
  int z0 = 0;
  std::vector<uint16_t> mid;
  for (const uint64_t x : sl) {
    const uint16_t t = static_cast<uint16_t>(x >> 48);
    if (t == 0) {
      ++z0;
    } else if (t != 0xFFFF) {
      mid.push_back(t);
    }
  }
  int m = 0;
  while ((int64_t{1} << m) - 1 < static_cast<int64_t>(mid.size())) ++m;
  if (m > 6) return;  // 64-entry tables (two registers) at most
  shift_tops.assign(64, 0xFFFF);
  std::copy(mid.begin(), mid.end(), shift_tops.begin());
  shift_search.assign(static_cast<size_t>(64 * std::max(m, 1)), 0xFFFF);
  for (int st = 0; st < m; ++st) {
    const int h = 1 << (m - 1 - st);
    for (int j = 0; j + h - 1 < 64; ++j) {
      shift_search[static_cast<size_t>(st * 64 + j)] = shift_tops[static_cast<size_t>(j + h - 1)];
    }
  }
  shift_cbase = static_cast<int>(g) + z0 - 1;
  shift_steps = m;
  // The bucket form: the fewest buckets (32 or 64) whose fullest holds at most 4 tops.
  shift_c = 0;
  for (const int bb : {5, 6}) {
    const int width = 1 << (16 - bb);
    int c_max = 0;
    for (int b = 0; b < (1 << bb); ++b) {
      int c = 0;
      for (const uint16_t t : mid) c += t / width == b;
      c_max = std::max(c_max, c);
    }
    if (c_max > 4) continue;
    shift_c = std::max(c_max, 1);
    shift_bucket_bits = bb;
    shift_bucket.assign(static_cast<size_t>(64 * (shift_c + 1)), 0xFFFF);
    for (int b = 0; b < 64; ++b) {
      int below = 0, c = 0;
      for (const uint16_t t : mid) {
        if (b >= (1 << bb)) break;
        if (t / width < b) {
          ++below;
        } else if (t / width == b) {
          shift_bucket[static_cast<size_t>(64 * (c + 1) + b)] = t;
          ++c;
        }
      }
      shift_bucket[static_cast<size_t>(b)] = static_cast<uint16_t>(below);
    }
    break;
  }
}

bool DirectPlan::ShiftOutcome(int64_t v, uint32_t u16, int* o) const {
  if (u16 == 0 || u16 >= 0xFFFF) return false;
  if (shift_c > 0) {  // the bucket form
    const uint32_t b = u16 >> (16 - shift_bucket_bits);
    int r = shift_bucket[b];
    for (int c = 0; c < shift_c; ++c) {
      const uint16_t t = shift_bucket[64 * (c + 1) + b];
      if (t == u16) return false;
      r += t < u16;
    }
    *o = static_cast<int>(std::clamp<int64_t>(v + shift_cbase + 1 + r, 0, law.max_code + 2));
    return true;
  }
  int r = 0;
  for (int st = 0; st < shift_steps; ++st) {
    r += shift_search[static_cast<size_t>(st * 64 + r)] < u16 ? 1 << (shift_steps - 1 - st) : 0;
  }
  if (shift_tops[static_cast<size_t>(r)] == u16) return false;
  *o = static_cast<int>(std::clamp<int64_t>(v + shift_cbase + 1 + r, 0, law.max_code + 2));
  return true;
}

// The window (analog_worker.h): per partial sum v, n consecutive outcomes and the K = n + 1
// thresholds b[a .. a + K) that bound them (a guard below the first and one above the last),
// placed where they leave the least mass outside; missing thresholds are 0 below the list
// (always passed) and 2^64 above it (never). n is chosen per law for the least cost: K compares
// per conversion against the slow path's share (the mass outside the window, the largest over
// v, times ~2000 compares' cost).
void DirectPlan::BuildWindow(int64_t vmax) {
  win_k = 0;
  if (vmax >= 64 * kWinMaxTables || law.max_code + 2 > 32767) return;
  auto count = [&](int64_t v) {
    return static_cast<int64_t>(law.start[static_cast<size_t>(v + 1)] -
                                law.start[static_cast<size_t>(v)]);
  };
  // Threshold k of v as a probability, padded: 0 below the list, 1 above it.
  auto prob = [&](int64_t v, int64_t k) {
    if (k < 0) return 0.0;
    if (k >= count(v)) return 1.0;
    return std::ldexp(
        static_cast<double>(law.bounds[law.start[static_cast<size_t>(v)] + static_cast<size_t>(k)]),
        -64);
  };
  // The best start a for v and window size k (mass outside: below b[a] and at or above
  // b[a + k - 1]); ties to the lowest a.
  auto place = [&](int64_t v, int k, double* outside) {
    int64_t best = -k;
    double best_out = 2.0;
    for (int64_t a = -k; a <= count(v); ++a) {
      const double out = prob(v, a) + (1.0 - prob(v, a + k - 1));
      if (out < best_out) {
        best_out = out;
        best = a;
      }
    }
    *outside = best_out;
    return best;
  };
  double best_cost = 1e300;
  int best_k = 0;
  for (int k = 3; k <= kWinMaxK; ++k) {
    double rate = 0.0;
    for (int64_t v = 0; v <= vmax; ++v) {
      double out = 0.0;
      place(v, k, &out);
      rate = std::max(rate, out);
    }
    const double cost = k + 2000.0 * rate;
    if (cost < best_cost) {
      best_cost = cost;
      best_k = k;
    }
  }
  if (best_cost > kWinMaxK + 20.0) return;  // too much mass outside any window
  win_k = best_k;
  win_tables = vmax < 64 ? 1 : kWinMaxTables;  // the vector path has variants for 1 and 3
  const int64_t np = 64 * static_cast<int64_t>(win_tables);
  win.assign(static_cast<size_t>(win_k * np), 0xFFFF);
  win_base.assign(static_cast<size_t>(np), 0);
  for (int64_t v = 0; v <= vmax; ++v) {
    double out = 0.0;
    const int64_t a = place(v, win_k, &out);
    win_base[static_cast<size_t>(v)] =
        static_cast<int16_t>(law.o_lo[static_cast<size_t>(v)] + a);
    for (int k = 0; k < win_k; ++k) {
      const int64_t kk = a + k;
      uint16_t top = 0;
      if (kk >= count(v)) {
        top = 0xFFFF;  // never passed: equal only at u16 = 0xFFFF, which is slow
      } else if (kk >= 0) {
        top = static_cast<uint16_t>(
            law.bounds[law.start[static_cast<size_t>(v)] + static_cast<size_t>(kk)] >> 48);
      }
      win[static_cast<size_t>(k * np + v)] = top;
    }
  }
}

bool DirectPlan::WindowOutcome(int64_t v, uint32_t u16, int* o) const {
  const int64_t np = 64 * static_cast<int64_t>(win_tables);
  int r = 0;
  bool eq = false;
  for (int k = 0; k < win_k; ++k) {
    const uint32_t t = win[static_cast<size_t>(k * np + v)];
    r += u16 > t;
    eq |= u16 == t;
  }
  *o = win_base[static_cast<size_t>(v)] + r;
  return !eq && r >= 1 && r <= win_k - 1;
}

int DirectPlan::ExactOutcome(int64_t v, uint64_t u) const {
  int o = law.o_lo[static_cast<size_t>(v)];
  for (uint32_t k = law.start[static_cast<size_t>(v)]; k < law.start[static_cast<size_t>(v + 1)];
       ++k) {
    o += u >= law.bounds[k];
  }
  return o;
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
        w2 = static_cast<uint32_t>(detail::CodeUniform(key, i));  // U's low 32 bits
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
#if defined(__AVX512F__) && defined(__VAES__)
  // Four blocks per register, four registers in flight; the last blocks one at a time.
  const int64_t s = static_cast<int64_t>(stream);
  int64_t q = 0;
  for (; q + 16 <= nb; q += 16) ArsBlocks16(ak, s, static_cast<int64_t>(b0) + q, out + 4 * q);
  for (; q < nb; ++q) {
    __m128i x = _mm_xor_si128(_mm_set_epi64x(s, static_cast<int64_t>(b0 + q)), RoundKey(ak, 0));
    for (int r = 1; r < kArsRounds; ++r) x = _mm_aesenc_si128(x, RoundKey(ak, r));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 4 * q),
                     _mm_aesenclast_si128(x, RoundKey(ak, kArsRounds)));
  }
#elif defined(__AES__)
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

#if defined(__AVX512F__) && defined(__AVX512BW__)
namespace {
// One segment's loop (the window's and the shift form's): for the S slice rows of partial sums
// (bytes v8 or int32 v32) and top-16-bit uniforms u[q ncp + cp],
// acc[cp] += sign * sum_q (code << (q pr)) << shift_j, 32 columns a step. decide(p, uu, &dd)
// gives per lane dd = outcome - 1 before clipping (code = clamp(dd, 0, M), clipped iff
// dd != code) and returns the mask of slow lanes.
// Slow draws (decide's) add nothing and are listed in slow[*ns ..] as i = q ncp + cp; the caller
// adds their exact codes. Returns the fast draws' clipped count. The slices' codes add in 16 bits
// when M sum_q 2^(q pr) < 2^16 (narrow), else in int32.
template <class Decide>
inline int64_t SegmentLoop(const DirectPlan& d, const int32_t* v32, const uint8_t* v8,
                           const uint16_t* u, int64_t ncp, int S, int pr, int shift_j,
                           int64_t sign, int64_t* acc, uint32_t* slow, int64_t* ns,
                           const Decide& decide) {
  const bool narrow =
      static_cast<double>(d.law.max_code) * (std::ldexp(1.0, S * pr) - 1.0) /
          (std::ldexp(1.0, pr) - 1.0) < 65536.0;
  const __m512i one = _mm512_set1_epi16(1), zero = _mm512_setzero_si512();
  const __m512i mcode = _mm512_set1_epi16(static_cast<int16_t>(d.law.max_code));
  const __m128i vshift = _mm_cvtsi32_si128(shift_j);
  int64_t clipped = 0, k = *ns;
  __m512i clip32 = _mm512_setzero_si512();  // fast, whole vectors' clipped count, int32 lanes
  for (int64_t cp0 = 0; cp0 < ncp; cp0 += 32) {
    const int64_t nl = std::min<int64_t>(32, ncp - cp0);
    const __mmask32 lm = nl == 32 ? ~__mmask32{0} : static_cast<__mmask32>((1u << nl) - 1);
    __m512i sum = zero, sum_lo = zero, sum_hi = zero, clipv = zero;
    for (int q = 0; q < S; ++q) {
      const int64_t i0 = q * ncp + cp0;
      __m512i p;
      if (v8 != nullptr) {
        p = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(lm, v8 + i0));
      } else {
        const __m512i va = _mm512_maskz_loadu_epi32(static_cast<__mmask16>(lm), v32 + i0);
        const __m512i vb =
            _mm512_maskz_loadu_epi32(static_cast<__mmask16>(lm >> 16), v32 + i0 + 16);
        p = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi32_epi16(va)),
                               _mm512_cvtepi32_epi16(vb), 1);
      }
      const __m512i uu = _mm512_maskz_loadu_epi16(lm, u + i0);
      __m512i dd;
      __mmask32 sl = decide(p, uu, &dd) & lm;
      const __m512i code = _mm512_min_epi16(_mm512_max_epi16(dd, zero), mcode);
      __m512i cf;
      if ((sl | static_cast<__mmask32>(~lm)) == 0) [[likely]] {
        cf = code;
        clipv = _mm512_mask_add_epi16(clipv, _mm512_cmpneq_epi16_mask(dd, code), clipv, one);
      } else {
        const __mmask32 fast = lm & ~sl;
        clipped += __builtin_popcount(_mm512_mask_cmpneq_epi16_mask(fast, code, dd));
        cf = _mm512_maskz_mov_epi16(fast, code);
        while (sl != 0) {
          slow[k++] = static_cast<uint32_t>(i0 + __builtin_ctz(sl));
          sl &= sl - 1;
        }
      }
      const __m128i qs = _mm_cvtsi32_si128(q * pr);
      if (narrow) {
        sum = _mm512_add_epi16(sum, _mm512_sll_epi16(cf, qs));
      } else {
        sum_lo = _mm512_add_epi32(
            sum_lo, _mm512_sll_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(cf)), qs));
        sum_hi = _mm512_add_epi32(
            sum_hi, _mm512_sll_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(cf, 1)), qs));
      }
    }
    clip32 = _mm512_add_epi32(clip32, _mm512_madd_epi16(clipv, one));
    // acc[cp0 + 8 g ..] += sign * (sum << shift_j), int64, 8 columns per vector.
    for (int g = 0; g < 4 && 8 * g < nl; ++g) {
      const __m512i x = narrow ? Widen16To64(sum, g) : Widen32To64(g < 2 ? sum_lo : sum_hi, g & 1);
      ShiftAddInt64(acc + cp0, g, lm, x, vshift, sign);
    }
  }
  *ns = k;
  return clipped + _mm512_reduce_add_epi32(clip32);
}

// The window's decision for K thresholds and T (1 or 3) tables of 64 partial sums. Each threshold
// by one permute (a second one and a blend in vectors where some partial sum is 64 or more), its
// compare into a mask and a masked add, equality into a mask (aspeed6: 6-9 % fewer samples in
// this function on the 6-bit sigma-1 cell than min(subs(u, t), 1) and min(u ^ t) == 0).
// Slow: rank 0 or K, or a top equal to u16.
template <int K, int T>
int64_t WindowSegment(const DirectPlan& d, const int32_t* v32, const uint8_t* v8,
                      const uint16_t* u, int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                      int64_t* acc, uint32_t* slow, int64_t* ns) {
  constexpr int64_t np = 64 * T;
  const uint16_t* win = d.win.data();
  const uint16_t* base = reinterpret_cast<const uint16_t*>(d.win_base.data());
  const __m512i one = _mm512_set1_epi16(1), zero = _mm512_setzero_si512();
  const __m512i c64 = _mm512_set1_epi16(64), c128 = _mm512_set1_epi16(128);
  const __m512i km2 = _mm512_set1_epi16(static_cast<int16_t>(K - 2));
  // The first 64 entries of each table in registers.
  __m512i t0[K], t1[K];
  for (int k = 0; k < K; ++k) {
    t0[k] = _mm512_loadu_si512(win + k * np);
    t1[k] = _mm512_loadu_si512(win + k * np + 32);
  }
  const __m512i b0 = _mm512_loadu_si512(base), b1 = _mm512_loadu_si512(base + 32);
  auto upper = [&](const uint16_t* tab, __m512i t, __m512i p, __mmask32 h1, __mmask32 h2) {
    t = _mm512_mask_blend_epi16(
        h1, t, _mm512_permutex2var_epi16(_mm512_loadu_si512(tab + 64), p,
                                         _mm512_loadu_si512(tab + 96)));
    if (h2 != 0) {
      t = _mm512_mask_blend_epi16(
          h2, t, _mm512_permutex2var_epi16(_mm512_loadu_si512(tab + 128), p,
                                           _mm512_loadu_si512(tab + 160)));
    }
    return t;
  };
  auto decide = [&](__m512i p, __m512i uu, __m512i* dd) -> __mmask32 {
    __m512i rk = zero;
    __mmask32 eq = 0;
    __m512i bs = _mm512_permutex2var_epi16(b0, p, b1);
    const __mmask32 h1 = T > 1 ? _mm512_cmpge_epu16_mask(p, c64) : 0;
    if (T > 1 && h1 != 0) {
      const __mmask32 h2 = _mm512_cmpge_epu16_mask(p, c128);
      bs = upper(base, bs, p, h1, h2);
      for (int kk = 0; kk < K; ++kk) {
        const __m512i t =
            upper(win + kk * np, _mm512_permutex2var_epi16(t0[kk], p, t1[kk]), p, h1, h2);
        rk = _mm512_mask_add_epi16(rk, _mm512_cmpgt_epu16_mask(uu, t), rk, one);
        eq |= _mm512_cmpeq_epi16_mask(uu, t);
      }
    } else {
      for (int kk = 0; kk < K; ++kk) {
        const __m512i t = _mm512_permutex2var_epi16(t0[kk], p, t1[kk]);
        rk = _mm512_mask_add_epi16(rk, _mm512_cmpgt_epu16_mask(uu, t), rk, one);
        eq |= _mm512_cmpeq_epi16_mask(uu, t);
      }
    }
    const __m512i r1 = _mm512_sub_epi16(rk, one);
    *dd = _mm512_add_epi16(bs, r1);  // outcome - 1
    // Slow: rank 0 or K (rank - 1 > K - 2 unsigned) or an equal top.
    return eq | _mm512_cmpgt_epu16_mask(r1, km2);
  };
  return SegmentLoop(d, v32, v8, u, ncp, S, pr, shift_j, sign, acc, slow, ns, decide);
}

// The shift form's decision (DirectPlan::ShiftOutcome) for MS search steps: the tables in
// registers (one per step, two halves at MS = 6), r by MS permutes, compares into masks and
// masked adds, the tie by one more permute; no per-v lookup.
template <int MS>
int64_t ShiftSegment(const DirectPlan& d, const int32_t* v32, const uint8_t* v8,
                     const uint16_t* u, int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                     int64_t* acc, uint32_t* slow, int64_t* ns) {
  constexpr int NS = MS > 0 ? MS : 1;
  __m512i lo[NS], hi[NS], h[NS];
  for (int st = 0; st < MS; ++st) {
    lo[st] = _mm512_loadu_si512(d.shift_search.data() + st * 64);
    hi[st] = _mm512_loadu_si512(d.shift_search.data() + st * 64 + 32);
    h[st] = _mm512_set1_epi16(static_cast<int16_t>(1 << (MS - 1 - st)));
  }
  const __m512i w0 = _mm512_loadu_si512(d.shift_tops.data());
  const __m512i w1 = _mm512_loadu_si512(d.shift_tops.data() + 32);
  const __m512i one = _mm512_set1_epi16(1);
  const __m512i cb = _mm512_set1_epi16(static_cast<int16_t>(d.shift_cbase));
  auto decide = [&](__m512i p, __m512i uu, __m512i* dd) -> __mmask32 {
    __m512i r = _mm512_setzero_si512();
    for (int st = 0; st < MS; ++st) {
      const __m512i t = MS == 6 ? _mm512_permutex2var_epi16(lo[st], r, hi[st])
                                : _mm512_permutexvar_epi16(r, lo[st]);
      r = _mm512_mask_add_epi16(r, _mm512_cmpgt_epu16_mask(uu, t), r, h[st]);
    }
    const __m512i tt =
        MS == 6 ? _mm512_permutex2var_epi16(w0, r, w1) : _mm512_permutexvar_epi16(r, w0);
    *dd = _mm512_add_epi16(_mm512_add_epi16(p, cb), r);
    // Slow: a top equal to u16, or u16 of 0 or 0xFFFF (u16 + 1 <= 1, wrapping).
    return _mm512_cmpeq_epi16_mask(uu, tt) |
           _mm512_cmple_epu16_mask(_mm512_add_epi16(uu, one), one);
  };
  return SegmentLoop(d, v32, v8, u, ncp, S, pr, shift_j, sign, acc, slow, ns, decide);
}

template <int T>
int64_t WindowSegmentK(const DirectPlan& d, const int32_t* v32, const uint8_t* v8,
                       const uint16_t* u, int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                       int64_t* acc, uint32_t* slow, int64_t* ns) {
  switch (d.win_k) {
#define PIM_WINDOW_K(KK) \
  case KK:               \
    return WindowSegment<KK, T>(d, v32, v8, u, ncp, S, pr, shift_j, sign, acc, slow, ns);
    PIM_WINDOW_K(3)
    PIM_WINDOW_K(4)
    PIM_WINDOW_K(5)
    PIM_WINDOW_K(6)
    PIM_WINDOW_K(7)
    PIM_WINDOW_K(8)
    PIM_WINDOW_K(9)
    PIM_WINDOW_K(10)
    PIM_WINDOW_K(11)
    PIM_WINDOW_K(12)
#undef PIM_WINDOW_K
    default:
      PIM_CHECK_MSG(false, "direct codes: no window variant for this K");
      return 0;
  }
}
}  // namespace

// The shift form's bucket decision (DirectPlan::shift_c, C tops per bucket, BB bucket bits):
// the bucket's count below and its C tops by C + 1 independent permutes of h16 >> (16 - BB).
template <int C, int BB>
int64_t ShiftBucketSegment(const DirectPlan& d, const int32_t* v32, const uint8_t* v8,
                           const uint16_t* u, int64_t ncp, int S, int pr, int shift_j,
                           int64_t sign, int64_t* acc, uint32_t* slow, int64_t* ns) {
  __m512i lo[C + 1], hi[C + 1];
  for (int c = 0; c <= C; ++c) {
    lo[c] = _mm512_loadu_si512(d.shift_bucket.data() + 64 * c);
    hi[c] = _mm512_loadu_si512(d.shift_bucket.data() + 64 * c + 32);
  }
  const __m512i one = _mm512_set1_epi16(1);
  const __m512i cb = _mm512_set1_epi16(static_cast<int16_t>(d.shift_cbase));
  auto decide = [&](__m512i p, __m512i uu, __m512i* dd) -> __mmask32 {
    const __m512i b = _mm512_srli_epi16(uu, 16 - BB);
    auto look = [&](int c) {
      return BB == 6 ? _mm512_permutex2var_epi16(lo[c], b, hi[c])
                     : _mm512_permutexvar_epi16(b, lo[c]);
    };
    __m512i r = _mm512_add_epi16(_mm512_add_epi16(p, cb), look(0));
    // Slow: u16 of 0 or 0xFFFF (u16 + 1 <= 1, wrapping), or a top equal to u16.
    __mmask32 slow_m = _mm512_cmple_epu16_mask(_mm512_add_epi16(uu, one), one);
    for (int c = 1; c <= C; ++c) {
      const __m512i t = look(c);
      r = _mm512_mask_add_epi16(r, _mm512_cmpgt_epu16_mask(uu, t), r, one);
      slow_m |= _mm512_cmpeq_epi16_mask(uu, t);
    }
    *dd = r;
    return slow_m;
  };
  return SegmentLoop(d, v32, v8, u, ncp, S, pr, shift_j, sign, acc, slow, ns, decide);
}

// The table's direct_window_segment: the shift form's variant for its steps where the plan has
// one, else the window's for the plan's K and tables.
int64_t DirectWindowSegmentAvx512(const DirectPlan& d, const int32_t* v32, const uint8_t* v8,
                                  const uint16_t* u, int64_t ncp, int S, int pr, int shift_j,
                                  int64_t sign, int64_t* acc, uint32_t* slow, int64_t* ns) {
  if (d.shift_steps >= 0 && d.shift_c > 0 && DirectShiftEnabled()) {
    switch (d.shift_c * 8 + d.shift_bucket_bits) {
#define PIM_SHIFT_B(CC, BB) \
  case CC * 8 + BB:         \
    return ShiftBucketSegment<CC, BB>(d, v32, v8, u, ncp, S, pr, shift_j, sign, acc, slow, ns);
      PIM_SHIFT_B(1, 5)
      PIM_SHIFT_B(2, 5)
      PIM_SHIFT_B(3, 5)
      PIM_SHIFT_B(4, 5)
      PIM_SHIFT_B(1, 6)
      PIM_SHIFT_B(2, 6)
      PIM_SHIFT_B(3, 6)
      PIM_SHIFT_B(4, 6)
#undef PIM_SHIFT_B
      default:
        break;
    }
  }
  if (d.shift_steps >= 0 && DirectShiftEnabled()) {
    switch (d.shift_steps) {
#define PIM_SHIFT_M(MM) \
  case MM:              \
    return ShiftSegment<MM>(d, v32, v8, u, ncp, S, pr, shift_j, sign, acc, slow, ns);
      PIM_SHIFT_M(0)
      PIM_SHIFT_M(1)
      PIM_SHIFT_M(2)
      PIM_SHIFT_M(3)
      PIM_SHIFT_M(4)
      PIM_SHIFT_M(5)
      PIM_SHIFT_M(6)
#undef PIM_SHIFT_M
      default:
        break;
    }
  }
  return d.win_tables == 1
             ? WindowSegmentK<1>(d, v32, v8, u, ncp, S, pr, shift_j, sign, acc, slow, ns)
             : WindowSegmentK<3>(d, v32, v8, u, ncp, S, pr, shift_j, sign, acc, slow, ns);
}
#endif

bool& DirectWindowEnabled() {
  static bool enabled = true;
  return enabled;
}

bool& DirectShiftEnabled() {
  static bool enabled = true;
  return enabled;
}

// Dataflow A's conversions of cycle j by direct codes: the window where the plan has one and the
// table a variant, else the guide.
void Worker::ConvertADirect(int64_t m, int64_t b, int h, int j, int64_t sign) {
  const int64_t ncp = this->ncp, len = S * ncp;
  const uint64_t first = detail::NoiseIndex(m, blocks, b, h, cycles, j, len, 0);
  const int32_t* v = psi.data() + j * len;
  const uint8_t* v8 = sums8 ? psb.data() + j * len : nullptr;
  int64_t clipped = 0;
  if (use_window) {
    // The segment's top halves: blocks first >> 3 .. (first + len - 1) >> 3 of kCodeStreamHi.
    const uint64_t off = first & 7;
    FillCodeWords(*ars, detail::kCodeStreamHi, first >> 3,
                  static_cast<int64_t>((off + static_cast<uint64_t>(len) + 7) >> 3),
                  code_words.data());
    const uint16_t* useg = reinterpret_cast<const uint16_t*>(code_words.data()) + off;
    int64_t ns = 0;
    clipped = Kernels().direct_window_segment(*direct, v8 != nullptr ? nullptr : v, v8, useg,
                                              ncp, S, pr, j * pd, sign, acc.data(),
                                              unsure_pos.data(), &ns);
    for (int64_t t = 0; t < ns; ++t) {
      const int64_t i = unsure_pos[static_cast<size_t>(t)], q = i / ncp, cp = i - q * ncp;
      const uint64_t di = first + static_cast<uint64_t>(i);
      const int64_t vi = v8 != nullptr ? v8[i] : v[i];
      const AdcTransfer::Result r = detail::CodeOfOutcome(
          direct->ExactOutcome(vi, detail::CodeUniform(p.noise_key, di)), direct->law.max_code);
      acc[static_cast<size_t>(cp)] += sign * (static_cast<int64_t>(r.code) << (j * pd + q * pr));
      clipped += r.clipped;
    }
  } else {
    ConvertADirectGuide(first, v, j, sign, &clipped);
  }
  c.adc_clipped += clipped;
  c.adc_conversions += len;
  c.sample_holds += len;
  c.shift_adds += len;
}

// The guide: U's top 32 bits (the top half from kCodeStreamHi, the next 16 bits from
// kCodeStreamLo's word) per conversion, each slice row through the table's
// direct_codes_segment, then the unsure entries resolved exactly.
void Worker::ConvertADirectGuide(uint64_t first, const int32_t* v, int j, int64_t sign,
                                 int64_t* clipped_out) {
  const int64_t ncp = this->ncp, len = S * ncp;
  {
    const uint64_t off = first & 7;
    FillCodeWords(*ars, detail::kCodeStreamHi, first >> 3,
                  static_cast<int64_t>((off + static_cast<uint64_t>(len) + 7) >> 3),
                  code_halves.data());
    const uint64_t off4 = first & 3;
    FillCodeWords(*ars, detail::kCodeStreamLo, first >> 2,
                  static_cast<int64_t>((off4 + static_cast<uint64_t>(len) + 3) >> 2),
                  code_lo.data());
    const uint16_t* hi = reinterpret_cast<const uint16_t*>(code_halves.data()) + off;
    const uint32_t* lo = code_lo.data() + off4;
    uint32_t* w = code_words.data();
    for (int64_t i = 0; i < len; ++i) w[i] = (static_cast<uint32_t>(hi[i]) << 16) | (lo[i] >> 16);
  }
  const uint32_t* wseg = code_words.data();
  const uint16_t* guide = direct->guide.data();
  int64_t nu = 0;
  int64_t clipped = Kernels().direct_codes_segment(guide, v, wseg, ncp, S, pr, j * pd, sign,
                                                   acc.data(), 0, unsure_pos.data(), &nu);
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
  *clipped_out = clipped;
}

}  // namespace pim::kernels::fast::internal
