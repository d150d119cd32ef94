// Operand encoding of the FP digital CIM (fp_digital, ISSCC 2025 14.5): FP32 values scaled by a
// power of two, rounded to the operand format and pre-aligned to W-bit signed mantissas with
// one shared exponent per vector (numerics/prealign.h). ref/ is the definition, element by
// element through fp::Encode, fp::SharedExponent and fp::AlignVector; fast/ is bit arithmetic on
// the float encoding (nearest even, floating-point formats), AVX-512 or AVX2 by the dispatch
// table (kernels/fast/digital_dispatch.cc). Both agree bit for bit, values, exponents and counts.
// docs/fp_digital.md, "Pre-alignment" and "The encode and pre-align kernels".
#pragma once

#include <cstdint>

#include "pimtrain/base/matrix_view.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/numerics/fixed_point.h"
#include "pimtrain/numerics/formats.h"
#include "pimtrain/numerics/prealign.h"

namespace pim::kernels {

// How one operand tensor is encoded. Values enter as x 2^scale_exp (the tensor scale); NaN
// encodes as 0 and values beyond the format's range saturate (an inf would poison every output
// of its vector). Vector-wise, each vector takes the shared exponent of its largest element
// (with the per-element offsets, if any); layer-wise (`layer`), every vector takes layer_exp.
struct EncodeSpec {
  fp::Format format = fp::Format::kBF16;
  int bits = 8;  // aligned width, sign included (2..16)
  Rounding rounding = Rounding::kNearestEven;  // to the format (ref: stochastic too)
  fp::AlignRounding align_rounding = fp::AlignRounding::kTruncate;
  int scale_exp = 0;
  bool layer = false;
  int layer_exp = 0;
};

// A set of vectors inside a matrix: vector v, element e is at data[v * vs + e * es]; its
// stochastic-rounding index is v * vi + e * ei (the element's row-major index in the matrix).
// offsets (null: none) are per-element exponent offsets o_e, the same for every vector.
struct EncodeVectors {
  const float* data = nullptr;
  int64_t count = 0, len = 0, vs = 0, es = 1, vi = 0, ei = 1;
  const int* offsets = nullptr;
};

// What the fast pass can also write while the aligned values are in registers: the fp_dcim
// kernel's operand data (DcimProblem::x_f32 and x_nz, DcimWeightCache). Results in the aligned
// matrix out (rows x cols) do not depend on them.
struct EncodeSideOutputs {
  float* f32 = nullptr;       // rows x cols: out as exact floats
  double* f64 = nullptr;      // rows x cols: out as doubles
  int64_t* col_nz = nullptr;  // nibbles x cols, added to: rows i whose nibble d of out[i][j] != 0
  int64_t* row_nz = nullptr;  // nibbles x rows, set: columns j whose nibble d of out[i][j] != 0
};

namespace ref {
// Encodes and aligns every vector of v: a[vec * len + e] (vector-major) and exp[vec], the LSB
// exponent of the vector (the tensor scale not undone). Floating-point formats: fp::Encode of
// x 2^s (stochastic rounding from `rng` at the element's index), SharedExponent (vector-wise),
// AlignVector. Integer formats: a power-of-two scale per vector (or layer_exp), q = round(x 2^o
// / 2^exp) clipped; the shared exponent is the scale. Vectors are split over `pool` (null: one
// thread); counts are integer sums, the same for any split.
void EncodeAlign(const EncodeVectors& v, const EncodeSpec& spec, const CounterRng& rng,
                 int32_t* a, int* exp, fp::AlignCounts& counts, ThreadPool* pool);
// out[i] = Decode(Encode(x[i] 2^s)) in the format, nearest even, saturating, NaN -> 0.
void RoundToFormat(const float* x, int64_t n, int s, fp::Format f, float* out);
}  // namespace ref

namespace fast {
// ref::EncodeAlign for nearest-even encoding of a floating-point format, on a matrix whose rows
// (by_rows; offsets per column) or columns (no offsets) are the vectors; out is written in v's
// layout (rows x cols, row-major), exps holds one LSB exponent per vector. `scratch` holds
// rows x cols words (the rounded floats between the two passes). Rows are split over `pool`
// in chunks of 2^19 elements (null: one thread); the results do not depend on the split.
void EncodeAlignMatrix(ConstMatrixView v, bool by_rows, const EncodeSpec& spec, const int* offsets,
                       int32_t* out, int* exps, fp::AlignCounts& counts, ThreadPool* pool,
                       const EncodeSideOutputs& side, uint32_t* scratch);
// The side outputs of an aligned matrix a (rows x cols of `bits`-wide mantissas) on their own,
// as EncodeAlignMatrix writes them (for operands the reference encoder aligned).
void EncodeSideOutputsOf(const int32_t* a, int64_t rows, int64_t cols, int bits,
                         const EncodeSideOutputs& side);
// ref::RoundToFormat for a floating-point format, as float bits.
void RoundToFormat(const float* x, int64_t n, int s, fp::Format f, uint32_t* out_bits);
}  // namespace fast

}  // namespace pim::kernels
