// Philox-4x32-10 (rng.h) on many counters at once: 16 lanes with AVX-512, 8 with AVX2, each lane
// its own 64-bit counter, shared key and stream. Lane j equals Philox4x32(key, stream, ctr[j])
// bit for bit (base/philox_simd_test.cc): a draw stays a pure function of its coordinates, only
// the number computed per instruction changes. Used where the counters are scattered (the cells
// a pulsed update reaches), so the contiguous-group kernels of kernels/fast do not apply.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "pimtrain/base/rng.h"

namespace pim {

namespace philox_simd_detail {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

#if defined(__AVX512F__)
// 32 x 32 -> 64-bit products of 16 lanes: hi and lo words.
inline void MulHiLo16(__m512i a, __m512i m, __m512i* hi, __m512i* lo) {
  const __m512i pe = _mm512_mul_epu32(a, m);
  const __m512i po = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  *lo = _mm512_mask_blend_epi32(0xAAAA, pe, _mm512_slli_epi64(po, 32));
  *hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 32), po);
}
#endif
#if defined(__AVX2__)
inline void MulHiLo8(__m256i a, __m256i m, __m256i* hi, __m256i* lo) {
  const __m256i pe = _mm256_mul_epu32(a, m);
  const __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}
#endif

}  // namespace philox_simd_detail

// words[w][j] = Philox4x32(key, stream_j, lo[j] | hi[j] << 32)[w] for j < n: the counter as its
// low 32-bit words `lo` and high words `hi` (null: all 0); stream_j = `stream`, or with its low
// 32 bits replaced by slo[j] where `slo` is not null.
inline void PhiloxBlocks(uint64_t key, uint64_t stream, const uint32_t* lo, const uint32_t* hi,
                         const uint32_t* slo, int64_t n, uint32_t* w0, uint32_t* w1, uint32_t* w2,
                         uint32_t* w3) {
  using namespace philox_simd_detail;
  const uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  const uint32_t s0 = static_cast<uint32_t>(stream), s1 = static_cast<uint32_t>(stream >> 32);
  int64_t j = 0;
#if defined(__AVX512F__)
  {
    const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kM0));
    const __m512i m1 = _mm512_set1_epi32(static_cast<int>(kM1));
    for (; j + 16 <= n; j += 16) {
      __m512i c0 = _mm512_loadu_si512(lo + j);
      __m512i c1 = hi != nullptr ? _mm512_loadu_si512(hi + j) : _mm512_setzero_si512();
      __m512i c2 = slo != nullptr ? _mm512_loadu_si512(slo + j)
                                  : _mm512_set1_epi32(static_cast<int>(s0));
      __m512i c3 = _mm512_set1_epi32(static_cast<int>(s1));
      uint32_t a = k0, b = k1;
      for (int r = 0; r < 10; ++r) {
        __m512i hi0, lo0, hi1, lo1;
        MulHiLo16(c0, m0, &hi0, &lo0);
        MulHiLo16(c2, m1, &hi1, &lo1);
        const __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1),
                                            _mm512_set1_epi32(static_cast<int>(a)));
        const __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3),
                                            _mm512_set1_epi32(static_cast<int>(b)));
        c1 = lo1;
        c3 = lo0;
        c0 = n0;
        c2 = n2;
        a += kW0;
        b += kW1;
      }
      _mm512_storeu_si512(w0 + j, c0);
      _mm512_storeu_si512(w1 + j, c1);
      _mm512_storeu_si512(w2 + j, c2);
      _mm512_storeu_si512(w3 + j, c3);
    }
  }
#endif
#if defined(__AVX2__)
  {
    const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kM0));
    const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kM1));
    for (; j + 8 <= n; j += 8) {
      __m256i c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lo + j));
      __m256i c1 = hi != nullptr ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi + j))
                                 : _mm256_setzero_si256();
      __m256i c2 = slo != nullptr
                       ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(slo + j))
                       : _mm256_set1_epi32(static_cast<int>(s0));
      __m256i c3 = _mm256_set1_epi32(static_cast<int>(s1));
      uint32_t a = k0, b = k1;
      for (int r = 0; r < 10; ++r) {
        __m256i hi0, lo0, hi1, lo1;
        MulHiLo8(c0, m0, &hi0, &lo0);
        MulHiLo8(c2, m1, &hi1, &lo1);
        const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1),
                                            _mm256_set1_epi32(static_cast<int>(a)));
        const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3),
                                            _mm256_set1_epi32(static_cast<int>(b)));
        c1 = lo1;
        c3 = lo0;
        c0 = n0;
        c2 = n2;
        a += kW0;
        b += kW1;
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w0 + j), c0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w1 + j), c1);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w2 + j), c2);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(w3 + j), c3);
    }
  }
#endif
  for (; j < n; ++j) {
    const uint64_t c = lo[j] | (hi != nullptr ? static_cast<uint64_t>(hi[j]) << 32 : 0);
    const uint64_t st = slo != nullptr ? ((stream >> 32) << 32) | slo[j] : stream;
    const auto b = Philox4x32(key, st, c);
    w0[j] = b[0];
    w1[j] = b[1];
    w2[j] = b[2];
    w3[j] = b[3];
  }
}

}  // namespace pim
