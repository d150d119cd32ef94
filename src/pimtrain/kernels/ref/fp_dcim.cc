// Reference FP digital CIM MAC: every nibble multiply, adder-tree level, shift-add and the
// renormalization done one at a time, as the datapath does them (fp_dcim.h).
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/kernels/fp_dcim.h"

namespace pim::kernels {

PIM_DECLARE_COUNTERS(
    DcimKernelCounters, "fp_dcim kernel",
    {"macs", "MAC", "FP BP GC", "logical multiply-accumulates (m k n)"},
    {"multiplier_ops", "4b x 4b multiply", "FP BP GC",
     "nibble multiplies with both nibbles nonzero"},
    {"gated_zero_ops", "4b x 4b multiply", "FP BP GC", "nibble multiplies gated: a zero nibble"},
    {"adder_tree_adds", "add", "FP BP GC", "two-input adds in the trees (k_b - 1 per pass)"},
    {"nibble_shift_adds", "add", "FP BP GC", "shift-adds combining the nibble-pair tree results"},
    {"tree_accumulations", "add", "FP BP GC", "adds merging the results of the reduction blocks"},
    {"normalizations", "output", "FP BP GC", "exact sums renormalized and rounded to the output"},
    {"approx_dropped_terms", "partial product", "FP BP GC",
     "partial-product terms dropped by performed multiplies (approximate mode)"},
    {"bias_compensations", "add", "FP BP GC", "bias adds, one per tree pass (approximate mode)"});

void DcimCounts::AddTo(ActionCounts& counts) const {
  counts.Add("macs", macs);
  counts.Add("multiplier_ops", multiplier_ops);
  counts.Add("gated_zero_ops", gated_zero_ops);
  counts.Add("adder_tree_adds", adder_tree_adds);
  counts.Add("nibble_shift_adds", nibble_shift_adds);
  counts.Add("tree_accumulations", tree_accumulations);
  counts.Add("normalizations", normalizations);
  counts.Add("approx_dropped_terms", approx_dropped_terms);
  counts.Add("bias_compensations", bias_compensations);
}

bool DcimUsesFloat(int x_bits, int w_bits, int64_t k) {
  const int64_t float_chunk =
      static_cast<int64_t>(0x1p24 / std::ldexp(1.0, x_bits - 1 + w_bits - 1));
  return float_chunk >= std::min<int64_t>(k, 64);
}

int DroppedTermsPerMultiply(int dropped_columns) {
  int n = 0;
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) n += i + j < dropped_columns;
  }
  return n;
}

void CyclicArray::Store(const int32_t* s, int64_t rows, int64_t cols, int64_t n) {
  PIM_CHECK(n >= 1);
  rows_ = rows;
  cols_ = cols;
  n_ = n;
  phys_.assign(static_cast<size_t>(row_blocks() * col_blocks() * n * n), 0);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t bj = r / n, u = r % n;
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t bi = c / n, v = c % n;
      int32_t* block = phys_.data() + (bj * col_blocks() + bi) * n * n;
      block[u * n + (v + u) % n] = s[r * cols + c];
    }
  }
}

void CyclicArray::ReadRow(int64_t bj, int64_t bi, int64_t u, int32_t* out) const {
  const int32_t* block = phys_.data() + (bj * col_blocks() + bi) * n_ * n_;
  for (int64_t p = 0; p < n_; ++p) out[p] = block[u * n_ + p];
}

void CyclicArray::ReadDiagonal(int64_t bj, int64_t bi, int64_t v, int32_t* out) const {
  const int32_t* block = phys_.data() + (bj * col_blocks() + bi) * n_ * n_;
  // Column group p is read at row (p - v) mod n: one element per physical row and column.
  for (int64_t p = 0; p < n_; ++p) out[p] = block[((p - v + n_) % n_) * n_ + p];
}

void CyclicArray::Rotate(const int32_t* in, int64_t n, int64_t amount, int32_t* out) {
  for (int64_t t = 0; t < n; ++t) out[(t + amount) % n] = in[t];
}

namespace ref {
namespace {

// Sign of partial-product term (i, j) of a 4b x 4b multiply: the Baugh-Wooley form of two's
// complement weighs the MSB of a signed operand -2^3, so a term with exactly one such MSB is
// subtracted.
int TermSign(int i, bool a_signed, int j, bool b_signed) {
  return ((a_signed && i == 3) != (b_signed && j == 3)) ? -1 : 1;
}

// The 4b x 4b multiplier as a partial-product array: the sum of the kept terms
// sgn_ij a_i b_j 2^(i+j) (a_i, b_j the bits of the 4-bit patterns); terms with i + j < dropped
// are not built (broken-array multiplier; dropped = 0 is the exact multiplier).
int32_t Multiply4x4(int32_t a, bool a_signed, int32_t b, bool b_signed, int dropped) {
  int32_t p = 0;
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) {
      if (i + j < dropped) continue;
      const int32_t bit = ((a >> i) & 1) & ((b >> j) & 1);
      p += TermSign(i, a_signed, j, b_signed) * (bit << (i + j));
    }
  }
  return p;
}

// One two-input adder of the tree: exact, or with its low `or_bits` bits as OR (lower-part-OR
// adder) and a_{l-1} AND b_{l-1} carried into the exact upper part. Two's complement values.
int32_t TreeAdd(int32_t a, int32_t b, int or_bits) {
  if (or_bits == 0) return a + b;
  const int l = or_bits;
  const int32_t low = (a | b) & ((int32_t{1} << l) - 1);
  const int32_t carry = (a >> (l - 1)) & (b >> (l - 1)) & 1;
  const int32_t high = (a >> l) + (b >> l) + carry;
  return high * (int32_t{1} << l) + low;
}

int64_t FloorDiv4(int64_t v) { return v >= 0 ? v / 4 : -((-v + 3) / 4); }

// Renormalization to the output format as a normalizer does it: leading-one detection on |S|,
// a right shift to the format's significand width with guard and sticky bits (round to nearest
// even), exponent = leading-one position + the LSB exponent, then the format's range: below
// emin the significand is shifted further (subnormal), past the largest finite value it
// overflows (to inf, or to the largest value in saturating formats).
float Renormalize(int64_t s, int e, fp::Format out) {
  const fp::FormatInfo& in = fp::Info(out);
  PIM_CHECK_MSG(!in.is_int, "the output format must be floating point");
  if (s == 0) return 0.0f;
  const uint32_t sign_bit = s < 0 ? 1u << (in.bits - 1) : 0u;
  const uint64_t mag = static_cast<uint64_t>(std::llabs(s));
  const int lead = 63 - std::countl_zero(mag);  // value = mag * 2^e, top bit at 2^(lead + e)
  const int m = in.man_bits;
  int exp = lead + e;                        // unbiased exponent of the exact value
  const int q = std::max(exp, in.emin) - m;  // exponent of the result's LSB
  const int shift = q - e;                   // bits of |S| below that LSB
  uint64_t sig;
  if (shift <= 0) {
    sig = mag << -shift;
  } else if (shift > 64) {
    sig = 0;  // far below half the smallest subnormal
  } else {
    const uint64_t kept = shift == 64 ? 0 : mag >> shift;
    const bool guard = (mag >> (shift - 1)) & 1;
    const bool sticky = shift >= 2 && (mag & ((uint64_t{1} << (shift - 1)) - 1)) != 0;
    sig = kept + (guard && (sticky || (kept & 1)) ? 1 : 0);
  }
  exp = q + m;  // the exponent the significand is read at
  if (sig >= (uint64_t{1} << (m + 1))) {  // rounding carried into a new binade
    sig >>= 1;
    ++exp;
  }
  const uint32_t hidden = 1u << m;
  uint32_t code;
  if (sig == 0) {
    code = sign_bit;
  } else if (exp > in.emax || (exp == in.emax && sig > static_cast<uint64_t>(in.max_sig))) {
    code = in.has_inf ? sign_bit | (((1u << in.exp_bits) - 1) << m)
                      : sign_bit | (static_cast<uint32_t>(in.emax + in.bias) << m) |
                            (static_cast<uint32_t>(in.max_sig) - hidden);
  } else if (sig < hidden) {
    code = sign_bit | static_cast<uint32_t>(sig);  // subnormal
  } else {
    code = sign_bit | (static_cast<uint32_t>(exp + in.bias) << m) |
           (static_cast<uint32_t>(sig) - hidden);
  }
  return fp::Decode(out, code);
}

}  // namespace

void DcimMatMul(const DcimProblem& p, DcimCounts& counts) {
  PIM_CHECK(p.x.bits >= 2 && p.x.bits <= 16 && p.w.bits >= 2 && p.w.bits <= 16);
  PIM_CHECK(p.tree_inputs >= 1);
  const int px = NumNibbles(p.x.bits), pw = NumNibbles(p.w.bits);
  const DcimApprox& ap = p.approx;
  std::vector<int32_t> level;
  for (int64_t i = 0; i < p.m; ++i) {
    for (int64_t j = 0; j < p.n; ++j) {
      int64_t acc = 0;  // wide accumulator over the reduction blocks
      int64_t blocks = 0;
      for (int64_t r0 = 0; r0 < p.k; r0 += p.tree_inputs) {
        const int64_t kb = std::min(p.tree_inputs, p.k - r0);
        int64_t block = 0;
        for (int dx = 0; dx < px; ++dx) {
          const bool sx = dx == px - 1;  // the top nibble is the signed one
          for (int dw = 0; dw < pw; ++dw) {
            const bool sw = dw == pw - 1;
            // Only the least significant nibble pair holds the low columns of the full product
            // and the low bits of the full sum: the approximations apply there.
            const bool approx = ap.enabled && dx == 0 && dw == 0;
            const int dropped = approx ? ap.dropped_columns : 0;
            const int or_bits = approx ? ap.or_bits : 0;
            const int dropped_terms = DroppedTermsPerMultiply(dropped);
            // The multipliers: one per reduction element of the block; zero operands gate it.
            level.assign(static_cast<size_t>(p.tree_inputs), 0);
            int64_t performed = 0;
            for (int64_t r = 0; r < kb; ++r) {
              const int32_t a = Nibble(p.x.At(i, r0 + r), dx, px);
              const int32_t b = Nibble(p.w.At(r0 + r, j), dw, pw);
              if (a == 0 || b == 0) {
                ++counts.gated_zero_ops;
                continue;
              }
              ++performed;
              level[static_cast<size_t>(r)] = Multiply4x4(a, sx, b, sw, dropped);
            }
            counts.multiplier_ops += performed;
            counts.approx_dropped_terms += performed * dropped_terms;
            // The adder tree, level by level: pairs (0,1), (2,3), ... (an odd last passes).
            for (size_t len = level.size(); len > 1; len = (len + 1) / 2) {
              for (size_t t = 0; t < len / 2; ++t) {
                level[t] = TreeAdd(level[2 * t], level[2 * t + 1], or_bits);
              }
              if (len % 2) level[len / 2] = level[len - 1];
            }
            int64_t tree = level[0];
            counts.adder_tree_adds += kb - 1;
            if (!ap.enabled) {
              // 8-bit products over 64 inputs: the tree result fits 14 bits (unsigned when both
              // nibbles are unsigned, else two's complement).
              PIM_CHECK(p.tree_inputs > 64 ||
                        (!sx && !sw ? tree >= 0 && tree < (1 << 14)
                                    : tree >= -(1 << 13) && tree < (1 << 13)));
            }
            if (approx && ap.bias_compensation) {
              // E[dropped] per performed multiply, in quarters: sum of sgn_ij 2^(i+j) / 4.
              int64_t quarters = 0;
              for (int a = 0; a < 4; ++a) {
                for (int b = 0; b < 4; ++b) {
                  if (a + b < dropped) quarters += TermSign(a, sx, b, sw) * (int64_t{1} << (a + b));
                }
              }
              tree += FloorDiv4(performed * quarters + 2);
              ++counts.bias_compensations;
            }
            // Nibble shift-add: the pair's result weighs 16^(dx + dw).
            block += tree * (int64_t{1} << (4 * (dx + dw)));
          }
        }
        counts.nibble_shift_adds += px * pw - 1;
        acc += block;
        ++blocks;
      }
      counts.tree_accumulations += blocks > 0 ? blocks - 1 : 0;
      const int e = (p.x_exp ? p.x_exp[i] : 0) + (p.w_exp ? p.w_exp[j] : 0);
      p.y[i * p.ldy + j] = Renormalize(acc, e, p.out_format);
      ++counts.normalizations;
    }
  }
  counts.macs += p.m * p.k * p.n;
}

}  // namespace ref
}  // namespace pim::kernels
