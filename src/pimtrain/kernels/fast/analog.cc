// Fast analog crossbar multiply: partial sums from bit-packed planes (AND + popcount), noise from
// an 8-lane Philox, ADC conversions 8 at a time with the scalar transfer's exact float steps.
// Equal to ref::AnalogMatMul bit for bit (codes, outputs and counts).
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/analog.h"

namespace pim::kernels::fast {
namespace {

// 32 x 32 -> 64-bit products of 8 lanes: hi and lo words.
inline void MulHiLo(__m256i a, __m256i m, __m256i* hi, __m256i* lo) {
  const __m256i pe = _mm256_mul_epu32(a, m);
  const __m256i po = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *lo = _mm256_blend_epi32(pe, _mm256_slli_epi64(po, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(pe, 32), po, 0xAA);
}

// The 64 normals of group g (Philox blocks 8g .. 8g+7), in index order (see adc.h).
void GroupNormals(uint64_t key, uint64_t stream, uint64_t g, float* out) {
  alignas(32) uint32_t lo[8], hi[8];
  for (int l = 0; l < 8; ++l) {
    const uint64_t ctr = g * 8 + static_cast<uint64_t>(l);
    lo[l] = static_cast<uint32_t>(ctr);
    hi[l] = static_cast<uint32_t>(ctr >> 32);
  }
  __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
  __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
  __m256i c2 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream)));
  __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(stream >> 32)));
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  for (int r = 0; r < 10; ++r) {
    __m256i hi0, lo0, hi1, lo1;
    MulHiLo(c0, m0, &hi0, &lo0);
    MulHiLo(c2, m1, &hi1, &lo1);
    const __m256i n0 =
        _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
    const __m256i n2 =
        _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
    c1 = lo1;
    c3 = lo0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  // GaussianFrom16 on 8 lanes: Acklam's central rational in float, the tails patched from the
  // quantile table (about a third of the vectors hold a tail lane).
  const GaussianTable& table = GetGaussianTable();
  const __m256i words[4] = {c0, c1, c2, c3};
  const __m256i mask16 = _mm256_set1_epi32(0xFFFF);
  const __m256i lo_edge = _mm256_set1_epi32(static_cast<int>(kGaussTail));
  const __m256i hi_edge = _mm256_set1_epi32(static_cast<int>(65536 - kGaussTail) - 1);
  const __m256 vhalf = _mm256_set1_ps(0.5f), vinv = _mm256_set1_ps(1.0f / 65536.0f);
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 a[6], b[5];
  for (int i = 0; i < 6; ++i) a[i] = _mm256_set1_ps(kGaussA[i]);
  for (int i = 0; i < 5; ++i) b[i] = _mm256_set1_ps(kGaussB[i]);
  // Eight vectors of 16-bit uniforms, in output order (half, word). The rational is evaluated on
  // four vectors at a time, interleaved, so the Horner chains' latencies overlap.
  __m256i hs[8];
  for (int half = 0; half < 2; ++half) {
    for (int w = 0; w < 4; ++w) {
      hs[4 * half + w] =
          _mm256_and_si256(half == 0 ? words[w] : _mm256_srli_epi32(words[w], 16), mask16);
    }
  }
  for (int v0 = 0; v0 < 8; v0 += 4) {
    __m256 t[4], r[4], num[4], den[4];
    for (int v = 0; v < 4; ++v) {
      t[v] = _mm256_sub_ps(
          _mm256_mul_ps(_mm256_add_ps(_mm256_cvtepi32_ps(hs[v0 + v]), vhalf), vinv), vhalf);
      r[v] = _mm256_mul_ps(t[v], t[v]);
      num[v] = a[0];
      den[v] = b[0];
    }
    for (int i = 1; i < 6; ++i) {
      for (int v = 0; v < 4; ++v) {
        num[v] = _mm256_add_ps(_mm256_mul_ps(num[v], r[v]), a[i]);
        den[v] = _mm256_add_ps(_mm256_mul_ps(den[v], r[v]), i < 5 ? b[i] : one);
      }
    }
    for (int v = 0; v < 4; ++v) {
      _mm256_storeu_ps(out + 8 * (v0 + v), _mm256_div_ps(_mm256_mul_ps(t[v], num[v]), den[v]));
    }
  }
  for (int v = 0; v < 8; ++v) {
    const __m256i h = hs[v];
    const __m256i tail =
        _mm256_or_si256(_mm256_cmpgt_epi32(lo_edge, h), _mm256_cmpgt_epi32(h, hi_edge));
    unsigned mask = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(tail)));
    if (mask != 0) {
      alignas(32) uint32_t hv[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(hv), h);
      float* o = out + 8 * v;
      while (mask != 0) {
        const int l = __builtin_ctz(mask);
        mask &= mask - 1;
        o[l] = hv[l] < kGaussTail ? table.tail[hv[l]] : table.tail[hv[l] - (65536 - 2 * kGaussTail)];
      }
    }
  }
}

}  // namespace

void FillNormals(uint64_t key, uint64_t stream, uint64_t start, int64_t count, float* out) {
  if (count <= 0) return;
  const uint64_t end = start + static_cast<uint64_t>(count);
  alignas(32) float tmp[64];
  uint64_t i = start;
  while (i < end) {
    const uint64_t g = i >> 6;
    const uint64_t g_end = std::min(end, (g + 1) << 6);
    if ((i & 63) == 0 && g_end - i == 64) {
      GroupNormals(key, stream, g, out + (i - start));
    } else {
      GroupNormals(key, stream, g, tmp);
      std::memcpy(out + (i - start), tmp + (i & 63), (g_end - i) * sizeof(float));
    }
    i = g_end;
  }
}

void PackWeights(const AnalogProblem& p, PackedAnalogWeights& out, ThreadPool* pool) {
  const int64_t ncp = p.n * p.polarities;
  const int64_t blocks = (p.k + p.block - 1) / p.block;
  out.k = p.k;
  out.ncp = ncp;
  out.block = p.block;
  out.words = (p.block + 63) / 64;
  out.bits = p.slices * p.cell_bits;
  out.planes.assign(static_cast<size_t>(blocks * out.bits * ncp * out.words), 0);
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

// Per-thread state of one range of samples.
struct Worker {
  const AnalogProblem& p;
  const PackedAnalogWeights& pw;
  int pd, pr, S, cycles;
  int64_t ncp, blocks, words, arrays_per_block;
  std::vector<int> groups;
  std::vector<uint64_t> xplanes;  // [phase][bit][word] of the current block
  std::vector<float> ps, z;
  std::vector<int32_t> psi;  // integer partial sums (no conductances): [j][q][cp]
  std::vector<int32_t> codes;
  std::vector<int64_t> acc;
  std::vector<uint8_t> applied;
  std::vector<int32_t> chunk;
  AnalogCounts c;

  Worker(const AnalogProblem& prob, const PackedAnalogWeights& packed)
      : p(prob), pw(packed) {
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
    ps.resize(static_cast<size_t>(cycles * S * ncp));
    psi.resize(static_cast<size_t>(cycles * S * ncp));
    z.resize(static_cast<size_t>(S * ncp));
    codes.resize(static_cast<size_t>(S * ncp));
    acc.resize(static_cast<size_t>(ncp));
    applied.resize(static_cast<size_t>(cycles));
    chunk.resize(static_cast<size_t>(p.block));
  }

  const uint64_t* XPlane(int h, int t) const { return xplanes.data() + (h * p.x_bits + t) * words; }

  // Bit planes of the block's positive (h = 0) and negative (h = 1) magnitudes.
  void BuildPlanes(const int32_t* xm, int64_t r0, int64_t r1) {
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

  // Partial sums of cycle j (phase h, block b) into ps[(j*S + q)*ncp + cp] from the planes.
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
    for (int q = 0; q < S; ++q) {
      if (pd == 1 && pr == 1) {
        const uint64_t* x0 = xp[0];
        const uint64_t* wp = pw.Plane(b, q, 0);
        // Integer counts; converted to float 8 at a time by the read-out (scalar stores followed
        // at once by a vector load of the same bytes would stall on store forwarding).
        int32_t* iout = psi.data() + (j * S + q) * ncp;
        for (int64_t cp = 0; cp < ncp; ++cp) {
          const uint64_t* wc = wp + cp * nw;
          int32_t s = 0;
          for (int64_t w = 0; w < nw; ++w) {
            s += static_cast<int32_t>(__builtin_popcountll(x0[w] & wc[w]));
          }
          iout[cp] = s;
        }
        continue;
      }
      int32_t* iout = psi.data() + (j * S + q) * ncp;
      for (int64_t cp = 0; cp < ncp; ++cp) {
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

  // Dataflow A read-out of cycle j: noise -> ADC -> shift -> accumulate, 8 conversions at a time.
  void ConvertA(int64_t m, int64_t b, int h, int j, int64_t sign, bool integer) {
    const AdcTransfer& adc = p.readout.adc;
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
        __m256i* a = reinterpret_cast<__m256i*>(acc.data() + cp);
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
        acc[cp] += sign * (static_cast<int64_t>(r.code) << shift);
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
          if (p.conductance != nullptr) {
            ConductanceSums(xm, r0, r1, h, j);
          } else if (words == 1) {
            PopcountSums<1>(b, h, j, 1);
          } else if (words == 2 && wn == 2) {
            PopcountSums<2>(b, h, j, 2);
          } else {
            // Padding words of a short last block hold zeros in both operands.
            PopcountSums<0>(b, h, j, words);
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
        if (p.readout.dataflow == Dataflow::kB) {
          detail::ReadoutB(ps.data(), applied.data(), cycles, S, ncp, groups, pd, pr, p.readout,
                           p.noise_key, m, blocks, b, h, sign, acc.data(), c);
        } else if (p.readout.dataflow == Dataflow::kC) {
          detail::ReadoutC(ps.data(), applied.data(), cycles, S, ncp, pd, pr, p.readout,
                           p.noise_key, m, blocks, b, h, sign, acc.data(), c);
        }
      }
    }
    int64_t* y = p.y + m * p.ldy;
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
  auto run = [&](int64_t m0, int64_t m1) {
    Worker wk(p, *packed);
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
      // Integer sums: the order of the chunks does not change them.
      total.input_cycles += part.input_cycles;
      total.skipped_input_cycles += part.skipped_input_cycles;
      total.dac_conversions += part.dac_conversions;
      total.cell_reads += part.cell_reads;
      total.adc_conversions += part.adc_conversions;
      total.adc_clipped += part.adc_clipped;
      total.shift_adds += part.shift_adds;
      total.sample_holds += part.sample_holds;
      total.analog_buffer_writes += part.analog_buffer_writes;
      total.analog_accumulations += part.analog_accumulations;
      total.input_buffer_reads += part.input_buffer_reads;
    });
  }
  total.tile_accumulations = p.m * p.n * std::max<int64_t>(blocks - 1, 0);
  total.output_buffer_writes = p.m * p.n;
  total.macs = p.m * p.k * p.n;
  counts = total;
}

}  // namespace pim::kernels::fast
