// Reference operand encoding of the FP digital CIM: each element through fp::Encode, each vector
// through fp::SharedExponent and fp::AlignVector, as numerics/prealign.h writes them.
#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>
#include <vector>

#include "pimtrain/kernels/fp_dcim_encode.h"

namespace pim::kernels::ref {
namespace {

// Integer formats: q = round(x / 2^e) clipped, e the power-of-two exponent of the vector's (or
// the tensor's) max |x|: the shared exponent is the scale, no mantissa is shifted. With offsets
// o (BP), element e is x_e 2^(o_e) (exact in double).
int AlignInt(const EncodeVectors& v, int64_t i, const EncodeSpec& spec, const CounterRng& rng,
             int32_t* out, fp::AlignCounts& c) {
  const float* src = v.data + i * v.vs;
  const int* o = v.offsets;
  auto value = [&](int64_t e) {
    const float x = src[e * v.es];
    return std::isnan(x) ? 0.0 : std::ldexp(double{x}, o ? o[e] : 0);
  };
  double m = 0;
  for (int64_t e = 0; e < v.len; ++e) {
    const double a = std::fabs(value(e));
    if (a < std::numeric_limits<double>::infinity() && a > m) m = a;
  }
  c.exponent_compares += v.len;
  const int exp =
      spec.layer ? spec.layer_exp : PowerOfTwoExponent(m, spec.bits, Signedness::kSigned);
  for (int64_t e = 0; e < v.len; ++e) {
    const uint64_t idx = static_cast<uint64_t>(i * v.vi + e * v.ei);
    const uint32_t rnd = spec.rounding == Rounding::kStochastic ? rng.Block(idx >> 2)[idx & 3] : 0;
    const uint32_t code = fp::Encode(spec.format, std::ldexp(value(e), -exp), spec.rounding, rnd);
    const fp::Fields f = fp::Unpack(spec.format, code);
    out[e] = f.sign ? -f.sig : f.sig;
  }
  return exp;
}

}  // namespace

void EncodeAlign(const EncodeVectors& v, const EncodeSpec& spec, const CounterRng& rng,
                 int32_t* a, int* exp, fp::AlignCounts& counts, ThreadPool* pool) {
  const bool is_int = fp::IsInt(spec.format);
  std::mutex mu;
  auto run = [&](int64_t v0, int64_t v1) {
    fp::AlignCounts local;
    std::vector<uint32_t> codes(static_cast<size_t>(v.len));
    for (int64_t i = v0; i < v1; ++i) {
      const float* src = v.data + i * v.vs;
      int32_t* out = a + i * v.len;
      if (is_int) {
        exp[i] = AlignInt(v, i, spec, rng, out, local);
        continue;
      }
      for (int64_t e = 0; e < v.len; ++e) {
        const float x = src[e * v.es];
        const uint64_t idx = static_cast<uint64_t>(i * v.vi + e * v.ei);
        const uint32_t rnd =
            spec.rounding == Rounding::kStochastic ? rng.Block(idx >> 2)[idx & 3] : 0;
        codes[e] =
            fp::Encode(spec.format, std::isnan(x) ? 0.0 : std::ldexp(double{x}, spec.scale_exp),
                       spec.rounding, rnd, fp::Overflow::kSaturate);
      }
      int shared = spec.layer_exp;
      if (!spec.layer) {
        if (!fp::SharedExponent(spec.format, codes.data(), v.len, 1, v.offsets, &shared, local)) {
          shared = 0;  // all zero: any exponent aligns them to 0
        }
      } else {
        local.exponent_compares += v.len;  // the tensor's max search, element by element
      }
      exp[i] = fp::AlignVector(spec.format, codes.data(), v.len, 1, v.offsets, shared, spec.bits,
                               spec.align_rounding, out, 1, local);
    }
    std::lock_guard<std::mutex> lock(mu);
    counts += local;
  };
  if (pool != nullptr && v.count > 1) {
    pool->ParallelFor(v.count, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, v.len)), run);
  } else {
    run(0, v.count);
  }
}

void RoundToFormat(const float* x, int64_t n, int s, fp::Format f, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const double q = fp::Decode(f, fp::Encode(f, std::isnan(x[i]) ? 0.0 : std::ldexp(double{x[i]}, s),
                                              Rounding::kNearestEven, 0, fp::Overflow::kSaturate));
    out[i] = static_cast<float>(q);  // exact: every format value is a float
  }
}

}  // namespace pim::kernels::ref
