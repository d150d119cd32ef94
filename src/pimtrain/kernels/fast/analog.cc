// Fast analog crossbar multiply: partial sums from bit-packed planes (AND + popcount), noise from
// the vector Philox of analog_noise.cc, ADC conversions 8 / 16 at a time with the scalar
// transfer's exact float steps. Equal to ref::AnalogMatMulSparseTails bit for bit (codes,
// outputs and counts), which is ref::AnalogMatMul off the sparse-tail configurations.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/analog.h"

// GCC 12 flags the AVX-512 intrinsics' internal _mm512_undefined_* operands (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace pim::kernels::fast {
using detail::kTailHiBase;
using detail::kUnsafeTail;
using detail::TailIndex;
using detail::kGapSteps;
using detail::TailPlan;
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


#if defined(__AVX512F__) && defined(__AVX512BW__)
// The levels (< 256) of rows [rs, re) (at most 64; missing rows read 0) of columns [c0, c1) (at
// most kCols) of a k x ncp level matrix, as one 64-byte register per column: byte r - rs is row
// r's level. With VBMI, 16 columns at a time: four rows' levels narrowed to bytes in one
// register, a byte permute to (column, 4 rows) dwords, each column's 16 dwords gathered;
// without, one scattered byte store per level.
constexpr int64_t kCols = 64;
struct ColumnBytes64 {
#if defined(__AVX512VBMI__)
  alignas(64) uint32_t quad[kCols / 16][16][16];  // [column group][4-row group][column]
  __m512i to_cols;                                 // byte 4 c + k <- byte 16 k + c
  ColumnBytes64() {
    alignas(64) uint8_t perm[64];
    for (int c = 0; c < 16; ++c) {
      for (int k = 0; k < 4; ++k) perm[4 * c + k] = static_cast<uint8_t>(16 * k + c);
    }
    to_cols = _mm512_load_si512(perm);
  }
  void Fill(const int32_t* w, int64_t ncp, int64_t rs, int64_t re, int64_t c0, int64_t c1) {
    for (int64_t cs = c0; cs < c1; cs += 16) {
      const int64_t nc = std::min<int64_t>(16, c1 - cs);
      const __mmask16 cm = static_cast<__mmask16>((1u << nc) - 1);
      for (int rr = 0; rr < 16; ++rr) {
        __m128i rows[4];
        for (int k = 0; k < 4; ++k) {
          const int64_t r = rs + 4 * rr + k;
          rows[k] = r < re ? _mm512_cvtepi32_epi8(_mm512_maskz_loadu_epi32(cm, w + r * ncp + cs))
                           : _mm_setzero_si128();
        }
        __m512i z = _mm512_castsi128_si512(rows[0]);
        z = _mm512_inserti32x4(z, rows[1], 1);
        z = _mm512_inserti32x4(z, rows[2], 2);
        z = _mm512_inserti32x4(z, rows[3], 3);
        _mm512_store_si512(quad[(cs - c0) / 16][rr], _mm512_permutexvar_epi8(to_cols, z));
      }
    }
  }
  // Rows 4 rr .. 4 rr + 3 of column c are dword c % 16 of quad[c / 16][rr].
  __m512i Column(int64_t c) const {
    const __m512i stride = _mm512_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176,
                                             192, 208, 224, 240);
    return _mm512_i32gather_epi32(stride, &quad[c / 16][0][c % 16], 4);
  }
#else
  alignas(64) uint8_t col[kCols * 64];
  void Fill(const int32_t* w, int64_t ncp, int64_t rs, int64_t re, int64_t c0, int64_t c1) {
    std::fill(col, col + kCols * 64, 0);
    for (int64_t r = rs; r < re; ++r) {
      const int32_t* row = w + r * ncp;
      uint8_t* c = col + (r - rs);
      for (int64_t cp = c0; cp < c1; ++cp) c[(cp - c0) * 64] = static_cast<uint8_t>(row[cp]);
    }
  }
  __m512i Column(int64_t c) const { return _mm512_load_si512(col + c * 64); }
#endif
};
#endif

void PackWeights(const AnalogProblem& p, PackedAnalogWeights& out, ThreadPool* pool) {
  const int64_t ncp = p.n * p.polarities;
  const int64_t blocks = (p.k + p.block - 1) / p.block;
  out.k = p.k;
  out.ncp = ncp;
  out.block = p.block;
  out.words = (p.block + 63) / 64;
  out.bits = p.slices * p.cell_bits;
  // Zeroed for the scalar packer (it ORs bits in); the byte-wise packers write every word.
  const size_t plane_words = static_cast<size_t>(blocks * out.bits * ncp * out.words);
#if defined(__AVX512F__) && defined(__AVX512BW__)
  if (out.bits <= 8) {
    out.planes.resize(plane_words);
  } else {
    out.planes.assign(plane_words, 0);
  }
#else
  out.planes.assign(plane_words, 0);
#endif
  // Row pairs of the levels for the exact product (levels of up to 15 bits fit int16).
  if (out.bits <= 15) {
    const int64_t rp = (p.k + 1) / 2;
    out.pairs.resize(static_cast<size_t>(rp * ncp * 2));
    auto pair_rows = [&](int64_t a, int64_t e) {
      for (int64_t r2 = a; r2 < e; ++r2) {
        int16_t* o = out.pairs.data() + r2 * ncp * 2;
        const int32_t* r0 = p.w + 2 * r2 * ncp;
        const int32_t* r1 = 2 * r2 + 1 < p.k ? r0 + ncp : nullptr;
        for (int64_t cp = 0; cp < ncp; ++cp) {
          o[2 * cp] = static_cast<int16_t>(r0[cp]);
          o[2 * cp + 1] = r1 != nullptr ? static_cast<int16_t>(r1[cp]) : int16_t{0};
        }
      }
    };
    if (pool != nullptr) {
      pool->ParallelFor(rp, 16, pair_rows);
    } else {
      pair_rows(0, rp);
    }
  } else {
    out.pairs.clear();
  }
#if defined(__AVX512F__) && defined(__AVX512BW__)
  if (out.bits <= 8) {
    // Levels of 64 rows of a column as 64 bytes; a byte-wise bit test gives the plane word.
    // Tasks of (block, 64 columns), so that a single block still splits over the threads.
    const int64_t col_chunks = (ncp + kCols - 1) / kCols;
    auto pack8 = [&](int64_t t0, int64_t t1) {
      ColumnBytes64 cols;
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t b = task / col_chunks, c0 = (task % col_chunks) * kCols;
        const int64_t c1 = std::min(ncp, c0 + kCols);
        const int64_t r0 = b * p.block, r1 = std::min(p.k, r0 + p.block);
        for (int64_t wd = 0; wd * 64 < r1 - r0; ++wd) {
          const int64_t rs = r0 + wd * 64, re = std::min(r1, rs + 64);
          cols.Fill(p.w, ncp, rs, re, c0, c1);
          for (int64_t cp = c0; cp < c1; ++cp) {
            const __m512i v = cols.Column(cp - c0);
            for (int t = 0; t < out.bits; ++t) {
              out.planes[static_cast<size_t>(((b * out.bits + t) * ncp + cp) * out.words + wd)] =
                  _mm512_test_epi8_mask(v, _mm512_set1_epi8(static_cast<char>(1 << t)));
            }
          }
        }
      }
    };

    if (pool != nullptr) {
      pool->ParallelFor(blocks * col_chunks, 1, pack8);
    } else {
      pack8(0, blocks * col_chunks);
    }
    return;
  }
#endif
  auto pack = [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * p.block, r1 = std::min(p.k, r0 + p.block);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t word = (r - r0) >> 6;
        const uint64_t bit = uint64_t{1} << ((r - r0) & 63);
        const int32_t* row = p.w + r * ncp;
        for (int64_t cp = 0; cp < ncp; ++cp) {
          uint32_t v = static_cast<uint32_t>(row[cp]);
          while (v != 0) {
            const int t = __builtin_ctz(v);
            v &= v - 1;
            if (t < out.bits) {
              out.planes[static_cast<size_t>(((b * out.bits + t) * ncp + cp) * out.words + word)] |=
                  bit;
            }
          }
        }
      }
    }
  };
  if (pool != nullptr) {
    pool->ParallelFor(blocks, 1, pack);
  } else {
    pack(0, blocks);
  }
}

namespace {

// A noise key's ARS round keys (base/ars.h) in the registers SparseWords64 uses.
struct ArsKeys {
  uint64_t key = 0;
#if defined(__AVX512F__) && defined(__VAES__)
  __m512i k[kArsRounds + 1];
#elif defined(__AES__)
  __m128i k[kArsRounds + 1];
#endif
  explicit ArsKeys(uint64_t key_in) : key(key_in) {
#if defined(__AES__)
    const auto rk = ArsRoundKeys(key);
    for (int r = 0; r <= kArsRounds; ++r) {
      const __m128i v = _mm_set_epi64x(static_cast<int64_t>(rk[r][1]),
                                       static_cast<int64_t>(rk[r][0]));
#if defined(__AVX512F__) && defined(__VAES__)
      k[r] = _mm512_broadcast_i32x4(v);
#else
      k[r] = v;
#endif
    }
#endif
  }
};

// Words 64 b .. 64 b + 63 of a sparse-tail stream (detail::SparseTailWord): ARS blocks
// 16 b .. 16 b + 15, four per 512-bit register with VAES.
void SparseWords64(const ArsKeys& ak, uint64_t stream, uint64_t b, uint32_t* out) {
#if defined(__AVX512F__) && defined(__VAES__)
  const int64_t s = static_cast<int64_t>(stream), c = static_cast<int64_t>(16 * b);
  const __m512i first = _mm512_set_epi64(s, c + 3, s, c + 2, s, c + 1, s, c);
  const __m512i step = _mm512_set_epi64(0, 4, 0, 4, 0, 4, 0, 4);
  __m512i x[4], ctr = first;
  for (int v = 0; v < 4; ++v) {
    x[v] = _mm512_xor_si512(ctr, ak.k[0]);
    ctr = _mm512_add_epi64(ctr, step);
  }
  for (int r = 1; r < kArsRounds; ++r) {
    for (int v = 0; v < 4; ++v) x[v] = _mm512_aesenc_epi128(x[v], ak.k[r]);
  }
  for (int v = 0; v < 4; ++v) {
    _mm512_storeu_si512(out + 16 * v, _mm512_aesenclast_epi128(x[v], ak.k[kArsRounds]));
  }
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
// The gap thresholds as detail::GapLength's binary search reads them, built once per call's
// worker: step s looks at gap_thr[g + s], g a multiple of 2 s, so each step has a table of
// 32 / s entries indexed by g / (2 s) (one permute; the last step's 32 take two registers).
struct GapTables {
  alignas(64) uint32_t t8[16] = {}, t4[16] = {}, t2[16] = {}, t1[32] = {};
  uint32_t v16 = 0, v32 = 0, v48 = 0;
  explicit GapTables(const TailPlan& plan) {
    for (int i = 0; i < 4; ++i) t8[i] = static_cast<uint32_t>(plan.gap_thr[8 + 16 * i]);
    for (int i = 0; i < 8; ++i) t4[i] = static_cast<uint32_t>(plan.gap_thr[4 + 8 * i]);
    for (int i = 0; i < 16; ++i) t2[i] = static_cast<uint32_t>(plan.gap_thr[2 + 4 * i]);
    for (int i = 0; i < 32; ++i) t1[i] = static_cast<uint32_t>(plan.gap_thr[1 + 2 * i]);
    v16 = static_cast<uint32_t>(plan.gap_thr[16]);
    v32 = static_cast<uint32_t>(plan.gap_thr[32]);
    v48 = static_cast<uint32_t>(plan.gap_thr[48]);
  }
};

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

// A tail draw whose code needs the full transfer (kUnsafeTail): draw i, table index, partial
// sum, and its event number (which places a refined cell's draw, SparseTailValue).
struct UnsafeTail {
  int64_t i;
  uint32_t idx;
  int32_t v;
  int64_t ev;
};

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
  const __m512i pair_order = _mm512_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15);
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

// acc[i] += sign * (code << shift) for the conversions of x[0..n) (draws z, null without noise):
// AdcTransfer::Convert's float steps, 8 lanes at a time (the scalar transfer for the rest).
// Returns the clipped conversions.
int64_t TransferShiftAdd(const AdcTransfer& adc, const float* x, const float* z, int64_t n,
                         int shift, int64_t sign, int64_t* acc) {
  int64_t clipped = 0, i = 0;
  const __m256 vsigma = _mm256_set1_ps(adc.sigma), vinv = _mm256_set1_ps(adc.inv_lsb);
  const __m256 vmax = _mm256_set1_ps(adc.max_code), vzero = _mm256_setzero_ps();
  const __m256 vlo = _mm256_set1_ps(-0.5f), vhi = _mm256_set1_ps(adc.max_code + 0.5f);
  const __m256 vk = _mm256_set1_ps(adc.inl_k);
  const bool inl = adc.inl_k != 0.0f, noisy = adc.sigma != 0.0f && z != nullptr;
  const __m128i vshift = _mm_cvtsi32_si128(shift);
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    if (noisy) v = _mm256_add_ps(v, _mm256_mul_ps(vsigma, _mm256_loadu_ps(z + i)));
    const __m256 t = _mm256_mul_ps(v, vinv);
    const __m256 out = _mm256_or_ps(_mm256_cmp_ps(t, vlo, _CMP_LT_OQ),
                                    _mm256_cmp_ps(t, vhi, _CMP_GT_OQ));
    clipped += __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(out)));
    __m256 tc = _mm256_min_ps(_mm256_max_ps(t, vzero), vmax);
    if (inl) tc = _mm256_add_ps(tc, _mm256_mul_ps(_mm256_mul_ps(vk, tc), _mm256_sub_ps(vmax, tc)));
    __m256 cf = _mm256_round_ps(tc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    cf = _mm256_min_ps(_mm256_max_ps(cf, vzero), vmax);
    const __m256i code = _mm256_cvtps_epi32(cf);
    const __m256i lo = _mm256_sll_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(code)), vshift);
    const __m256i hi =
        _mm256_sll_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(code, 1)), vshift);
    __m256i* a = reinterpret_cast<__m256i*>(acc + i);
    const __m256i a0 = _mm256_loadu_si256(a), a1 = _mm256_loadu_si256(a + 1);
    _mm256_storeu_si256(a, sign > 0 ? _mm256_add_epi64(a0, lo) : _mm256_sub_epi64(a0, lo));
    _mm256_storeu_si256(a + 1, sign > 0 ? _mm256_add_epi64(a1, hi) : _mm256_sub_epi64(a1, hi));
  }
  for (; i < n; ++i) {
    const AdcTransfer::Result r = adc.Convert(x[i], noisy ? z[i] : 0.0f);
    acc[i] += sign * (static_cast<int64_t>(r.code) << shift);
    clipped += r.clipped;
  }
  return clipped;
}

// Per-thread state of one range of samples.
struct Worker {
  const AnalogProblem& p;
  const PackedAnalogWeights& pw;
  const TailPlan* plan;  // MakeTailPlan of the call (lossless read-out only)
  bool lossless;
  int pd, pr, S, cycles;
  int64_t ncp, blocks, words, arrays_per_block;
  std::vector<int> groups;
  std::vector<uint64_t> xplanes;  // [phase][bit][word] of the current block
  // Draws: z of dataflow A's and C's converters, z_nnsa of C's NNS+A, z_lines of B's lines.
  std::vector<float> ps, z, z_nnsa, z_lines;
  std::vector<float> line_x;         // B: the buffer lines' analog values [line][cp]
  std::vector<int64_t> line_terms;   // B: one line's partial-sum offsets
  std::vector<int32_t> psi;  // integer partial sums (no conductances): [j][q][cp]
  std::vector<int64_t> acc;
  std::vector<uint8_t> applied;
  // Small-noise shortcut of dataflow A (ConvertAShortcut): the draws' 16-bit uniforms, and the
  // columns of one slice's tail draws.
  bool shortcut = false;
  std::vector<uint32_t> uni, tails;
  // Lossless read-out (LosslessReadout): the exact integer product of the worker's samples
  // (prod[(m - prod_m0) * ncp + cp]); acc then collects only the tail draws' corrections.
  std::vector<int32_t> ev_pos;    // the tail events of a segment: draws
  std::vector<uint32_t> ev_idx;   // and their quantile-table indices
  std::unique_ptr<GapTables> gap_tables;  // the plan's search tables
  std::unique_ptr<ArsKeys> ars;           // the sparse-tail streams' round keys
  std::vector<uint8_t> slice_of;  // the slice q of draw i = q ncp + cp
  // The sample's tail corrections of draw i, shifted by j pd: int32 when no sum can overflow it
  // (narrow_corr; 16 per vector gather), else int64.
  std::vector<int32_t> corr32;
  std::vector<int64_t> corr64;
  bool narrow_corr = true;
  std::vector<UnsafeTail> unsafe;
  std::vector<int64_t> prod;
  int64_t prod_m0 = 0;
  std::vector<int32_t> xpairs;   // ExactProduct's input row pairs
  std::vector<int32_t> nonzero;  // and, per group of samples, the pairs not all zero
  AnalogCounts c;

  // tail_plan: the call's MakeTailPlan when the read-out is lossless (LosslessReadout with
  // packed int16 pairs), else null.
  Worker(const AnalogProblem& prob, const PackedAnalogWeights& packed, const TailPlan* tail_plan)
      : p(prob), pw(packed), plan(tail_plan), lossless(tail_plan != nullptr) {
    pd = p.dac_bits;
    pr = p.cell_bits;
    S = p.slices;
    cycles = InputCycles(p.x_bits, pd);
    ncp = p.n * p.polarities;
    blocks = (p.k + p.block - 1) / p.block;
    words = pw.words;
    arrays_per_block = (ncp * S + p.tile_cols - 1) / p.tile_cols;
    groups = SignificanceGroups(cycles, S, pd, pr);
    xplanes.resize(static_cast<size_t>(2 * p.x_bits * words));
    acc.resize(static_cast<size_t>(ncp));
    applied.resize(static_cast<size_t>(cycles));
    if (!lossless) {
      // Partial sums and draws of the converting paths (the lossless one needs none).
      ps.resize(static_cast<size_t>(cycles * S * ncp));
      psi.resize(static_cast<size_t>(cycles * S * ncp));
      z.resize(static_cast<size_t>(S * ncp));
      if (p.readout.dataflow == Dataflow::kC) z_nnsa.resize(static_cast<size_t>(cycles * ncp));
      if (p.readout.dataflow == Dataflow::kB) {
        z_lines.resize(groups.size() * static_cast<size_t>(ncp));
      }
    }
    // Worth it when the central draws span less than one code (most conversions then do not
    // depend on them); exact only for a linear transfer (INL's float steps need not be
    // monotone).
    const AdcTransfer& adc = p.readout.adc;
    const float zspan = GaussianFrom16(65535 - kGaussTail) - GaussianFrom16(kGaussTail);
    shortcut = !lossless && p.readout.dataflow == Dataflow::kA && adc.sigma != 0.0f &&
               adc.inl_k == 0.0f && adc.sigma * zspan * adc.inv_lsb < 1.0f;
    if (shortcut) {
      uni.resize(static_cast<size_t>(S * ncp));
      tails.resize(static_cast<size_t>(ncp + 16));
    }
    if (lossless && p.readout.adc.sigma != 0.0f) {
      gap_tables = std::make_unique<GapTables>(*plan);
      ars = std::make_unique<ArsKeys>(p.noise_key);
      ev_pos.resize(static_cast<size_t>(S * ncp + 16));
      ev_idx.resize(static_cast<size_t>(S * ncp));
      slice_of.resize(static_cast<size_t>(S * ncp));
      for (int q = 0; q < S; ++q) {
        std::fill(slice_of.begin() + q * ncp, slice_of.begin() + (q + 1) * ncp,
                  static_cast<uint8_t>(q));
      }
      // |corr| <= blocks * 2 phases * sum_j 2^(j pd) * top (a code moves by at most top).
      const double bound = static_cast<double>(blocks) * 2.0 * std::ldexp(1.0, p.x_bits + pd) *
                           (p.readout.adc.max_code + 1.0);
      narrow_corr = bound < 2147483647.0;
      if (narrow_corr) {
        corr32.assign(static_cast<size_t>(S * ncp), 0);
      } else {
        corr64.assign(static_cast<size_t>(S * ncp), 0);
      }
    }
  }

  // prod = x W for samples [m0, m1): int16 row pairs of x and of the levels, multiplied and
  // summed in int32 (VPDPWSSD with AVX-512 VNNI) over row chunks short enough not to overflow,
  // added up in int64. Exact, so equal to the sum of the lossless codes (docs/analog.md).
  // Loop order: per row chunk, the x pairs of all samples first; then per tile of 64 columns
  // all samples, 4 at a time, so the tile's weights (chunk x 64 pairs) stay in L2 instead of
  // streaming all weights once per 4 samples.
  void ExactProduct(int64_t m0, int64_t m1) {
    const int64_t rows = m1 - m0, rp = (p.k + 1) / 2, ncp = this->ncp;
    prod.assign(static_cast<size_t>(rows * ncp), 0);
    prod_m0 = m0;
    const int64_t xmax = (int64_t{1} << p.x_bits) - 1, wmax = (int64_t{1} << pw.bits) - 1;
    // Pairs per chunk: 2 * kcp * xmax * wmax < 2^31.
    const int64_t kcp = std::max<int64_t>(1, std::min<int64_t>(rp, INT32_MAX / (2 * xmax * wmax)));
    constexpr int kR = 4;  // sample rows per tile
    const int64_t rows_padded = (rows + kR - 1) / kR * kR;
    std::vector<int32_t>& xp = xpairs;  // xp[i * kcp + kk], rows past m1 zero
    xp.resize(static_cast<size_t>(rows_padded * kcp));
    const int16_t* wp = pw.pairs.data();
    for (int64_t k0 = 0; k0 < rp; k0 += kcp) {
      const int64_t kn = std::min(kcp, rp - k0);
      for (int64_t i = 0; i < rows_padded; ++i) {
        int32_t* o = xp.data() + i * kcp;
        if (i >= rows) {
          std::fill(o, o + kn, 0);
          continue;
        }
        const int32_t* xr = p.x + (m0 + i) * p.ldx;
        for (int64_t kk = 0; kk < kn; ++kk) {
          const int64_t r = 2 * (k0 + kk);
          const uint32_t lo = static_cast<uint16_t>(xr[r]);
          const uint32_t hi = r + 1 < p.k ? static_cast<uint16_t>(xr[r + 1]) : 0u;
          o[kk] = static_cast<int32_t>(lo | (hi << 16));
        }
      }
      int64_t c0 = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__)
      // Per group of kR samples, the row pairs where any of them is nonzero (count first): a
      // pair of zeros in all kR adds nothing (image borders, ReLU zeros), and the list serves
      // every column tile.
      nonzero.resize(static_cast<size_t>((rows_padded / kR) * (kcp + 1)));
      for (int64_t g = 0; g < rows_padded / kR; ++g) {
        int32_t* list = nonzero.data() + g * (kcp + 1);
        const int32_t* xg = xp.data() + g * kR * kcp;
        int32_t cnt = 0;
        for (int64_t kk = 0; kk < kn; ++kk) {
          int32_t any = 0;
          for (int i = 0; i < kR; ++i) any |= xg[i * kcp + kk];
          list[1 + cnt] = static_cast<int32_t>(kk);
          cnt += any != 0;
        }
        list[0] = cnt;
      }
      for (; c0 < ncp; c0 += 64) {
        __mmask16 cm[4];
        for (int v = 0; v < 4; ++v) {
          const int64_t left = std::clamp<int64_t>(ncp - c0 - 16 * v, 0, 16);
          cm[v] = static_cast<__mmask16>((1u << left) - 1);
        }
        for (int64_t r0 = 0; r0 < rows; r0 += kR) {
          const int64_t nr = std::min<int64_t>(kR, rows - r0);
          __m512i a[kR][4];
          for (int i = 0; i < kR; ++i) {
            for (int v = 0; v < 4; ++v) a[i][v] = _mm512_setzero_si512();
          }
          const int32_t* xr0 = xp.data() + r0 * kcp;
          const int32_t* const live = nonzero.data() + (r0 / kR) * (kcp + 1);
          for (int64_t li = 1; li <= live[0]; ++li) {
            const int64_t kk = live[li];
            const int16_t* wr = wp + ((k0 + kk) * ncp + c0) * 2;
            __m512i wv[4];
            for (int v = 0; v < 4; ++v) wv[v] = _mm512_maskz_loadu_epi32(cm[v], wr + 32 * v);
            for (int i = 0; i < kR; ++i) {
              const __m512i xb = _mm512_set1_epi32(xr0[i * kcp + kk]);
              for (int v = 0; v < 4; ++v) {
#if defined(__AVX512VNNI__)
                a[i][v] = _mm512_dpwssd_epi32(a[i][v], xb, wv[v]);
#else
                a[i][v] = _mm512_add_epi32(a[i][v], _mm512_madd_epi16(xb, wv[v]));
#endif
              }
            }
          }
          for (int i = 0; i < nr; ++i) {
            int64_t* o = prod.data() + (r0 + i) * ncp + c0;
            for (int v = 0; v < 4; ++v) {
              const __mmask8 ml = static_cast<__mmask8>(cm[v]), mh = static_cast<__mmask8>(cm[v] >> 8);
              int64_t* ov = o + 16 * v;
              const __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(a[i][v]));
              const __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(a[i][v], 1));
              _mm512_mask_storeu_epi64(ov, ml, _mm512_add_epi64(_mm512_maskz_loadu_epi64(ml, ov), lo));
              _mm512_mask_storeu_epi64(ov + 8, mh,
                                       _mm512_add_epi64(_mm512_maskz_loadu_epi64(mh, ov + 8), hi));
            }
          }
        }
      }
#endif
      for (int64_t i = 0; i < rows && c0 < ncp; ++i) {
        const int32_t* xi = xp.data() + i * kcp;
        int64_t* o = prod.data() + i * ncp;
        for (int64_t cp = c0; cp < ncp; ++cp) {
          int32_t sum = 0;
          for (int64_t kk = 0; kk < kn; ++kk) {
            const int16_t* w2 = wp + ((k0 + kk) * ncp + cp) * 2;
            sum += static_cast<int16_t>(xi[kk] & 0xFFFF) * w2[0] +
                   static_cast<int16_t>(static_cast<uint32_t>(xi[kk]) >> 16) * w2[1];
          }
          o[cp] += sum;
        }
      }
    }
  }


  // Lossless dataflow A, cycle j: no draw in [lo, hi) can move a code, so only the segment's
  // sparse-tail events (detail::SparseTails; ~4.5 % of the conversions at sigma = 1/4 LSB) are
  // converted, each from its own partial sum; code - partial sum, shifted by j pd, goes into
  // corr (folded into acc, the corrections to the exact product, at the end of the sample).
  void CorrectTails(int64_t m, int64_t b, int h, int j, int64_t sign) {
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
      clipped = simple && wn == 1 ? apply_simple(std::integral_constant<int, 1>{}, partial1)
                : simple          ? apply_simple(std::integral_constant<int, 2>{}, partial2)
                                  : ApplyTails(pos, idx, n, partial, etab, top, js, sgn, corrp, unsafe);
      clipped += fix_unsafe(corrp);
    }
    c.adc_clipped += clipped;
  }

  // The tail events of segment (m, b, h, j) into ev_pos / ev_idx: detail::SparseTailEvents'
  // walk, its words 64 at a time; with AVX-512 the walk 16 gap words at a time (a prefix sum of
  // their advances, the events' positions compressed out) and the events' indices 16 at a time.
  int64_t SparseTailEvents(int64_t m, int64_t b, int h, int j, int64_t len) {
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

  // Dataflow B's read-out (detail::ReadoutB's arithmetic): each buffer line the double sum of
  // its partial sums in the reference's order (applied cycles ascending, then slices), 4 columns
  // at a time, rounded to float; then the lines' conversions by TransferShiftAdd. Bit for bit
  // the reference's codes: the same double additions per column, the same float transfer.
  void ReadoutBFast(int64_t sign) {
    const AnalogReadout& ro = p.readout;
    const int64_t ncp = this->ncp, nl = static_cast<int64_t>(groups.size());
    line_x.resize(static_cast<size_t>(nl * ncp));
    std::vector<int64_t>& terms = line_terms;
    for (int64_t l = 0; l < nl; ++l) {
      const int s = groups[static_cast<size_t>(l)];
      terms.clear();
      for (int j = 0; j < cycles; ++j) {
        if (!applied[j]) continue;
        for (int q = 0; q < S; ++q) {
          if (j * pd + q * pr == s) terms.push_back((j * S + q) * ncp);
        }
      }
      float* out = line_x.data() + l * ncp;
      const float* src = ps.data();
      int64_t cp = 0;
      for (; cp + 4 <= ncp; cp += 4) {
        __m256d line = _mm256_setzero_pd();
        for (const int64_t t : terms) line = _mm256_add_pd(line, _mm256_cvtps_pd(_mm_loadu_ps(src + t + cp)));
        _mm_storeu_ps(out + cp, _mm256_cvtpd_ps(line));
      }
      for (; cp < ncp; ++cp) {
        double line = 0;
        for (const int64_t t : terms) line += src[t + cp];
        out[cp] = static_cast<float>(line);
      }
      c.adc_clipped += TransferShiftAdd(ro.adc, out, ro.adc.sigma != 0.0f ? z_lines.data() + l * ncp : nullptr,
                                        ncp, s, sign, acc.data());
    }
    c.adc_conversions += nl * ncp;
    c.sample_holds += nl * ncp;
    c.shift_adds += nl * ncp;
  }

  // Dataflow C's read-out (detail::ReadoutC) for the columns 8 (AVX-512) or 4 (AVX2) at a time:
  // the same double operations per column in the same order (no FMA), the conversion by the
  // scalar transfer's float steps. Returns the columns done; the caller finishes the rest.
  int64_t ReadoutC8(int64_t sign) {
    int64_t cp0 = 0;
#if defined(__AVX512F__)
    const AnalogReadout& ro = p.readout;
    const int64_t ncp = this->ncp;
    const __m512d feedback = _mm512_set1_pd(std::ldexp(1.0, -pd));
    const __m512d unscale = _mm512_set1_pd(std::ldexp(1.0, (cycles - 1) * pd));
    const __m512d nsig = _mm512_set1_pd(static_cast<double>(ro.nnsa_sigma));
    double weight[16];
    for (int q = 0; q < S; ++q) weight[q] = std::ldexp(1.0, q * pr);
    alignas(64) float xs[8];
    int64_t clipped = 0;
    for (; cp0 + 8 <= ncp; cp0 += 8) {
      __m512d v = _mm512_setzero_pd();
      for (int j = 0; j < cycles; ++j) {
        __m512d s = _mm512_setzero_pd();
        if (applied[j]) {
          for (int q = 0; q < S; ++q) {
            const __m512d pv = _mm512_cvtps_pd(_mm256_loadu_ps(ps.data() + (j * S + q) * ncp + cp0));
            s = _mm512_add_pd(s, _mm512_mul_pd(pv, _mm512_set1_pd(weight[q])));
          }
        }
        v = _mm512_add_pd(_mm512_mul_pd(v, feedback), s);
        if (ro.nnsa_sigma != 0.0f) {
          const __m512d zv = _mm512_cvtps_pd(_mm256_loadu_ps(z_nnsa.data() + j * ncp + cp0));
          v = _mm512_add_pd(v, _mm512_mul_pd(nsig, zv));
        }
      }
      _mm256_store_ps(xs, _mm512_cvtpd_ps(_mm512_mul_pd(v, unscale)));
      for (int l = 0; l < 8; ++l) {
        const float zl = ro.adc.sigma != 0.0f ? z[static_cast<size_t>(cp0 + l)] : 0.0f;
        const AdcTransfer::Result r = ro.adc.Convert(xs[l], zl);
        acc[static_cast<size_t>(cp0 + l)] += sign * static_cast<int64_t>(r.code);
        clipped += r.clipped;
      }
    }
    c.adc_clipped += clipped;
    c.analog_accumulations += cycles * cp0;
    c.sample_holds += cycles * cp0;
    c.adc_conversions += cp0;
    c.shift_adds += cp0;
#else
    // AVX2: 4 columns per step, the same double operations (no FMA) in the same order.
    const AnalogReadout& ro = p.readout;
    const int64_t ncp = this->ncp;
    const __m256d feedback = _mm256_set1_pd(std::ldexp(1.0, -pd));
    const __m256d unscale = _mm256_set1_pd(std::ldexp(1.0, (cycles - 1) * pd));
    const __m256d nsig = _mm256_set1_pd(static_cast<double>(ro.nnsa_sigma));
    __m256d weight[16];
    for (int q = 0; q < S; ++q) weight[q] = _mm256_set1_pd(std::ldexp(1.0, q * pr));
    line_x.resize(static_cast<size_t>(ncp));
    float* const xs = line_x.data();
    for (; cp0 + 4 <= ncp; cp0 += 4) {
      __m256d v = _mm256_setzero_pd();
      for (int j = 0; j < cycles; ++j) {
        __m256d s = _mm256_setzero_pd();
        if (applied[j]) {
          for (int q = 0; q < S; ++q) {
            const __m256d pv = _mm256_cvtps_pd(_mm_loadu_ps(ps.data() + (j * S + q) * ncp + cp0));
            s = _mm256_add_pd(s, _mm256_mul_pd(pv, weight[q]));
          }
        }
        v = _mm256_add_pd(_mm256_mul_pd(v, feedback), s);
        if (ro.nnsa_sigma != 0.0f) {
          const __m256d zv = _mm256_cvtps_pd(_mm_loadu_ps(z_nnsa.data() + j * ncp + cp0));
          v = _mm256_add_pd(v, _mm256_mul_pd(nsig, zv));
        }
      }
      _mm_storeu_ps(xs + cp0, _mm256_cvtpd_ps(_mm256_mul_pd(v, unscale)));
    }
    c.adc_clipped += TransferShiftAdd(ro.adc, xs, ro.adc.sigma != 0.0f ? z.data() : nullptr, cp0,
                                      0, sign, acc.data());
    c.analog_accumulations += cycles * cp0;
    c.sample_holds += cycles * cp0;
    c.adc_conversions += cp0;
    c.shift_adds += cp0;
#endif
    return cp0;
  }

  const uint64_t* XPlane(int h, int t) const { return xplanes.data() + (h * p.x_bits + t) * words; }

  // Bit planes of the block's positive (h = 0) and negative (h = 1) magnitudes.
  void BuildPlanes(const int32_t* xm, int64_t r0, int64_t r1) {
    std::fill(xplanes.begin(), xplanes.end(), 0);
#if defined(__AVX512F__) && defined(__AVX512BW__)
    if (p.x_bits <= 8) {
      // 64 rows at a time: the positive parts and the negative magnitudes as bytes, one
      // byte-wise bit test per plane. Out-of-range inputs go to the scalar loop's error.
      const __m512i lim = _mm512_set1_epi32((1 << p.x_bits) - 1);
      const __m512i zero = _mm512_setzero_si512();
      bool ok = true;
      for (int64_t w = 0; w * 64 < r1 - r0 && ok; ++w) {
        const int64_t rs = r0 + w * 64, n = std::min<int64_t>(64, r1 - rs);
        __m128i p8[4], n8[4];
        __mmask16 bad = 0;
        for (int part = 0; part < 4; ++part) {
          const int64_t left = std::clamp<int64_t>(n - 16 * part, 0, 16);
          const __mmask16 live = static_cast<__mmask16>((1u << left) - 1);
          const __m512i v = _mm512_maskz_loadu_epi32(live, xm + rs + 16 * part);
          const __m512i pv = _mm512_max_epi32(v, zero);
          const __m512i nv = _mm512_max_epi32(_mm512_sub_epi32(zero, v), zero);
          bad |= _mm512_cmpgt_epi32_mask(_mm512_abs_epi32(v), lim);
          if (!p.signed_inputs) bad |= _mm512_cmplt_epi32_mask(v, zero);
          p8[part] = _mm512_cvtepi32_epi8(pv);
          n8[part] = _mm512_cvtepi32_epi8(nv);
        }
        auto join = [&](const __m128i* q) {
          __m512i v = _mm512_castsi128_si512(q[0]);
          v = _mm512_inserti32x4(v, q[1], 1);
          v = _mm512_inserti32x4(v, q[2], 2);
          return _mm512_inserti32x4(v, q[3], 3);
        };
        const __m512i pos8 = join(p8), neg8 = join(n8);
        if (bad != 0) {
          ok = false;
          break;
        }
        for (int t = 0; t < p.x_bits; ++t) {
          const __m512i bit = _mm512_set1_epi8(static_cast<char>(1 << t));
          xplanes[static_cast<size_t>(t * words + w)] = _mm512_test_epi8_mask(pos8, bit);
          xplanes[static_cast<size_t>((p.x_bits + t) * words + w)] =
              _mm512_test_epi8_mask(neg8, bit);
        }
      }
      if (ok) return;
      std::fill(xplanes.begin(), xplanes.end(), 0);
    }
#endif
    for (int64_t r = r0; r < r1; ++r) {
      const int32_t v = xm[r];
      if (v == 0) continue;
      const int h = v > 0 ? 0 : 1;
      PIM_CHECK_MSG(h == 0 || p.signed_inputs, "analog input out of range");
      uint32_t a = static_cast<uint32_t>(v > 0 ? v : -v);
      PIM_CHECK_MSG(a < (1u << p.x_bits), "analog input out of range");
      const int64_t word = (r - r0) >> 6;
      const uint64_t bit = uint64_t{1} << ((r - r0) & 63);
      while (a != 0) {
        const int t = __builtin_ctz(a);
        a &= a - 1;
        xplanes[static_cast<size_t>((h * p.x_bits + t) * words + word)] |= bit;
      }
    }
  }

  // Partial sums of cycle j (phase h, block b) into psi[(j*S + q)*ncp + cp] from the planes:
  // the block's first wn words (W > 0: wn = W, known at compile time) of each plane.
  template <int W>
  void PopcountSums(int64_t b, int h, int j, int64_t wn) {
    const uint64_t* xp[8];
    int na = 0;
    for (int a = 0; a < pd; ++a) {
      const int t = j * pd + a;
      xp[a] = t < p.x_bits ? XPlane(h, t) : nullptr;
      na = xp[a] != nullptr ? a + 1 : na;
    }
    const int64_t nw = W > 0 ? W : wn;
    const int64_t stride = words;  // words per column in the packed planes
    const int64_t ncp = this->ncp;  // a local: the vector stores below may alias members
    for (int q = 0; q < S; ++q) {
      if (pd == 1 && pr == 1) {
        const uint64_t* x0 = xp[0];
        const uint64_t* wp = pw.Plane(b, q, 0);
        // Integer counts; converted to float by the read-out (scalar stores followed at once by
        // a vector load of the same bytes would stall on store forwarding).
        int32_t* iout = psi.data() + (j * S + q) * ncp;
        int64_t cp = 0;
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
        if (W == 2 && stride == 2) {
          // Eight columns (16 words) per step: AND with the input words, popcount, add each
          // column's two words.
          const __m512i xv = _mm512_broadcast_i64x2(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(x0)));
          const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
          const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
          for (; cp + 8 <= ncp; cp += 8) {
            const uint64_t* wc = wp + cp * 2;
            const __m512i a = _mm512_popcnt_epi64(_mm512_and_si512(xv, _mm512_loadu_si512(wc)));
            const __m512i c = _mm512_popcnt_epi64(_mm512_and_si512(xv, _mm512_loadu_si512(wc + 8)));
            const __m512i sum = _mm512_add_epi64(_mm512_permutex2var_epi64(a, even, c),
                                                 _mm512_permutex2var_epi64(a, odd, c));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(iout + cp), _mm512_cvtepi64_epi32(sum));
          }
        } else if (W == 1 && stride == 1) {
          const __m512i xv = _mm512_set1_epi64(static_cast<long long>(x0[0]));
          for (; cp + 8 <= ncp; cp += 8) {
            const __m512i wv = _mm512_loadu_si512(wp + cp);
            const __m512i cnt = _mm512_popcnt_epi64(_mm512_and_si512(xv, wv));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(iout + cp), _mm512_cvtepi64_epi32(cnt));
          }
        }
#endif
        for (; cp < ncp; ++cp) {
          const uint64_t* wc = wp + cp * stride;
          int32_t s = 0;
          for (int64_t w = 0; w < nw; ++w) {
            s += static_cast<int32_t>(__builtin_popcountll(x0[w] & wc[w]));
          }
          iout[cp] = s;
        }
        continue;
      }
      int32_t* iout = psi.data() + (j * S + q) * ncp;
      int64_t cp0 = 0;
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
      // Multi-bit DACs or cells: the same AND + popcount per (DAC bit a, cell bit bb) pair on 8
      // columns at a time, shifted by a + bb and summed (exact integers, any order).
      if ((W == 1 || W == 2) && stride == W) {
        const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
        const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
        for (; cp0 + 8 <= ncp; cp0 += 8) {
          __m512i sum = _mm512_setzero_si512();
          for (int a = 0; a < na; ++a) {
            if (xp[a] == nullptr) continue;
            const __m512i xv = W == 2 ? _mm512_broadcast_i64x2(_mm_loadu_si128(
                                            reinterpret_cast<const __m128i*>(xp[a])))
                                      : _mm512_set1_epi64(static_cast<long long>(xp[a][0]));
            for (int bb = 0; bb < pr; ++bb) {
              const uint64_t* wc = pw.Plane(b, q * pr + bb, cp0);
              __m512i cnt;
              if (W == 2) {
                const __m512i lo = _mm512_popcnt_epi64(_mm512_and_si512(xv, _mm512_loadu_si512(wc)));
                const __m512i hi =
                    _mm512_popcnt_epi64(_mm512_and_si512(xv, _mm512_loadu_si512(wc + 8)));
                cnt = _mm512_add_epi64(_mm512_permutex2var_epi64(lo, even, hi),
                                       _mm512_permutex2var_epi64(lo, odd, hi));
              } else {
                cnt = _mm512_popcnt_epi64(_mm512_and_si512(xv, _mm512_loadu_si512(wc)));
              }
              sum = _mm512_add_epi64(sum, _mm512_slli_epi64(cnt, static_cast<unsigned>(a + bb)));
            }
          }
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(iout + cp0), _mm512_cvtepi64_epi32(sum));
        }
      }
#endif
      for (int64_t cp = cp0; cp < ncp; ++cp) {
        int64_t s = 0;
        for (int a = 0; a < na; ++a) {
          if (xp[a] == nullptr) continue;
          for (int bb = 0; bb < pr; ++bb) {
            const uint64_t* wc = pw.Plane(b, q * pr + bb, cp);
            int64_t cnt = 0;
            for (int64_t w = 0; w < nw; ++w) cnt += __builtin_popcountll(xp[a][w] & wc[w]);
            s += cnt << (a + bb);
          }
        }
        iout[cp] = static_cast<int32_t>(s);
      }
    }
  }

  // Partial sums from per-cell conductances: word line after word line, as the reference.
  void ConductanceSums(const int32_t* xm, int64_t r0, int64_t r1, int h, int j) {
    const int32_t dmask = (1 << pd) - 1;
    for (int q = 0; q < S; ++q) {
      float* out = ps.data() + (j * S + q) * ncp;
      std::fill(out, out + ncp, 0.0f);
    }
    for (int64_t r = r0; r < r1; ++r) {
      const int32_t part = h == 0 ? std::max(xm[r], 0) : std::max(-xm[r], 0);
      const int32_t ch = (part >> (j * pd)) & dmask;
      if (ch == 0) continue;
      const float xf = static_cast<float>(ch);
      for (int q = 0; q < S; ++q) {
        float* out = ps.data() + (j * S + q) * ncp;
        const float* g = p.conductance + (r * S + q) * ncp;
        for (int64_t cp = 0; cp < ncp; ++cp) out[cp] += xf * g[cp];
      }
    }
  }

#if defined(__AVX512F__) && defined(__AVX512DQ__)
  // Dataflow A with small noise and a linear ADC, exactly: the code is a monotone function of the
  // draw z (every float step is), so when the central region's extreme draws zlo, zhi give the
  // same code and clipping side, every central draw does, and its inverse CDF need not be
  // evaluated. Lanes where they differ get the full rational; tail draws (~5 %) are listed and
  // converted after the slice's vector loop, 16 at a time, with the quantile table's z. With
  // integer partial sums, one code per unit and every central draw moving the input by less
  // than half a code (rounding included), the code is clamp(v, 0, M) and clipping is v > M: no
  // float step at all. Same results as ConvertA.
  void ConvertAShortcut(int64_t m, int64_t b, int h, int j, int64_t sign, bool integer) {
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
            if ((refined >> l) & 1) zs[l] = draw(hs16[l], first + static_cast<uint64_t>(q * ncp) + cs16[l]);
          }
          z = _mm512_load_ps(zs);
        }
        __mmask16 bz, az;
        const __m512i code = _mm512_maskz_mov_epi32(live, convert(x, z, &bz, &az));
        clipped += __builtin_popcount(static_cast<unsigned>((bz | az) & live));
        __m512i lo, hi;
        ShiftedHalves(code, wshift, &lo, &hi);
        const __m256i cl = _mm512_castsi512_si256(cols);
        const __m256i ch = _mm512_extracti64x4_epi64(cols, 1);
        const __mmask8 ml = static_cast<__mmask8>(live), mh = static_cast<__mmask8>(live >> 8);
        const __m512i a0v = _mm512_mask_i32gather_epi64(_mm512_setzero_si512(), ml, cl, accp, 8);
        const __m512i a1v = _mm512_mask_i32gather_epi64(_mm512_setzero_si512(), mh, ch, accp, 8);
        _mm512_mask_i32scatter_epi64(accp, ml, cl,
                                     sign > 0 ? _mm512_add_epi64(a0v, lo) : _mm512_sub_epi64(a0v, lo), 8);
        _mm512_mask_i32scatter_epi64(accp, mh, ch,
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

  // Dataflow A read-out of cycle j: noise -> ADC -> shift -> accumulate, 8 conversions at a time.
  void ConvertA(int64_t m, int64_t b, int h, int j, int64_t sign, bool integer) {
    const AdcTransfer& adc = p.readout.adc;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    if (shortcut) {
      ConvertAShortcut(m, b, h, j, sign, integer);
      return;
    }
#endif
    const int64_t ncp = this->ncp;  // locals: the vector stores below may alias members
    int64_t* const accp = acc.data();
    const int64_t len = S * ncp;
    const bool noisy = adc.sigma != 0.0f;
    if (noisy) {
      FillNormals(p.noise_key, kNoiseStreamA,
                  detail::NoiseIndex(m, blocks, b, h, cycles, j, len, 0), len, z.data());
    }
    const float* src = ps.data() + j * len;
    const int32_t* isrc = psi.data() + j * len;
    const __m256 vsigma = _mm256_set1_ps(adc.sigma), vinv = _mm256_set1_ps(adc.inv_lsb);
    const __m256 vmax = _mm256_set1_ps(adc.max_code), vzero = _mm256_setzero_ps();
    const __m256 vlo = _mm256_set1_ps(-0.5f), vhi = _mm256_set1_ps(adc.max_code + 0.5f);
    const __m256 vk = _mm256_set1_ps(adc.inl_k);
    const bool inl = adc.inl_k != 0.0f;
    int64_t clipped = 0;
    for (int q = 0; q < S; ++q) {
      const float* v = src + q * ncp;
      const int32_t* iv = isrc + q * ncp;
      const float* zq = z.data() + q * ncp;
      const int shift = j * pd + q * pr;
      const __m128i vshift = _mm_cvtsi32_si128(shift);
      int64_t cp = 0;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
      // Sixteen conversions per step: the same float operations as the 8-lane loop below.
      {
        const __m512 wsigma = _mm512_set1_ps(adc.sigma), winv = _mm512_set1_ps(adc.inv_lsb);
        const __m512 wmax = _mm512_set1_ps(adc.max_code), wzero = _mm512_setzero_ps();
        const __m512 wlo = _mm512_set1_ps(-0.5f), whi = _mm512_set1_ps(adc.max_code + 0.5f);
        const __m512 wk = _mm512_set1_ps(adc.inl_k);
        const __m128i wshift = _mm_cvtsi32_si128(shift);
        for (; cp + 16 <= ncp; cp += 16) {
          __m512 x = integer ? _mm512_cvtepi32_ps(_mm512_loadu_si512(iv + cp))
                             : _mm512_loadu_ps(v + cp);
          if (noisy) x = _mm512_add_ps(x, _mm512_mul_ps(wsigma, _mm512_loadu_ps(zq + cp)));
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
          const __m512i code = _mm512_cvtps_epi32(cf);
          AddShifted16(accp + cp, code, wshift, sign);
        }
      }
#endif
      for (; cp + 8 <= ncp; cp += 8) {
        __m256 x = integer ? _mm256_cvtepi32_ps(_mm256_loadu_si256(
                                 reinterpret_cast<const __m256i*>(iv + cp)))
                           : _mm256_loadu_ps(v + cp);
        if (noisy) x = _mm256_add_ps(x, _mm256_mul_ps(vsigma, _mm256_loadu_ps(zq + cp)));
        const __m256 t = _mm256_mul_ps(x, vinv);
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
        __m256i lo = _mm256_sll_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(code)), vshift);
        __m256i hi =
            _mm256_sll_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(code, 1)), vshift);
        __m256i* a = reinterpret_cast<__m256i*>(accp + cp);
        const __m256i a0 = _mm256_loadu_si256(a), a1 = _mm256_loadu_si256(a + 1);
        if (sign > 0) {
          _mm256_storeu_si256(a, _mm256_add_epi64(a0, lo));
          _mm256_storeu_si256(a + 1, _mm256_add_epi64(a1, hi));
        } else {
          _mm256_storeu_si256(a, _mm256_sub_epi64(a0, lo));
          _mm256_storeu_si256(a + 1, _mm256_sub_epi64(a1, hi));
        }
      }
      for (; cp < ncp; ++cp) {
        const float x = integer ? static_cast<float>(iv[cp]) : v[cp];
        const AdcTransfer::Result r = adc.Convert(x, noisy ? zq[cp] : 0.0f);
        accp[cp] += sign * (static_cast<int64_t>(r.code) << shift);
        clipped += r.clipped;
      }
    }
    c.adc_clipped += clipped;
    c.adc_conversions += len;
    c.sample_holds += len;
    c.shift_adds += len;
  }

  void Sample(int64_t m) {
    const int32_t* xm = p.x + m * p.ldx;
    std::fill(acc.begin(), acc.end(), 0);
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t r0 = b * p.block, r1 = std::min(p.k, r0 + p.block), rows = r1 - r0;
      c.input_buffer_reads += rows * arrays_per_block;
      BuildPlanes(xm, r0, r1);
      const int64_t wn = (rows + 63) / 64;  // words holding this block's rows
      for (int h = 0; h < (p.signed_inputs ? 2 : 1); ++h) {
        const int64_t sign = h == 0 ? 1 : -1;
        bool phase_applied = false;
        for (int j = 0; j < cycles; ++j) {
          // Word lines driven in this cycle: rows whose chunk is nonzero.
          int64_t nonzero = 0;
          for (int64_t w = 0; w < wn; ++w) {
            uint64_t any = 0;
            for (int a = 0; a < pd; ++a) {
              const int t = j * pd + a;
              if (t < p.x_bits) any |= XPlane(h, t)[w];
            }
            nonzero += __builtin_popcountll(any);
          }
          applied[j] = nonzero > 0 || !p.skip_zero_cycles;
          const int64_t reads = arrays_per_block * p.reads_per_cycle;
          if (!applied[j]) {
            c.skipped_input_cycles += reads;
            continue;
          }
          phase_applied = true;
          c.input_cycles += reads;
          c.dac_conversions += rows * reads;
          c.cell_reads += nonzero * ncp * S;
          if (lossless) {
            // The codes' sum is in prod; only the noise's tail draws change it (dataflow A).
            const int64_t len = S * ncp;
            if (p.readout.dataflow == Dataflow::kA) {
              // No draw can move a code when the tails' e are all 0 (sigma below ~0.116 LSB:
              // the 16-bit quantiles end at 4.3 sigma): nothing to look at.
              if (p.readout.adc.sigma != 0.0f && plan->tails > 0) {
                CorrectTails(m, b, h, j, sign);
              }
              c.adc_conversions += len;
              c.sample_holds += len;
              c.shift_adds += len;
            } else {
              c.analog_buffer_writes += len;  // B: every partial sum into the analog buffer
            }
            continue;
          }
          if (p.conductance != nullptr) {
            ConductanceSums(xm, r0, r1, h, j);
          } else if (words == 1) {
            PopcountSums<1>(b, h, j, 1);
          } else if (words == 2) {
            // A short last block's padding words are zero in both operands.
            PopcountSums<2>(b, h, j, 2);
          } else {
            PopcountSums<0>(b, h, j, wn);
          }
          const bool integer = p.conductance == nullptr;
          if (p.readout.dataflow == Dataflow::kA) {
            ConvertA(m, b, h, j, sign, integer);
          } else if (integer) {
            const int64_t len = S * ncp;
            for (int64_t i = 0; i < len; ++i) {
              ps[j * len + i] = static_cast<float>(psi[j * len + i]);
            }
          }
          if (p.readout.dataflow == Dataflow::kB) c.analog_buffer_writes += S * ncp;
        }
        if (!phase_applied) continue;
        if (lossless) {
          if (p.readout.dataflow == Dataflow::kB) {
            // B converts each buffer line of each column once per applied phase.
            const int64_t lines = static_cast<int64_t>(groups.size()) * ncp;
            c.adc_conversions += lines;
            c.sample_holds += lines;
            c.shift_adds += lines;
          }
          continue;
        }
        if (p.readout.dataflow == Dataflow::kB) {
          const int64_t nl = static_cast<int64_t>(groups.size());
          if (p.readout.adc.sigma != 0.0f) {
            FillNormals(p.noise_key, kNoiseStreamB,
                        detail::NoiseIndex(m, blocks, b, h, nl, 0, ncp, 0), nl * ncp,
                        z_lines.data());
          }
          ReadoutBFast(sign);
        } else if (p.readout.dataflow == Dataflow::kC) {
          if (p.readout.nnsa_sigma != 0.0f) {
            FillNormals(p.noise_key, kNoiseStreamNnsa,
                        detail::NoiseIndex(m, blocks, b, h, cycles, 0, ncp, 0), cycles * ncp,
                        z_nnsa.data());
          }
          if (p.readout.adc.sigma != 0.0f) {
            FillNormals(p.noise_key, kNoiseStreamNnadc,
                        detail::NoiseIndex(m, blocks, b, h, 1, 0, ncp, 0), ncp, z.data());
          }
          const int64_t done = ReadoutC8(sign);
          detail::ReadoutC(ps.data(), applied.data(), cycles, S, ncp, pd, pr, p.readout,
                           z_nnsa.data(), z.data(), sign, acc.data(), c, done);
        }
      }
    }
    int64_t* y = p.y + m * p.ldy;
    if (lossless) {
      // Locals, not members: stores through a and cq could otherwise alias this->ncp, and the
      // loops would reload it every element instead of vectorizing.
      const int64_t n_cp = ncp;
      int64_t* __restrict a = acc.data();
      auto fold = [&](auto& corr) {
        if (corr.empty()) return;
        // acc[cp] += sum_q corr[q ncp + cp] << q pr; corr back to zero.
        for (int q = 0; q < S; ++q) {
          auto* __restrict cq = corr.data() + q * n_cp;
          const int sh = q * pr;
          for (int64_t cp = 0; cp < n_cp; ++cp) a[cp] += static_cast<int64_t>(cq[cp]) << sh;
          std::fill(cq, cq + n_cp, 0);
        }
      };
      fold(corr32);
      fold(corr64);
      const int64_t* __restrict pr_m = prod.data() + (m - prod_m0) * n_cp;
      for (int64_t cp = 0; cp < n_cp; ++cp) a[cp] += pr_m[cp];
    }
    if (p.polarities == 1) {
      std::copy(acc.begin(), acc.begin() + p.n, y);
    } else {
      for (int64_t col = 0; col < p.n; ++col) y[col] = acc[col * 2] - acc[col * 2 + 1];
    }
  }
};

}  // namespace


void AnalogMatMul(const AnalogProblem& p, const PackedAnalogWeights* packed, AnalogCounts& counts,
                  ThreadPool* pool) {
  PIM_CHECK(p.m >= 0 && p.k >= 0 && p.n >= 0 && p.block >= 1 && p.tile_cols >= 1);
  PIM_CHECK(p.x_bits >= 1 && p.x_bits <= 16 && p.dac_bits >= 1 && p.dac_bits <= 8);
  PIM_CHECK(p.cell_bits >= 1 && p.cell_bits <= 4 && p.slices >= 1 &&
            p.slices * p.cell_bits <= 16 && (p.polarities == 1 || p.polarities == 2));
  PackedAnalogWeights local;
  if (packed == nullptr) {
    PackWeights(p, local, pool);
    packed = &local;
  }
  PIM_CHECK_MSG(packed->k == p.k && packed->ncp == p.n * p.polarities && packed->block == p.block &&
                    packed->bits == p.slices * p.cell_bits,
                "packed analog weights do not match the problem");
  const int64_t ncp = p.n * p.polarities;
  const int64_t blocks = (p.k + p.block - 1) / p.block;
  // Work per sample ~ conversions; chunks of whole samples.
  const int64_t per_sample = std::max<int64_t>(1, blocks * ncp * p.slices * 4);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / per_sample);
  // The plan depends on sigma, M and vmax only: kept from the caller thread's last call.
  // The plan depends on sigma, M and vmax only: the caller thread keeps the last few (a
  // network's layers and directions alternate between several).
  struct CachedPlan {
    std::array<double, 3> key;
    std::unique_ptr<TailPlan> plan;
  };
  thread_local std::vector<CachedPlan> plans;
  const bool lossless = LosslessReadout(p) && !packed->pairs.empty();
  const TailPlan* plan = nullptr;
  if (lossless) {
    static const TailPlan kNoTails;  // no noise: no sparse tails are drawn
    plan = &kNoTails;
  }
  if (lossless && p.readout.adc.sigma != 0.0f) {
    const double vmax = detail::MaxPartialSum(p);
    const std::array<double, 3> key = {p.readout.adc.sigma, p.readout.adc.max_code, vmax};
    auto it = std::find_if(plans.begin(), plans.end(),
                           [&](const CachedPlan& c) { return c.key == key; });
    if (it == plans.end()) {
      constexpr size_t kMaxPlans = 16;
      if (plans.size() == kMaxPlans) plans.erase(plans.begin());
      plans.push_back({key, std::make_unique<TailPlan>(detail::MakeTailPlan(p.readout.adc, vmax))});
      it = plans.end() - 1;
    }
    plan = it->plan.get();
  }
  auto run = [&](int64_t m0, int64_t m1) {
    Worker wk(p, *packed, plan);
    if (wk.lossless) wk.ExactProduct(m0, m1);
    for (int64_t m = m0; m < m1; ++m) wk.Sample(m);
    return wk.c;
  };
  AnalogCounts total;
  if (pool == nullptr || p.m <= grain) {
    total = run(0, p.m);
  } else {
    std::mutex mu;
    pool->ParallelFor(p.m, grain, [&](int64_t m0, int64_t m1) {
      AnalogCounts part = run(m0, m1);
      std::lock_guard<std::mutex> lock(mu);
      total += part;  // integer sums: the order of the chunks does not change them
    });
  }
  total.tile_accumulations = p.m * p.n * std::max<int64_t>(blocks - 1, 0);
  total.output_buffer_writes = p.m * p.n;
  total.macs = p.m * p.k * p.n;
  counts = total;
}

}  // namespace pim::kernels::fast
