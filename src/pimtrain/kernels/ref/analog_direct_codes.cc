// Direct codes, reference side: the law of dataflow A's code given an integer partial sum (the
// thresholds detail::CodeLaw), which read-outs draw their codes from it, and
// ref::AnalogMatMulAsFast, written from the equations (kernels/analog.h, docs/analog.md "Direct
// codes"). Nothing here calls the fast kernel; the fast kernel samples this law bit for bit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/kernels/analog.h"

namespace pim::kernels {

namespace detail {

namespace {
// round(2^64 P(Z < x)) for Z ~ N(0, 1); `never` when it rounds to 2^64 (the outcome above it has
// no mass). The lower half from erfc, the upper half as 2^64 minus its complement's, so a
// probability near 1 does not cancel.
uint64_t Threshold(double x, bool* never) {
  *never = false;
  if (x <= 0) {
    const double f = 0.5 * std::erfc(-x / std::sqrt(2.0));
    return static_cast<uint64_t>(std::nearbyint(std::ldexp(f, 64)));  // f <= 1/2: < 2^64
  }
  const double q = 0.5 * std::erfc(x / std::sqrt(2.0));
  const uint64_t qi = static_cast<uint64_t>(std::nearbyint(std::ldexp(q, 64)));
  if (qi == 0) {
    *never = true;
    return 0;
  }
  return 0 - qi;  // 2^64 - qi
}
}  // namespace

CodeLaw MakeCodeLaw(const AdcTransfer& adc, int64_t vmax) {
  PIM_CHECK(adc.sigma > 0.0f && vmax >= 0);
  CodeLaw law;
  law.vmax = vmax;
  law.max_code = static_cast<int>(adc.max_code);
  // t = (v + sigma Z) inv_lsb < a  <=>  Z < (a / inv_lsb - v) / sigma.
  const double sigma = adc.sigma, lsb = 1.0 / static_cast<double>(adc.inv_lsb);
  law.o_lo.resize(static_cast<size_t>(vmax + 1));
  law.start.resize(static_cast<size_t>(vmax + 2));
  for (int64_t v = 0; v <= vmax; ++v) {
    law.start[static_cast<size_t>(v)] = static_cast<uint32_t>(law.bounds.size());
    // Thresholds at x <= -10 round to 0 (2^64 Phi(-10) = 1.4e-4): passed without erfc.
    const double first = std::floor((static_cast<double>(v) - 10.0 * sigma) / lsb + 0.5);
    const int skip = static_cast<int>(std::clamp(first, 0.0, static_cast<double>(law.max_code + 2)));
    int32_t o_lo = 0;
    for (int o = 0; o < skip; ++o) {
      if (((o - 0.5) * lsb - static_cast<double>(v)) / sigma <= -10.0) ++o_lo;
    }
    for (int o = o_lo; o <= law.max_code + 1; ++o) {
      const double x = ((o - 0.5) * lsb - static_cast<double>(v)) / sigma;
      bool never = false;
      const uint64_t t = Threshold(x, &never);
      if (never) break;  // this and every higher threshold: never reached
      if (t == 0) {
        ++o_lo;  // always passed
      } else {
        law.bounds.push_back(t);
      }
    }
    law.o_lo[static_cast<size_t>(v)] = o_lo;
    const int outcomes =
        static_cast<int>(law.bounds.size() - law.start[static_cast<size_t>(v)]) + 1;
    law.max_outcomes = std::max(law.max_outcomes, outcomes);
  }
  law.start[static_cast<size_t>(vmax + 1)] = static_cast<uint32_t>(law.bounds.size());
  return law;
}

bool DirectCodes(const AnalogProblem& p) {
  const AdcTransfer& adc = p.readout.adc;
  if (p.readout.dataflow != Dataflow::kA || adc.sigma == 0.0f || adc.inl_k != 0.0f ||
      p.conductance != nullptr || adc.max_code > 4095.0f || LosslessReadout(p)) {
    return false;
  }
  if (MaxPartialSum(p) > static_cast<double>(kDirectMaxV)) return false;
  // Outcomes of mass above 2^-65 lie within |Z| < 9.4: at most 2 * 10 sigma inv_lsb + 3 of them.
  return 20.0 * static_cast<double>(adc.sigma) * static_cast<double>(adc.inv_lsb) + 3.0 <= 60.0;
}

}  // namespace detail

namespace ref {

void AnalogMatMulAsFast(const AnalogProblem& p, AnalogCounts& counts) {
  if (!detail::DirectCodes(p)) {
    AnalogMatMulSparseTails(p, counts);
    return;
  }
  const detail::CodeLaw law =
      detail::MakeCodeLaw(p.readout.adc, static_cast<int64_t>(detail::MaxPartialSum(p)));
  const uint64_t key = p.noise_key;
  // One 64-bit uniform per conversion, its outcome the number of thresholds it reaches.
  const CodeSampler codes = [&law, key](int64_t v, uint64_t i) {
    PIM_CHECK(v >= 0 && v <= law.vmax);
    const uint64_t u = detail::CodeUniform(key, i);
    int o = law.o_lo[static_cast<size_t>(v)];
    for (uint32_t k = law.start[static_cast<size_t>(v)]; k < law.start[static_cast<size_t>(v + 1)];
         ++k) {
      o += u >= law.bounds[k];
    }
    return detail::CodeOfOutcome(o, law.max_code);
  };
  AnalogMatMulWithCodes(p, codes, counts);
}

}  // namespace ref
}  // namespace pim::kernels
