// Bit-serial digital PIM matrix multiply (T-PIM's macro): exact integer results plus the
// hardware actions the array performs. ref/ loops over bit planes as the array does; fast/ is an
// exact integer GEMM with counts from operand statistics. Both agree bit for bit.
#pragma once

#include <algorithm>
#include <cstdint>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/numerics/fixed_point.h"

namespace pim::kernels {

// An integer operand read through strides: element (i, j) is data[i * stride_i + j * stride_j].
// Values must lie in the range of a `bits`-wide integer of the given signedness (checked).
//
// The stored operand W may instead keep 16-bit words (data16 set, data null: a macro's weights,
// at most 16 bits, in half the memory), read as int16 when signed and as uint16 when unsigned,
// and may be read through an arithmetic right shift (element = word >> shift: the top bits of
// wider stored weights, as a forward path that drives only the top bit columns reads them).
// The fast kernel takes both only for W; X is plain int32 there.
struct IntOperand {
  const int32_t* data = nullptr;
  int64_t stride_i = 0;
  int64_t stride_j = 1;
  int bits = 8;  // 1..16
  Signedness sign = Signedness::kSigned;
  const int16_t* data16 = nullptr;
  int shift = 0;  // 0..15

  int32_t At(int64_t i, int64_t j) const {
    const int64_t at = i * stride_i + j * stride_j;
    if (data16 == nullptr) return data[at] >> shift;
    return (sign == Signedness::kSigned ? int32_t{data16[at]}
                                        : int32_t{static_cast<uint16_t>(data16[at])}) >>
           shift;
  }
};

// Y (m x n) = X (m x k) W (k x n) on fixed arrays: X is streamed bit-serially (one bit plane of
// a block of k onto the word lines per cycle); W is stored in the cells, `w.bits` cells per
// element. The reduction dimension k is cut into blocks of `tile_k` word lines and the outputs
// into blocks of `tile_n` (within segments, if set), one array per (k block, n block). See
// docs/numerics.md.
//
//   Y[m][c] = sum_p s_p 2^p sum_q t_q 2^q sum_r x[m][r]_p AND w[r][c]_q
//
// with x_p, w_q the two's-complement (or unsigned) bits and s_p = -1 for the input MSB plane if
// signed (else +1), t_q likewise for the weight MSB slice.
struct BitSerialProblem {
  int64_t m = 0;         // samples (batch)
  int64_t k = 0;         // reduction length
  int64_t n = 0;         // outputs
  IntOperand x;          // m x k, streamed bit-serially
  IntOperand w;          // k x n, stored in the array
  int64_t tile_k = 256;  // word lines per array (the reduction extent of one adder tree)
  int64_t tile_n = 256;  // weight columns per array (outputs of one array)
  // Segments (a layer's mapping, docs/numerics.md "Mapping"): the reduction (the outputs) is cut
  // into segments of segment_k (segment_n) elements that each start on a fresh array, and the
  // blocks of tile_k (tile_n) are cut within each segment. 0: one segment (dense tiling).
  int64_t segment_k = 0;
  int64_t segment_n = 0;
  int64_t* y = nullptr;  // m x n, overwritten
  int64_t ldy = 0;       // row stride of y
};

// The end of the array block that starts at `pos` of a dimension of length `len`, cut into
// blocks of `tile` within segments of `segment` (0: one segment).
inline int64_t BlockEnd(int64_t pos, int64_t len, int64_t tile, int64_t segment) {
  int64_t end = pos + tile;
  if (segment > 0) end = std::min(end, (pos / segment + 1) * segment);
  return std::min(end, len);
}
// The number of such blocks: sum over segments of ceil(segment length / tile).
inline int64_t NumBlocks(int64_t len, int64_t tile, int64_t segment) {
  if (segment <= 0 || segment >= len) return (len + tile - 1) / tile;
  const int64_t rest = len % segment;
  return len / segment * ((segment + tile - 1) / tile) + (rest + tile - 1) / tile;
}

// The hardware events of one BitSerialMatMul (docs/numerics.md, "Counting model").
// The counters BitSerialCounts::AddTo adds (name, unit, stages, meaning).
const CounterSet& BitSerialKernelCounters();

struct BitSerialCounts {
  int64_t bitserial_cycles = 0;       // input bit planes applied to an array
  int64_t skipped_zero_cycles = 0;    // planes skipped because all their bits were zero
  int64_t cell_and_ops = 0;           // cell ANDs with the input bit 1 and the weight nonzero
  int64_t gated_zero_weight_ops = 0;  // cell ANDs gated off because the weight is zero
  int64_t adder_tree_adds = 0;        // two-input adds in the adder trees over word lines
  int64_t shift_adds = 0;             // shift-adds over weight slices and input planes
  int64_t tile_accumulations = 0;     // adds merging the partial results of k blocks
  int64_t input_buffer_writes = 0;    // input elements written into the input buffer
  int64_t input_buffer_reads = 0;     // input elements read out to an array
  int64_t output_buffer_writes = 0;   // finished outputs written
  int64_t macs = 0;                   // logical multiply-accumulates m * k * n

  bool operator==(const BitSerialCounts&) const = default;
  // Adds every field under its snake_case name.
  void AddTo(ActionCounts& counts) const;
};

namespace ref {
// Loops over samples, arrays, bit planes, word lines and weight slices like the hardware.
// Slow (m k n x.bits w.bits operations): for tests and small problems.
void BitSerialMatMul(const BitSerialProblem& p, BitSerialCounts& counts);
}  // namespace ref

namespace fast {
// The same result and counts: an exact int16 (vpmaddwd) GEMM, operands whole where they fit
// int16 (else byte slices), in int32 blocks short enough to stay exact, combined in int64;
// counts from popcounts and zero counts. `pool` may be null (single thread); small products run
// on the calling thread. Results do not depend on the thread count.
void BitSerialMatMul(const BitSerialProblem& p, BitSerialCounts& counts, ThreadPool* pool);

// The same product and counts, with Y delivered scaled to float: yf[i][j] (row stride ldyf) =
// float(double(Y[i][j]) * 2^exp), rounded once to nearest even, which is exactly what scaling
// p.y afterwards gives (Y -> double is exact, |Y| < 2^53; the power-of-two scale is exact
// unless the double under- or overflows, alike in both). Each element is converted as its last
// partial sum is added, so a product done in one pass and one reduction block never writes Y as
// int64 at all; otherwise p.y holds the partial sums (its contents are unspecified afterwards).
void BitSerialMatMulScaled(const BitSerialProblem& p, int exp, float* yf, int64_t ldyf,
                           BitSerialCounts& counts, ThreadPool* pool);
}  // namespace fast

}  // namespace pim::kernels
