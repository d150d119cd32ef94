// Fast analog kernel, dataflow C: the NNS+A recurrence, several columns at a time with the
// reference's double operations in its order, then its conversions. (Dataflow B's R-Mapped
// buffer lines are summed and converted by detail::AccumulateLinesB / ConvertLinesB, once per
// output, in analog.cc's sample loop.)

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

// Dataflow C's read-out (detail::ReadoutC) for the first columns, several at a time: the same
// double operations per column in the same order (no FMA), the conversion by the scalar
// transfer's float steps. Returns the columns done; the caller finishes the rest.
#if defined(__AVX512F__)
// 8 columns per step (doubles in a 512-bit register).
int64_t Worker::ReadoutCColumnsAvx512(int64_t sign) {
  int64_t cp0 = 0;
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
  return cp0;
}
#endif

// 4 columns per step (doubles in a 256-bit register).
int64_t Worker::ReadoutCColumnsAvx2(int64_t sign) {
  int64_t cp0 = 0;
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
  c.adc_clipped += TransferRowAvx2(ro.adc, nullptr, xs, ro.adc.sigma != 0.0f ? z.data() : nullptr,
                                   cp0, 0, sign, acc.data());
  c.analog_accumulations += cycles * cp0;
  c.sample_holds += cycles * cp0;
  c.adc_conversions += cp0;
  c.shift_adds += cp0;
  return cp0;
}

// B, integer partial sums: cycle j's sums (psi, or psb's bytes) into phase h's lines, in int32. The reference
// adds the same integers in double, exactly, so the lines hold the same values.
void Worker::AddLinesBInt(int h, int j) {
  const int64_t n_cp = ncp, nl = static_cast<int64_t>(groups.size());
  for (int q = 0; q < S; ++q) {
    int32_t* __restrict line = lines_i.data() + (h * nl + line_of[j * S + q]) * n_cp;
    if (sums8) {
      const uint8_t* __restrict row = psb.data() + (j * S + q) * n_cp;
      for (int64_t cp = 0; cp < n_cp; ++cp) line[cp] += row[cp];
    } else {
      const int32_t* __restrict row = psi.data() + (j * S + q) * n_cp;
      for (int64_t cp = 0; cp < n_cp; ++cp) line[cp] += row[cp];
    }
  }
}

// B: phase h's lines converted once per output, as detail::ConvertLinesB: the line times its
// gain 2^e_l in double (exact), rounded to float, then the transfer's float steps (transfer_row,
// lane by lane the scalar Convert's), code << (s_l + E - e_l) added with the phase's sign.
void Worker::ConvertLinesBInt(int h, int64_t sign) {
  const AnalogReadout& ro = p.readout;
  const int64_t n_cp = ncp, nl = static_cast<int64_t>(groups.size());
  float* __restrict xs = line_x.data();
  int64_t clipped = 0;
  for (int64_t l = 0; l < nl; ++l) {
    const int32_t* __restrict line = lines_i.data() + (h * nl + l) * n_cp;
    const double g = std::ldexp(1.0, gains[l]);
    for (int64_t cp = 0; cp < n_cp; ++cp) {
      xs[cp] = static_cast<float>(static_cast<double>(line[cp]) * g);
    }
    clipped += Kernels().transfer_row(ro.adc, nullptr, xs,
                                      ro.adc.sigma != 0.0f ? z_lines.data() + l * n_cp : nullptr,
                                      n_cp, groups[l] + gain_shift - gains[l], sign, acc.data());
  }
  c.adc_clipped += clipped;
  c.adc_conversions += nl * n_cp;
  c.sample_holds += nl * n_cp;
  c.shift_adds += nl * n_cp;
}

// C without NNS+A noise, integer levels: the block's product of phase h, P[cp] = sum_r
// |x_h[r]| level[r][cp] over the driven rows, is what the recurrence ends at (analog_worker.h),
// so it is converted as detail::ReadoutC converts float(V_{J-1} 2^((J-1) P_D)); the draws z
// (the NNADC's) were filled by the caller.
void Worker::ReadoutCExact(const int32_t* xm, int64_t r0, int64_t r1, int h, int64_t sign) {
  const AnalogReadout& ro = p.readout;
  const int64_t n_cp = ncp;
  const double bound = static_cast<double>(r1 - r0) * (std::ldexp(1.0, p.x_bits) - 1) *
                       (std::ldexp(1.0, S * pr) - 1);
  float* __restrict xs = line_x.data();
  auto sums = [&](auto* __restrict sum) {
    std::fill(sum, sum + n_cp, 0);
    for (int64_t r = r0; r < r1; ++r) {
      const int32_t xv = h == 0 ? std::max(xm[r], 0) : std::max(-xm[r], 0);
      if (xv == 0) continue;
      const int32_t* __restrict w = p.w + r * n_cp;
      for (int64_t cp = 0; cp < n_cp; ++cp) sum[cp] += static_cast<decltype(sum[0] + 0)>(xv) * w[cp];
    }
    for (int64_t cp = 0; cp < n_cp; ++cp) {
      xs[cp] = static_cast<float>(static_cast<double>(sum[cp]));
    }
  };
  if (bound < 2147483647.0) {
    sums(reinterpret_cast<int32_t*>(block_sum.data()));  // int32 sums in the int64 buffer
  } else {
    sums(block_sum.data());
  }
  const int64_t clipped = Kernels().transfer_row(ro.adc, nullptr, xs,
                                                 ro.adc.sigma != 0.0f ? z.data() : nullptr,
                                                 n_cp, 0, sign, acc.data());
  c.adc_clipped += clipped;
  c.analog_accumulations += cycles * n_cp;
  c.sample_holds += cycles * n_cp;
  c.adc_conversions += n_cp;
  c.shift_adds += n_cp;
}

}  // namespace pim::kernels::fast::internal
