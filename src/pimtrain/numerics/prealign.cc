// Pre-alignment: shared exponents, mantissa shifts with guard/sticky rounding (prealign.h).
#include "pimtrain/numerics/prealign.h"

#include <algorithm>
#include <cmath>

#include "pimtrain/base/error.h"

namespace pim::fp {

PIM_DECLARE_COUNTERS(
    AlignCounters, "pre-alignment unit",
    {"exponent_compares", "element", "FP BP WU", "elements entering a max-exponent search"},
    {"alignment_shifts", "shift", "FP BP WU", "nonzero mantissas shifted by a nonzero amount"},
    {"shifted_out_bits", "bit", "FP BP WU", "significand bits pushed past the LSB (lost)"},
    {"alignment_saturations", "element", "FP BP WU", "aligned magnitudes clamped to full scale"});

void AlignCounts::AddTo(ActionCounts& counts) const {
  counts.Add("exponent_compares", exponent_compares);
  counts.Add("alignment_shifts", alignment_shifts);
  counts.Add("shifted_out_bits", shifted_out_bits);
  counts.Add("alignment_saturations", saturated);
}

bool SharedExponent(Format f, const uint32_t* codes, int64_t len, int64_t stride, const int* o,
                    int* e, AlignCounts& counts) {
  counts.exponent_compares += len;
  bool any = false;
  int best = 0;
  for (int64_t i = 0; i < len; ++i) {
    const Fields x = Unpack(f, codes[i * stride]);
    if (x.kind != Fields::kFinite) continue;  // zero (NaN/inf never reach the datapath)
    const int ei = x.exp + (o != nullptr ? o[i] : 0);
    if (!any || ei > best) best = ei;
    any = true;
  }
  if (any) *e = best;
  return any;
}

int AlignVector(Format f, const uint32_t* codes, int64_t len, int64_t stride, const int* o,
                int shared_exp, int bits, AlignRounding r, int32_t* out, int64_t out_stride,
                AlignCounts& counts) {
  const FormatInfo& in = Info(f);
  PIM_CHECK_MSG(!in.is_int && bits >= 2 && bits <= 24, "AlignVector: bad format or width");
  const int m_bits = in.man_bits;
  const int t = shared_exp - (bits - 2);
  const int64_t max_mag = (int64_t{1} << (bits - 1)) - 1;
  for (int64_t i = 0; i < len; ++i) {
    const Fields x = Unpack(f, codes[i * stride]);
    PIM_CHECK_MSG(x.kind == Fields::kZero || x.kind == Fields::kFinite,
                  "AlignVector: non-finite code reached the datapath");
    int64_t a = 0;
    if (x.kind == Fields::kFinite) {
      const int s = t - (x.exp + (o != nullptr ? o[i] : 0) - m_bits);
      const int64_t m = x.sig;
      if (s <= 0) {
        a = -s >= 40 ? max_mag + 1 : m << -s;  // exact left shift (saturates below)
      } else {
        // Right shift by s: q keeps the top bits; guard = the first bit shifted out, sticky =
        // the OR of the rest. Nearest-even rounds up on guard && (sticky || lsb(q)).
        const int64_t q = s >= 40 ? 0 : m >> s;
        if (r == AlignRounding::kNearestEven && s <= 40) {
          const bool guard = (m >> (s - 1)) & 1;
          const bool sticky = (m & ((int64_t{1} << (s - 1)) - 1)) != 0;
          a = q + (guard && (sticky || (q & 1)) ? 1 : 0);
        } else {
          a = q;
        }
        counts.shifted_out_bits += std::min(s, m_bits + 1);
      }
      if (s != 0) ++counts.alignment_shifts;
      if (a > max_mag) {
        a = max_mag;
        ++counts.saturated;
      }
      if (x.sign) a = -a;
    }
    out[i * out_stride] = static_cast<int32_t>(a);
  }
  return t;
}

int TensorScaleExponent(Format f, double max_abs) {
  if (!(max_abs > 0) || std::isinf(max_abs)) return 0;
  const double top = Info(f).max_finite;
  int s = std::ilogb(top) - std::ilogb(max_abs);
  while (std::ldexp(max_abs, s) > top) --s;
  while (std::ldexp(max_abs, s + 1) <= top) ++s;
  return s;
}

}  // namespace pim::fp
