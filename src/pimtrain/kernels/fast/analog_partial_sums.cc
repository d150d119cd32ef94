// Fast analog kernel, partial sums: each bit line's sum over the row block per input cycle and
// slice, from the bit planes (AND + popcount, several columns at a time), the driven lines' byte
// rows added, their bit rows counted bit-sliced (carry-save adders, AVX-512 + GFNI) or, with
// programming variation, from the cells' conductances word line by word line as the reference
// adds them.

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

// ---- The variants of the table's popcount_columns (analog_worker.h) --------------------------
// Partial sums of columns [0, ncp) of one slice: out[cp] = sum over the DAC bits a < na and cell
// bits bb < pr of popcount(x[a] & plane(bb, cp)) << (a + bb), over nw words (W > 0: nw = W at
// compile time). A null x[a] (a chunk past the input's bits) adds nothing. Exact integers in any
// order. plane(bb, cp) = planes + (bb * ncp + cp) * stride.
template <int W>
void PopcountColumnsScalar(const uint64_t* const* x, int na, const uint64_t* planes, int pr,
                           int64_t ncp, int64_t nw_in, int64_t stride, int64_t cp0,
                           int32_t* out) {
  const int64_t nw = W > 0 ? W : nw_in;
  if (na == 1 && pr == 1 && x[0] != nullptr) {
    const uint64_t* x0 = x[0];
    for (int64_t cp = cp0; cp < ncp; ++cp) {
      const uint64_t* wc = planes + cp * stride;
      int32_t s = 0;
      for (int64_t w = 0; w < nw; ++w)
        s += static_cast<int32_t>(__builtin_popcountll(x0[w] & wc[w]));
      out[cp] = s;
    }
    return;
  }
  for (int64_t cp = cp0; cp < ncp; ++cp) {
    int64_t s = 0;
    for (int a = 0; a < na; ++a) {
      if (x[a] == nullptr) continue;
      for (int bb = 0; bb < pr; ++bb) {
        const uint64_t* wc = planes + (bb * ncp + cp) * stride;
        int64_t cnt = 0;
        for (int64_t w = 0; w < nw; ++w) cnt += __builtin_popcountll(x[a][w] & wc[w]);
        s += cnt << (a + bb);
      }
    }
    out[cp] = static_cast<int32_t>(s);
  }
}

#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
// 8 columns (8 or 16 words) per step with VPOPCNTQ where each column's words are contiguous
// (stride == W, W = 1 or 2), then the scalar variant for the rest.
template <int W>
void PopcountColumnsAvx512(const uint64_t* const* x, int na, const uint64_t* planes, int pr,
                           int64_t ncp, int64_t nw_in, int64_t stride, int64_t cp0_in,
                           int32_t* out) {
  int64_t cp0 = cp0_in;
  if ((W == 1 || W == 2) && stride == W) {
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    for (; cp0 + 8 <= ncp; cp0 += 8) {
      __m512i sum = _mm512_setzero_si512();
      for (int a = 0; a < na; ++a) {
        if (x[a] == nullptr) continue;
        const __m512i xv = W == 2 ? _mm512_broadcast_i64x2(_mm_loadu_si128(
                                        reinterpret_cast<const __m128i*>(x[a])))
                                  : _mm512_set1_epi64(static_cast<long long>(x[a][0]));
        for (int bb = 0; bb < pr; ++bb) {
          const uint64_t* wc = planes + (bb * ncp + cp0) * stride;
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
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + cp0), _mm512_cvtepi64_epi32(sum));
    }
  }
  PopcountColumnsScalar<W>(x, na, planes, pr, ncp, nw_in, stride, cp0, out);
}
template void PopcountColumnsAvx512<0>(const uint64_t* const*, int, const uint64_t*, int, int64_t,
                                       int64_t, int64_t, int64_t, int32_t*);
template void PopcountColumnsAvx512<1>(const uint64_t* const*, int, const uint64_t*, int, int64_t,
                                       int64_t, int64_t, int64_t, int32_t*);
template void PopcountColumnsAvx512<2>(const uint64_t* const*, int, const uint64_t*, int, int64_t,
                                       int64_t, int64_t, int64_t, int32_t*);
#endif
template void PopcountColumnsScalar<0>(const uint64_t* const*, int, const uint64_t*, int, int64_t,
                                       int64_t, int64_t, int64_t, int32_t*);
template void PopcountColumnsScalar<1>(const uint64_t* const*, int, const uint64_t*, int, int64_t,
                                       int64_t, int64_t, int64_t, int32_t*);
template void PopcountColumnsScalar<2>(const uint64_t* const*, int, const uint64_t*, int, int64_t,
                                       int64_t, int64_t, int64_t, int32_t*);

// Partial sums of cycle j (phase h, block b) into psi[(j*S + q)*ncp + cp] from the planes: the
// block's first wn words (W > 0: wn = W, known at compile time) of each plane, by the table's
// popcount_columns. Integer counts (converted to float by the read-out: scalar stores followed
// at once by a vector load of the same bytes would stall on store forwarding).
template <int W>
void Worker::PopcountSums(int64_t b, int h, int j, int64_t wn) {
  const uint64_t* xp[8];
  int na = 0;
  for (int a = 0; a < pd; ++a) {
    const int t = j * pd + a;
    xp[a] = t < p.x_bits ? XPlane(h, t) : nullptr;
    na = xp[a] != nullptr ? a + 1 : na;
  }
  const auto columns = Kernels().popcount_columns[W];
  for (int q = 0; q < S; ++q) {
    columns(xp, na, pw.Plane(b, q * pr, 0), pr, ncp, wn, words, 0,
            psi.data() + (j * S + q) * ncp);
  }
}
template void Worker::PopcountSums<0>(int64_t, int, int, int64_t);
template void Worker::PopcountSums<1>(int64_t, int, int, int64_t);
template void Worker::PopcountSums<2>(int64_t, int, int, int64_t);

// ---- Partial sums by row addition (1-bit DACs and cells; the table's row_sums) ----------------
// ps[q][cp] = sum over the driven word lines r of cycle j of bit q of level (r, cp): the byte
// rows of the driven lines (PackedAnalogWeights::bytes) added up, 32 bit lines per vector byte
// add. Exact (a sum of at most block <= 255 ones per byte). Worth it where fewer lines are
// driven than the popcount costs: each added row costs a load and an add per 32 partial sums,
// the popcount about 8 instructions per partial sum of a 128-row block.
void Worker::RowSumsScalar(int64_t b, int h, int j, int64_t wn) {
  const int64_t len = S * ncp, rb = pw.row_bytes;
  const uint64_t* xw = XPlane(h, j);
  const uint8_t* base = pw.bytes.data() + b * p.block * rb;
  int32_t* out = psi.data() + j * len;
  std::fill(out, out + len, 0);
  for (int64_t w = 0; w < wn; ++w) {
    for (uint64_t bits = xw[w]; bits != 0; bits &= bits - 1) {
      const uint8_t* row = base + (w * 64 + __builtin_ctzll(bits)) * rb;
      for (int64_t i = 0; i < len; ++i) out[i] += row[i];
    }
  }
}

#if defined(__AVX2__)
void Worker::RowSumsAvx2(int64_t b, int h, int j, int64_t wn) {
  const int64_t len = S * ncp, rb = pw.row_bytes;
  const uint64_t* xw = XPlane(h, j);
  const uint8_t* base = pw.bytes.data() + b * p.block * rb;
  int32_t* out = psi.data() + j * len;
  // The driven lines' byte rows.
  int nr = 0;
  for (int64_t w = 0; w < wn; ++w) {
    for (uint64_t bits = xw[w]; bits != 0; bits &= bits - 1) {
      row_list[static_cast<size_t>(nr++)] = static_cast<int32_t>((w * 64 + __builtin_ctzll(bits)) * rb);
    }
  }
  const int32_t* rl = row_list.data();
  // 32 byte sums widened to int32 at out[0..n): whole vectors, or through a buffer for the end.
  auto store = [&](__m256i a, int64_t at) {
    alignas(32) int32_t tmp[32];
    int32_t* dst = at + 32 <= len ? out + at : tmp;
    const __m128i lo = _mm256_castsi256_si128(a), hi = _mm256_extracti128_si256(a, 1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_cvtepu8_epi32(lo));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8),
                        _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 16), _mm256_cvtepu8_epi32(hi));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 24),
                        _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
    if (dst == tmp) std::copy(tmp, tmp + (len - at), out + at);
  };
  int64_t c0 = 0;
  // Tiles of 8 vectors (256 bit lines) in registers over all driven rows.
  for (; c0 + 256 <= rb; c0 += 256) {
    __m256i a[8];
    for (int v = 0; v < 8; ++v) a[v] = _mm256_setzero_si256();
    for (int t = 0; t < nr; ++t) {
      const __m256i* row = reinterpret_cast<const __m256i*>(base + rl[t] + c0);
      for (int v = 0; v < 8; ++v) a[v] = _mm256_add_epi8(a[v], _mm256_loadu_si256(row + v));
    }
    for (int v = 0; v < 8; ++v) store(a[v], c0 + 32 * v);
  }
  for (; c0 < rb; c0 += 32) {
    __m256i a = _mm256_setzero_si256();
    for (int t = 0; t < nr; ++t) {
      a = _mm256_add_epi8(a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + rl[t] + c0)));
    }
    if (c0 < len) store(a, c0);
  }
}
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__)
// 64 bit lines per byte add, tiles of 8 vectors (512 bit lines) in registers over all driven
// rows; the sums as bytes into psb (sums8: the direct codes' window reads them so) or widened
// to int32 into psi.
void Worker::RowSumsAvx512(int64_t b, int h, int j, int64_t wn) {
  const int64_t len = S * ncp, rb = pw.row_bytes;
  const uint64_t* xw = XPlane(h, j);
  const uint8_t* base = pw.bytes.data() + b * p.block * rb;
  int nr = 0;
  for (int64_t w = 0; w < wn; ++w) {
    for (uint64_t bits = xw[w]; bits != 0; bits &= bits - 1) {
      row_list[static_cast<size_t>(nr++)] =
          static_cast<int32_t>((w * 64 + __builtin_ctzll(bits)) * rb);
    }
  }
  const int32_t* rl = row_list.data();
  uint8_t* out8 = psb.data() + j * len;
  int32_t* out = psi.data() + j * len;
  // 64 byte sums at [at, at + 64) (the part below len).
  auto store = [&](__m512i a, int64_t at) {
    const int64_t n = std::min<int64_t>(64, len - at);
    const __mmask64 m = n == 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
    if (sums8) {
      _mm512_mask_storeu_epi8(out8 + at, m, a);
      return;
    }
    const __m128i q0 = _mm512_castsi512_si128(a), q1 = _mm512_extracti32x4_epi32(a, 1);
    const __m128i q2 = _mm512_extracti32x4_epi32(a, 2), q3 = _mm512_extracti32x4_epi32(a, 3);
    const __m128i qs[4] = {q0, q1, q2, q3};
    for (int g = 0; g < 4 && 16 * g < n; ++g) {
      const __mmask16 mg = static_cast<__mmask16>(m >> (16 * g));
      _mm512_mask_storeu_epi32(out + at + 16 * g, mg, _mm512_cvtepu8_epi32(qs[g]));
    }
  };
  int64_t c0 = 0;
  for (; c0 + 512 <= rb; c0 += 512) {
    __m512i a[8];
    for (int v = 0; v < 8; ++v) a[v] = _mm512_setzero_si512();
    for (int t = 0; t < nr; ++t) {
      const uint8_t* row = base + rl[t] + c0;
      for (int v = 0; v < 8; ++v) a[v] = _mm512_add_epi8(a[v], _mm512_loadu_si512(row + 64 * v));
    }
    for (int v = 0; v < 8; ++v) {
      if (c0 + 64 * v < len) store(a[v], c0 + 64 * v);
    }
  }
  for (; c0 < len; c0 += 64) {
    const int64_t n = std::min<int64_t>(64, rb - c0);  // rows hold rb bytes
    const __mmask64 m = n == 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
    __m512i a = _mm512_setzero_si512();
    for (int t = 0; t < nr; ++t) {
      a = _mm512_add_epi8(a, _mm512_maskz_loadu_epi8(m, base + rl[t] + c0));
    }
    store(a, c0);
  }
}
#endif

void LevelBitsRow(const int32_t* lv, int64_t ncp, int S, uint8_t* out) {
  for (int q = 0; q < S; ++q) {
    uint8_t* o = out + q * ncp;
    int64_t cp = 0;
#if defined(__AVX512F__)
    const __m128i sh = _mm_cvtsi32_si128(q);
    const __m512i one = _mm512_set1_epi32(1);
    for (; cp + 16 <= ncp; cp += 16) {
      const __m512i x = _mm512_and_si512(_mm512_srl_epi32(_mm512_loadu_si512(lv + cp), sh), one);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + cp), _mm512_cvtepi32_epi8(x));
    }
#endif
    for (; cp < ncp; ++cp) o[cp] = static_cast<uint8_t>((lv[cp] >> q) & 1);
  }
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__GFNI__)
namespace {
// Bit planes L[0..8) of 512 counts (count c's bit b at some bit of L[b]) to the counts as 512
// bytes out[0..8): the planes' bytes interleaved into qwords (qword w of out vector o: byte m =
// byte g(o, w) of L[7 - m], by three rounds of unpacks), then each qword's 8 x 8 bit matrix
// transposed by GF2P8AFFINEQB, so byte k of that qword is the count whose bits sit at bit k of
// byte g(o, w) of every plane. RowBitPosition is where that puts bit line c.
inline void PlanesToBytes(const __m512i* L, __m512i* out) {
  const __m512i r0 = L[7], r1 = L[6], r2 = L[5], r3 = L[4], r4 = L[3], r5 = L[2], r6 = L[1],
                r7 = L[0];
  const __m512i a0 = _mm512_unpacklo_epi8(r0, r1), a1 = _mm512_unpackhi_epi8(r0, r1);
  const __m512i a2 = _mm512_unpacklo_epi8(r2, r3), a3 = _mm512_unpackhi_epi8(r2, r3);
  const __m512i a4 = _mm512_unpacklo_epi8(r4, r5), a5 = _mm512_unpackhi_epi8(r4, r5);
  const __m512i a6 = _mm512_unpacklo_epi8(r6, r7), a7 = _mm512_unpackhi_epi8(r6, r7);
  const __m512i b0 = _mm512_unpacklo_epi16(a0, a2), b1 = _mm512_unpackhi_epi16(a0, a2);
  const __m512i b2 = _mm512_unpacklo_epi16(a1, a3), b3 = _mm512_unpackhi_epi16(a1, a3);
  const __m512i b4 = _mm512_unpacklo_epi16(a4, a6), b5 = _mm512_unpackhi_epi16(a4, a6);
  const __m512i b6 = _mm512_unpacklo_epi16(a5, a7), b7 = _mm512_unpackhi_epi16(a5, a7);
  const __m512i c[8] = {_mm512_unpacklo_epi32(b0, b4), _mm512_unpackhi_epi32(b0, b4),
                        _mm512_unpacklo_epi32(b1, b5), _mm512_unpackhi_epi32(b1, b5),
                        _mm512_unpacklo_epi32(b2, b6), _mm512_unpackhi_epi32(b2, b6),
                        _mm512_unpacklo_epi32(b3, b7), _mm512_unpackhi_epi32(b3, b7)};
  // x byte k = 1 << k: output byte k's bit i = bit k of the qword's byte 7 - i = bit k of L[i].
  const __m512i x = _mm512_set1_epi64(static_cast<long long>(0x8040201008040201ull));
  for (int o = 0; o < 8; ++o) out[o] = _mm512_gf2p8affine_epi64_epi8(x, c[o], 0);
}

struct RowBitTable {
  int16_t pos[512];
  RowBitTable() {
    // g(o, w): run the interleave on planes whose byte x holds x; qword w of out vector o then
    // holds byte g(o, w) of every plane. The transpose's bit k of byte g is bit 8 g + k.
    alignas(64) uint8_t in[64];
    for (int i = 0; i < 64; ++i) in[i] = static_cast<uint8_t>(i);
    __m512i L[8], C[8];
    for (int b = 0; b < 8; ++b) L[b] = _mm512_load_si512(in);
    // Planes with equal bytes: skip the bit transpose, read the interleave's bytes.
    const __m512i r = L[0];
    const __m512i a0 = _mm512_unpacklo_epi8(r, r), a1 = _mm512_unpackhi_epi8(r, r);
    const __m512i b0 = _mm512_unpacklo_epi16(a0, a0), b1 = _mm512_unpackhi_epi16(a0, a0);
    const __m512i b2 = _mm512_unpacklo_epi16(a1, a1), b3 = _mm512_unpackhi_epi16(a1, a1);
    C[0] = _mm512_unpacklo_epi32(b0, b0);
    C[1] = _mm512_unpackhi_epi32(b0, b0);
    C[2] = _mm512_unpacklo_epi32(b1, b1);
    C[3] = _mm512_unpackhi_epi32(b1, b1);
    C[4] = _mm512_unpacklo_epi32(b2, b2);
    C[5] = _mm512_unpackhi_epi32(b2, b2);
    C[6] = _mm512_unpacklo_epi32(b3, b3);
    C[7] = _mm512_unpackhi_epi32(b3, b3);
    for (int o = 0; o < 8; ++o) {
      alignas(64) uint8_t q[64];
      _mm512_store_si512(q, C[o]);
      for (int w = 0; w < 8; ++w) {
        const int g = q[8 * w];
        for (int k = 0; k < 8; ++k) pos[64 * o + 8 * w + k] = static_cast<int16_t>(8 * g + k);
      }
    }
  }
};
}  // namespace

int RowBitPosition(int c) {
  static const RowBitTable table;
  return table.pos[c];
}

namespace {
// Byte w of mask o (bit lines 64 o + 8 w + k, k < 8) goes to byte g(o, w) = pos / 8.
__m512i RowBitIndex() {
  static const __m512i idx = [] {
    alignas(64) uint8_t ix[64];
    for (int o = 0; o < 8; ++o) {
      for (int w = 0; w < 8; ++w) ix[RowBitPosition(64 * o + 8 * w) / 8] = static_cast<uint8_t>(8 * o + w);
    }
    return _mm512_load_si512(ix);
  }();
  return idx;
}
}  // namespace

void RowBitsFromLevels(const int32_t* lv, int64_t ncp, int S, uint64_t* out) {
  const int64_t len = S * ncp;
  if (ncp % 16 != 0) {
    std::vector<uint8_t> row(static_cast<size_t>((len + 511) / 512 * 512), 0);
    LevelBitsRow(lv, ncp, S, row.data());
    RowBitsFromBytes(row.data(), len, out);
    return;
  }
  // Bit line c = q ncp + cp at bit c of out (16 lines per test: ncp is a multiple of 16), then
  // each 512-line chunk's bytes moved to their RowBitPosition in place.
  const int64_t words = (len + 511) / 512 * 8;
  std::fill(out, out + words, uint64_t{0});
  auto* out_bytes = reinterpret_cast<unsigned char*>(out);
  for (int q = 0; q < S; ++q) {
    const __m512i bit = _mm512_set1_epi32(1 << q);
    for (int64_t cp = 0; cp < ncp; cp += 16) {
      const uint16_t b = _mm512_test_epi32_mask(_mm512_loadu_si512(lv + cp), bit);
      std::memcpy(out_bytes + (q * ncp + cp) / 8, &b, 2);
    }
  }
  const __m512i idx = RowBitIndex();
  for (int64_t c0 = 0; c0 < len; c0 += 512) {
    _mm512_storeu_si512(out + c0 / 64,
                        _mm512_permutexvar_epi8(idx, _mm512_loadu_si512(out + c0 / 64)));
  }
}

void RowBitsFromBytes(const uint8_t* bytes, int64_t len, uint64_t* out) {
  const __m512i idx = RowBitIndex();
  for (int64_t c0 = 0; c0 < len; c0 += 512) {
    alignas(64) uint64_t m[8];
    for (int o = 0; o < 8; ++o) {
      const __m512i v = _mm512_loadu_si512(bytes + c0 + 64 * o);
      m[o] = _mm512_test_epi8_mask(v, v);
    }
    _mm512_storeu_si512(out + c0 / 64, _mm512_permutexvar_epi8(idx, _mm512_load_si512(m)));
  }
}

// Bit-sliced counts of the driven rows: per 512 bit lines, carry-save adders over groups of 8
// rows (ones, twos, fours; the eights rippled into planes 3..7; a missing row is a zero row),
// counts up to 255 (block <= 255), then PlanesToBytes into psb.
void Worker::RowCountsAvx512(int64_t b, int h, int j, int64_t wn) {
  const int64_t len = S * ncp, rw = pw.row_bit_words;
  const uint64_t* xw = XPlane(h, j);
  const uint64_t* base = pw.row_bits.data() + b * p.block * rw;
  int nr = 0;
  for (int64_t w = 0; w < wn; ++w) {
    for (uint64_t bits = xw[w]; bits != 0; bits &= bits - 1) {
      row_list[static_cast<size_t>(nr++)] =
          static_cast<int32_t>((w * 64 + __builtin_ctzll(bits)) * rw);
    }
  }
  const int32_t* rl = row_list.data();
  uint8_t* out8 = psb.data() + j * len;
  auto csa = [](__m512i& hi, __m512i& lo, __m512i a, __m512i bb, __m512i c) {
    hi = _mm512_ternarylogic_epi64(a, bb, c, 0xE8);  // majority
    lo = _mm512_ternarylogic_epi64(a, bb, c, 0x96);  // parity
  };
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t c0 = 0; c0 < len; c0 += 512) {
    const int64_t wo = c0 / 64;  // word offset of the chunk in a row
    __m512i L[8];
    for (int l = 0; l < 8; ++l) L[l] = zero;
    auto row = [&](int t) {
      return t < nr ? _mm512_loadu_si512(base + rl[t] + wo) : zero;
    };
    for (int t = 0; t < nr; t += 8) {
      __m512i ta, tb, fa, fb, e;
      csa(ta, L[0], L[0], row(t), row(t + 1));
      csa(tb, L[0], L[0], row(t + 2), row(t + 3));
      csa(fa, L[1], L[1], ta, tb);
      csa(ta, L[0], L[0], row(t + 4), row(t + 5));
      csa(tb, L[0], L[0], row(t + 6), row(t + 7));
      csa(fb, L[1], L[1], ta, tb);
      csa(e, L[2], L[2], fa, fb);
      for (int l = 3; l < 8; ++l) {  // planes 3..7 += eights (a half adder each)
        const __m512i carry = _mm512_and_si512(L[l], e);
        L[l] = _mm512_xor_si512(L[l], e);
        e = carry;
      }
    }
    __m512i bytes[8];
    PlanesToBytes(L, bytes);
    for (int o = 0; o < 8; ++o) {
      const int64_t at = c0 + 64 * o;
      if (at >= len) break;
      const int64_t n = std::min<int64_t>(64, len - at);
      _mm512_mask_storeu_epi8(out8 + at, n == 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1,
                              bytes[o]);
    }
  }
}
#endif

// Partial sums from per-cell conductances: word line after word line, as the reference.
void Worker::ConductanceSums(const int32_t* xm, int64_t r0, int64_t r1, int h, int j) {
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

}  // namespace pim::kernels::fast::internal
