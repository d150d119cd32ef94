// Coordinate-keyed normals and uniforms for the fast analog kernel (FillNormals, FillUniforms):
// 8-lane (AVX2) and 16-lane (AVX-512) Philox-4x32-10 with NoiseNormal's exact float steps, the
// tail lanes listed branch-free and patched from the quantile table (refined cells with their
// continuous draw). Equal to NoiseNormal / NoiseUniform16 bit for bit (kernels/analog_test.cc).
#include <immintrin.h>

#include <algorithm>
#include <limits>
#include <cstdint>
#include <cstring>
#include <vector>

#include "pimtrain/kernels/analog.h"
#include "pimtrain/kernels/fast/analog_worker.h"

// GCC 12 flags the AVX-512 intrinsics' internal _mm512_undefined_* operands (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace pim::kernels::fast {
using detail::kTailHiBase;
namespace {

// ---- Coordinate-keyed normals, 8 or 16 Philox blocks at a time --------------------------
// The central 95 % of each 16-bit uniform h maps through Acklam's rational in float (the scalar
// GaussianFrom16's operations, one IEEE operation each, so any vector width rounds alike); the
// tails (h < kGaussTail or h >= 65536 - kGaussTail, ~5 % of lanes) are patched from the quantile
// table. A branch per tail lane mispredicts often (a third of the 8-lane vectors hold one), so
// the tail lanes are compressed, without branches, into a list of (position << 12 | table index)
// entries and patched in one loop per call.
constexpr int kPosShift = 12;                             // 2 * kGaussTail <= 4096
constexpr int64_t kMaxListPositions = int64_t{1} << (32 - kPosShift);


// For each 8-bit lane mask, the lane numbers of its set bits first (compressing a vector).
struct CompressTable {
  alignas(32) uint32_t idx[256][8];
  constexpr CompressTable() : idx() {
    for (int m = 0; m < 256; ++m) {
      int n = 0;
      for (int l = 0; l < 8; ++l) {
        if (m & (1 << l)) idx[m][n++] = static_cast<uint32_t>(l);
      }
      for (; n < 8; ++n) idx[m][n] = 0;
    }
  }
};
constexpr CompressTable kCompress;

// 32 x 32 -> 64-bit products of 8 lanes: hi and lo words.
inline void MulHiLo(__m256i a, __m256i m, __m256i* hi, __m256i* lo) {
  const __m256i pe = _mm256_mul_epu32(a, m);
  const __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}

// Acklam's central rational on 8 lanes of 16-bit uniforms (as int32).
inline __m256 Central8(__m256i h) {
  const __m256 vhalf = _mm256_set1_ps(0.5f), vinv = _mm256_set1_ps(1.0f / 65536.0f);
  const __m256 t =
      _mm256_sub_ps(_mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(h), vhalf), vinv), vhalf);
  const __m256 r = _mm256_mul_ps(t, t);
  __m256 num = _mm256_set1_ps(kGaussA[0]), den = _mm256_set1_ps(kGaussB[0]);
  for (int i = 1; i < 6; ++i) {
    num = _mm256_add_ps(_mm256_mul_ps(num, r), _mm256_set1_ps(kGaussA[i]));
    den = _mm256_add_ps(_mm256_mul_ps(den, r), _mm256_set1_ps(i < 5 ? kGaussB[i] : 1.0f));
  }
  return _mm256_div_ps(_mm256_mul_ps(t, num), den);
}

// Appends the tail lanes of h (8 lanes at positions pos + lane) to list; returns the new size.
inline int64_t TailList8(__m256i h, uint32_t pos, uint32_t* list, int64_t n) {
  const __m256i lo_edge = _mm256_set1_epi32(static_cast<int>(kGaussTail));
  const __m256i hi_edge = _mm256_set1_epi32(static_cast<int>(65536 - kGaussTail) - 1);
  const __m256i hi_tail = _mm256_cmpgt_epi32(h, hi_edge);
  const __m256i tail = _mm256_or_si256(_mm256_cmpgt_epi32(lo_edge, h), hi_tail);
  const unsigned mask = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(tail)));
  const __m256i tidx = _mm256_sub_epi32(
      h, _mm256_and_si256(hi_tail, _mm256_set1_epi32(static_cast<int>(kTailHiBase))));
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i posv = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(pos)), lanes);
  const __m256i entry = _mm256_or_si256(_mm256_slli_epi32(posv, kPosShift), tidx);
  const __m256i perm =
      _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress.idx[mask]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(list + n),
                      _mm256_permutevar8x32_epi32(entry, perm));
  return n + __builtin_popcount(mask);
}

// Ten Philox-4x32 rounds on 8 lanes (counters c0..c3, key k0, k1): the words in place.
inline void Philox8(__m256i* c0, __m256i* c1, __m256i* c2, __m256i* c3, uint32_t k0,
                    uint32_t k1) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int r = 0; r < 10; ++r) {
    __m256i hi0, lo0, hi1, lo1;
    MulHiLo(*c0, m0, &hi0, &lo0);
    MulHiLo(*c2, m1, &hi1, &lo1);
    const __m256i n0 =
        _mm256_xor_si256(_mm256_xor_si256(hi1, *c1), _mm256_set1_epi32(static_cast<int>(k0)));
    const __m256i n2 =
        _mm256_xor_si256(_mm256_xor_si256(hi0, *c3), _mm256_set1_epi32(static_cast<int>(k1)));
    *c1 = lo1;
    *c3 = lo0;
    *c0 = n0;
    *c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

// The Philox-4x32-10 blocks 8g .. 8g+7 (group g), 8 lanes: words[w] lane l is word w of block
// 8g + l.
inline void Philox8Group(uint64_t key, uint64_t stream, uint64_t g, __m256i words[4]) {
  const uint64_t ctr = g * 8;
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  // 8g + lane never carries into the high word (8g's low 3 bits are 0).
  words[0] = _mm256_add_epi32(
      _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(ctr))), lanes);
  words[1] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(ctr >> 32)));
  words[2] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
  words[3] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
  Philox8(&words[0], &words[1], &words[2], &words[3], static_cast<uint32_t>(key),
          static_cast<uint32_t>(key >> 32));
}

// Half `half` of each 32-bit lane of a Philox output word: the 16-bit uniforms (adc.h's layout,
// draw 64 g + 32 half + 8 w + lane for word w).
inline __m256i Uniforms16(__m256i word, int half) {
  return _mm256_and_si256(half == 0 ? word : _mm256_srli_epi32(word, 16),
                          _mm256_set1_epi32(0xFFFF));
}
#if defined(__AVX512F__)
inline __m512i Uniforms16(__m512i word, int half) {
  return _mm512_and_si512(half == 0 ? word : _mm512_srli_epi32(word, 16),
                          _mm512_set1_epi32(0xFFFF));
}
#endif

// The 64 normals of group g (Philox blocks 8g .. 8g+7) into out[0..64) in index order (see
// adc.h), central values only; the tail lanes are appended to list as positions pos + 0..63.
int64_t GroupNormals8(uint64_t key, uint64_t stream, uint64_t g, float* out, uint32_t pos,
                      uint32_t* list, int64_t n) {
  __m256i words[4];
  Philox8Group(key, stream, g, words);
  for (int half = 0; half < 2; ++half) {
    for (int w = 0; w < 4; ++w) {
      const __m256i h = Uniforms16(words[w], half);
      const int o = 32 * half + 8 * w;
      _mm256_storeu_ps(out + o, Central8(h));
      n = TailList8(h, pos + static_cast<uint32_t>(o), list, n);
    }
  }
  return n;
}

}  // namespace

// ---- The ISA variants of the table's group_pair_normals (analog_worker.h) ---------------------
namespace internal {

// Two groups (g, g + 1) with AVX2: their Philox rounds interleaved, then the rationals of four
// vectors at a time, so that the long dependency chains of one vector (ten multiply rounds, then
// eleven rational steps and a division) overlap with the others'. The same float operations per
// lane as GroupNormals8 (and the scalar GaussianFrom16): out[0..128), positions pos + 0..127.
int64_t GroupPairNormalsAvx2(uint64_t key, uint64_t stream, uint64_t g, float* out, uint32_t pos,
                             uint32_t* list, int64_t n) {
  __m256i wa[4], wb[4];
  {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const uint64_t ca = g * 8, cb = (g + 1) * 8;  // 8g + lane never carries (low 3 bits 0)
    wa[0] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(ca))), lanes);
    wa[1] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(ca >> 32)));
    wb[0] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(cb))), lanes);
    wb[1] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(cb >> 32)));
    wa[2] = wb[2] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
    wa[3] = wb[3] = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
    const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
    const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
    uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
    for (int r = 0; r < 10; ++r) {
      const __m256i kv0 = _mm256_set1_epi32(static_cast<int>(k0));
      const __m256i kv1 = _mm256_set1_epi32(static_cast<int>(k1));
      __m256i* const both[2] = {wa, wb};
      for (__m256i* c : both) {
        __m256i hi0, lo0, hi1, lo1;
        MulHiLo(c[0], m0, &hi0, &lo0);
        MulHiLo(c[2], m1, &hi1, &lo1);
        const __m256i n0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c[1]), kv0);
        const __m256i n2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c[3]), kv1);
        c[1] = lo1;
        c[3] = lo0;
        c[0] = n0;
        c[2] = n2;
      }
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
  }
  const __m256 vhalf = _mm256_set1_ps(0.5f), vinv = _mm256_set1_ps(1.0f / 65536.0f);
  for (int grp = 0; grp < 2; ++grp) {
    const __m256i* words = grp == 0 ? wa : wb;
    for (int half = 0; half < 2; ++half) {
      __m256i hv[4];
      __m256 t[4], r[4], num[4], den[4];
      for (int w = 0; w < 4; ++w) {
        hv[w] = Uniforms16(words[w], half);
        t[w] = _mm256_sub_ps(
            _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(hv[w]), vhalf), vinv), vhalf);
        r[w] = _mm256_mul_ps(t[w], t[w]);
        num[w] = _mm256_set1_ps(kGaussA[0]);
        den[w] = _mm256_set1_ps(kGaussB[0]);
      }
      for (int i = 1; i < 6; ++i) {
        const __m256 a = _mm256_set1_ps(kGaussA[i]);
        const __m256 b = _mm256_set1_ps(i < 5 ? kGaussB[i] : 1.0f);
        for (int w = 0; w < 4; ++w) {
          num[w] = _mm256_add_ps(_mm256_mul_ps(num[w], r[w]), a);
          den[w] = _mm256_add_ps(_mm256_mul_ps(den[w], r[w]), b);
        }
      }
      for (int w = 0; w < 4; ++w) {
        const int o = 64 * grp + 32 * half + 8 * w;
        _mm256_storeu_ps(out + o, _mm256_div_ps(_mm256_mul_ps(t[w], num[w]), den[w]));
        n = TailList8(hv[w], pos + static_cast<uint32_t>(o), list, n);
      }
    }
  }
  return n;
}

#if defined(__AVX512F__) && defined(__AVX512DQ__)
// 16 lanes: groups g and g + 1 at once (Philox blocks 8g .. 8g+15); out[0..128).
// pe / po hold the even / odd lanes' 64-bit products; a masked in-lane dword swap merges them.
inline void MulHiLo16(__m512i a, __m512i m, __m512i* hi, __m512i* lo) {
  const __m512i pe = _mm512_mul_epu32(a, m);
  const __m512i po = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  *lo = _mm512_mask_shuffle_epi32(pe, 0xAAAA, po, _MM_PERM_CDAB);
  *hi = _mm512_mask_shuffle_epi32(po, 0x5555, pe, _MM_PERM_CDAB);
}

// The Philox-4x32-10 blocks 8g .. 8g+15 (groups g and g + 1), 16 lanes: words[w] lane l is word w
// of block 8g + l, the same bits as Philox8 on each half.
inline void Philox16(uint64_t key, uint64_t stream, uint64_t g, __m512i words[4]) {
  const uint64_t ctr = g * 8;
  const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  // 8g + lane (lane < 16) may carry into the high word when 8g's low word is 2^32 - 8.
  const uint32_t lo32 = static_cast<uint32_t>(ctr);
  __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(lo32)), lanes);
  const __mmask16 carry = _mm512_cmplt_epu32_mask(c0, _mm512_set1_epi32(static_cast<int>(lo32)));
  const __m512i hi32 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(ctr >> 32)));
  __m512i c1 = _mm512_mask_add_epi32(hi32, carry, hi32, _mm512_set1_epi32(1));
  __m512i c2 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
  __m512i c3 = _mm512_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(0xCD9E8D57u));
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int r = 0; r < 10; ++r) {
    __m512i hi0, lo0, hi1, lo1;
    MulHiLo16(c0, m0, &hi0, &lo0);
    MulHiLo16(c2, m1, &hi1, &lo1);
    const __m512i n0 =
        _mm512_ternarylogic_epi32(hi1, c1, _mm512_set1_epi32(static_cast<int>(k0)), 0x96);
    const __m512i n2 =
        _mm512_ternarylogic_epi32(hi0, c3, _mm512_set1_epi32(static_cast<int>(k1)), 0x96);
    c1 = lo1;
    c3 = lo0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  words[0] = c0;
  words[1] = c1;
  words[2] = c2;
  words[3] = c3;
}

int64_t GroupPairNormalsAvx512(uint64_t key, uint64_t stream, uint64_t g, float* out,
                               uint32_t pos, uint32_t* list, int64_t n) {
  __m512i words[4];
  Philox16(key, stream, g, words);
  const __m512 vhalf = _mm512_set1_ps(0.5f), vinv = _mm512_set1_ps(1.0f / 65536.0f);
  const __m512i lo_edge = _mm512_set1_epi32(static_cast<int>(kGaussTail));
  const __m512i hi_edge = _mm512_set1_epi32(static_cast<int>(65536 - kGaussTail) - 1);
  // Lane l of a vector lands at group (l / 8), offset l % 8: position pos + 64 (l / 8) + l % 8.
  const __m512i lane_pos =
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 64, 65, 66, 67, 68, 69, 70, 71);
  const __m512i pos_shifted = _mm512_slli_epi32(
      _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(pos)), lane_pos), kPosShift);
  const __m512i tail_span = _mm512_set1_epi32(static_cast<int>(65536 - 2 * kGaussTail));
  const __m512i hi_base = _mm512_set1_epi32(static_cast<int>(kTailHiBase));
  for (int half = 0; half < 2; ++half) {
    __m512i hv[4];
    __m512 t[4], r[4], num[4], den[4];
    for (int w = 0; w < 4; ++w) {
      hv[w] = Uniforms16(words[w], half);
      t[w] = _mm512_sub_ps(_mm512_mul_ps(_mm512_add_ps(_mm512_cvtepi32_ps(hv[w]), vhalf), vinv),
                           vhalf);
      r[w] = _mm512_mul_ps(t[w], t[w]);
      num[w] = _mm512_set1_ps(kGaussA[0]);
      den[w] = _mm512_set1_ps(kGaussB[0]);
    }
    for (int i = 1; i < 6; ++i) {
      const __m512 a = _mm512_set1_ps(kGaussA[i]);
      const __m512 b = _mm512_set1_ps(i < 5 ? kGaussB[i] : 1.0f);
      for (int w = 0; w < 4; ++w) {
        num[w] = _mm512_add_ps(_mm512_mul_ps(num[w], r[w]), a);
        den[w] = _mm512_add_ps(_mm512_mul_ps(den[w], r[w]), b);
      }
    }
    for (int w = 0; w < 4; ++w) {
      const __m512 z = _mm512_div_ps(_mm512_mul_ps(t[w], num[w]), den[w]);
      const int o = 32 * half + 8 * w;
      _mm256_storeu_ps(out + o, _mm512_castps512_ps256(z));
      _mm256_storeu_ps(out + 64 + o, _mm512_extractf32x8_ps(z, 1));
      // Tail <=> (h - kGaussTail) mod 2^32 >= 65536 - 2 kGaussTail (one unsigned compare).
      const __mmask16 tail = _mm512_cmpge_epu32_mask(_mm512_sub_epi32(hv[w], lo_edge), tail_span);
      const __mmask16 hi_tail = _mm512_mask_cmpgt_epi32_mask(tail, hv[w], hi_edge);
      const __m512i tidx = _mm512_mask_sub_epi32(hv[w], hi_tail, hv[w], hi_base);
      const __m512i entry = _mm512_or_si512(
          _mm512_add_epi32(pos_shifted, _mm512_set1_epi32(static_cast<int>(
                                            static_cast<uint32_t>(o) << kPosShift))),
          tidx);
      _mm512_storeu_si512(list + n, _mm512_maskz_compress_epi32(tail, entry));
      n += __builtin_popcount(static_cast<unsigned>(tail));
    }
  }
  return n;
}
#endif

}  // namespace internal

namespace {

// The listed tail lanes: the quantile table's value, or in a refined cell (~0.2 % of the draws,
// 2.6 % of the listed ones) the continuous draw; out[pos] is draw base + pos. With `deferred`,
// a refined cell's draw in [start, end) keeps its label (the table's value) and is listed
// there, at its index less origin, instead (its continuous value costs a double inverse CDF
// and a Philox block, and is often not needed: internal::RefinedEdges).
inline void PatchTails(float* out, const uint32_t* list, int64_t n, uint64_t key, uint64_t stream,
                       uint64_t base, std::vector<internal::DeferredDraw>* deferred,
                       uint64_t start, uint64_t end, uint64_t origin) {
  const float* tail = GetGaussianTable().tail;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t pos = list[i] >> kPosShift, tidx = list[i] & ((1u << kPosShift) - 1);
    if (tidx - kGaussRefine < 2 * kGaussTail - 2 * kGaussRefine) [[likely]] {
      out[pos] = tail[tidx];
    } else if (deferred != nullptr) {
      out[pos] = tail[tidx];
      const uint64_t at = base + pos;
      if (at >= start && at < end) {
        deferred->push_back({static_cast<uint32_t>(at - origin),
                             tidx < kGaussTail ? tidx : tidx + kTailHiBase});
      }
    } else {
      out[pos] = GaussianRefined(tidx < kGaussTail ? tidx : tidx + kTailHiBase,
                                 NoiseRefineWord(key, stream, base + pos));
    }
  }
}

void FillNormalsImpl(uint64_t key, uint64_t stream, uint64_t start, int64_t count, float* out,
                     std::vector<internal::DeferredDraw>* deferred) {
  if (count <= 0) return;
  const uint64_t end = start + static_cast<uint64_t>(count);
  // Whole groups in chunks whose positions fit the list entries; partial groups via tmp.
  constexpr int64_t kChunkGroups = 256;  // 16384 normals
  static_assert(kChunkGroups * 64 <= kMaxListPositions);
  thread_local std::vector<uint32_t> list(static_cast<size_t>(kChunkGroups * 64 + 16));
  alignas(32) float tmp[64];
  uint64_t i = start;
  while (i < end) {
    const uint64_t g = i >> 6;
    if ((i & 63) != 0 || end - i < 64) {
      const uint64_t g_end = std::min(end, (g + 1) << 6);
      const int64_t n = GroupNormals8(key, stream, g, tmp, 0, list.data(), 0);
      PatchTails(tmp, list.data(), n, key, stream, g << 6, deferred, i, g_end, start);
      std::memcpy(out + (i - start), tmp + (i & 63), (g_end - i) * sizeof(float));
      i = g_end;
      continue;
    }
    const uint64_t groups =
        std::min<uint64_t>((end - i) >> 6, static_cast<uint64_t>(kChunkGroups));
    float* o = out + (i - start);
    int64_t n = 0;
    uint64_t k = 0;
    const auto pair_normals = internal::Kernels().group_pair_normals;
    for (; k + 2 <= groups; k += 2) {
      n = pair_normals(key, stream, g + k, o + 64 * k, static_cast<uint32_t>(64 * k), list.data(),
                       n);
    }
    for (; k < groups; ++k) {
      n = GroupNormals8(key, stream, g + k, o + 64 * k, static_cast<uint32_t>(64 * k), list.data(),
                        n);
    }
    PatchTails(o, list.data(), n, key, stream, i, deferred, i, i + groups * 64, start);
    i += groups * 64;
  }
}

}  // namespace

void FillNormals(uint64_t key, uint64_t stream, uint64_t start, int64_t count, float* out) {
  FillNormalsImpl(key, stream, start, count, out, nullptr);
}

namespace internal {

void FillNormalsDeferRefined(uint64_t key, uint64_t stream, uint64_t start, int64_t count,
                             float* out, std::vector<DeferredDraw>& deferred) {
  deferred.clear();
  FillNormalsImpl(key, stream, start, count, out, &deferred);
}

const RefinedEdges& GetRefinedEdges() {
  static const RefinedEdges edges = [] {
    RefinedEdges e;
    const float inf = std::numeric_limits<float>::infinity();
    for (uint32_t c = 0; c < 2 * kGaussRefine; ++c) {
      const uint32_t h = c < kGaussRefine ? c : 65536 - 2 * kGaussRefine + c;
      const float a = GaussianRefined(h, 0), b = GaussianRefined(h, ~uint64_t{0});
      // Two float steps of margin: the double quantile is monotone to within a double ulp or
      // two, which float rounding can turn into at most one float step.
      float lo = std::min(a, b), hi = std::max(a, b);
      for (int k = 0; k < 2; ++k) {
        lo = std::nextafter(lo, -inf);
        hi = std::nextafter(hi, inf);
      }
      e.lo[c] = lo;
      e.hi[c] = hi;
    }
    return e;
  }();
  return edges;
}

}  // namespace internal

// The 16-bit uniforms h behind NoiseNormal(key, stream, start + i), i < count (the same Philox
// blocks and layout as the normals, without the inverse CDF).
void FillUniforms(uint64_t key, uint64_t stream, uint64_t start, int64_t count, uint32_t* out) {
  if (count <= 0) return;
  const uint64_t end = start + static_cast<uint64_t>(count);
  uint64_t i = start;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
  constexpr uint64_t kStep = 128;  // two groups per Philox16
#else
  constexpr uint64_t kStep = 64;
#endif
  alignas(64) uint32_t tmp[kStep];
  while (i < end) {
    const uint64_t g = i >> 6;
    const bool direct = (i & 63) == 0 && end - i >= kStep;
    uint32_t* o = direct ? out + (i - start) : tmp;
#if defined(__AVX512F__) && defined(__AVX512DQ__)
    __m512i words[4];
    internal::Philox16(key, stream, g, words);
    for (int half = 0; half < 2; ++half) {
      for (int w = 0; w < 4; ++w) {
        const __m512i h = Uniforms16(words[w], half);
        const int off = 32 * half + 8 * w;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + off), _mm512_castsi512_si256(h));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 64 + off),
                            _mm512_extracti64x4_epi64(h, 1));
      }
    }
#else
    __m256i words[4];
    Philox8Group(key, stream, g, words);
    for (int half = 0; half < 2; ++half) {
      for (int w = 0; w < 4; ++w) {
        const __m256i h = Uniforms16(words[w], half);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 32 * half + 8 * w), h);
      }
    }
#endif
    if (direct) {
      i += kStep;
    } else {
      const uint64_t g_end = std::min(end, (g << 6) + kStep);
      std::memcpy(out + (i - start), tmp + (i & 63), (g_end - i) * sizeof(uint32_t));
      i = g_end;
    }
  }
}

}  // namespace pim::kernels::fast
