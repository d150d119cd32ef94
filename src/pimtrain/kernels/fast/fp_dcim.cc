// Fast FP digital CIM MAC (fp_dcim.h). Accurate mode: the datapath computes sum_r x_r w_r
// exactly (exact 4b x 4b products, exact trees, exact shift-add), so any exact integer GEMM
// gives the same S; float GEMM is exact while every partial sum is an integer below 2^24, so
// the reduction is cut into chunks of at most 2^24 / max|x w| elements (one chunk for BF16's
// 8-bit mantissas up to k = 1024), with double GEMM (exact below 2^53) for wide operands.
// Approximate mode: the broken-array products from a 16 x 16 table per nibble-signedness pair
// and the same lower-part-OR tree as ref, pass by pass. Counts from nibble statistics.
#include <cblas.h>
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/kernels/fp_dcim.h"
#include "pimtrain/kernels/gemm.h"

// GCC 12 flags the AVX-512 intrinsics' internal _mm512_undefined_* operands (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace pim::kernels::fast {
namespace {

// Same equations as ref (fp_dcim.h): the partial-product array with terms i + j < dropped
// removed, and the lower-part-OR adder.
int32_t ApproxProduct(int32_t a, bool a_signed, int32_t b, bool b_signed, int dropped) {
  // Exact product minus the dropped terms (all of which have i, j < 4).
  int32_t p = a * b;
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4 && i + j < dropped; ++j) {
      const int32_t bit = ((a >> i) & 1) & ((b >> j) & 1);
      const int sgn = ((a_signed && i == 3) != (b_signed && j == 3)) ? -1 : 1;
      p -= sgn * (bit << (i + j));
    }
  }
  return p;
}

inline int32_t LoaAdd(int32_t a, int32_t b, int l, int32_t low_mask) {
  const int32_t low = (a | b) & low_mask;
  const int32_t carry = (a >> (l - 1)) & (b >> (l - 1)) & 1;
  return ((a >> l) + (b >> l) + carry) * (int32_t{1} << l) + low;
}

// Round_out(s * 2^e): BF16 by rounding the (exact) double's bits to 8 significant bits when the
// result is a normal float; anything else through the generic encoder.
inline float Renormalize(int64_t s, int e, fp::Format out) {
  // s * 2^e, exact (|s| < 2^53); 2^e built from its bits where it is a normal double.
  const double v = e > -900 && e < 900
                       ? static_cast<double>(s) *
                             std::bit_cast<double>(static_cast<uint64_t>(e + 1023) << 52)
                       : std::ldexp(static_cast<double>(s), e);
  if (out == fp::Format::kBF16) {
    const double a = std::fabs(v);
    if (a >= 0x1p-126 && a < 0x1p127) {
      uint64_t u = std::bit_cast<uint64_t>(v);
      u += (uint64_t{1} << 44) - 1 + ((u >> 45) & 1);  // nearest even at 45 dropped bits
      u &= ~((uint64_t{1} << 45) - 1);
      return static_cast<float>(std::bit_cast<double>(u));  // exact: 8 significant bits
    }
  }
  if (out == fp::Format::kFP32) return static_cast<float>(v);  // one RNE rounding
  return fp::Decode(out, fp::Encode(out, v));
}

// One output row: y[j] = Renormalize(S_j, ex + w_exp[j]) with S_j = s[j] (int64) or, when s is
// null, c[j] (a float holding an exact integer: a single-chunk float GEMM's result, used
// directly instead of first copying it into int64). With AVX-512 (DQ for int64 <-> double),
// eight outputs at a time for BF16 and FP32 outputs: S converts to double exactly, 2^e is
// built from its bits, and BF16 rounds the double's bits as the scalar path does. A block with
// a lane the bit arithmetic does not cover (exponent out of range, BF16 result not a normal
// float) goes through the scalar path whole; zeros are +0 either way (S = 0 gives +0.0).
void RenormalizeRow(const int64_t* s, const float* c, int64_t n, int ex, const int* w_exp,
                    fp::Format out, float* y) {
  auto value = [&](int64_t j) { return s != nullptr ? s[j] : static_cast<int64_t>(c[j]); };
  int64_t j = 0;
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512VL__)
  if (out == fp::Format::kBF16 || out == fp::Format::kFP32) {
    const bool bf16 = out == fp::Format::kBF16;
    const __m512d abs_mask = _mm512_castsi512_pd(_mm512_set1_epi64(0x7FFFFFFFFFFFFFFF));
    const __m512d min_normal = _mm512_set1_pd(0x1p-126), top = _mm512_set1_pd(0x1p127);
    const __m512i half = _mm512_set1_epi64((int64_t{1} << 44) - 1), one = _mm512_set1_epi64(1);
    const __m512i keep = _mm512_set1_epi64(~((int64_t{1} << 45) - 1));
    for (; j + 8 <= n; j += 8) {
      const __m512d sv = s != nullptr ? _mm512_cvtepi64_pd(_mm512_loadu_si512(s + j))
                                      : _mm512_cvtps_pd(_mm256_loadu_ps(c + j));
      // e - ex per lane (the weight exponents), as int64.
      const __m512i we = w_exp != nullptr
                             ? _mm512_cvtepi32_epi64(_mm256_loadu_si256(
                                   reinterpret_cast<const __m256i*>(w_exp + j)))
                             : _mm512_setzero_si512();
      // The scalar path builds 2^e from bits for -900 < e < 900 only.
      const __m512i e = _mm512_add_epi64(we, _mm512_set1_epi64(ex));
      const __mmask8 ok_e = _mm512_cmpgt_epi64_mask(e, _mm512_set1_epi64(-900)) &
                            _mm512_cmplt_epi64_mask(e, _mm512_set1_epi64(900));
      if (ok_e != 0xFF) break;  // rare: the rest of the row goes scalar
      const __m512d pow2 = _mm512_castsi512_pd(
          _mm512_slli_epi64(_mm512_add_epi64(e, _mm512_set1_epi64(1023)), 52));
      const __m512d v = _mm512_mul_pd(sv, pow2);
      const __m512d a = _mm512_and_pd(v, abs_mask);
      const __mmask8 zero = _mm512_cmp_pd_mask(a, _mm512_setzero_pd(), _CMP_EQ_OQ);
      __m256 r;
      if (bf16) {
        const __mmask8 normal = _mm512_cmp_pd_mask(a, min_normal, _CMP_GE_OQ) &
                                _mm512_cmp_pd_mask(a, top, _CMP_LT_OQ);
        if ((normal | zero) != 0xFF) break;
        __m512i u = _mm512_castpd_si512(v);
        u = _mm512_add_epi64(
            u, _mm512_add_epi64(half, _mm512_and_si512(_mm512_srli_epi64(u, 45), one)));
        u = _mm512_and_si512(u, keep);
        r = _mm512_cvtpd_ps(_mm512_castsi512_pd(u));  // exact: 8 significant bits
      } else {
        r = _mm512_cvtpd_ps(v);  // one RNE rounding, as static_cast
      }
      r = _mm256_castsi256_ps(_mm256_mask_mov_epi32(_mm256_castps_si256(r), zero,
                                                    _mm256_setzero_si256()));
      _mm256_storeu_ps(y + j, r);
    }
  }
#endif
  for (; j < n; ++j) y[j] = Renormalize(value(j), ex + (w_exp ? w_exp[j] : 0), out);
}

// nz[d * k + r]: outputs j whose nibble d of w[r][j] is nonzero.
std::vector<int64_t> NonzeroNibbles(const DcimProblem& p) {
  const int pw = NumNibbles(p.w.bits);
  std::vector<int64_t> nz(static_cast<size_t>(pw * p.k), 0);
  for (int64_t r = 0; r < p.k; ++r) {
    for (int64_t j = 0; j < p.n; ++j) {
      const int32_t b = p.w.At(r, j);
      if (b == 0) continue;
      for (int d = 0; d < pw; ++d) nz[d * p.k + r] += Nibble(b, d, pw) != 0;
    }
  }
  return nz;
}

// The largest k chunk whose float partial sums stay exact integers (below 2^24), and whether
// float is used at all (else double).
int64_t FloatChunk(int bx, int bw) {
  return static_cast<int64_t>(0x1p24 / std::ldexp(1.0, bx - 1 + bw - 1));
}


void Statistics(const DcimProblem& p, DcimCounts& c) {
  const int px = NumNibbles(p.x.bits), pw = NumNibbles(p.w.bits);
  const int64_t nb = (p.k + p.tree_inputs - 1) / p.tree_inputs;
  // nz_x[d][r]: samples whose nibble d of element r is nonzero; nz_w likewise over outputs.
  std::vector<int64_t> nz_x(static_cast<size_t>(p.x_nz != nullptr ? 0 : px * p.k), 0), nz_w_own;
  for (int64_t i = 0; i < (p.x_nz != nullptr ? 0 : p.m); ++i) {
    if (p.x.stride_j == 1) {
      // Nibble d of each element (kernels::Nibble), branch-free so the loop vectorizes.
      const int32_t* row = p.x.data + i * p.x.stride_i;
      for (int d = 0; d < px; ++d) {
        const int sh = 4 * d;
        const int32_t mask = d == px - 1 ? -1 : 15;
        int64_t* dst = nz_x.data() + d * p.k;
        for (int64_t r = 0; r < p.k; ++r) dst[r] += ((row[r] >> sh) & mask) != 0;
      }
      continue;
    }
    for (int64_t r = 0; r < p.k; ++r) {
      const int32_t a = p.x.At(i, r);
      if (a == 0) continue;
      for (int d = 0; d < px; ++d) nz_x[d * p.k + r] += Nibble(a, d, px) != 0;
    }
  }
  const int64_t* nz_w =
      p.w_cache != nullptr && !p.w_cache->nz.empty() ? p.w_cache->nz.data() : nullptr;
  if (nz_w == nullptr) {
    nz_w_own = NonzeroNibbles(p);
    nz_w = nz_w_own.data();
  }
  const int64_t* nzx = p.x_nz != nullptr ? p.x_nz : nz_x.data();
  int64_t ops = 0, ops00 = 0;  // all nibble pairs; the least significant pair
  for (int64_t r = 0; r < p.k; ++r) {
    int64_t sx = 0, sw = 0;
    for (int d = 0; d < px; ++d) sx += nzx[d * p.k + r];
    for (int d = 0; d < pw; ++d) sw += nz_w[d * p.k + r];
    ops += sx * sw;  // sum over nibble pairs of nz_x[dx] nz_w[dw] factorizes
    ops00 += nzx[r] * nz_w[r];
  }
  const int64_t pairs = px * pw, mn = p.m * p.n;
  c.macs += p.m * p.k * p.n;
  c.multiplier_ops += ops;
  c.gated_zero_ops += p.m * p.k * p.n * pairs - ops;
  c.adder_tree_adds += mn * pairs * (p.k - nb);
  c.nibble_shift_adds += mn * nb * (pairs - 1);
  c.tree_accumulations += nb > 0 ? mn * (nb - 1) : 0;
  c.normalizations += mn;
  if (p.approx.enabled) {
    c.approx_dropped_terms += ops00 * DroppedTermsPerMultiply(p.approx.dropped_columns);
    if (p.approx.bias_compensation) c.bias_compensations += mn * nb;
  }
}

void OneBlasThread() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

// S = x w exactly, into s (m x n int64); or, when the float GEMM takes the whole reduction in
// one chunk, left in a float buffer whose address goes to *direct (s untouched): every entry
// is an exact integer, and the renormalization reads it without an int64 copy.
void ExactProducts(const DcimProblem& p, int64_t* s, ThreadPool* pool, const float** direct) {
  const int64_t m = p.m, k = p.k, n = p.n;
  const double bound = std::ldexp(1.0, p.x.bits - 1 + p.w.bits - 1);  // max |x w|
  const int64_t float_chunk = FloatChunk(p.x.bits, p.w.bits);
  const DcimWeightCache* cache = p.w_cache;
  if (DcimUsesFloat(p.x.bits, p.w.bits, k)) {
    // Per-thread buffers kept between calls: a training run multiplies the same shapes
    // thousands of times, and fresh large allocations cost page faults every time.
    thread_local std::vector<float> xf_own;
    std::vector<float> wf_own;
    const float* xf = p.x_f32;
    if (xf == nullptr) xf_own.resize(static_cast<size_t>(m * k));
    for (int64_t i = 0; i < (p.x_f32 != nullptr ? 0 : m); ++i) {
      const int32_t* row = p.x.data + i * p.x.stride_i;
      float* dst = xf_own.data() + i * k;
      if (p.x.stride_j == 1) {
        for (int64_t r = 0; r < k; ++r) dst[r] = static_cast<float>(row[r]);
      } else {
        for (int64_t r = 0; r < k; ++r) dst[r] = static_cast<float>(p.x.At(i, r));
      }
    }
    const float* wf = cache != nullptr ? cache->f32 : nullptr;
    const bool wt = wf != nullptr && cache->transposed;  // wf is n x k
    if (wf == nullptr) {
      wf_own.resize(static_cast<size_t>(k * n));
      for (int64_t r = 0; r < k; ++r) {
        for (int64_t j = 0; j < n; ++j) wf_own[r * n + j] = static_cast<float>(p.w.At(r, j));
      }
      wf = wf_own.data();
    }
    thread_local std::vector<float> c;
    c.resize(static_cast<size_t>(m * n));
    const bool one_chunk = k <= float_chunk;
    if (!one_chunk) std::fill(s, s + m * n, int64_t{0});
    for (int64_t r0 = 0; r0 < k; r0 += float_chunk) {
      GemmArgs g;
      g.m = m;
      g.n = n;
      g.k = std::min(float_chunk, k - r0);
      g.a = (xf != nullptr ? xf : xf_own.data()) + r0;
      g.lda = k;
      g.trans_b = wt ? Trans::kYes : Trans::kNo;
      g.b = wt ? wf + r0 : wf + r0 * n;
      g.ldb = wt ? k : n;
      g.c = c.data();
      g.ldc = n;
      Gemm(g, pool);
      if (one_chunk) {
        *direct = c.data();
        return;
      }
      for (int64_t t = 0; t < m * n; ++t) s[t] += static_cast<int64_t>(c[t]);
    }
    return;
  }
  // Wide operands: double GEMM, exact below 2^53 (k up to 2^23 at 16 x 16 bits).
  OneBlasThread();
  const int64_t chunk = static_cast<int64_t>(0x1p53 / bound);
  std::vector<double> xd(static_cast<size_t>(m * k)), wd_own;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t r = 0; r < k; ++r) xd[i * k + r] = p.x.At(i, r);
  }
  const double* wd = cache != nullptr ? cache->f64 : nullptr;
  const bool wt = wd != nullptr && cache->transposed;  // wd is n x k
  if (wd == nullptr) {
    wd_own.resize(static_cast<size_t>(k * n));
    for (int64_t r = 0; r < k; ++r) {
      for (int64_t j = 0; j < n; ++j) wd_own[r * n + j] = p.w.At(r, j);
    }
    wd = wd_own.data();
  }
  std::fill(s, s + m * n, int64_t{0});
  std::vector<double> c(static_cast<size_t>(m * n));
  for (int64_t r0 = 0; r0 < k; r0 += chunk) {
    const int64_t kc = std::min(chunk, k - r0);
    auto rows = [&](int64_t i0, int64_t i1) {
      cblas_dgemm(CblasRowMajor, CblasNoTrans, wt ? CblasTrans : CblasNoTrans,
                  static_cast<int>(i1 - i0), static_cast<int>(n), static_cast<int>(kc), 1.0,
                  xd.data() + i0 * k + r0, static_cast<int>(k), wt ? wd + r0 : wd + r0 * n,
                  static_cast<int>(wt ? k : n), 0.0,
                  c.data() + i0 * n, static_cast<int>(n));
    };
    if (pool != nullptr) {
      pool->ParallelFor(m, std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(1, n * kc)), rows);
    } else {
      rows(0, m);
    }
    for (int64_t t = 0; t < m * n; ++t) s[t] += static_cast<int64_t>(c[t]);
  }
}

// Approximate mode: S pass by pass (products from tables, LOA tree, bias) for rows [i0, i1).
void ApproxProducts(const DcimProblem& p, int64_t i0, int64_t i1, int64_t* s) {
  const int px = NumNibbles(p.x.bits), pw = NumNibbles(p.w.bits);
  const int dropped = p.approx.dropped_columns, l = p.approx.or_bits;
  const int32_t low_mask = (int32_t{1} << l) - 1;
  const int64_t T = p.tree_inputs, k = p.k;
  // table[sx][sw][a & 15][b & 15]: the broken-array product of two nibble patterns (0 when
  // either is zero: the multiplier is gated). bias[sx][sw]: the compensation per performed
  // multiply, in quarters.
  int32_t table[2][2][16][16];  // the approximate pass (0, 0)
  int32_t exact[2][2][16][16];  // every other pass
  int64_t quarters[2][2] = {};
  for (int sx = 0; sx < 2; ++sx) {
    for (int sw = 0; sw < 2; ++sw) {
      for (int a = 0; a < 16; ++a) {
        for (int b = 0; b < 16; ++b) {
          const int32_t av = sx ? (a ^ 8) - 8 : a, bv = sw ? (b ^ 8) - 8 : b;  // sign-extend
          table[sx][sw][a][b] = av == 0 || bv == 0 ? 0 : ApproxProduct(av, sx, bv, sw, dropped);
          exact[sx][sw][a][b] = av * bv;
        }
      }
      for (int i = 0; i < 4; ++i) {
        for (int j = 0; j < 4; ++j) {
          if (i + j < dropped) {
            quarters[sx][sw] +=
                (((sx && i == 3) != (sw && j == 3)) ? -1 : 1) * (int64_t{1} << (i + j));
          }
        }
      }
    }
  }
  // Nibble patterns of the stored operand, output-major: wn[(j * pw + d) * k + r].
  std::vector<uint8_t> wn(static_cast<size_t>(p.n * pw * k)), xn(static_cast<size_t>(px * k));
  for (int64_t j = 0; j < p.n; ++j) {
    for (int d = 0; d < pw; ++d) {
      for (int64_t r = 0; r < k; ++r) wn[(j * pw + d) * k + r] = Nibble(p.w.At(r, j), d, pw) & 15;
    }
  }
  std::vector<int32_t> level(static_cast<size_t>(std::max<int64_t>(T, 1)));
  for (int64_t i = i0; i < i1; ++i) {
    for (int d = 0; d < px; ++d) {
      for (int64_t r = 0; r < k; ++r) xn[d * k + r] = Nibble(p.x.At(i, r), d, px) & 15;
    }
    for (int64_t j = 0; j < p.n; ++j) {
      int64_t acc = 0;
      for (int64_t r0 = 0; r0 < k; r0 += T) {
        const int64_t kb = std::min(T, k - r0);
        int64_t block = 0;
        for (int dx = 0; dx < px; ++dx) {
          const int sx = dx == px - 1;
          const uint8_t* xa = xn.data() + dx * k + r0;
          for (int dw = 0; dw < pw; ++dw) {
            const int sw = dw == pw - 1;
            const uint8_t* wb = wn.data() + (j * pw + dw) * k + r0;
            // The approximations apply to the least significant nibble pair only (fp_dcim.h).
            const bool approx = dx == 0 && dw == 0;
            if (!approx) {
              const auto& tab = exact[sx][sw];
              int64_t sum = 0;
              for (int64_t r = 0; r < kb; ++r) sum += tab[xa[r]][wb[r]];
              block += sum * (int64_t{1} << (4 * (dx + dw)));
              continue;
            }
            const auto& tab = table[sx][sw];
            int64_t performed = 0;
            for (int64_t r = 0; r < kb; ++r) {
              level[r] = tab[xa[r]][wb[r]];
              performed += (xa[r] != 0) & (wb[r] != 0);
            }
            std::fill(level.begin() + kb, level.end(), 0);
            for (int64_t len = T; len > 1; len = (len + 1) / 2) {
              if (l == 0) {
                for (int64_t t = 0; t < len / 2; ++t) level[t] = level[2 * t] + level[2 * t + 1];
              } else {
                for (int64_t t = 0; t < len / 2; ++t) {
                  level[t] = LoaAdd(level[2 * t], level[2 * t + 1], l, low_mask);
                }
              }
              if (len % 2) level[len / 2] = level[len - 1];
            }
            int64_t tree = level[0];
            if (p.approx.bias_compensation) {
              const int64_t v = performed * quarters[sx][sw] + 2;
              tree += v >= 0 ? v / 4 : -((-v + 3) / 4);
            }
            block += tree * (int64_t{1} << (4 * (dx + dw)));
          }
        }
        acc += block;
      }
      s[i * p.n + j] = acc;
    }
  }
}

}  // namespace

void DcimMatMul(const DcimProblem& p, DcimCounts& counts, ThreadPool* pool) {
  PIM_CHECK(p.x.bits >= 2 && p.x.bits <= 16 && p.w.bits >= 2 && p.w.bits <= 16);
  PIM_CHECK(p.tree_inputs >= 1);
  if (p.m <= 0 || p.n <= 0) return;
  // Kept between calls on this thread; lambdas below use the pointer (a thread_local named
  // inside a lambda run by a worker would be the worker's own).
  thread_local std::vector<int64_t> s_buf;
  s_buf.resize(static_cast<size_t>(p.m * p.n));
  int64_t* const s = s_buf.data();
  const bool approx = p.approx.enabled &&
                      (p.approx.dropped_columns > 0 || p.approx.or_bits > 0 ||
                       p.approx.bias_compensation);
  const float* direct = nullptr;  // S as exact floats (one float GEMM chunk), else in s
  if (!approx) {
    if (p.k > 0) {
      ExactProducts(p, s, pool, &direct);
    } else {
      std::fill(s, s + p.m * p.n, int64_t{0});
    }
  } else if (pool != nullptr) {
    pool->ParallelFor(p.m, 1, [&](int64_t i0, int64_t i1) { ApproxProducts(p, i0, i1, s); });
  } else {
    ApproxProducts(p, 0, p.m, s);
  }
  auto finish = [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      RenormalizeRow(direct != nullptr ? nullptr : s + i * p.n,
                     direct != nullptr ? direct + i * p.n : nullptr, p.n,
                     p.x_exp ? p.x_exp[i] : 0, p.w_exp, p.out_format, p.y + i * p.ldy);
    }
  };
  if (pool != nullptr) {
    // Renormalizing costs a few nanoseconds per output: small products stay on this thread.
    pool->ParallelFor(p.m, std::max<int64_t>(1, (int64_t{1} << 18) / p.n), finish);
  } else {
    finish(0, p.m);
  }
  Statistics(p, counts);
}

}  // namespace pim::kernels::fast
