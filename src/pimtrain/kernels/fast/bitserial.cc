// Fast bit-serial PIM multiply: the digital adder trees and shift-adds are exact, so the result
// is one exact integer GEMM (int16 slices: whole operands where they fit, byte slices where
// needed; vpmaddwd, int32 blocks sized to stay exact, int64 combine); the action counts follow
// from operand statistics (docs/numerics.md, "Counting model").
#include "pimtrain/kernels/bitserial.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <vector>

#include "pimtrain/base/error.h"

// GCC 12 flags the AVX-512 intrinsics' internal _mm512_undefined_* operands (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace pim::kernels::fast {
namespace {

// With AVX-512 (BW and DQ for the 512-bit integer ops and conversions, VNNI for vpdpwssd) the
// micro-kernel works on zmm registers: on a core with full-width 512-bit units that doubles the
// multiply-accumulates per instruction, and there are 32 registers. A column panel stays
// kNr = 16 int32 wide (one zmm per row), so the packed layouts are the same on both paths; the
// zmm kernel takes two adjacent panels at once (16 accumulators for kMr = 8 rows, the 2 B
// vectors loaded once per pair row for 8 rows of broadcasts). The AVX2 path keeps 6 rows x 2 ymm
// (12 of 16 ymm registers).
#if defined(__AVX512BW__) && defined(__AVX512DQ__) && defined(__AVX512VNNI__)
#define PIM_BITSERIAL_ZMM 1
constexpr int kMr = 8;
#else
constexpr int kMr = 6;
#endif
constexpr int kNr = 16;
// With AVX-512 masked loads the last, ragged column panel is packed by the vector code too: the
// columns past n load as zeros, which is exactly the padding the scalar path writes (a zero is in
// range, and a panel's nonzeros are still kNr minus its zeros).
#if defined(PIM_BITSERIAL_ZMM) && defined(__AVX512VL__)
#define PIM_BITSERIAL_MASKED_TAIL 1
#endif
// Whether column panel `panel` (of n columns) is packed by the vector paths of PackB.
inline bool VectorPanel(int64_t panel, int64_t n) {
#if defined(PIM_BITSERIAL_MASKED_TAIL)
  return panel * kNr < n;
#else
  return (panel + 1) * kNr <= n;
#endif
}
// Largest reduction block (a kMc x kKc int16 block of A stays in L2, as does a kKc x kNg*kNr
// block of B). The block of one problem, kc <= kKc, is set by its slice scheme (below) so that
// the int32 accumulators of one block are exact; blocks are combined in int64. 1024 keeps both
// blocks within a few hundred KiB of L2 and lets a 784-long 8b x 8b reduction (the MLP's first
// layer) finish in one block: its results go straight to float, with no int64 partial sums.
constexpr int64_t kKc = 1024;
// At most kMc rows of A per task (a kMc x kKc int16 block stays in L2 while the column panels
// stream past it).
constexpr int64_t kMc = 96;
static_assert(kMc % kMr == 0);
// Products of fewer multiply-accumulates run on one thread.
constexpr int64_t kSerialMacs = int64_t{1} << 20;
// At most kNg column panels per task (kKc x kNg*kNr int16 of B, in L2).
constexpr int64_t kNg = 8;

// How the operands enter the int16 GEMM. An operand is either whole (one int16 slice: its
// values fit int16, i.e. signed <= 16 bits or unsigned <= 15 bits) or split into two byte
// slices, v = hi * 2^8 + lo with lo = v & 0xFF in [0, 255] and hi = v >> 8 (arithmetic), as the
// hardware splits wide words into byte slices (every byte slice lies in [-128, 255]). Each slice
// pair is one GEMM pass. With |x slice| <= Mx and |w slice| <= Mw, a vpmaddwd pair sum is at
// most 2 Mx Mw and the int32 sum of a block of kc elements at most kc Mx Mw: kc is the largest
// even number (<= kKc) that keeps this below 2^31. The scheme with the fewest passes whose kc
// is at least min(kMinKc, k) wins: 8b x 8b and 16b x 8b are one pass, 16b x 16b two.
constexpr int64_t kMinKc = 256;
constexpr int64_t kInt32Max = (int64_t{1} << 31) - 1;

struct SliceScheme {
  int xs = 1, ws = 1;  // slices of X and W (1: whole, 2: bytes)
  int64_t kc = kKc;    // reduction block (even)
};

// The largest magnitude of an operand's slices: whole (`split` false) or byte slices.
inline int64_t SliceMagnitude(int bits, Signedness sign, bool split) {
  if (split) return 255;
  return sign == Signedness::kSigned ? int64_t{1} << (bits - 1) : (int64_t{1} << bits) - 1;
}
inline bool CanBeWhole(int bits, Signedness sign) {
  return sign == Signedness::kSigned ? bits <= 16 : bits <= 15;
}

SliceScheme ChooseSlices(const BitSerialProblem& p) {
  const int64_t k_even = std::max<int64_t>(2, (p.k + 1) / 2 * 2);
  const int64_t need = std::min(kMinKc, k_even);
  SliceScheme best;
  int best_passes = 0;
  for (int xsplit = 0; xsplit < 2; ++xsplit) {
    for (int wsplit = 0; wsplit < 2; ++wsplit) {
      if ((xsplit != 0 && p.x.bits <= 8) || (wsplit != 0 && p.w.bits <= 8)) continue;
      if ((xsplit == 0 && !CanBeWhole(p.x.bits, p.x.sign)) ||
          (wsplit == 0 && !CanBeWhole(p.w.bits, p.w.sign))) {
        continue;
      }
      const int64_t prod = SliceMagnitude(p.x.bits, p.x.sign, xsplit != 0) *
                           SliceMagnitude(p.w.bits, p.w.sign, wsplit != 0);
      if (2 * prod > kInt32Max) continue;  // a single vpmaddwd pair sum would overflow
      const int64_t kc = std::min(kKc, kInt32Max / prod / 2 * 2);
      const int passes = (1 + xsplit) * (1 + wsplit);
      if (kc < need && !(xsplit && wsplit)) continue;  // bytes x bytes always fit (kc = kKc)
      if (best_passes == 0 || passes < best_passes ||
          (passes == best_passes && kc > best.kc)) {
        best = {1 + xsplit, 1 + wsplit, kc};
        best_passes = passes;
      }
    }
  }
  return best;
}
static_assert(255 * 255 * kKc <= kInt32Max, "byte slices x byte slices: kc = kKc is exact");

// Slice `slice` of v under an operand's slice count (1: v itself).
inline int32_t Slice(int32_t v, int slice, int num_slices) {
  if (num_slices == 1) return v;
  return slice == 0 ? (v & 0xFF) : (v >> 8);
}
inline uint32_t PackPair(int32_t lo, int32_t hi) {
  return (static_cast<uint32_t>(lo) & 0xFFFFu) | (static_cast<uint32_t>(hi) << 16);
}

template <class T>
struct AlignedDelete {
  void operator()(T* p) const { std::free(p); }
};
template <class T>
using AlignedArray = std::unique_ptr<T[], AlignedDelete<T>>;
template <class T>
AlignedArray<T> AllocAligned(int64_t n) {
  size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T);
  bytes = (bytes + 63) / 64 * 64;
  return AlignedArray<T>(static_cast<T*>(std::aligned_alloc(64, bytes)));
}

// --- Operand statistics -----------------------------------------------------------------------

inline uint32_t HorizontalOr(__m256i v) {
  __m128i x = _mm_or_si128(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  x = _mm_or_si128(x, _mm_shuffle_epi32(x, 0x4E));
  x = _mm_or_si128(x, _mm_shuffle_epi32(x, 0xB1));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(x));
}

inline int32_t HorizontalSum(__m256i v) {
  __m128i x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4E));
  x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xB1));
  return _mm_cvtsi128_si32(x);
}
inline int32_t HorizontalMin(__m256i v) {
  __m128i x = _mm_min_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  x = _mm_min_epi32(x, _mm_shuffle_epi32(x, 0x4E));
  x = _mm_min_epi32(x, _mm_shuffle_epi32(x, 0xB1));
  return _mm_cvtsi128_si32(x);
}
inline int32_t HorizontalMax(__m256i v) {
  __m128i x = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  x = _mm_max_epi32(x, _mm_shuffle_epi32(x, 0x4E));
  x = _mm_max_epi32(x, _mm_shuffle_epi32(x, 0xB1));
  return _mm_cvtsi128_si32(x);
}

inline bool InRange(int32_t v, int32_t lo, int32_t hi) { return v >= lo && v <= hi; }

// --- Packing ----------------------------------------------------------------------------------
// A (m x k) is packed per slice as int16 rows (row stride lda16 int16, zero-padded to an even
// length and to a whole number of kMr-row panels), so int32 j of a row is the pair
// (x[m][2j], x[m][2j+1]). B (k x n) is packed per slice as rows of int32 pairs
// (w[2j][c], w[2j+1][c]), row j at j * ldb, zero-padded to whole kNr-column panels. vpmaddwd of
// a broadcast A pair with a B vector yields x[m][2j] w[2j][c] + x[m][2j+1] w[2j+1][c] per
// column; padding adds nothing. Both packs are streaming transforms (sequential reads and
// writes); the micro-kernel then walks B with stride ldb, which the prefetchers follow.

struct Layout {
  SliceScheme sc;
  int64_t m_panels, n_panels, k_blocks;
  int64_t kp_total;  // ceil(k / 2): pairs in a packed A row, and in all k blocks of B
  int64_t lda16;     // A row stride in int16
  // First pair of k block b; block b covers k in [b*kc, min(k, (b+1)*kc)).
  int64_t KpOffset(int64_t b) const { return b * (sc.kc / 2); }
  // The pairs of k block b (of a reduction of length k).
  int64_t KPairs(int64_t k, int64_t b) const {
    const int64_t len = std::min(k, (b + 1) * sc.kc) - b * sc.kc;
    return (len + 1) / 2;
  }
};

// Statistics of the input rows [m0, m1) (docs/numerics.md): the sums over (sample, row block i)
// of the active planes A(m, i) = popcount(OR of the block's bit patterns) and of
// A(m, i) * (k_i - 1); per word line r the plane population Px(r) += sum_m popcount(x[m][r]).
// The same pass writes the rows' int16 slices into the packed A (one pass over X).
struct InputStats {
  int64_t active_planes = 0;
  int64_t active_plane_rows = 0;
  bool in_range = true;
};

// Per-byte popcounts of v (nibble lookup; AVX2 has no vpopcnt).
inline __m256i PopcountBytes(__m256i v) {
  const __m256i lut = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2,
                                       1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i nib = _mm256_set1_epi8(0x0f);
  __m256i lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(v, nib));
  __m256i hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), nib));
  return _mm256_add_epi8(lo, hi);
}
// Sums the four bytes of each 32-bit lane.
inline __m256i SumBytesPerLane(__m256i bytes) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(bytes, _mm256_set1_epi8(1)), _mm256_set1_epi16(1));
}

// Rows m .. m+R-1 of StatsAndPackA (below), processed together so that the plane population
// px is read and written once per R rows.
template <int R>
void StatsAndPackRows(const BitSerialProblem& p, const Layout& lay, int64_t m, int64_t m_base,
                      int32_t* px, int16_t* a0, int16_t* a1, __m256i& vmin, __m256i& vmax,
                      InputStats& s) {
  const int ns = lay.sc.xs;
  const uint32_t mask = (1u << p.x.bits) - 1u;
  const int32_t lo = static_cast<int32_t>(IntMin(p.x.bits, p.x.sign));
  const int32_t hi = static_cast<int32_t>(IntMax(p.x.bits, p.x.sign));
  const __m256i vmask = _mm256_set1_epi32(static_cast<int32_t>(mask));
  const __m256i byte = _mm256_set1_epi32(0xFF);
  const bool contiguous = p.x.stride_j == 1;
  // int32 lanes -> the low 128 bits hold the 8 values as int16, in order (no saturation: every
  // slice fits int16, see SliceScheme).
  auto to_int16 = [](__m256i v) {
    return _mm256_castsi256_si128(
        _mm256_permute4x64_epi64(_mm256_packs_epi32(v, v), 0x08));  // lanes 0, 2
  };
  const int32_t* row[R];
  int16_t* d0[R];
  int16_t* d1[R];
  for (int i = 0; i < R; ++i) {
    row[i] = p.x.data + (m + i) * p.x.stride_i;
    d0[i] = a0 + (m + i - m_base) * lay.lda16;
    d1[i] = a1 + (m + i - m_base) * lay.lda16;
  }
  int64_t k1 = 0;
  for (int64_t k0 = 0; k0 < p.k; k0 = k1) {  // row blocks, cut within segments
    k1 = BlockEnd(k0, p.k, p.tile_k, p.segment_k);
    uint32_t any[R] = {};
    int64_t r = k0;
    if (contiguous) {
#if defined(PIM_BITSERIAL_ZMM) && defined(__AVX512VPOPCNTDQ__)
      // 16 word lines at a time: vpopcntd gives each element's plane count directly (no byte
      // lookups), and vpmovdw narrows to int16 (exact for in-range values; an out-of-range
      // value fails the range check below, whatever was packed).
      {
        const __m512i zmask = _mm512_set1_epi32(static_cast<int32_t>(mask));
        const __m512i zbyte = _mm512_set1_epi32(0xFF);
        __m512i zmin = _mm512_set1_epi32(lo), zmax = _mm512_set1_epi32(hi);
        __m512i zor[R];
        for (int i = 0; i < R; ++i) zor[i] = _mm512_setzero_si512();
        for (; r + 16 <= k1; r += 16) {
          __m512i pop = _mm512_setzero_si512();
          for (int i = 0; i < R; ++i) {
            const __m512i v = _mm512_loadu_si512(row[i] + r);
            zmin = _mm512_min_epi32(zmin, v);
            zmax = _mm512_max_epi32(zmax, v);
            const __m512i u = _mm512_and_si512(v, zmask);
            zor[i] = _mm512_or_si512(zor[i], u);
            pop = _mm512_add_epi32(pop, _mm512_popcnt_epi32(u));
            if (ns == 1) {
              _mm256_storeu_si256(reinterpret_cast<__m256i*>(d0[i] + r), _mm512_cvtepi32_epi16(v));
            } else {
              _mm256_storeu_si256(reinterpret_cast<__m256i*>(d0[i] + r),
                                  _mm512_cvtepi32_epi16(_mm512_and_si512(v, zbyte)));
              _mm256_storeu_si256(reinterpret_cast<__m256i*>(d1[i] + r),
                                  _mm512_cvtepi32_epi16(_mm512_srai_epi32(v, 8)));
            }
          }
          _mm512_storeu_si512(px + r, _mm512_add_epi32(_mm512_loadu_si512(px + r), pop));
        }
        for (int i = 0; i < R; ++i) {
          any[i] |= static_cast<uint32_t>(_mm512_reduce_or_epi32(zor[i]));
        }
        vmin = _mm256_min_epi32(vmin, _mm256_min_epi32(_mm512_castsi512_si256(zmin),
                                                       _mm512_extracti64x4_epi64(zmin, 1)));
        vmax = _mm256_max_epi32(vmax, _mm256_max_epi32(_mm512_castsi512_si256(zmax),
                                                       _mm512_extracti64x4_epi64(zmax, 1)));
      }
#endif
      __m256i vor[R];
      for (int i = 0; i < R; ++i) vor[i] = _mm256_setzero_si256();
      for (; r + 8 <= k1; r += 8) {
        __m256i pop = _mm256_setzero_si256();  // byte counts, at most 8 * R per byte
        for (int i = 0; i < R; ++i) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row[i] + r));
          vmin = _mm256_min_epi32(vmin, v);
          vmax = _mm256_max_epi32(vmax, v);
          const __m256i u = _mm256_and_si256(v, vmask);
          vor[i] = _mm256_or_si256(vor[i], u);
          pop = _mm256_add_epi8(pop, PopcountBytes(u));
          if (ns == 1) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d0[i] + r), to_int16(v));
          } else {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d0[i] + r),
                             to_int16(_mm256_and_si256(v, byte)));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(d1[i] + r),
                             to_int16(_mm256_srai_epi32(v, 8)));
          }
        }
        __m256i* pr = reinterpret_cast<__m256i*>(px + r);
        _mm256_storeu_si256(pr, _mm256_add_epi32(_mm256_loadu_si256(pr), SumBytesPerLane(pop)));
      }
      for (int i = 0; i < R; ++i) any[i] |= HorizontalOr(vor[i]);
    }
    for (; r < k1; ++r) {
      for (int i = 0; i < R; ++i) {
        const int32_t v = row[i][r * p.x.stride_j];
        s.in_range = s.in_range && InRange(v, lo, hi);
        const uint32_t u = static_cast<uint32_t>(v) & mask;
        any[i] |= u;
        px[r] += __builtin_popcount(u);
        d0[i][r] = static_cast<int16_t>(Slice(v, 0, ns));
        if (ns == 2) d1[i][r] = static_cast<int16_t>(Slice(v, 1, ns));
      }
    }
    for (int i = 0; i < R; ++i) {
      const int64_t a = __builtin_popcount(any[i]);
      s.active_planes += a;
      s.active_plane_rows += a * (k1 - k0 - 1);
    }
  }
  // Zero padding up to the packed row length.
  for (int i = 0; i < R; ++i) {
    for (int64_t r = p.k; r < 2 * lay.kp_total; ++r) {
      d0[i][r] = 0;
      if (ns == 2) d1[i][r] = 0;
    }
  }
}

// Rows [m0, m1) of X: statistics, and the packed rows written from a0 / a1 (slices 0 / 1) on,
// row m at (m - m0) * lda16.
InputStats StatsAndPackA(const BitSerialProblem& p, const Layout& lay, int64_t m0, int64_t m1,
                         int32_t* px, int16_t* a0, int16_t* a1) {
  InputStats s;
  const int32_t lo = static_cast<int32_t>(IntMin(p.x.bits, p.x.sign));
  const int32_t hi = static_cast<int32_t>(IntMax(p.x.bits, p.x.sign));
  __m256i vmin = _mm256_set1_epi32(lo), vmax = _mm256_set1_epi32(hi);
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) StatsAndPackRows<4>(p, lay, m, m0, px, a0, a1, vmin, vmax, s);
  for (; m < m1; ++m) StatsAndPackRows<1>(p, lay, m, m0, px, a0, a1, vmin, vmax, s);
  if (HorizontalMin(vmin) < lo || HorizontalMax(vmax) > hi) s.in_range = false;
  return s;
}

// Whole panels of two 16-bit rows (IntOperand::data16) from column panel `panel` on: 16 words
// of each row -> 16 interleaved int16 pairs per slice, read through the operand's shift. Returns
// the first panel not packed; adds minus the zero counts of the rows to z0, z1 (int32 lanes) and
// folds the values into the running minimum and maximum (signed or unsigned 16-bit lanes).
int64_t PackPanels16(const BitSerialProblem& p, int ns, const int16_t* h0, const int16_t* h1,
                     int64_t panel, int64_t np1, int64_t base, int32_t* const out[2], __m256i& z0,
                     __m256i& z1, __m256i& vmin, __m256i& vmax) {
  const bool sgn = p.w.sign == Signedness::kSigned;
  const __m128i vshift = _mm_cvtsi32_si128(p.w.shift);
  const __m256i zero = _mm256_setzero_si256(), ones = _mm256_set1_epi16(1);
  const __m256i byte = _mm256_set1_epi16(0xFF);
  // (x0[c], x1[c]) pairs, columns in order: unpack interleaves within 128-bit lanes.
  auto store = [&](int slice, int64_t off, __m256i x0, __m256i x1) {
    const __m256i lo = _mm256_unpacklo_epi16(x0, x1), hi = _mm256_unpackhi_epi16(x0, x1);
    __m256i* dst = reinterpret_cast<__m256i*>(out[slice] + off);
    _mm256_store_si256(dst, _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_store_si256(dst + 1, _mm256_permute2x128_si256(lo, hi, 0x31));
  };
  auto shr = [&](__m256i v, __m128i count) {
    return sgn ? _mm256_sra_epi16(v, count) : _mm256_srl_epi16(v, count);
  };
  for (; panel < np1 && VectorPanel(panel, p.n); ++panel) {
    const int64_t off = base + panel * kNr;
#if defined(PIM_BITSERIAL_MASKED_TAIL)
    const int64_t valid = std::min<int64_t>(kNr, p.n - panel * kNr);
    const __mmask16 lanes = static_cast<__mmask16>((uint32_t{1} << valid) - 1u);
    __m256i a = _mm256_maskz_loadu_epi16(lanes, h0 + panel * kNr);
    __m256i c = _mm256_maskz_loadu_epi16(lanes, h1 + panel * kNr);
#else
    __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h0 + panel * kNr));
    __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h1 + panel * kNr));
#endif
    if (p.w.shift > 0) {
      a = shr(a, vshift);
      c = shr(c, vshift);
    }
    if (sgn) {
      vmin = _mm256_min_epi16(vmin, _mm256_min_epi16(a, c));
      vmax = _mm256_max_epi16(vmax, _mm256_max_epi16(a, c));
    } else {
      vmax = _mm256_max_epu16(vmax, _mm256_max_epu16(a, c));  // the minimum, 0, always holds
    }
    z0 = _mm256_add_epi32(z0, _mm256_madd_epi16(_mm256_cmpeq_epi16(a, zero), ones));
    z1 = _mm256_add_epi32(z1, _mm256_madd_epi16(_mm256_cmpeq_epi16(c, zero), ones));
    if (ns == 1) {
      store(0, off, a, c);
    } else {
      const __m128i eight = _mm_cvtsi32_si128(8);
      store(0, off, _mm256_and_si256(a, byte), _mm256_and_si256(c, byte));
      store(1, off, shr(a, eight), shr(c, eight));
    }
  }
  return panel;
}

// Packs the k pairs [g0, g1) and column panels [np0, np1) of B, every slice: pair g, panel np at
// out[s] + (g - g0) * ldb + (np - np0) * kNr. Writes the number of nonzero elements of each of
// these rows within these columns into nonzero[r], and clears *in_range if an element is outside
// the operand's range.
void PackB(const BitSerialProblem& p, int ns, int64_t g0, int64_t g1, int64_t np0, int64_t np1,
           int32_t* const out[2], int64_t ldb, int32_t* nonzero, bool* in_range) {
  const int32_t lo = static_cast<int32_t>(IntMin(p.w.bits, p.w.sign));
  const int32_t hi = static_cast<int32_t>(IntMax(p.w.bits, p.w.sign));
  const int64_t si = p.w.stride_i, sj = p.w.stride_j;
  const bool words16 = p.w.data16 != nullptr;
  const __m128i vshift = _mm_cvtsi32_si128(p.w.shift);
  const __m256i zero = _mm256_setzero_si256(), byte = _mm256_set1_epi32(0xFF);
  __m256i vmin = _mm256_set1_epi32(lo), vmax = _mm256_set1_epi32(hi);
  // The same bounds in 16-bit lanes (as uint16 when unsigned; lo = 0 then).
  __m256i vmin16 = _mm256_set1_epi16(static_cast<int16_t>(lo));
  __m256i vmax16 = _mm256_set1_epi16(static_cast<int16_t>(static_cast<uint16_t>(hi)));
  bool ok = true;
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t r0 = 2 * g, r1 = r0 + 1;
    const bool has_r1 = r1 < p.k;
    const int64_t base = (g - g0) * ldb - np0 * kNr;  // + panel * kNr
    int64_t nz0 = 0, nz1 = 0;
    int64_t panel = np0;
    if (sj == 1 && has_r1 && words16) {
      __m256i z0 = zero, z1 = zero;  // minus the zero counts
      panel = PackPanels16(p, ns, p.w.data16 + r0 * si, p.w.data16 + r1 * si, panel, np1, base,
                           out, z0, z1, vmin16, vmax16);
      nz0 = (panel - np0) * kNr + HorizontalSum(z0);
      nz1 = (panel - np0) * kNr + HorizontalSum(z1);
    } else if (sj == 1 && has_r1) {
      const int32_t* w0 = p.w.data + r0 * si;
      const int32_t* w1 = p.w.data + r1 * si;
      // Whole panels: two rows of 16 contiguous int32 -> 16 interleaved int16 pairs.
      __m256i z0 = zero, z1 = zero;  // minus the zero counts per lane
      for (; panel < np1 && VectorPanel(panel, p.n); ++panel) {
        const int64_t off = base + panel * kNr;
        for (int h = 0; h < kNr; h += 8) {
#if defined(PIM_BITSERIAL_MASKED_TAIL)
          const int64_t valid = std::clamp<int64_t>(p.n - panel * kNr - h, 0, 8);
          const __mmask8 lanes = static_cast<__mmask8>((1u << valid) - 1u);
          const __m256i a =
              _mm256_sra_epi32(_mm256_maskz_loadu_epi32(lanes, w0 + panel * kNr + h), vshift);
          const __m256i c =
              _mm256_sra_epi32(_mm256_maskz_loadu_epi32(lanes, w1 + panel * kNr + h), vshift);
#else
          const __m256i a = _mm256_sra_epi32(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w0 + panel * kNr + h)), vshift);
          const __m256i c = _mm256_sra_epi32(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w1 + panel * kNr + h)), vshift);
#endif
          vmin = _mm256_min_epi32(vmin, _mm256_min_epi32(a, c));
          vmax = _mm256_max_epi32(vmax, _mm256_max_epi32(a, c));
          z0 = _mm256_add_epi32(z0, _mm256_cmpeq_epi32(a, zero));
          z1 = _mm256_add_epi32(z1, _mm256_cmpeq_epi32(c, zero));
          auto store = [&](int slice, __m256i lo16, __m256i hi16) {
            _mm256_store_si256(reinterpret_cast<__m256i*>(out[slice] + off + h),
                               _mm256_blend_epi16(lo16, _mm256_slli_epi32(hi16, 16), 0xAA));
          };
          if (ns == 1) {
            store(0, a, c);
          } else {
            store(0, _mm256_and_si256(a, byte), _mm256_and_si256(c, byte));
            store(1, _mm256_srai_epi32(a, 8), _mm256_srai_epi32(c, 8));
          }
        }
      }
      nz0 = (panel - np0) * kNr + HorizontalSum(z0);
      nz1 = (panel - np0) * kNr + HorizontalSum(z1);
    }
    // The ragged last panel, and strided rows.
    for (; panel < np1; ++panel) {
      const int64_t off = base + panel * kNr;
      for (int64_t cc = 0; cc < kNr; ++cc) {
        const int64_t col = panel * kNr + cc;
        int32_t v0 = 0, v1 = 0;
        if (col < p.n) {
          v0 = p.w.At(r0, col);
          v1 = has_r1 ? p.w.At(r1, col) : 0;
          ok = ok && InRange(v0, lo, hi) && InRange(v1, lo, hi);
          nz0 += v0 != 0;
          nz1 += v1 != 0;
        }
        for (int sl = 0; sl < ns; ++sl) {
          out[sl][off + cc] = static_cast<int32_t>(PackPair(Slice(v0, sl, ns), Slice(v1, sl, ns)));
        }
      }
    }
    nonzero[r0] = static_cast<int32_t>(nz0);
    if (has_r1) nonzero[r1] = static_cast<int32_t>(nz1);
  }
  if (HorizontalMin(vmin) < lo || HorizontalMax(vmax) > hi) ok = false;
  if (words16) {
    alignas(32) int16_t mins[16], maxs[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(mins), vmin16);
    _mm256_store_si256(reinterpret_cast<__m256i*>(maxs), vmax16);
    for (int l = 0; l < 16; ++l) {
      if (p.w.sign == Signedness::kSigned) {
        ok = ok && mins[l] >= lo && maxs[l] <= hi;
      } else {
        ok = ok && static_cast<uint16_t>(maxs[l]) <= hi;
      }
    }
  }
  if (!ok) *in_range = false;
}

// A B row stride for `panels` column panels: an odd number of 64-byte lines, so that the rows of
// a micro-panel spread over all L1 sets.
inline int64_t PanelStride(int64_t panels) { return (panels + (panels % 2 == 0 ? 1 : 0)) * kNr; }

// Grow-only scratch buffers of the calling thread, so repeated calls do not map and fault in
// fresh pages for the packed operands.
struct Workspace {
  AlignedArray<int16_t> a;
  int64_t a_cap = 0;
  AlignedArray<int32_t> b;
  int64_t b_cap = 0;
};
template <class T>
T* Reserve(AlignedArray<T>& buf, int64_t& cap, int64_t n) {
  if (n > cap || !buf) {
    buf = AllocAligned<T>(n);
    cap = n;
  }
  return buf.get();
}
Workspace& ThreadWorkspace() {
  thread_local Workspace workspace;
  return workspace;
}

// --- Micro- and macro-kernel ------------------------------------------------------------------

#if defined(PIM_BITSERIAL_ZMM)
// out_p[kMr][kNr] for the kPanels (1 or 2) adjacent column panels p = 0, 1 starting at b: the
// sum over kp pairs of A pairs x B pairs (int32, exact within one k block). A row r's pairs start
// at a + r * lda, B's pair row j at b + j * ldb (int32 units); panel 1 follows panel 0 in the
// row. vpdpwssd multiplies the 16-bit halves and adds both products and the accumulator, with
// int32 wrap-around like vpaddd (no block here comes near it: see SliceScheme). The loops have
// constant trip counts and are fully unrolled, so the 8 x kPanels accumulators live in zmm
// registers; the kernel stays out of line so that no caller's state competes for them.
template <int kPanels>
[[gnu::noinline]] void MicroKernelZmm(int64_t kp, const int32_t* a, int64_t lda,
                                      const int32_t* b, int64_t ldb, int32_t* out0,
                                      int32_t* out1) {
  static_assert(kMr == 8 && kNr == 16 && (kPanels == 1 || kPanels == 2));
  __m512i acc[kMr][kPanels];
#pragma GCC unroll 8
  for (int r = 0; r < kMr; ++r) {
#pragma GCC unroll 2
    for (int q = 0; q < kPanels; ++q) acc[r][q] = _mm512_setzero_si512();
  }
  for (int64_t j = 0; j < kp; ++j) {
    __m512i bv[kPanels];
#pragma GCC unroll 2
    for (int q = 0; q < kPanels; ++q) bv[q] = _mm512_loadu_si512(b + q * kNr);
    b += ldb;
#pragma GCC unroll 8
    for (int r = 0; r < kMr; ++r) {
      const __m512i av = _mm512_set1_epi32(a[r * lda + j]);
#pragma GCC unroll 2
      for (int q = 0; q < kPanels; ++q) acc[r][q] = _mm512_dpwssd_epi32(acc[r][q], av, bv[q]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kMr; ++r) {
    _mm512_store_si512(out0 + r * kNr, acc[r][0]);
    if constexpr (kPanels == 2) _mm512_store_si512(out1 + r * kNr, acc[r][1]);
  }
}
#else
// out[kMr][kNr] = sum over kp pairs of A pairs x B pairs (int32, exact within one k block). A
// row r's pairs start at a + r * lda, B's pair row j at b + j * ldb (int32 units). The twelve
// accumulators are named variables and the function is kept out of line, so that the compiler
// keeps all of them in registers (as arrays, or inlined into the callers, they spill).
static_assert(kMr == 6 && kNr == 16);
[[gnu::noinline]] void MicroKernel(int64_t kp, const int32_t* a, int64_t lda, const int32_t* b,
                                   int64_t ldb, int32_t* out) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const int32_t* a0 = a;
  const int32_t* a1 = a + lda;
  const int32_t* a2 = a + 2 * lda;
  const int32_t* a3 = a + 3 * lda;
  const int32_t* a4 = a + 4 * lda;
  const int32_t* a5 = a + 5 * lda;
  // acc += madd(broadcast A pair, B vector): x[m][2j] w[2j][c] + x[m][2j+1] w[2j+1][c].
// With VNNI (vpdpwssd: the same two products and pair sum, added to the accumulator in one
// instruction; int32 wrap-around like vpaddd, and no block here comes near it) the multiply and
// the add fuse: the same bits in half the instructions.
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define PIM_MADD_ADD(acc, a, b) _mm256_dpwssd_epi32(acc, a, b)
#elif defined(__AVXVNNI__)
#define PIM_MADD_ADD(acc, a, b) _mm256_dpwssd_avx_epi32(acc, a, b)
#else
#define PIM_MADD_ADD(acc, a, b) _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
#endif
#define PIM_ROW(ar, acc0, acc1)                      \
  {                                                  \
    const __m256i av = _mm256_set1_epi32(ar[j]);     \
    acc0 = PIM_MADD_ADD(acc0, av, b0);               \
    acc1 = PIM_MADD_ADD(acc1, av, b1);               \
  }
  for (int64_t j = 0; j < kp; ++j) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + 8));
    b += ldb;
    PIM_ROW(a0, c00, c01)
    PIM_ROW(a1, c10, c11)
    PIM_ROW(a2, c20, c21)
    PIM_ROW(a3, c30, c31)
    PIM_ROW(a4, c40, c41)
    PIM_ROW(a5, c50, c51)
  }
#undef PIM_ROW
#undef PIM_MADD_ADD
  __m256i* o = reinterpret_cast<__m256i*>(out);
  _mm256_store_si256(o + 0, c00);
  _mm256_store_si256(o + 1, c01);
  _mm256_store_si256(o + 2, c10);
  _mm256_store_si256(o + 3, c11);
  _mm256_store_si256(o + 4, c20);
  _mm256_store_si256(o + 5, c21);
  _mm256_store_si256(o + 6, c30);
  _mm256_store_si256(o + 7, c31);
  _mm256_store_si256(o + 8, c40);
  _mm256_store_si256(o + 9, c41);
  _mm256_store_si256(o + 10, c50);
  _mm256_store_si256(o + 11, c51);
}
#endif  // PIM_BITSERIAL_ZMM

// Where finished elements go when the caller wants them as float (BitSerialMatMulScaled):
// yf = float(double(Y) * scale). `vec`: |Y| < 2^51, so int64 -> double may go through the
// 1.5 * 2^52 offset (exact there).
struct FloatOut {
  float* yf = nullptr;
  int64_t ldyf = 0;
  double scale = 1;
  bool vec = false;
};

// Four finished int64 sums -> float, as the scalar path rounds: exact double, exact scaling,
// one rounding to float.
inline __m128 ScaleToFloat(__m256i v, const FloatOut& fo) {
  const __m256i magic_i = _mm256_set1_epi64x(0x4338000000000000);  // 0x1.8p52
  const __m256d magic_d = _mm256_set1_pd(0x1.8p52);
  const __m256d d = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_add_epi64(v, magic_i)), magic_d);
  return _mm256_cvtpd_ps(_mm256_mul_pd(d, _mm256_set1_pd(fo.scale)));
}

// The tile's finished elements as float (the last partial sum of every element: `first` says
// whether it is also the only one, then y is not read).
inline void StoreTileFloat(const int32_t* tile, int rows, int cols, int shift, bool first,
                           const int64_t* y, int64_t ldy, float* yf, const FloatOut& fo) {
  for (int r = 0; r < rows; ++r) {
    const int64_t* yr = y + r * ldy;
    float* fr = yf + r * fo.ldyf;
    const int32_t* t = tile + r * kNr;
#if defined(PIM_BITSERIAL_ZMM)
    // The same arithmetic 8 lanes at a time (int32 -> double and int64 -> double exact, one
    // rounding to float).
    if (cols == kNr && fo.vec) {
      const __m512d vs = _mm512_set1_pd(fo.scale);
      for (int h = 0; h < kNr; h += 8) {
        const __m256i t8 = _mm256_load_si256(reinterpret_cast<const __m256i*>(t + h));
        __m512d d;
        if (first && shift == 0) {
          d = _mm512_cvtepi32_pd(t8);
        } else {
          __m512i v = _mm512_sll_epi64(_mm512_cvtepi32_epi64(t8), _mm_cvtsi32_si128(shift));
          if (!first) v = _mm512_add_epi64(v, _mm512_loadu_si512(yr + h));
          d = _mm512_cvtepi64_pd(v);  // exact: |v| < 2^51 (fo.vec)
        }
        _mm256_storeu_ps(fr + h, _mm512_cvtpd_ps(_mm512_mul_pd(d, vs)));
      }
      continue;
    }
#endif
    if (cols == kNr && fo.vec) {
      if (first && shift == 0) {
        // int32 -> double is exact: no int64 at all.
        const __m256d vs = _mm256_set1_pd(fo.scale);
        for (int h = 0; h < kNr; h += 4) {
          const __m256d d =
              _mm256_cvtepi32_pd(_mm_load_si128(reinterpret_cast<const __m128i*>(t + h)));
          _mm_storeu_ps(fr + h, _mm256_cvtpd_ps(_mm256_mul_pd(d, vs)));
        }
        continue;
      }
      for (int h = 0; h < kNr; h += 4) {
        __m256i v = _mm256_cvtepi32_epi64(_mm_load_si128(reinterpret_cast<const __m128i*>(t + h)));
        v = _mm256_slli_epi64(v, shift);
        if (!first) {
          v = _mm256_add_epi64(v, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(yr + h)));
        }
        _mm_storeu_ps(fr + h, ScaleToFloat(v, fo));
      }
      continue;
    }
    for (int c = 0; c < cols; ++c) {
      int64_t v = static_cast<int64_t>(t[c]) * (int64_t{1} << shift);
      if (!first) v += yr[c];
      fr[c] = static_cast<float>(static_cast<double>(v) * fo.scale);
    }
  }
}

// y[rows][cols] (=|+=) tile << shift, for the valid rows x cols corner of a kMr x kNr tile.
inline void StoreTile(const int32_t* tile, int rows, int cols, int shift, bool first, int64_t* y,
                      int64_t ldy) {
  for (int r = 0; r < rows; ++r) {
    int64_t* yr = y + r * ldy;
    const int32_t* t = tile + r * kNr;
#if defined(PIM_BITSERIAL_ZMM)
    if (cols == kNr) {
      for (int h = 0; h < kNr; h += 8) {
        const __m256i t8 = _mm256_load_si256(reinterpret_cast<const __m256i*>(t + h));
        __m512i v = _mm512_sll_epi64(_mm512_cvtepi32_epi64(t8), _mm_cvtsi32_si128(shift));
        if (!first) v = _mm512_add_epi64(v, _mm512_loadu_si512(yr + h));
        _mm512_storeu_si512(yr + h, v);
      }
      continue;
    }
#endif
    if (cols == kNr) {
      for (int h = 0; h < kNr; h += 4) {
        __m256i v = _mm256_cvtepi32_epi64(_mm_load_si128(reinterpret_cast<const __m128i*>(t + h)));
        v = _mm256_slli_epi64(v, shift);
        __m256i* dst = reinterpret_cast<__m256i*>(yr + h);
        if (!first) v = _mm256_add_epi64(v, _mm256_loadu_si256(dst));
        _mm256_storeu_si256(dst, v);
      }
    } else {
      for (int c = 0; c < cols; ++c) {
        const int64_t v = static_cast<int64_t>(t[c]) * (int64_t{1} << shift);
        yr[c] = first ? v : yr[c] + v;
      }
    }
  }
}

// Multiplies row panels [mp0, mp1) by column panels [np0, np1) for k block kb, all slice
// pairs: y (=|+=) sum_{a,b} 2^(8a + 8b) X_a W_b. `a[s]` points at slice s's packed row mp0*kMr
// (whole rows, stride lda int32 pairs); `b[s]` at slice s's pair row of the block's first k
// pair, panel np0 (stride ldb). With a float output (fo.yf), the last slice pair of the last k
// block writes the finished elements there instead of into y.
void MacroKernel(const BitSerialProblem& p, const Layout& lay, int64_t kb, int64_t mp0,
                 int64_t mp1, int64_t np0, int64_t np1, const int32_t* const a[2], int64_t lda,
                 const int32_t* const b[2], int64_t ldb, bool first, const FloatOut& fo) {
  alignas(64) int32_t tile[2 * kMr * kNr];  // one kMr x kNr tile per column panel
  const int xs = lay.sc.xs, ws = lay.sc.ws;
  const int64_t kp = lay.KPairs(p.k, kb), g0 = lay.KpOffset(kb);
  for (int sa = 0; sa < xs; ++sa) {
    for (int sb = 0; sb < ws; ++sb) {
      const int shift = 8 * (xs == 2 ? sa : 0) + 8 * (ws == 2 ? sb : 0);
      const bool to_float =
          fo.yf != nullptr && kb + 1 == lay.k_blocks && sa + 1 == xs && sb + 1 == ws;
      // Column panels one at a time (AVX2) or two at a time (zmm; an odd last one alone).
#if defined(PIM_BITSERIAL_ZMM)
      constexpr int64_t kStep = 2;
#else
      constexpr int64_t kStep = 1;
#endif
      for (int64_t np = np0; np < np1; np += kStep) {
        const int32_t* bp = b[sb] + (np - np0) * kNr;
        const int64_t panels = std::min<int64_t>(kStep, np1 - np);
        for (int64_t mp = mp0; mp < mp1; ++mp) {
          const int32_t* ap = a[sa] + (mp - mp0) * kMr * lda + g0;
#if defined(PIM_BITSERIAL_ZMM)
          if (panels == 2) {
            MicroKernelZmm<2>(kp, ap, lda, bp, ldb, tile, tile + kMr * kNr);
          } else {
            MicroKernelZmm<1>(kp, ap, lda, bp, ldb, tile, nullptr);
          }
#else
          MicroKernel(kp, ap, lda, bp, ldb, tile);
#endif
          const int64_t r0 = mp * kMr;
          const int rows = static_cast<int>(std::min<int64_t>(kMr, p.m - r0));
          for (int64_t q = 0; q < panels; ++q) {
            const int32_t* t = tile + q * kMr * kNr;
            const int64_t c0 = (np + q) * kNr;
            const int cols = static_cast<int>(std::min<int64_t>(kNr, p.n - c0));
            if (to_float) {
              StoreTileFloat(t, rows, cols, shift, first, p.y + r0 * p.ldy + c0, p.ldy,
                             fo.yf + r0 * fo.ldyf + c0, fo);
            } else {
              StoreTile(t, rows, cols, shift, first, p.y + r0 * p.ldy + c0, p.ldy);
            }
          }
        }
      }
      first = false;
    }
  }
}

using ParallelFor =
    std::function<void(int64_t, int64_t, const std::function<void(int64_t, int64_t)>&)>;

// The exact product into p.y (m, n > 0), with the operand statistics: xstats and px per chunk of
// samples, nonzero[g] per weight row for chunk g of the columns (summed by the caller), b_ok
// cleared on an out-of-range weight. Two parallel sections per call (each costs a wake-up of the
// pool's threads).
void Multiply(const BitSerialProblem& p, const Layout& lay, int threads,
              const ParallelFor& parallel_for, const FloatOut& fo,
              std::vector<InputStats>& xstats, std::vector<std::vector<int32_t>>& px,
              std::vector<std::vector<int32_t>>& nonzero, std::vector<char>& b_ok) {
  const int xs = lay.sc.xs, ws = lay.sc.ws;
  if (p.k == 0) {
    for (int64_t m = 0; m < p.m; ++m) {
      std::fill(p.y + m * p.ldy, p.y + m * p.ldy + p.n, 0);
      if (fo.yf != nullptr) std::fill(fo.yf + m * fo.ldyf, fo.yf + m * fo.ldyf + p.n, 0.0f);
    }
  }
  const int64_t lda = lay.lda16 / 2;  // in int32 pairs
  auto new_rows = [&](int64_t count) {
    return std::vector<std::vector<int32_t>>(static_cast<size_t>(count),
                                             std::vector<int32_t>(static_cast<size_t>(p.k), 0));
  };

  if (p.m >= p.n) {
    // More A than B. Section 1 packs all of B (split over k pairs); section 2 gives each task a
    // block of mc rows, which it packs with their statistics into its own cache-resident buffer
    // and multiplies by every column panel: the packed A never leaves the cache.
    int64_t m_blocks = (p.m + kMc - 1) / kMc;  // a multiple of the thread count, for balance
    m_blocks = std::min((m_blocks + threads - 1) / threads * threads, lay.m_panels);
    const int64_t mc = std::min(kMc, (lay.m_panels + m_blocks - 1) / m_blocks * kMr);
    m_blocks = (p.m + mc - 1) / mc;
    const int64_t ldb = PanelStride(lay.n_panels);
    const int64_t b_size = lay.kp_total * ldb;
    Workspace& main_ws = ThreadWorkspace();
    int32_t* bbuf = Reserve(main_ws.b, main_ws.b_cap, b_size * ws);
    int32_t* const bslices[2] = {bbuf, bbuf + (ws == 2 ? b_size : 0)};
    nonzero = new_rows(1);
    const int64_t chunks = std::min<int64_t>(threads, lay.kp_total);
    parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
      for (int64_t ch = b; ch < e; ++ch) {
        const int64_t g0 = lay.kp_total * ch / chunks, g1 = lay.kp_total * (ch + 1) / chunks;
        int32_t* const out[2] = {bslices[0] + g0 * ldb, bslices[1] + g0 * ldb};
        bool ok = true;
        PackB(p, ws, g0, g1, 0, lay.n_panels, out, ldb, nonzero[0].data(), &ok);
        if (!ok) b_ok[ch] = 0;
      }
    });
    xstats.resize(static_cast<size_t>(m_blocks));
    px = new_rows(m_blocks);
    parallel_for(m_blocks, 1, [&](int64_t t0, int64_t t1) {
      Workspace& w = ThreadWorkspace();
      const int64_t a_size = mc * lay.lda16;
      int16_t* abuf = Reserve(w.a, w.a_cap, a_size * xs);
      for (int64_t mb = t0; mb < t1; ++mb) {
        const int64_t m0 = mb * mc, m1 = std::min(p.m, m0 + mc);
        xstats[mb] = StatsAndPackA(p, lay, m0, m1, px[mb].data(), abuf, abuf + a_size);
        const int64_t mp0 = m0 / kMr, mp1 = (m1 + kMr - 1) / kMr;
        for (int s = 0; s < xs; ++s) {  // rows of the last panel past m
          std::fill(abuf + s * a_size + (m1 - m0) * lay.lda16,
                    abuf + s * a_size + (mp1 - mp0) * kMr * lay.lda16, int16_t{0});
        }
        const int32_t* const aslices[2] = {reinterpret_cast<const int32_t*>(abuf),
                                           reinterpret_cast<const int32_t*>(abuf + a_size)};
        for (int64_t kb = 0; kb < lay.k_blocks; ++kb) {
          const int64_t off = lay.KpOffset(kb) * ldb;
          const int32_t* const bblk[2] = {bslices[0] + off, bslices[1] + off};
          MacroKernel(p, lay, kb, mp0, mp1, 0, lay.n_panels, aslices, lda, bblk, ldb, kb == 0,
                      fo);
        }
      }
    });
    return;
  }

  // More B than A. Section 1 packs all of A with the statistics (split over samples); section 2
  // gives each task a group of ng column panels, for which it packs B one k block at a time into
  // its own cache-resident buffer and multiplies all of A by it, in row blocks of kMc.
  const int64_t a_size = lay.m_panels * kMr * lay.lda16;  // int16 per slice
  Workspace& main_ws = ThreadWorkspace();
  int16_t* apack = Reserve(main_ws.a, main_ws.a_cap, a_size * xs);
  const int64_t chunks = std::min<int64_t>(threads, p.m);
  xstats.resize(static_cast<size_t>(chunks));
  px = new_rows(chunks);
  parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t ch = b; ch < e; ++ch) {
      const int64_t m0 = p.m * ch / chunks, m1 = p.m * (ch + 1) / chunks;
      xstats[ch] = StatsAndPackA(p, lay, m0, m1, px[ch].data(), apack + m0 * lay.lda16,
                                 apack + a_size + m0 * lay.lda16);
    }
  });
  for (int s = 0; s < xs; ++s) {  // rows of the last panel past m
    std::fill(apack + s * a_size + p.m * lay.lda16, apack + (s + 1) * a_size, int16_t{0});
  }
  // Column groups: at most kNg panels, at least one group per thread; an even number with the
  // zmm kernel, which takes panels in pairs (kNg is even).
  int64_t ng = std::clamp<int64_t>((lay.n_panels + threads - 1) / threads, 1, kNg);
#if defined(PIM_BITSERIAL_ZMM)
  static_assert(kNg % 2 == 0);
  ng = std::min(kNg, (ng + 1) / 2 * 2);
#endif
  const int64_t n_groups = (lay.n_panels + ng - 1) / ng;
  nonzero = new_rows(n_groups);
  parallel_for(n_groups, 1, [&](int64_t t0, int64_t t1) {
    Workspace& w = ThreadWorkspace();
    const int64_t ldb = PanelStride(ng);
    const int64_t b_size = (lay.sc.kc / 2) * ldb;  // int32 per slice and k block
    int32_t* bbuf = Reserve(w.b, w.b_cap, b_size * ws);
    int32_t* const bslices[2] = {bbuf, bbuf + (ws == 2 ? b_size : 0)};
    bool ok = true;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t np0 = t * ng, np1 = std::min(lay.n_panels, np0 + ng);
      for (int64_t kb = 0; kb < lay.k_blocks; ++kb) {
        const int64_t g0 = lay.KpOffset(kb);
        PackB(p, ws, g0, g0 + lay.KPairs(p.k, kb), np0, np1, bslices, ldb, nonzero[t].data(), &ok);
        for (int64_t mp0 = 0; mp0 < lay.m_panels; mp0 += kMc / kMr) {
          const int64_t mp1 = std::min(lay.m_panels, mp0 + kMc / kMr);
          const int32_t* const aslices[2] = {
              reinterpret_cast<const int32_t*>(apack + mp0 * kMr * lay.lda16),
              reinterpret_cast<const int32_t*>(apack + a_size + mp0 * kMr * lay.lda16)};
          MacroKernel(p, lay, kb, mp0, mp1, np0, np1, aslices, lda, bslices, ldb, kb == 0, fo);
        }
      }
    }
    if (!ok) b_ok[t0] = 0;
  });
}

// BitSerialMatMul and BitSerialMatMulScaled (fo.yf set).
void MatMul(const BitSerialProblem& p, const FloatOut& fo, BitSerialCounts& counts,
            ThreadPool* pool) {
  PIM_CHECK(p.m >= 0 && p.k >= 0 && p.n >= 0 && p.tile_k >= 1 && p.tile_n >= 1);
  PIM_CHECK(p.segment_k >= 0 && p.segment_n >= 0);
  PIM_CHECK(p.x.bits >= 1 && p.x.bits <= 16 && p.w.bits >= 1 && p.w.bits <= 16);
  PIM_CHECK_MSG(p.x.data16 == nullptr && p.x.shift == 0,
                "the fast kernel reads X as plain int32 (16-bit words and shifts: W only)");
  PIM_CHECK(p.w.shift >= 0 && p.w.shift < 16);
  // Small products run on the calling thread: waking the pool's threads for two parallel
  // sections costs more than they would save (results never depend on the thread count).
  if (p.m * p.k * p.n < kSerialMacs) pool = nullptr;
  const ParallelFor parallel_for = [pool](int64_t n, int64_t grain,
                                          const std::function<void(int64_t, int64_t)>& fn) {
    if (pool != nullptr) {
      pool->ParallelFor(n, grain, fn);
    } else if (n > 0) {
      fn(0, n);
    }
  };
  const int threads = pool != nullptr ? pool->num_threads() : 1;

  Layout lay;
  lay.m_panels = (p.m + kMr - 1) / kMr;
  lay.n_panels = (p.n + kNr - 1) / kNr;
  lay.sc = ChooseSlices(p);
  lay.k_blocks = (p.k + lay.sc.kc - 1) / lay.sc.kc;
  lay.kp_total = (p.k + 1) / 2;
  // Row stride: whole 64-byte lines, and not a multiple of 4 KiB, so that the kMr rows a
  // micro-kernel streams do not alias in L1.
  lay.lda16 = (2 * lay.kp_total + 31) / 32 * 32;
  if (lay.lda16 % 2048 == 0) lay.lda16 += 32;

  // Input statistics per chunk of samples (integer sums: the split does not change them), and
  // the nonzero weights per row.
  std::vector<InputStats> xstats;
  std::vector<std::vector<int32_t>> px;
  std::vector<std::vector<int32_t>> nonzero;
  std::vector<char> b_ok(static_cast<size_t>(std::max<int64_t>(threads, lay.n_panels)), 1);
  if (p.m > 0 && p.n > 0) {
    Multiply(p, lay, threads, parallel_for, fo, xstats, px, nonzero, b_ok);
  }

  // Counts from statistics (docs/numerics.md): with A(m, i) the active planes of sample m on row
  // block i, Px(r) the plane population of word line r and nz(r) its nonzero weights.
  bool ok = true;
  int64_t sum_a = 0, sum_a_rows = 0;
  for (const auto& s : xstats) {
    ok = ok && s.in_range;
    sum_a += s.active_planes;
    sum_a_rows += s.active_plane_rows;
  }
  for (char c : b_ok) ok = ok && c;
  PIM_CHECK_MSG(ok, "bit-serial operand out of its declared range");
  int64_t and_ops = 0, gated = 0;
  for (int64_t r = 0; r < p.k; ++r) {
    int64_t pop = 0, nz = 0;
    for (const auto& v : px) pop += v[r];
    for (const auto& v : nonzero) nz += v[r];
    and_ops += pop * nz;
    gated += pop * (p.n - nz);
  }
  const int64_t k_blocks = NumBlocks(p.k, p.tile_k, p.segment_k);
  const int64_t n_blocks = NumBlocks(p.n, p.tile_n, p.segment_n);
  BitSerialCounts c;
  c.bitserial_cycles = n_blocks * sum_a;
  c.skipped_zero_cycles = n_blocks * (p.m * k_blocks * p.x.bits - sum_a);
  c.cell_and_ops = p.w.bits * and_ops;
  c.gated_zero_weight_ops = p.w.bits * gated;
  c.adder_tree_adds = p.n * p.w.bits * sum_a_rows;
  c.shift_adds = p.n * p.w.bits * sum_a;
  c.tile_accumulations = p.m * p.n * std::max<int64_t>(k_blocks - 1, 0);
  c.input_buffer_writes = p.m * p.k;
  c.input_buffer_reads = p.m * p.k * n_blocks;
  c.output_buffer_writes = p.m * p.n;
  c.macs = p.m * p.k * p.n;
  counts = c;
}

}  // namespace

void BitSerialMatMul(const BitSerialProblem& p, BitSerialCounts& counts, ThreadPool* pool) {
  MatMul(p, FloatOut{}, counts, pool);
}

void BitSerialMatMulScaled(const BitSerialProblem& p, int exp, float* yf, int64_t ldyf,
                           BitSerialCounts& counts, ThreadPool* pool) {
  PIM_CHECK(yf != nullptr && ldyf >= p.n);
  FloatOut fo;
  fo.yf = yf;
  fo.ldyf = ldyf;
  fo.scale = std::ldexp(1.0, exp);
  // |Y| <= k 2^bx 2^bw (every product of a bx-bit and a bw-bit integer is below 2^(bx + bw)).
  fo.vec = static_cast<double>(p.k) * std::ldexp(1.0, p.x.bits + p.w.bits) < 0x1p51;
  MatMul(p, fo, counts, pool);
}

}  // namespace pim::kernels::fast
