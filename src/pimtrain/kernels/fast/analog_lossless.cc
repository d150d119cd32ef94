// Fast analog kernel, the lossless read-out's exact integer product x W (int16 row pairs,
// VPMADDWD / VPDPWSSD), equal to the sum of the lossless codes (docs/analog.md).

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

// prod = x W for samples [m0, m1): int16 row pairs of x and of the levels, multiplied and
// summed in int32 (VPDPWSSD with AVX-512 VNNI) over row chunks short enough not to overflow,
// added up in int64. Exact, so equal to the sum of the lossless codes (docs/analog.md).
// Loop order: per row chunk, the x pairs of all samples first; then per tile of 64 columns
// all samples, 4 at a time, so the tile's weights (chunk x 64 pairs) stay in L2 instead of
// streaming all weights once per 4 samples.
void Worker::ExactProduct(int64_t m0, int64_t m1) {
  const int64_t rows = m1 - m0, rp = (p.k + 1) / 2, ncp = this->ncp;
  prod.assign(static_cast<size_t>(rows * ncp), 0);
  prod_m0 = m0;
  const int64_t xmax = (int64_t{1} << p.x_bits) - 1, wmax = (int64_t{1} << pw.bits) - 1;
  // Pairs per chunk: 2 * kcp * xmax * wmax < 2^31.
  const int64_t kcp = std::max<int64_t>(1, std::min<int64_t>(rp, INT32_MAX / (2 * xmax * wmax)));
  constexpr int kR = kExactRows;
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
    // The columns the table's exact_product_tiles does (whole tiles), then the rest here.
    const int64_t c0 = (this->*Kernels().exact_product_tiles)(k0, kn, kcp, rows, rows_padded);
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

// Per group of kExactRows samples, the row pairs of the chunk where any of them is nonzero
// (count first): a pair of zeros in all of them adds nothing (image borders, ReLU zeros), and the
// list serves every column tile.
void Worker::LivePairs(int64_t kn, int64_t kcp, int64_t rows_padded) {
  constexpr int kR = kExactRows;
  nonzero.resize(static_cast<size_t>((rows_padded / kR) * (kcp + 1)));
  for (int64_t g = 0; g < rows_padded / kR; ++g) {
    int32_t* list = nonzero.data() + g * (kcp + 1);
    const int32_t* xg = xpairs.data() + g * kR * kcp;
    int32_t cnt = 0;
    for (int64_t kk = 0; kk < kn; ++kk) {
      int32_t any = 0;
      for (int i = 0; i < kR; ++i) any |= xg[i * kcp + kk];
      list[1 + cnt] = static_cast<int32_t>(kk);
      cnt += any != 0;
    }
    list[0] = cnt;
  }
}

// ---- The variants of the table's exact_product_tiles: prod += the chunk's product for whole
// column tiles, kExactRows samples at a time over their live pairs; return the columns done.
#if defined(__AVX512F__) && defined(__AVX512BW__)
// 64 columns a tile (masked at the end), VPDPWSSD with VNNI, else VPMADDWD + add.
int64_t Worker::ExactProductTilesAvx512(int64_t k0, int64_t kn, int64_t kcp, int64_t rows,
                                        int64_t rows_padded) {
  constexpr int kR = kExactRows;
  const int64_t ncp = this->ncp;
  const int16_t* wp = pw.pairs.data();
  const std::vector<int32_t>& xp = xpairs;
  LivePairs(kn, kcp, rows_padded);
  int64_t c0 = 0;
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
  return std::min(c0, ncp);
}
#endif

// 16 columns a tile, VPMADDWD + add; the last columns (< 16) are left to the scalar loop.
int64_t Worker::ExactProductTilesAvx2(int64_t k0, int64_t kn, int64_t kcp, int64_t rows,
                                      int64_t rows_padded) {
  constexpr int kR = kExactRows;
  const int64_t ncp = this->ncp;
  const int16_t* wp = pw.pairs.data();
  LivePairs(kn, kcp, rows_padded);
  int64_t c0 = 0;
  for (; c0 + 16 <= ncp; c0 += 16) {
    for (int64_t r0 = 0; r0 < rows; r0 += kR) {
      const int64_t nr = std::min<int64_t>(kR, rows - r0);
      __m256i a[kR][2];
      for (int i = 0; i < kR; ++i) a[i][0] = a[i][1] = _mm256_setzero_si256();
      const int32_t* xr0 = xpairs.data() + r0 * kcp;
      const int32_t* const live = nonzero.data() + (r0 / kR) * (kcp + 1);
      for (int64_t li = 1; li <= live[0]; ++li) {
        const int64_t kk = live[li];
        const int16_t* wr = wp + ((k0 + kk) * ncp + c0) * 2;
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + 16));
        for (int i = 0; i < kR; ++i) {
          const __m256i xb = _mm256_set1_epi32(xr0[i * kcp + kk]);
          a[i][0] = _mm256_add_epi32(a[i][0], _mm256_madd_epi16(xb, w0));
          a[i][1] = _mm256_add_epi32(a[i][1], _mm256_madd_epi16(xb, w1));
        }
      }
      for (int i = 0; i < nr; ++i) {
        int64_t* o = prod.data() + (r0 + i) * ncp + c0;
        for (int v = 0; v < 2; ++v) {
          __m256i* ov = reinterpret_cast<__m256i*>(o + 8 * v);
          const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(a[i][v]));
          const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(a[i][v], 1));
          _mm256_storeu_si256(ov, _mm256_add_epi64(_mm256_loadu_si256(ov), lo));
          _mm256_storeu_si256(ov + 1, _mm256_add_epi64(_mm256_loadu_si256(ov + 1), hi));
        }
      }
    }
  }
  return c0;
}

}  // namespace pim::kernels::fast::internal
