// The fixed random power-of-two matrices of local error prediction (SP-PIM; equations in
// docs/local_error_prediction.md), exposed so that tests can read their entries.
#pragma once

#include <cstdint>
#include <vector>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/base/matrix_view.h"
#include "pimtrain/base/parallel.h"

namespace pim {

// How a matrix's entries are drawn: each entry is nonzero with probability `density`, and a
// nonzero entry is +-2^-k with the sign and k in [k_min, k_max] drawn uniformly.
// The error prediction unit's counters (name, unit, stages, meaning), added to each layer's BP.
const CounterSet& ErrorPredictionUnitCounters();

struct PotMatrixParams {
  double density = 1.0;
  int k_min = 0;
  int k_max = 0;
};

// The Philox key of network layer `layer`'s matrix in a run with seed `seed`.
uint64_t PotMatrixKey(uint64_t seed, int layer);

// Entry (r, c) of a rows x cols matrix drawn with `key` (0 or +-2^-k): a pure function of
// (key, r * cols + c), so the matrix is the same on every thread count and in every process.
// Philox block r * cols + c (stream 0): word 0 decides nonzero (24-bit uniform < density),
// word 1's low bit the sign (1: negative), word 2 the exponent k = k_min + (w2 * span) >> 32
// with span = k_max - k_min + 1.
float PotEntry(uint64_t key, int64_t r, int64_t c, int64_t cols, const PotMatrixParams& p);

// A fixed rows x cols matrix with entries PotEntry. The chip's error prediction unit holds a sign
// and a shift per nonzero entry and adds only those; the simulator keeps the matrix dense (and
// transposed) so that its loops vectorize. A zero entry contributes a +-0 term, which changes no
// bit of a sum that starts at +0 (such a sum is never -0, and x + +-0 = x for x != 0), so for
// finite operands the dense sums below equal the nonzero-only sums bit for bit.
class PotMatrix {
 public:
  PotMatrix() = default;
  PotMatrix(uint64_t key, int64_t rows, int64_t cols, const PotMatrixParams& p);

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t nonzeros() const { return nonzeros_; }
  int64_t negatives() const { return negatives_; }
  // M[r][c] (0 where no entry).
  float At(int64_t r, int64_t c) const { return m_[r * cols_ + c]; }

  // out = e M^T, out: n x rows, e: n x cols. Every output starts at +0 and adds the products
  // M[r][c] * e[s][c] in ascending c. A product with +-2^-k is exact (an exponent change, the
  // chip's shift) unless it leaves the normal range.
  void Project(ConstMatrixView e, MatrixView out, ThreadPool& pool) const;
  // z = h M, z: n x cols, h: n x rows. Every output starts at +0 and adds h[s][r] * M[r][c] in
  // ascending r (zero terms included: no bit changes, as above).
  void Reduce(ConstMatrixView h, MatrixView z, ThreadPool& pool) const;

 private:
  int64_t rows_ = 0, cols_ = 0;
  std::vector<float> m_;   // rows x cols
  std::vector<float> mt_;  // cols x rows (M^T), for Project
  int64_t nonzeros_ = 0, negatives_ = 0;
};

}  // namespace pim
