// Reference bit-serial PIM multiply: the array's cycle-by-cycle behaviour, written to read like
// Y = sum_p s_p 2^p sum_q t_q 2^q sum_r x_r[p] AND w_r[q] (docs/numerics.md).
#include "pimtrain/kernels/bitserial.h"

#include <algorithm>
#include <vector>

#include "pimtrain/base/error.h"

namespace pim::kernels {

PIM_DECLARE_COUNTERS(
    BitSerialKernelCounters, "bit-serial kernel",
    {"bitserial_cycles", "array cycle", "FP BP GC", "input bit planes applied to an array"},
    {"skipped_zero_cycles", "array cycle", "FP BP GC",
     "planes skipped because all their bits were zero"},
    {"cell_and_ops", "cell AND", "FP BP GC",
     "cell ANDs with the input bit 1 and the weight nonzero"},
    {"gated_zero_weight_ops", "cell AND", "FP BP GC", "cell ANDs gated off: the weight is zero"},
    {"adder_tree_adds", "add", "FP BP GC", "two-input adds in the adder trees over word lines"},
    {"shift_adds", "add", "FP BP GC", "shift-adds over weight slices and input planes"},
    {"tile_accumulations", "add", "FP BP GC", "adds merging the partial results of k blocks"},
    {"input_buffer_writes", "element", "FP BP GC", "input elements written into the input buffer"},
    {"input_buffer_reads", "element", "FP BP GC", "input elements read out to an array"},
    {"output_buffer_writes", "element", "FP BP GC", "finished outputs written"},
    {"macs", "MAC", "FP BP GC", "logical multiply-accumulates (m k n)"});

void BitSerialCounts::AddTo(ActionCounts& counts) const {
  counts.Add("bitserial_cycles", bitserial_cycles);
  counts.Add("skipped_zero_cycles", skipped_zero_cycles);
  counts.Add("cell_and_ops", cell_and_ops);
  counts.Add("gated_zero_weight_ops", gated_zero_weight_ops);
  counts.Add("adder_tree_adds", adder_tree_adds);
  counts.Add("shift_adds", shift_adds);
  counts.Add("tile_accumulations", tile_accumulations);
  counts.Add("input_buffer_writes", input_buffer_writes);
  counts.Add("input_buffer_reads", input_buffer_reads);
  counts.Add("output_buffer_writes", output_buffer_writes);
  counts.Add("macs", macs);
}

namespace ref {
namespace {

// Bit `b` of v's `bits`-wide two's-complement (or unsigned) pattern.
inline int Bit(int32_t v, int b) { return static_cast<int>((static_cast<uint32_t>(v) >> b) & 1u); }

// The weight of bit `b` of a `bits`-wide number: -1 for the MSB of a signed number (its place
// value is -2^(bits-1)), +1 otherwise.
inline int64_t PlaceSign(int b, int bits, Signedness s) {
  return (s == Signedness::kSigned && b == bits - 1) ? -1 : 1;
}

void CheckRange(int32_t v, const IntOperand& op) {
  PIM_CHECK_MSG(v >= IntMin(op.bits, op.sign) && v <= IntMax(op.bits, op.sign),
                "bit-serial operand out of its declared range");
}

}  // namespace

void BitSerialMatMul(const BitSerialProblem& p, BitSerialCounts& counts) {
  PIM_CHECK(p.m >= 0 && p.k >= 0 && p.n >= 0 && p.tile_k >= 1 && p.tile_n >= 1);
  PIM_CHECK(p.segment_k >= 0 && p.segment_n >= 0);
  PIM_CHECK(p.x.bits >= 1 && p.x.bits <= 16 && p.w.bits >= 1 && p.w.bits <= 16);
  const int bx = p.x.bits, bw = p.w.bits;
  BitSerialCounts c;

  // Every input element is written once into the input buffer.
  for (int64_t m = 0; m < p.m; ++m) {
    for (int64_t r = 0; r < p.k; ++r) {
      CheckRange(p.x.At(m, r), p.x);
      ++c.input_buffer_writes;
    }
  }
  for (int64_t r = 0; r < p.k; ++r) {
    for (int64_t col = 0; col < p.n; ++col) CheckRange(p.w.At(r, col), p.w);
  }

  const int64_t tile_cols = std::max<int64_t>(std::min(p.tile_n, p.n), 1);
  std::vector<int64_t> tile_out(static_cast<size_t>(tile_cols));
  for (int64_t m = 0; m < p.m; ++m) {
    int64_t n1 = 0;
    for (int64_t n0 = 0; n0 < p.n; n0 = n1) {  // one array column block
      n1 = BlockEnd(n0, p.n, p.tile_n, p.segment_n);
      int64_t* y = p.y + m * p.ldy;
      for (int64_t col = n0; col < n1; ++col) y[col] = 0;
      int64_t k1 = 0;
      for (int64_t k0 = 0; k0 < p.k; k0 = k1) {  // one array row block
        k1 = BlockEnd(k0, p.k, p.tile_k, p.segment_k);
        c.input_buffer_reads += k1 - k0;  // the block's elements go to the bit-serial drivers
        std::fill(tile_out.begin(), tile_out.end(), 0);
        for (int pl = 0; pl < bx; ++pl) {  // input bit plane = one cycle
          bool any = false;
          for (int64_t r = k0; r < k1; ++r) any = any || Bit(p.x.At(m, r), pl);
          if (!any) {  // every word line would carry 0: the cycle is skipped
            ++c.skipped_zero_cycles;
            continue;
          }
          ++c.bitserial_cycles;
          for (int64_t col = n0; col < n1; ++col) {
            for (int q = 0; q < bw; ++q) {  // weight slice = one bit column
              // Adder tree over the block's word lines: sum_r x_r[p] AND w_r[q].
              int64_t partial = 0;
              for (int64_t r = k0; r < k1; ++r) {
                if (!Bit(p.x.At(m, r), pl)) continue;  // word line not driven: no AND
                const int32_t wv = p.w.At(r, col);
                if (wv == 0) {
                  ++c.gated_zero_weight_ops;  // zero weight: its unit is clock-gated
                  continue;
                }
                ++c.cell_and_ops;
                partial += Bit(wv, q);
              }
              c.adder_tree_adds += (k1 - k0) - 1;
              // Shift-add: the slice's partial sum at place value s_p t_q 2^(p+q).
              tile_out[col - n0] +=
                  PlaceSign(pl, bx, p.x.sign) * PlaceSign(q, bw, p.w.sign) * (partial << (pl + q));
              ++c.shift_adds;
            }
          }
        }
        // The array's result is merged digitally with the earlier row blocks' results.
        for (int64_t col = n0; col < n1; ++col) {
          if (k0 > 0) ++c.tile_accumulations;
          y[col] += tile_out[col - n0];
        }
      }
      c.output_buffer_writes += n1 - n0;
    }
  }
  c.macs = p.m * p.k * p.n;
  counts = c;
}

}  // namespace ref
}  // namespace pim::kernels
