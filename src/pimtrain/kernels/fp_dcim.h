// Floating-point digital CIM MAC (ISSCC 2025 14.5, Yuan et al.): pre-aligned signed
// fixed-point mantissas multiplied on 4b x 4b multipliers, summed by 64-input adder trees
// (14-bit results), combined by nibble shift-add, and renormalized to the output format.
// Accurate mode is exact integer arithmetic; approximate mode drops low partial-product terms
// (broken-array multiplier), ORs the low adder bits (lower-part-OR adder) and adds a
// sparsity-aware bias. ref/ loops like the hardware; fast/ is an exact integer GEMM (accurate)
// or a table-driven tree (approximate); both agree bit for bit, outputs and counts.
// docs/fp_digital.md, "MAC".
#pragma once

#include <cstdint>
#include <vector>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/numerics/formats.h"

namespace pim::kernels {

// Aligned mantissas read through strides: element (i, j) is data[i * stride_i + j * stride_j],
// a `bits`-wide two's-complement integer (2..16).
struct DcimOperand {
  const int32_t* data = nullptr;
  int64_t stride_i = 0;
  int64_t stride_j = 1;
  int bits = 8;

  int32_t At(int64_t i, int64_t j) const { return data[i * stride_i + j * stride_j]; }
};

// A W-bit operand is processed as D = ceil(W / 4) nibbles: a = sum_d n_d 16^d with the low
// nibbles unsigned (n_d = (a >> 4d) & 15) and the top one signed (n_{D-1} = a >> 4(D-1),
// arithmetic), so every nibble fits a 4-bit multiplier port.
inline int NumNibbles(int bits) { return (bits + 3) / 4; }
inline int32_t Nibble(int32_t a, int d, int nibbles) {
  return d == nibbles - 1 ? a >> (4 * d) : (a >> (4 * d)) & 15;
}

// Approximate-mode parameters. A 4b x 4b product is sum_{i,j} sgn_ij a_i b_j 2^(i+j) over the
// operands' bits (sgn_ij = -1 for the Baugh-Wooley terms of exactly one signed MSB);
// the broken-array multiplier drops every term with i + j < dropped_columns. The adder tree's
// two-input adders compute their low `or_bits` bits as a_k OR b_k (lower-part-OR adder,
// Mahdiani et al., IEEE TCAS-I 57(4), 2010), carrying a_{l-1} AND b_{l-1} into the exact upper
// part. Bias compensation adds, per tree pass, round(n * E[dropped]) with n the multiplies
// performed (zero operands are gated and drop nothing: sparsity-aware) and E[dropped] the mean
// of the dropped terms for uniform bits. All three apply to the least significant nibble pair
// (p, q) = (0, 0) only: with several nibbles, that pass alone holds the lowest columns of the
// full product and the lowest bits of the full sum (a broken-array multiplier of the whole
// 8b x 8b product drops exactly those columns); the other passes stay exact. With one nibble
// (FP8, INT4) that pass is the whole product.
struct DcimApprox {
  bool enabled = false;
  int dropped_columns = 0;  // 0..7
  int or_bits = 0;          // 0..13
  bool bias_compensation = false;
};

// What the fast kernel can take precomputed for the stored operand w (a macro builds it once
// per Program and reuses it for every call): an exact float or double copy of w, either k x n
// row-major or, `transposed`, n x k (so one copy of W serves both directions), and the
// nonzero-nibble counts along the outputs. Results do not depend on its use.
struct DcimWeightCache {
  const float* f32 = nullptr;   // used when every product is exact in float chunks
  const double* f64 = nullptr;  // used otherwise
  bool transposed = false;
  std::vector<int64_t> nz;      // nibbles x k: outputs j whose nibble d of w[r][j] is nonzero
};

// Whether the fast kernel multiplies x (x_bits) and w (w_bits) over k in float (every partial
// sum of a chunk an exact integer below 2^24) rather than double.
bool DcimUsesFloat(int x_bits, int w_bits, int64_t k);

// y[i][j] = Round_out( S_ij * 2^(x_exp[i] + w_exp[j]) ),  S_ij = sum_r x[i][r] w[r][j]
// computed on the datapath (exactly in accurate mode). x is m x k, w is k x n; the reduction
// is cut into blocks of `tree_inputs` (one adder-tree pass per block and nibble pair).
struct DcimProblem {
  int64_t m = 0, k = 0, n = 0;
  DcimOperand x;                 // m x k (inputs or errors)
  DcimOperand w;                 // k x n (stored weights)
  const int* x_exp = nullptr;    // m LSB exponents (null: 0)
  const int* w_exp = nullptr;    // n LSB exponents (null: 0)
  int64_t tree_inputs = 64;
  DcimApprox approx;
  fp::Format out_format = fp::Format::kBF16;
  float* y = nullptr;  // m x n, overwritten with the decoded output-format values
  int64_t ldy = 0;
  const DcimWeightCache* w_cache = nullptr;  // optional (fast kernel): built from this w
  // Optional (fast kernel), computed by the caller while it aligns x (saves two passes): x as
  // exact floats (m x k, row-major; used when the kernel multiplies in float) and the
  // nonzero-nibble counts x_nz[d * k + r] = samples i whose nibble d of x[i][r] is nonzero.
  // Results do not depend on their use.
  const float* x_f32 = nullptr;
  const int64_t* x_nz = nullptr;
};

// The events of one DcimMatMul (docs/fp_digital.md, "Counting model").
// The counters DcimCounts::AddTo adds (name, unit, stages, meaning).
const CounterSet& DcimKernelCounters();

struct DcimCounts {
  int64_t macs = 0;                  // m k n
  int64_t multiplier_ops = 0;        // 4b x 4b multiplies with both nibbles nonzero
  int64_t gated_zero_ops = 0;        // nibble multiplies skipped: a zero operand nibble
  int64_t adder_tree_adds = 0;       // two-input adds in the trees (k_b - 1 per pass)
  int64_t nibble_shift_adds = 0;     // shift-adds combining the nibble-pair tree results
  int64_t tree_accumulations = 0;    // adds merging the results of the reduction blocks
  int64_t normalizations = 0;        // exact sums renormalized and rounded to the output format
  int64_t approx_dropped_terms = 0;  // partial-product terms dropped by performed multiplies
  int64_t bias_compensations = 0;    // bias adds (one per tree pass, approximate mode)

  bool operator==(const DcimCounts&) const = default;
  void AddTo(ActionCounts& counts) const;
};

// Partial-product terms (i, j) of a 4 x 4 array with i + j < c.
int DroppedTermsPerMultiply(int dropped_columns);

// Cyclic weight mapping (ISSCC 2025 14.5, "dual-mode transpose"): the stored matrix S (one
// weight vector per row: S = W^T, so a forward dot product reads a row) is cut into n x n
// blocks, n = weights per port read; row u of a block is stored rotated right by u:
//   phys[u][(v + u) mod n] = S[u][v].
// A row read (forward) returns S[u][.] rotated by u, so the input segment is rotated by u to
// meet it; a diagonal read (backward) takes position p from physical row (p - v) mod n and
// returns column v of the block (a row of S^T = W) rotated by v, so the error segment is
// rotated by v. Both reads go through the same port and feed the same MAC.
class CyclicArray {
 public:
  // Stores S (rows x cols, row-major) in blocks of n; missing block entries hold 0.
  void Store(const int32_t* s, int64_t rows, int64_t cols, int64_t n);
  int64_t n() const { return n_; }
  int64_t row_blocks() const { return (rows_ + n_ - 1) / n_; }
  int64_t col_blocks() const { return (cols_ + n_ - 1) / n_; }
  // Port reads: n elements of block (bj, bi) into out.
  void ReadRow(int64_t bj, int64_t bi, int64_t u, int32_t* out) const;
  void ReadDiagonal(int64_t bj, int64_t bi, int64_t v, int32_t* out) const;
  // out[(t + amount) mod n] = in[t]: the rotator on the input / error segment.
  static void Rotate(const int32_t* in, int64_t n, int64_t amount, int32_t* out);

 private:
  int64_t rows_ = 0, cols_ = 0, n_ = 1;
  std::vector<int32_t> phys_;  // blocks in (bj, bi) order, each n x n physical rows
};

namespace ref {
// Samples x outputs x blocks x nibble pairs x tree levels, as the hardware does. Slow.
void DcimMatMul(const DcimProblem& p, DcimCounts& counts);
}  // namespace ref

namespace fast {
// The same outputs and counts. Accurate: float/double GEMM on the aligned integers in
// reduction chunks short enough to stay exact; counts from nibble statistics. Approximate:
// nibble tables and the LOA tree, rows split over `pool` (null: one thread).
void DcimMatMul(const DcimProblem& p, DcimCounts& counts, ThreadPool* pool);
}  // namespace fast

}  // namespace pim::kernels
