// ADC transfer construction, the inverse-CDF Gaussian table and the dataflow formulas.
#include "pimtrain/numerics/adc.h"

#include <algorithm>
#include <cmath>

#include "pimtrain/base/error.h"
#include "pimtrain/base/rng.h"

namespace pim {

AdcTransfer MakeAdcTransfer(int bits, double full_scale, double inl_lsb, double sigma) {
  PIM_CHECK_MSG(bits >= 1 && bits <= 24, "ADC bits out of range");
  PIM_CHECK_MSG(full_scale >= 0 && sigma >= 0, "ADC full scale and noise must be >= 0");
  AdcTransfer a;
  a.bits = bits;
  const double m = std::ldexp(1.0, bits) - 1.0;
  a.max_code = static_cast<float>(m);
  const double lsb = std::max(1.0, full_scale / m);
  a.lsb = static_cast<float>(lsb);
  a.inv_lsb = static_cast<float>(1.0 / lsb);
  PIM_CHECK_MSG(inl_lsb >= 0 && inl_lsb < m / 4.0, "ADC INL too large to stay monotone");
  a.inl_k = static_cast<float>(4.0 * inl_lsb / (m * m));
  a.sigma = static_cast<float>(sigma);
  return a;
}

double SinadSigma(double max_abs, double sinad_db) {
  return max_abs / std::pow(10.0, sinad_db / 20.0);
}

namespace {

// Inverse of the standard normal CDF: Acklam's rational approximation (relative error
// 1.15e-9) refined by one Halley step on erfc, accurate to double rounding.
double InverseNormalCdf(double p) {
  if (p <= 0.0) return -HUGE_VAL;
  if (p >= 1.0) return HUGE_VAL;
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02,
                             -2.759285104469687e+02, 1.383577518672690e+02,
                             -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02,
                             -1.556989798598866e+02, 6.680131188771972e+01,
                             -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01,
                             -2.400758277161838e+00, -2.549732539343734e+00,
                             4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01,
                             2.445134137142996e+00, 3.754408661907416e+00};
  const double plow = 0.02425, phigh = 1 - plow;
  double x;
  if (p < plow) {
    const double q = std::sqrt(-2 * std::log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p <= phigh) {
    const double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  } else {
    const double q = std::sqrt(-2 * std::log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
  const double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

GaussianTable BuildTable() {
  GaussianTable t;
  for (uint32_t h = 0; h < kGaussTail; ++h) {
    t.tail[h] = static_cast<float>(InverseNormalCdf((h + 0.5) / 65536.0));
    t.tail[kGaussTail + h] =
        static_cast<float>(InverseNormalCdf((65536 - kGaussTail + h + 0.5) / 65536.0));
  }
  return t;
}

}  // namespace

const float kGaussA[6] = {-3.969683028665376e+01f, 2.209460984245205e+02f,
                          -2.759285104469687e+02f, 1.383577518672690e+02f,
                          -3.066479806614716e+01f, 2.506628277459239e+00f};
const float kGaussB[5] = {-5.447609879822406e+01f, 1.615858368580409e+02f,
                          -1.556989798598866e+02f, 6.680131188771972e+01f,
                          -1.328068155288572e+01f};

const GaussianTable& GetGaussianTable() {
  static const GaussianTable table = BuildTable();
  return table;
}

float GaussianFrom16(uint32_t h) {
  if (h < kGaussTail) return GetGaussianTable().tail[h];
  if (h >= 65536 - kGaussTail) return GetGaussianTable().tail[h - (65536 - 2 * kGaussTail)];
  const float t = (static_cast<float>(h) + 0.5f) * (1.0f / 65536.0f) - 0.5f;
  const float r = t * t;
  const float num =
      ((((kGaussA[0] * r + kGaussA[1]) * r + kGaussA[2]) * r + kGaussA[3]) * r + kGaussA[4]) * r +
      kGaussA[5];
  const float den =
      ((((kGaussB[0] * r + kGaussB[1]) * r + kGaussB[2]) * r + kGaussB[3]) * r + kGaussB[4]) * r +
      1.0f;
  return t * num / den;
}

double GaussianQuantile(double p) { return InverseNormalCdf(p); }

float GaussianRefined(uint32_t h, uint64_t u) {
  // The lower cell c (the upper ones mirrored, so 1 - p never cancels): p = (c + f) / 65536,
  // f = (u + 1/2) 2^-64 in (0, 1].
  const bool upper = h >= 32768;
  const uint32_t c = upper ? 65535 - h : h;
  const double f = std::ldexp(static_cast<double>(u), -64) + std::ldexp(1.0, -65);
  const double z = InverseNormalCdf(std::ldexp(static_cast<double>(c) + f, -16));
  return static_cast<float>(upper ? -z : z);
}

uint64_t NoiseRefineWord(uint64_t key, uint64_t stream, uint64_t i) {
  const std::array<uint32_t, 4> b = Philox4x32(key, stream ^ kRefineStream, i);
  return (static_cast<uint64_t>(b[1]) << 32) | b[0];
}

uint32_t NoiseUniform16(uint64_t key, uint64_t stream, uint64_t i) {
  const uint64_t g = i >> 6;
  const uint32_t r = static_cast<uint32_t>(i & 63);
  const uint32_t half = r >> 5, word = (r >> 3) & 3, lane = r & 7;
  const uint32_t w = Philox4x32(key, stream, g * 8 + lane)[word];
  return (w >> (16 * half)) & 0xFFFFu;
}

float NoiseNormal(uint64_t key, uint64_t stream, uint64_t i) {
  const uint32_t h = NoiseUniform16(key, stream, i);
  return RefinedCell(h) ? GaussianRefined(h, NoiseRefineWord(key, stream, i)) : GaussianFrom16(h);
}

namespace {
int CeilLog2(int64_t v) {
  int n = 0;
  while ((int64_t{1} << n) < v) ++n;
  return n;
}
int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace

DataflowFigures DataflowFormula(Dataflow d, int input_bits, int weight_bits, int cell_bits,
                                int dac_bits, int64_t rows, int output_bits) {
  DataflowFigures f;
  const int n = CeilLog2(std::max<int64_t>(rows, 1));
  const int64_t ci = CeilDiv(input_bits, dac_bits), cw = CeilDiv(weight_bits, cell_bits);
  const int a_bits =
      (cell_bits > 1 && dac_bits > 1) ? cell_bits + dac_bits + n : cell_bits + dac_bits - 1 + n;
  f.input_cycles = ci;
  switch (d) {
    case Dataflow::kA:
      f.adc_bits = a_bits;
      f.conversions_per_group = ci * cw;
      break;
    case Dataflow::kB:
      f.adc_bits = a_bits + CeilLog2(ci);
      f.conversions_per_group = ci + cw - 1;
      break;
    case Dataflow::kC:
      f.adc_bits = output_bits;
      f.conversions_per_group = 1;
      break;
  }
  return f;
}

}  // namespace pim
