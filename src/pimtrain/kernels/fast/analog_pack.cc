// Fast analog kernel, packing: the stored levels as bit planes per row block (PackWeights, with
// int16 row pairs for the exact product) and each sample block's input magnitudes as bit
// planes (Worker::BuildPlanes).

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

namespace pim::kernels::fast {



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

namespace internal {

// ---- The variants of the table's pack_planes8 (levels of at most 8 bits) -----------------------
// Tasks [t0, t1) of (block b, 64 columns from c0): the levels of 64 rows of a column as 64 bytes,
// a byte-wise bit test per plane word. Every plane word of the task is written.
#if defined(__AVX512F__) && defined(__AVX512BW__)
void PackPlanes8Avx512(const AnalogProblem& p, PackedAnalogWeights& out, int64_t t0, int64_t t1) {
  const int64_t ncp = out.ncp, col_chunks = (ncp + kCols - 1) / kCols;
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
}
#endif

// AVX2: the column bytes by scalar stores, each plane word from two byte-sign masks (bit t
// shifted to the top of its byte).
void PackPlanes8Avx2(const AnalogProblem& p, PackedAnalogWeights& out, int64_t t0, int64_t t1) {
  constexpr int64_t kC = 64;
  const int64_t ncp = out.ncp, col_chunks = (ncp + kC - 1) / kC;
  alignas(32) uint8_t col[kC * 64];
  for (int64_t task = t0; task < t1; ++task) {
    const int64_t b = task / col_chunks, c0 = (task % col_chunks) * kC;
    const int64_t c1 = std::min(ncp, c0 + kC);
    const int64_t r0 = b * p.block, r1 = std::min(p.k, r0 + p.block);
    for (int64_t wd = 0; wd * 64 < r1 - r0; ++wd) {
      const int64_t rs = r0 + wd * 64, re = std::min(r1, rs + 64);
      if (re - rs < 64) std::fill(col, col + kC * 64, 0);
      for (int64_t r = rs; r < re; ++r) {
        const int32_t* row = p.w + r * ncp;
        uint8_t* c = col + (r - rs);
        for (int64_t cp = c0; cp < c1; ++cp) c[(cp - c0) * 64] = static_cast<uint8_t>(row[cp]);
      }
      for (int64_t cp = c0; cp < c1; ++cp) {
        const __m256i lo = _mm256_load_si256(
            reinterpret_cast<const __m256i*>(col + (cp - c0) * 64));
        const __m256i hi =
            _mm256_load_si256(reinterpret_cast<const __m256i*>(col + (cp - c0) * 64 + 32));
        for (int t = 0; t < out.bits; ++t) {
          const __m128i sh = _mm_cvtsi32_si128(7 - t);
          const uint32_t ml = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_sll_epi16(lo, sh)));
          const uint32_t mh = static_cast<uint32_t>(_mm256_movemask_epi8(_mm256_sll_epi16(hi, sh)));
          out.planes[static_cast<size_t>(((b * out.bits + t) * ncp + cp) * out.words + wd)] =
              (static_cast<uint64_t>(mh) << 32) | ml;
        }
      }
    }
  }
}

}  // namespace internal

void PackWeights(const AnalogProblem& p, PackedAnalogWeights& out, ThreadPool* pool) {
  const int64_t ncp = p.n * p.polarities;
  const int64_t blocks = (p.k + p.block - 1) / p.block;
  out.k = p.k;
  out.ncp = ncp;
  out.block = p.block;
  out.words = (p.block + 63) / 64;
  out.bits = p.slices * p.cell_bits;
  out.bytes.clear();  // rebuilt from the new levels when a call needs them
  out.row_bytes = 0;
  out.row_bits.clear();
  out.row_bit_words = 0;
  // Zeroed for the scalar packer of wider levels (it ORs bits in); the byte-wise ones write every
  // word.
  const size_t plane_words = static_cast<size_t>(blocks * out.bits * ncp * out.words);
  if (out.bits <= 8) {
    out.planes.resize(plane_words);
  } else {
    out.planes.assign(plane_words, 0);
  }
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
  if (out.bits <= 8) {
    // Tasks of (block, 64 columns), so that a single block still splits over the threads.
    const int64_t tasks = blocks * ((ncp + 63) / 64);
    const auto pack8 = internal::Kernels().pack_planes8;
    auto run = [&](int64_t t0, int64_t t1) { pack8(p, out, t0, t1); };
    if (pool != nullptr) {
      pool->ParallelFor(tasks, 1, run);
    } else {
      run(0, tasks);
    }
    return;
  }
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

namespace internal {

// ---- The variants of the table's build_planes: the bit planes of the block's positive (h = 0)
// and negative (h = 1) magnitudes, rows r0 .. r1 - 1 of sample row xm.
// One row at a time, its set bits.
void Worker::BuildPlanesScalar(const int32_t* xm, int64_t r0, int64_t r1) {
  std::fill(xplanes.begin(), xplanes.end(), 0);
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

#if defined(__AVX512F__) && defined(__AVX512BW__)
// Inputs of at most 8 bits, 64 rows at a time; otherwise (or an out-of-range input) the scalar
// variant.
void Worker::BuildPlanesAvx512(const int32_t* xm, int64_t r0, int64_t r1) {
  std::fill(xplanes.begin(), xplanes.end(), 0);
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
  }
  BuildPlanesScalar(xm, r0, r1);  // wider inputs, or an out-of-range one (its error)
}
#endif

}  // namespace internal
}  // namespace pim::kernels::fast
