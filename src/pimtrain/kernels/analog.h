// Analog crossbar matrix multiply with DAC input cycles, sliced multi-bit cells, per-column ADC
// read-out chains (dataflows A / B / C), noise and non-linearity. ref/ loops like the equation
// "for each input cycle, each weight slice, each column: partial sum over the row block ->
// (noise) -> ADC -> shift -> accumulate"; fast/ computes the partial sums on bit-packed planes
// (AND + popcount, or the driven lines' cells added) and converts 8 at a time. Both agree bit for
// bit, codes and counts, except for dataflow A with noise in a lossless read-out (fast samples
// the draws as sparse tails) or with integer partial sums and a linear ADC (fast draws each code
// from its law, detail::CodeLaw): the same law, other values. The fast kernel equals
// ref::AnalogMatMulAsFast bit for bit everywhere, and ref::AnalogMatMul in distribution there
// (tested). docs/analog.md has the equations.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "pimtrain/base/action_counts.h"
#include "pimtrain/base/ars.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/numerics/adc.h"

namespace pim::kernels {

// The read-out chain after the array.
struct AnalogReadout {
  Dataflow dataflow = Dataflow::kA;
  // A: converts each bit-line partial sum every input cycle; B: converts each analog buffer
  // line (partial sums of equal significance summed); C: the NNADC converting the NNS+A output.
  AdcTransfer adc;
  float nnsa_sigma = 0.0f;  // C: Gaussian noise added at each NNS+A step (partial-sum units)
  // B: each buffer line is read with the gain 2^e_l that brings its range (its count of
  // partial sums) up to the fullest line's (detail::LineGainsB), so that every line uses the
  // ADC's codes; the outputs are then in units of 2^-E (E = the largest e_l) of a code.
  bool line_gains = false;
};

// Y (m x n) = X (m x k) W (k x n) on crossbars of `block` word lines.
//
// Inputs are sign-magnitude integers, |x| <= 2^x_bits - 1. With signed_inputs the positive
// parts are applied in phase 0 and the magnitudes of the negative parts in phase 1, whose
// result is subtracted digitally; otherwise only phase 0 runs (negative x is an error). Each
// phase streams the magnitude LSB first through DACs of dac_bits: input cycle j applies the
// chunk x_j = (|x| >> j*dac_bits) & (2^dac_bits - 1), j < ceil(x_bits / dac_bits).
//
// Weights are stored as non-negative levels per polarity: w[r * n*pol + c * pol + p] (pol = 1:
// offset encoding, the macro subtracts the offset digitally; pol = 2: differential pair
// W+ - W-, p = 1 subtracted). A level occupies `slices` cells of cell_bits each, slice q
// holding (level >> q*cell_bits) & (2^cell_bits - 1). `conductance`, when set, holds each
// cell's analog value (programming variation) at ((r * slices + q) * n*pol + c*pol + p);
// otherwise a cell conducts exactly its level.
//
// Partial sum of one column over row block b, phase h, cycle j, slice q:
//   ps = sum_{r in b} x_j[r] * cell_q[r]
// Dataflow A: code = ADC(ps) every (b, h, j, q, column); acc += +-code << (j*dac_bits +
//   q*cell_bits).
// Dataflow B: buffer line L sums the ps of equal significance j*dac_bits + q*cell_bits = s_L in
//   analog (ascending j, then q); code = ADC(line); acc += +-code << s_L.
// Dataflow C: NNS+A per column V_j = 2^-dac_bits V_{j-1} + sum_q 2^(q cell_bits) ps_jq
//   (+ noise), then code = ADC(2^((J-1) dac_bits) V_{J-1}); acc += +-code.
// Output y[m][c] = sum_p (+-)acc (integer code sums; y_real = lsb * y - offset terms).
//
// Noise: every draw is NoiseNormal(noise_key, stream, index) with the index a function of the
// draw's coordinates (docs/analog.md), so results do not depend on threads or loop order.
struct AnalogProblem {
  int64_t m = 0, k = 0, n = 0;
  const int32_t* x = nullptr;  // m x k, row stride ldx
  int64_t ldx = 0;
  int x_bits = 8;    // magnitude bits of x, 1..16
  bool signed_inputs = true;
  int dac_bits = 1;  // 1..8
  const int32_t* w = nullptr;  // k x n x polarities levels
  int polarities = 1;          // 1 or 2
  int cell_bits = 1;           // 1..4
  int slices = 8;              // cells per level, slices * cell_bits <= 16
  const float* conductance = nullptr;
  int64_t block = 128;      // word lines summed by one bit line (reduction per array)
  int64_t tile_cols = 128;  // bit lines per array (counts arrays along n * pol * slices)
  // Array read cycles per input cycle: 1 when every slice's bit lines are sensed together (the
  // forward read); slices * polarities in the transposed read, where word lines are sensed and
  // each slice's bit lines must be driven in a cycle of their own.
  int reads_per_cycle = 1;
  bool skip_zero_cycles = true;  // an input cycle whose block inputs are all 0 is not applied
  AnalogReadout readout;
  uint64_t noise_key = 0;
  int64_t* y = nullptr;  // m x n, overwritten
  int64_t ldy = 0;
};

// Stream ids of the noise draws.
constexpr uint64_t kNoiseStreamA = 1, kNoiseStreamB = 2, kNoiseStreamNnsa = 3,
                   kNoiseStreamNnadc = 4;

// The hardware events of one AnalogMatMul (docs/analog.md, "Counts").
// The counters AnalogCounts::AddTo adds (name, unit, stages, meaning).
const CounterSet& AnalogKernelCounters();

struct AnalogCounts {
  int64_t macs = 0;                  // m k n
  int64_t input_cycles = 0;          // array read cycles: (array, applied input cycle, read)
  int64_t skipped_input_cycles = 0;  // the same, skipped because the block inputs were all 0
  int64_t dac_conversions = 0;       // word-line drives: block rows per applied array cycle
  int64_t cell_reads = 0;            // cells on driven (nonzero-input) rows x bit lines
  int64_t adc_conversions = 0;
  int64_t adc_clipped = 0;           // conversions whose ideal code fell outside [0, 2^bits-1]
  int64_t shift_adds = 0;            // ADC codes shifted and added digitally
  int64_t sample_holds = 0;          // S+H captures (one per conversion; C: per NNS+A step)
  int64_t analog_buffer_writes = 0;  // B: partial sums written into the analog buffer
  int64_t tia_conversions = 0;       // B: bit-line currents turned into buffer write voltages
  int64_t analog_buffer_reads = 0;   // B: buffer cells read when their lines are summed
  int64_t analog_accumulations = 0;  // C: NNS+A steps
  int64_t tile_accumulations = 0;    // digital adds merging row blocks' results
  int64_t input_buffer_reads = 0;    // input elements read out to the arrays' DACs
  int64_t output_buffer_writes = 0;  // finished outputs

  bool operator==(const AnalogCounts&) const = default;
  // Every field added (integer sums: the order of the parts does not change them).
  AnalogCounts& operator+=(const AnalogCounts& o) {
    macs += o.macs;
    input_cycles += o.input_cycles;
    skipped_input_cycles += o.skipped_input_cycles;
    dac_conversions += o.dac_conversions;
    cell_reads += o.cell_reads;
    adc_conversions += o.adc_conversions;
    adc_clipped += o.adc_clipped;
    shift_adds += o.shift_adds;
    sample_holds += o.sample_holds;
    analog_buffer_writes += o.analog_buffer_writes;
    tia_conversions += o.tia_conversions;
    analog_buffer_reads += o.analog_buffer_reads;
    analog_accumulations += o.analog_accumulations;
    tile_accumulations += o.tile_accumulations;
    input_buffer_reads += o.input_buffer_reads;
    output_buffer_writes += o.output_buffer_writes;
    return *this;
  }
  void AddTo(ActionCounts& counts) const;
};

// Significance groups of dataflow B: the distinct shifts j*dac_bits + q*cell_bits, ascending.
std::vector<int> SignificanceGroups(int cycles, int slices, int dac_bits, int cell_bits);
inline int InputCycles(int x_bits, int dac_bits) { return (x_bits + dac_bits - 1) / dac_bits; }

// True when p's read-out is lossless apart from its noise (docs/analog.md, "Noise keyed by coordinates", its lossless read-out):
// integer partial sums (no programming variation), a linear ADC with one code per unit whose
// range holds the largest value it converts, and either dataflow A with noise too small for a
// central draw to move a code, or dataflow B without noise. The fast kernel then computes the
// exact integer product (and for A corrects it at the sparse-tail events only).
bool LosslessReadout(const AnalogProblem& p);

namespace ref {
// The definition: cycle by cycle, one NoiseNormal draw per conversion at its coordinates.
void AnalogMatMul(const AnalogProblem& p, AnalogCounts& counts);
// The same loop with dataflow A's draws sampled as sparse tails where detail::SparseTails(p)
// holds (kernels/ref/analog_sparse_tails.cc, from the sampling's equations): every conversion
// still gets a draw (uniform over the centre cells [lo, hi) or its tail event's value) and is
// converted in full. Elsewhere equal to AnalogMatMul. The fast kernel's results are this one's
// bit for bit off the direct-code configurations (AnalogMatMulAsFast below).
void AnalogMatMulSparseTails(const AnalogProblem& p, AnalogCounts& counts);
// The draws of dataflow A's segment (m, b, h, j): z[i], i = q * ncp + cp < len.
using SegmentDraws = std::function<void(int64_t m, int64_t blocks, int64_t b, int h, int cycles,
                                        int j, int64_t len, float* z)>;
void AnalogMatMulWithDraws(const AnalogProblem& p, const SegmentDraws& draws,
                           AnalogCounts& counts);
// The same loop with dataflow A's integer conversions replaced by codes(v, i): the code and
// clipping of the conversion with partial sum v and draw index i (no normal is drawn then).
using CodeSampler = std::function<AdcTransfer::Result(int64_t v, uint64_t i)>;
void AnalogMatMulWithCodes(const AnalogProblem& p, const CodeSampler& codes,
                           AnalogCounts& counts);
// The fast kernel's sampling, reference side (kernels/ref/analog_direct_codes.cc): dataflow A's
// codes drawn directly from their law where detail::DirectCodes(p) holds (one 64-bit uniform per
// conversion against the law's thresholds, detail::CodeLaw), else AnalogMatMulSparseTails. The
// fast kernel's results are this one's bit for bit, on every configuration.
void AnalogMatMulAsFast(const AnalogProblem& p, AnalogCounts& counts);
}  // namespace ref

namespace fast {
// Bit planes of the stored levels, per row block: plane t (bit t of the level, t < slices *
// cell_bits) of column cp over the block's rows, in 64-bit words (rows from the block start).
struct PackedAnalogWeights {
  int64_t k = 0, ncp = 0, block = 0, words = 0;
  int bits = 0;
  std::vector<uint64_t> planes;  // [block][bit][cp][word]
  // The levels as int16 row pairs for the exact integer product of the lossless read-out
  // (docs/analog.md): pairs[(rp * ncp + cp) * 2 + e] = level of row 2 rp + e (0 past k). Empty
  // when a level needs more than 15 bits.
  std::vector<int16_t> pairs;
  // 1-bit cells: the cells as bytes, row after row, for partial sums by row addition
  // (bytes[r * row_bytes + q * ncp + cp] = bit q of row r's level; row_bytes = slices * ncp
  // rounded up to 32). Built by the kernel at the first call that sums rows after a PackWeights
  // (which clears them), in the calling thread before any worker starts.
  mutable std::vector<uint8_t> bytes;
  mutable int64_t row_bytes = 0;
  // The same cells as bits for the bit-sliced row counts (AVX-512 builds, fast/
  // analog_partial_sums.cc): row r's bit lines in chunks of 512, row_bit_words = 8 per chunk,
  // bit line c of a chunk at the bit the counts' transpose reads it from. Built with bytes.
  mutable std::vector<uint64_t> row_bits;
  mutable int64_t row_bit_words = 0;
  const uint64_t* Plane(int64_t b, int t, int64_t cp) const {
    return planes.data() + ((b * bits + t) * ncp + cp) * words;
  }
};
// Packs p.w (k x n*pol levels) for p.block. `pool` may be null.
void PackWeights(const AnalogProblem& p, PackedAnalogWeights& out, ThreadPool* pool);
// The same results and counts as ref::AnalogMatMulAsFast (= ref::AnalogMatMul unless
// detail::SparseTails(p) or detail::DirectCodes(p)). `packed` must come from PackWeights for the
// same w and block (nullptr: packed here). Split over samples; any thread count gives the same.
void AnalogMatMul(const AnalogProblem& p, const PackedAnalogWeights* packed, AnalogCounts& counts,
                  ThreadPool* pool);
// Fills out[0..count) with NoiseNormal(key, stream, start + i), 8 Philox blocks at a time.
void FillNormals(uint64_t key, uint64_t stream, uint64_t start, int64_t count, float* out);
// Fills out[0..count) with the 16-bit uniforms behind NoiseNormal(key, stream, start + i).
void FillUniforms(uint64_t key, uint64_t stream, uint64_t start, int64_t count, uint32_t* out);
}  // namespace fast

}  // namespace pim::kernels

// Shared read-out arithmetic of dataflows B and C (the reference and the fast kernel call the
// same code, so their floating-point steps are identical).
namespace pim::kernels::detail {

// Index of a noise draw: ((((m * blocks + b) * 2 + h) * n1 + i1) * n2 + i2).
inline uint64_t NoiseIndex(int64_t m, int64_t blocks, int64_t b, int h, int64_t n1, int64_t i1,
                           int64_t n2, int64_t i2) {
  return static_cast<uint64_t>((((m * blocks + b) * 2 + h) * n1 + i1) * n2 + i2);
}

// Dataflow B (CASCADE's R-Mapping, docs/analog.md "Read-out chains"): the buffer line of
// significance s = groups[l] of column cp collects, in one buffer column, the partial sums of
// every applied (cycle j, slice q) with j dac_bits + q cell_bits = s from every row block of the
// output, so that reading the column sums them in current. AccumulateLinesB adds one (sample,
// block b, phase h)'s partial sums ps[(j * slices + q) * ncp + cp] into lines[l * ncp + cp]
// (double, j then q ascending, blocks in order) and counts the TIA conversions and buffer
// writes; ConvertLinesB converts each line of a phase once per output, after its last block,
// and adds sign * code << s into acc[cp]. When ro.adc.sigma != 0 the caller fills
// z[l * ncp + cp] = NoiseNormal(key, kNoiseStreamB, NoiseIndex(m, 1, 0, h, lines, l, ncp, cp)),
// lines = groups.size() (one contiguous index range per phase).
void AccumulateLinesB(const float* ps, const uint8_t* applied, int cycles, int slices,
                      int64_t ncp, const std::vector<int>& groups, int dac_bits, int cell_bits,
                      double* lines);
void ConvertLinesB(const double* lines, int64_t ncp, const std::vector<int>& groups,
                   const std::vector<int>& gains, const AnalogReadout& ro, const float* z,
                   int64_t sign, int64_t* acc, AnalogCounts& c);
// The line gains of dataflow B: e_l, the largest e with count_l 2^e <= the fullest line's count
// (all 0 without ro.line_gains); E = LineGainShiftB(gains) = the largest. Line l's code adds
// code << (groups[l] + E - e_l): the outputs are exact integers in units of 2^-E codes.
std::vector<int> LineGainsB(int cycles, int slices, int dac_bits, int cell_bits,
                            const std::vector<int>& groups, bool line_gains);
int LineGainShiftB(const std::vector<int>& gains);
// The most partial sums one buffer line of one row block holds (the count of (j, q) pairs on
// the fullest anti-diagonal).
int FullestLineB(int cycles, int slices, int dac_bits, int cell_bits);

// Dataflow C for one (m, b, h): the NNS+A recurrence over all cycles (unapplied cycles add 0)
// and one NNADC conversion per column; adds sign * code into acc[cp]. The draws come filled in
// by the caller: z_nnsa[j * ncp + cp] = NoiseNormal(key, kNoiseStreamNnsa, NoiseIndex(m, blocks,
// b, h, cycles, j, ncp, cp)) when ro.nnsa_sigma != 0, z_adc[cp] = NoiseNormal(key,
// kNoiseStreamNnadc, NoiseIndex(m, blocks, b, h, 1, 0, ncp, cp)) when ro.adc.sigma != 0 (both
// index ranges are contiguous).
// Columns cp_begin .. ncp - 1 only (the fast kernel does the others 8 at a time, with the same
// double operations per column).
void ReadoutC(const float* ps, const uint8_t* applied, int cycles, int slices, int64_t ncp,
              int dac_bits, int cell_bits, const AnalogReadout& ro, const float* z_nnsa,
              const float* z_adc, int64_t sign, int64_t* acc, AnalogCounts& c,
              int64_t cp_begin = 0);

// ---- Sparse tails: dataflow A's draws in a lossless read-out (docs/analog.md, "Sparse tails")
// When LosslessReadout(p) holds for dataflow A with noise, no draw h in [lo, hi) (the
// central ones, and the tail ones next to them, whose code offset is 0) can change a code. The
// draws of one conversion segment (sample m, block b, phase h, cycle j: its S * ncp
// conversions, draw i = q * ncp + cp) are then sampled in two parts with the same law as
// NoiseNormal's 16-bit draw: which conversions draw outside [lo, hi) ("tail events", each with
// probability p = (lo + 65536 - hi) / 65536, independently) as geometric gaps between them, and
// each event's h, uniform over the lo + 65536 - hi tail values. The other conversions' draws
// are uniform over [lo, hi) and leave the codes alone; the reference still draws and converts
// them, the fast kernel only visits the events.

// The tail draws of a lossless read-out: e[idx] (idx the quantile table's index, see
// GaussianTable) the code offset: every partial sum 0 <= v <= vmax converts to
// clamp(v + e, 0, M), clipped exactly when v + e is outside [0, M] (kUnsafeTail: a draw too
// close to a half-integer, convert in full); the draws that can change a code, h < lo or
// h >= hi; and the gap thresholds of the events: gap_thr[g] = round(2^32 (1 - p)^g).
constexpr int32_t kUnsafeTail = INT32_MIN;
constexpr uint32_t kTailHiBase = 65536 - 2 * kGaussTail;  // table index of h = h - kTailHiBase
constexpr int kGapSteps = 63;  // a gap word covers up to 62 skipped conversions, or 63 and on
struct TailPlan {
  std::vector<int32_t> e;
  uint32_t lo = 0, hi = 65536;
  uint32_t tails = 0;  // lo + 65536 - hi
  uint64_t gap_thr[kGapSteps + 1] = {};
  // Unit tails (a lossless read-out's are: |sigma z| <= 1.1 there): every tail draw outside
  // [lo, hi) has offset -1 below the centre and +1 above it, except the kUnsafeTail ones, table
  // indices [unsafe_lo, lo) and [hi - kTailHiBase, unsafe_hi) at the inner edges.
  bool unit = false;
  uint32_t unsafe_lo = 0, unsafe_hi = 0;
  // Refined cells (RefinedCell, numerics/adc.h) are continuous: e[idx] is their offset when it is
  // the same over the whole cell, else kUnsafeTail (the draw's value is then needed). For unit
  // tails the unsafe outer ones are the table indices [0, outer_lo) and [outer_hi, 2 kGaussTail)
  // (cell 0 and 65535 always: they reach -+infinity).
  uint32_t outer_lo = 0, outer_hi = 2 * kGaussTail;
};
TailPlan MakeTailPlan(const AdcTransfer& adc, double vmax);
// The largest partial sum of p's blocks (integer levels): the bound MakeTailPlan needs.
double MaxPartialSum(const AnalogProblem& p);
// True when p's dataflow-A draws are sampled as sparse tails (dataflow A, noise on,
// LosslessReadout).
bool SparseTails(const AnalogProblem& p);

// The quantile-table index of a 16-bit draw outside the centre: [h] below it, [h - kTailHiBase]
// above it.
inline uint32_t TailIndex(uint32_t h) { return h - (kTailHiBase & (0u - (h >> 15))); }
// The 16-bit draw of tail slot s < plan.tails: the lo lower ones, then the upper ones from hi.
inline uint32_t TailDraw(const TailPlan& plan, uint32_t s) {
  return s < plan.lo ? s : plan.hi + (s - plan.lo);
}
// The stream of one segment's gap words (kind 0), event words (kind 1) or refinement words
// (kind 2): its segment number ((m * blocks + b) * 2 + h) * cycles + j above the kind, and
// 5 + kind below (the other noise streams are 1..4). The words come from ARS-7 (base/ars.h),
// not Philox: a sparse-tail event costs two words and little else, and ARS makes them at a third
// of Philox's cost with vector AES. Word k of a stream is word k & 3 of block (stream, k >> 2).
inline uint64_t SparseTailStream(int64_t m, int64_t blocks, int64_t b, int h, int cycles, int j,
                                 int kind) {
  return (static_cast<uint64_t>(((m * blocks + b) * 2 + h) * cycles + j) << 4) |
         static_cast<uint64_t>(5 + kind);
}
inline uint32_t SparseTailWord(uint64_t key, uint64_t stream, uint64_t k) {
  return Ars4x32(key, stream, k >> 2)[k & 3];
}
// The 64-bit uniform placing event n of a segment inside a refined cell: words 2n, 2n + 1 of
// the segment's stream of kind 2.
inline uint64_t SparseTailRefineWord(uint64_t key, uint64_t stream, uint64_t n) {
  const std::array<uint32_t, 4> w = Ars4x32(key, stream, n >> 1);
  const int o = static_cast<int>(n & 1) * 2;
  return (static_cast<uint64_t>(w[o + 1]) << 32) | w[o];
}
// The value of a segment's event n with quantile-table index idx: the table's quantile, or in a
// refined cell the continuous draw placed by SparseTailRefineWord (refine_stream: the segment's
// kind-2 stream).
inline float SparseTailValue(uint64_t key, uint64_t refine_stream, uint64_t n, uint32_t idx) {
  const uint32_t h = idx < kGaussTail ? idx : idx + kTailHiBase;
  if (!RefinedCell(h)) return GetGaussianTable().tail[idx];
  return GaussianRefined(h, SparseTailRefineWord(key, refine_stream, n));
}
// The conversions a gap word u skips: #{g in 1..kGapSteps : u < gap_thr[g]}; kGapSteps means
// "kGapSteps and more": the next gap word continues the gap.
inline int GapLength(const TailPlan& plan, uint32_t u) {
  int g = 0;
  for (int step = 32; step >= 1; step >>= 1) {
    if (u < plan.gap_thr[g + step]) g += step;  // the steps add up to kGapSteps
  }
  return g;
}
// The tail events of one segment of len conversions, in ascending order: pos[t] the draw and
// idx[t] its quantile-table index; returns their number (<= len). Scalar, for the reference;
// the fast kernel's vector version gives the same.
int64_t SparseTailEvents(uint64_t key, int64_t m, int64_t blocks, int64_t b, int h, int cycles,
                         int j, int64_t len, const TailPlan& plan, int64_t* pos, uint32_t* idx);

// ---- Direct codes: dataflow A's code drawn from its law (docs/analog.md, "Direct codes")
// With an integer partial sum v (no programming variation), a linear ADC and noise, the code of
// a conversion is a random function of v alone: t = (v + sigma Z) inv_lsb, Z ~ N(0, 1) (exact
// reals, sigma and inv_lsb the transfer's float values), outcome o = clamp(floor(t + 1/2) + 1,
// 0, M + 2): o = 0 is "clipped below" (code 0), o = c + 1 code c, o = M + 2 "clipped above"
// (code M). Per call and v the law's cumulative thresholds T_o = round(2^64 P(t < o - 1/2)),
// o = 0..M + 1 (Phi by erfc in double, the upper half by its complement), are tabulated; a
// conversion draws one 64-bit uniform U (CodeUniform: bits 48-63 the 16-bit half i & 7 of ARS
// block (kCodeStreamHi, i >> 3), bits 16-47 word i & 3 of block (kCodeStreamLo, i >> 2), bits
// 0-15 half i & 7 of block (kCodeStreamLo16, i >> 3), i the conversion's draw index) and takes
// o = #{o : U >= T_o}. Exact in law to the thresholds' rounding (2^-64 per code, far below any
// run's reach; no cut in the tails: every outcome of mass above 2^-65 is kept). The top 16 bits
// have a stream of their own, so the fast kernel decides almost every conversion from them alone.
// (Low nibbles that no sparse-tail stream has.)
constexpr uint64_t kCodeStreamHi = 8, kCodeStreamLo = 9, kCodeStreamLo16 = 10;
struct CodeLaw {
  int64_t vmax = 0;
  int max_code = 0;
  // Per v: o_lo[v] = the outcomes' count below every threshold in (0, 2^64) (thresholds that
  // round to 0), and those thresholds, ascending: bounds[start[v] .. start[v + 1]).
  std::vector<int32_t> o_lo;
  std::vector<uint32_t> start;
  std::vector<uint64_t> bounds;
  int max_outcomes = 0;  // the most outcomes of nonzero mass of any v
};
CodeLaw MakeCodeLaw(const AdcTransfer& adc, int64_t vmax);
// True when p's dataflow-A codes are drawn directly (the fast kernel and AnalogMatMulAsFast):
// dataflow A, noise on, a linear ADC, integer partial sums, not a lossless read-out (that one
// samples sparse tails), partial sums of at most kDirectMaxV, at most 4095 codes, and at most 60
// outcomes of nonzero mass per v (sigma below ~2.8 codes).
constexpr int64_t kDirectMaxV = 1023;
bool DirectCodes(const AnalogProblem& p);
// Word i of a direct-code stream (word i & 3 of block i >> 2).
inline uint32_t CodeWord(uint64_t key, uint64_t stream, uint64_t i) {
  return Ars4x32(key, stream, i >> 2)[i & 3];
}
// 16-bit half i of a direct-code stream: half i & 7 of block i >> 3 (halves little-endian
// within the block's words, as its 16 bytes lie in memory).
inline uint32_t CodeHalf(uint64_t key, uint64_t stream, uint64_t i) {
  return (Ars4x32(key, stream, i >> 3)[(i & 7) >> 1] >> (16 * (i & 1))) & 0xFFFFu;
}
// The 64-bit uniform of direct-code draw i (CodeLaw above).
inline uint64_t CodeUniform(uint64_t key, uint64_t i) {
  return (static_cast<uint64_t>(CodeHalf(key, kCodeStreamHi, i)) << 48) |
         (static_cast<uint64_t>(CodeWord(key, kCodeStreamLo, i)) << 16) |
         CodeHalf(key, kCodeStreamLo16, i);
}
// The code and clipping of outcome o.
inline AdcTransfer::Result CodeOfOutcome(int o, int max_code) {
  AdcTransfer::Result r;
  r.code = o <= 0 ? 0 : (o - 1 > max_code ? max_code : o - 1);
  r.clipped = o == 0 || o == max_code + 2;
  return r;
}

}  // namespace pim::kernels::detail
