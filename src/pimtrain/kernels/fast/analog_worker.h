// The fast analog kernel's per-thread state (Worker) and the pieces its files share: one file
// per concern beside this header (analog.cc: the driver and the sample loop; analog_pack.cc;
// analog_partial_sums.cc; analog_convert_a.cc; analog_direct_codes.cc; analog_sparse_tails.cc;
// analog_lossless.cc; analog_dataflow_bc.cc; analog_noise.cc). Private to kernels/fast.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "pimtrain/base/ars.h"
#include "pimtrain/kernels/analog.h"

namespace pim::kernels::fast::internal {
using detail::kTailHiBase;
using detail::kUnsafeTail;
using detail::TailIndex;
using detail::kGapSteps;
using detail::TailPlan;

// A noise key's ARS round keys (base/ars.h) in the registers SparseWords64 uses.
struct ArsKeys {
  uint64_t key = 0;
#if defined(__AVX512F__) && defined(__VAES__)
  __m512i k[kArsRounds + 1];
#elif defined(__AES__)
  __m128i k[kArsRounds + 1];
#endif
  explicit ArsKeys(uint64_t key_in) : key(key_in) {
#if defined(__AES__)
    const auto rk = ArsRoundKeys(key);
    for (int r = 0; r <= kArsRounds; ++r) {
      const __m128i v = _mm_set_epi64x(static_cast<int64_t>(rk[r][1]),
                                       static_cast<int64_t>(rk[r][0]));
#if defined(__AVX512F__) && defined(__VAES__)
      k[r] = _mm512_broadcast_i32x4(v);
#else
      k[r] = v;
#endif
    }
#endif
  }
};

#if defined(__AVX512F__) && defined(__VAES__)
// ARS blocks `first` .. `first` + 15 of `stream` (64 words): four blocks per 512-bit register,
// four registers in flight.
inline void ArsBlocks16(const ArsKeys& ak, int64_t stream, int64_t first, uint32_t* out) {
  const int64_t s = stream, c = first;
  const __m512i step = _mm512_set_epi64(0, 4, 0, 4, 0, 4, 0, 4);
  __m512i ctr = _mm512_set_epi64(s, c + 3, s, c + 2, s, c + 1, s, c), x[4];
  for (int v = 0; v < 4; ++v) {
    x[v] = _mm512_xor_si512(ctr, ak.k[0]);
    ctr = _mm512_add_epi64(ctr, step);
  }
  for (int r = 1; r < kArsRounds; ++r) {
    for (int v = 0; v < 4; ++v) x[v] = _mm512_aesenc_epi128(x[v], ak.k[r]);
  }
  for (int v = 0; v < 4; ++v) {
    _mm512_storeu_si512(out + 16 * v, _mm512_aesenclast_epi128(x[v], ak.k[kArsRounds]));
  }
}
#endif

// The gap thresholds as detail::GapLength's binary search reads them, built once per call's
// worker: step s looks at gap_thr[g + s], g a multiple of 2 s, so each step has a table of
// 32 / s entries indexed by g / (2 s) (one permute; the last step's 32 take two registers).
struct GapTables {
  alignas(64) uint32_t t8[16] = {}, t4[16] = {}, t2[16] = {}, t1[32] = {};
  uint32_t v16 = 0, v32 = 0, v48 = 0;
  explicit GapTables(const TailPlan& plan) {
    for (int i = 0; i < 4; ++i) t8[i] = static_cast<uint32_t>(plan.gap_thr[8 + 16 * i]);
    for (int i = 0; i < 8; ++i) t4[i] = static_cast<uint32_t>(plan.gap_thr[4 + 8 * i]);
    for (int i = 0; i < 16; ++i) t2[i] = static_cast<uint32_t>(plan.gap_thr[2 + 4 * i]);
    for (int i = 0; i < 32; ++i) t1[i] = static_cast<uint32_t>(plan.gap_thr[1 + 2 * i]);
    v16 = static_cast<uint32_t>(plan.gap_thr[16]);
    v32 = static_cast<uint32_t>(plan.gap_thr[32]);
    v48 = static_cast<uint32_t>(plan.gap_thr[48]);
  }
};

// A tail draw whose code needs the full transfer (kUnsafeTail): draw i, table index, partial
// sum, and its event number (which places a refined cell's draw, SparseTailValue).
struct UnsafeTail {
  int64_t i;
  uint32_t idx;
  int32_t v;
  int64_t ev;
};

// A refined-cell draw left at its label by FillNormalsDeferRefined: draw start + pos, cell h.
struct DeferredDraw {
  uint32_t pos;
  uint32_t h;
};
// FillNormals, except that a refined cell's draw (RefinedCell(h), ~0.2 %) keeps its cell's label
// GaussianFrom16(h) and is listed in `deferred`: its continuous value
// GaussianRefined(h, NoiseRefineWord(key, stream, start + pos)) is left to the caller, who often
// needs only its cell's bounds (RefinedEdges).
void FillNormalsDeferRefined(uint64_t key, uint64_t stream, uint64_t start, int64_t count,
                             float* out, std::vector<DeferredDraw>& deferred);
// Bounds of every value GaussianRefined(h, u) can take, over all u, per refined cell (index
// h for the lower cells, h - 65536 + 2 kGaussRefine for the upper ones), two float steps wide of
// the extreme draws. A monotone transfer gives every draw of the cell the same code and
// clipping when both bounds do.
struct RefinedEdges {
  float lo[2 * kGaussRefine], hi[2 * kGaussRefine];
  static uint32_t Index(uint32_t h) { return h < kGaussRefine ? h : h - 65536 + 2 * kGaussRefine; }
};
const RefinedEdges& GetRefinedEdges();

// Dataflow A's direct codes (detail::DirectCodes; analog_direct_codes.cc): the call's law and
// its guide table, entry (v << 8 | w >> 24) for partial sum v and high word w: the code of the
// bucket's lowest uniform (bits 0-11), kGuideClip if that outcome is clipped, kGuideUnsure if a
// threshold lies inside the bucket (then Outcome decides).
constexpr int kGuideBits = 10;
constexpr uint32_t kGuideCode = 0xFFF, kGuideClip = 1u << 12, kGuideUnsure = 1u << 15;
// The window (DirectWindowSegmentAvx512): per partial sum v < 64 win_tables (1 or 3 tables)
// the 16-bit tops of the K = win_k consecutive thresholds that bound v's likeliest K - 1
// outcomes, win[k * 64 win_tables + v], and win_base[v], the outcome below the window's first
// threshold: with r = #{k : u16 > top_k}, outcome = win_base[v] + r whenever 1 <= r <= K - 1
// and no top equals u16 (exact: U's top bits then order U against every threshold); otherwise
// the draw is slow (ExactOutcome with all of U). win_k = 0: no window (partial sums of 192 or
// more, or too much mass outside any window of up to kWinMaxK thresholds).
constexpr int kWinMaxTables = 3, kWinMaxK = 12;
struct DirectPlan {
  detail::CodeLaw law;
  std::vector<uint16_t> guide;
  int win_k = 0, win_tables = 0;
  std::vector<uint16_t> win;
  std::vector<int16_t> win_base;
  // The shift form (DirectShiftSegment; docs/analog.md, "Shift-invariant laws"): where every
  // v's law is one law shifted by v (a unit step: thresholds depend on o - v only; verified at
  // build on every v at every breakpoint), outcome = clamp(v + g + #{k : U >= s_k}, 0, M + 2)
  // with one list s of thresholds. Decided from U's top 16 bits h16 by a branchless binary
  // search of shift_steps steps over the tops of s strictly inside (0, 0xFFFF) (shift_tops,
  // padded with 0xFFFF to 2^shift_steps entries): r = #{tops < h16}, code = clamp(v +
  // shift_cbase + r, 0, M) (shift_cbase = g + #{tops == 0} - 1); slow when h16 equals a top
  // (shift_tops[r] == h16), or h16 is 0 or 0xFFFF. shift_steps = -1: no shift form (the
  // per-v window then).
  int shift_steps = -1, shift_cbase = 0;
  std::vector<uint16_t> shift_tops;
  // The search's tables: shift_search[s * 64 + j] = shift_tops[j + 2^(shift_steps - 1 - s) - 1]
  // (0xFFFF past the end), step s's compare at index r.
  std::vector<uint16_t> shift_search;
  // The bucket form of the same search, where every bucket of h16 (2^shift_bucket_bits of them,
  // 5 or 6 bits) holds at most shift_c <= 4 tops (0: binary search): shift_bucket[b] = #{tops
  // below bucket b}, shift_bucket[64 (c + 1) + b] = bucket b's c-th top (0xFFFF: none); then
  // r = shift_bucket[b] + #{c : top_c(b) < h16}, every table looked up by one permute of b.
  int shift_c = 0, shift_bucket_bits = 0;
  std::vector<uint16_t> shift_bucket;
  DirectPlan(const AdcTransfer& adc, int64_t vmax);
  // The outcome of partial sum v for high word w1 (U's top 32 bits) of draw i (the low word
  // drawn only where w1 equals a threshold's high word).
  int Outcome(int64_t v, uint32_t w1, uint64_t key, uint64_t i) const;
  // The outcome of partial sum v for the whole uniform u: #{thresholds <= u} + o_lo.
  int ExactOutcome(int64_t v, uint64_t u) const;
  // The window's decision for top bits u16 (scalar, as the vector path decides): true and *o
  // the outcome when the draw is fast, false when it is slow.
  bool WindowOutcome(int64_t v, uint32_t u16, int* o) const;
  // The shift form's decision (scalar model of the vector search): true and *o the outcome
  // when fast, false when slow. Requires shift_steps >= 0.
  bool ShiftOutcome(int64_t v, uint32_t u16, int* o) const;

 private:
  void BuildWindow(int64_t vmax);
  void BuildShift(int64_t vmax);
};
// Bit position (within a 512-bit chunk of PackedAnalogWeights::row_bits) of bit line c < 512
// of the chunk: where the bit-sliced counts' transpose to bytes reads it from.
int RowBitPosition(int c);
// One weight row's cells as bytes: out[q ncp + cp] = bit q of lv[cp] (q < S).
void LevelBitsRow(const int32_t* lv, int64_t ncp, int S, uint8_t* out);
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__GFNI__)
// A row's bit lines as bits at their RowBitPosition: bytes[0 .. len) (0 or 1; readable up to
// the next multiple of 512) into out[0 .. 8 ceil(len / 512)).
void RowBitsFromBytes(const uint8_t* bytes, int64_t len, uint64_t* out);
// The same bits straight from one weight row's levels lv[0 .. ncp) (LevelBitsRow's bytes not
// formed where ncp is a multiple of 16; aspeed7).
void RowBitsFromLevels(const int32_t* lv, int64_t ncp, int S, uint64_t* out);
#endif
// Tests only: false makes the fast kernel use the guide where it would use the window.
bool& DirectWindowEnabled();
// Tests only: false makes the window segment use the per-v window where the plan has a shift form.
bool& DirectShiftEnabled();
// Words of ARS blocks (stream, b0 .. b0 + nb) into out[0 .. 4 nb).
void FillCodeWords(const ArsKeys& ak, uint64_t stream, uint64_t b0, int64_t nb, uint32_t* out);

// The variants of the table's plain-function entries (AnalogKernels below), named by ISA.
int64_t DirectCodesSegmentScalar(const uint16_t* guide, const int32_t* v, const uint32_t* w,
                                 int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                                 int64_t* acc, int64_t cp0, uint32_t* unsure, int64_t* nu);
#if defined(__AVX512F__) && defined(__AVX512BW__)
// v: the partial sums as int32 (v32) or bytes (v8, the other null).
int64_t DirectWindowSegmentAvx512(const DirectPlan& d, const int32_t* v32, const uint8_t* v8,
                                  const uint16_t* u, int64_t ncp, int S, int pr, int shift_j,
                                  int64_t sign, int64_t* acc, uint32_t* slow, int64_t* ns);
#endif
#if defined(__AVX2__)
int64_t DirectCodesSegmentAvx2(const uint16_t* guide, const int32_t* v, const uint32_t* w,
                               int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                               int64_t* acc, int64_t cp0, uint32_t* unsure, int64_t* nu);
#endif
int64_t TransferRowAvx2(const AdcTransfer& adc, const int32_t* xi, const float* xf, const float* z,
                        int64_t n, int shift, int64_t sign, int64_t* acc);
int64_t GroupPairNormalsAvx2(uint64_t key, uint64_t stream, uint64_t g, float* out, uint32_t pos,
                             uint32_t* list, int64_t n);
void PackPlanes8Avx2(const AnalogProblem& p, PackedAnalogWeights& out, int64_t t0, int64_t t1);
#if defined(__AVX512F__) && defined(__AVX512BW__)
void PackPlanes8Avx512(const AnalogProblem& p, PackedAnalogWeights& out, int64_t t0, int64_t t1);
#endif
template <int W>
void PopcountColumnsScalar(const uint64_t* const* x, int na, const uint64_t* planes, int pr,
                           int64_t ncp, int64_t nw, int64_t stride, int64_t cp0, int32_t* out);
#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
template <int W>
void PopcountColumnsAvx512(const uint64_t* const* x, int na, const uint64_t* planes, int pr,
                           int64_t ncp, int64_t nw, int64_t stride, int64_t cp0, int32_t* out);
#endif
#if defined(__AVX512F__) && defined(__AVX512DQ__)
int64_t TransferRowAvx512(const AdcTransfer& adc, const int32_t* xi, const float* xf,
                          const float* z, int64_t n, int shift, int64_t sign, int64_t* acc);
int64_t GroupPairNormalsAvx512(uint64_t key, uint64_t stream, uint64_t g, float* out,
                               uint32_t pos, uint32_t* list, int64_t n);
#endif

// ---- Noiseless dataflow A by a code table (branch aspeed7; analog_convert_a.cc) ----------------
// Without noise (adc.sigma == 0) and with integer partial sums (no programming variation), a
// conversion's code and clipping are a pure function of its partial sum v, so they are tabulated
// once per call with the definition's own float steps: entry v is AdcTransfer::Convert(float(v),
// 0) (ref::AnalogMatMul's conversion of that partial sum; INL and calibrated ranges included).
// CodeTableApplies(p): dataflow A, no noise, integer partial sums, not the lossless read-out,
// partial sums up to kCodeTableMaxV. The vector variant needs bytes: vmax <= 255, every code
// <= 255 and clipping monotone in v (it is: t = v inv_lsb is monotone, and so is t > M + 1/2;
// checked when the table is built, else no vector path).
constexpr int64_t kCodeTableMaxV = 255;
struct CodeTable {
  int64_t vmax = 0;
  std::vector<int32_t> code;     // [v], v <= vmax
  std::vector<uint8_t> clipped;  // [v]
  int32_t max_code = 0;          // the largest code in the table
  bool bytes = false;            // codes fit a byte and clipped(v) <=> v >= vclip
  int64_t vclip = 0;             // the smallest clipped v (vmax + 1: none)
  // code(u) = 0 unclipped for every u <= zero_to; code(u) = u unclipped for every u <= ident_to
  // (both >= 0: code(0) = 0).
  int64_t zero_to = 0, ident_to = 0;
  alignas(64) uint8_t code8[256] = {};  // code[v] as bytes (bytes only; 0 past vmax)
  CodeTable(const AdcTransfer& adc, int64_t vmax);
};
bool CodeTableApplies(const AnalogProblem& p);
// One cycle's conversions of S slice rows of partial sums (bytes v8, or int32 v32 with v8 null,
// [q ncp + cp]): acc[cp] += sign * sum_q (code[v] << (q pr)) << shift_j (into acc32 instead
// where it is not null: the caller's int32 accumulators, which it has proved cannot overflow;
// vbound: no sum exceeds it, the vector variant then skips the upper half of a 256-entry table);
// returns the clipped count. The scalar variant (any table) and the AVX-512 VBMI one (t.bytes:
// 64 lookups per VPERMI2B pair, slices grouped in bytes by Horner's rule, the groups added in
// 16 bits where they fit, else int32).
int64_t CodeTableSegmentScalar(const CodeTable& t, const int32_t* v32, const uint8_t* v8,
                               int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                               int64_t* acc, int32_t* acc32, int64_t vbound);
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VBMI__)
int64_t CodeTableSegmentAvx512(const CodeTable& t, const int32_t* v32, const uint8_t* v8,
                               int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                               int64_t* acc, int32_t* acc32, int64_t vbound);
#endif
// ---- end of the code table's block --------------------------------------------------------------

// Per-thread state of one range of samples.
struct Worker {
  const AnalogProblem& p;
  const PackedAnalogWeights& pw;
  const TailPlan* plan;  // MakeTailPlan of the call (lossless read-out only)
  bool lossless;
  const DirectPlan* direct;  // the call's direct-code plan (detail::DirectCodes), else null
  // A segment's uniforms: top halves (window; guide: U's top 32 bits) and, for the guide, the
  // halves and kCodeStreamLo words they are built from; slow or unsure draws.
  std::vector<uint32_t> code_words, code_halves, code_lo, unsure_pos;
  bool use_window = false;  // direct codes by the window (DirectPlan::win_k, a vector variant)
  int pd, pr, S, cycles;
  int64_t ncp, blocks, words, arrays_per_block;
  std::vector<int> groups;
  std::vector<uint64_t> xplanes;  // [phase][bit][word] of the current block
  // Draws: z of dataflow A's and C's converters, z_nnsa of C's NNS+A, z_lines of B's lines.
  std::vector<float> ps, z, z_nnsa, z_lines;
  std::vector<DeferredDraw> deferred;  // A: refined-cell draws left at their labels
  // Dataflow B's buffer lines of one sample, per phase (detail::AccumulateLinesB), and which
  // phases applied in some block.
  std::vector<double> lines;
  uint8_t phase_any[2] = {0, 0};
  std::vector<int> gains;  // B's line gains e_l (detail::LineGainsB) and their largest, E
  int gain_shift = 0;
  std::vector<float> line_x;         // C: the columns' NNS+A values
  std::vector<int64_t> line_terms;   // B: one line's partial-sum offsets
  std::vector<int32_t> psi;  // integer partial sums (no conductances): [j][q][cp]
  std::vector<int64_t> acc;
  std::vector<uint8_t> applied;
  // Small-noise shortcut of dataflow A (ConvertAShortcut): the draws' 16-bit uniforms, and the
  // columns of one slice's tail draws.
  bool shortcut = false;
  std::vector<uint32_t> uni, tails;
  // Lossless read-out (LosslessReadout): the exact integer product of the worker's samples
  // (prod[(m - prod_m0) * ncp + cp]); acc then collects only the tail draws' corrections.
  std::vector<int32_t> ev_pos;    // the tail events of a segment: draws
  std::vector<uint32_t> ev_idx;   // and their quantile-table indices
  std::unique_ptr<GapTables> gap_tables;  // the plan's search tables
  std::unique_ptr<ArsKeys> ars;           // the sparse-tail streams' round keys
  std::vector<uint8_t> slice_of;  // the slice q of draw i = q ncp + cp
  // The sample's tail corrections of draw i, shifted by j pd: int32 when no sum can overflow it
  // (narrow_corr; 16 per vector gather), else int64.
  std::vector<int32_t> corr32;
  std::vector<int64_t> corr64;
  bool narrow_corr = true;
  std::vector<UnsafeTail> unsafe;
  std::vector<int64_t> prod;
  int64_t prod_m0 = 0;
  std::vector<int32_t> xpairs;   // ExactProduct's input row pairs
  std::vector<int32_t> nonzero;  // and, per group of samples, the pairs not all zero
  AnalogCounts c;

  // tail_plan: the call's MakeTailPlan when the read-out is lossless (LosslessReadout with
  // packed int16 pairs), else null.
  Worker(const AnalogProblem& prob, const PackedAnalogWeights& packed, const TailPlan* tail_plan,
         const DirectPlan* direct_plan = nullptr);

  // prod = x W for samples [m0, m1): int16 row pairs of x and of the levels, multiplied and
  // summed in int32 (VPDPWSSD with AVX-512 VNNI) over row chunks short enough not to overflow,
  // added up in int64. Exact, so equal to the sum of the lossless codes (docs/analog.md).
  // Loop order: per row chunk, the x pairs of all samples first; then per tile of 64 columns
  // all samples, 4 at a time, so the tile's weights (chunk x 64 pairs) stay in L2 instead of
  // streaming all weights once per 4 samples.
  void ExactProduct(int64_t m0, int64_t m1);
  // The exact product's helpers: the live row pairs per group of kExactRows samples, and the
  // table's exact_product_tiles variants (whole column tiles; return the columns done).
  static constexpr int kExactRows = 4;
  void LivePairs(int64_t kn, int64_t kcp, int64_t rows_padded);
#if defined(__AVX512F__) && defined(__AVX512BW__)
  int64_t ExactProductTilesAvx512(int64_t k0, int64_t kn, int64_t kcp, int64_t rows,
                                  int64_t rows_padded);
#endif
  int64_t ExactProductTilesAvx2(int64_t k0, int64_t kn, int64_t kcp, int64_t rows,
                                int64_t rows_padded);

  // Lossless dataflow A, cycle j: no draw in [lo, hi) can move a code, so only the segment's
  // sparse-tail events (detail::SparseTails; ~4.5 % of the conversions at sigma = 1/4 LSB) are
  // converted, each from its own partial sum; code - partial sum, shifted by j pd, goes into
  // corr (folded into acc, the corrections to the exact product, at the end of the sample).
  void CorrectTails(int64_t m, int64_t b, int h, int j, int64_t sign);

  // The tail events of segment (m, b, h, j) into ev_pos / ev_idx: detail::SparseTailEvents'
  // walk, its words 64 at a time; with AVX-512 the walk 16 gap words at a time (a prefix sum of
  // their advances, the events' positions compressed out) and the events' indices 16 at a time.
  int64_t SparseTailEvents(int64_t m, int64_t b, int h, int j, int64_t len);

  // Dataflow C's read-out (detail::ReadoutC) for the first columns, several at a time (the
  // table's readout_c_columns): the reference's double operations per column in its order, the
  // scalar transfer's float steps. Returns the columns done; the caller finishes the rest.
#if defined(__AVX512F__)
  int64_t ReadoutCColumnsAvx512(int64_t sign);
#endif
  int64_t ReadoutCColumnsAvx2(int64_t sign);

  // Integer partial sums (no programming variation) in dataflows B and C
  // (analog_dataflow_bc.cc). The reference's double sums of integers are exact (every value an
  // integer, or one over a power of two, far below 2^53), so the same numbers come from
  // integer arithmetic:
  // - B (b_int): the buffer lines summed in int32 (lines_i, [h][l][cp]; b_int only where no
  //   line can exceed it) from psi or psb, cycle by
  //   cycle (line_of[j S + q] = l), then converted a line at a time by the table's transfer_row
  //   (the scalar transfer's float steps) instead of ConvertLinesB's scalar loop.
  // - C without NNS+A noise (c_exact): the recurrence ends at exactly the block's integer
  //   product P[cp] = sum_r |x_h[r]| level[r][cp] (V_{J-1} 2^((J-1) P_D); every V_j is an
  //   integer below 2^45 over 2^(j P_D)), so the partial sums are not formed at all: P from the
  //   levels and the phase's inputs, converted by transfer_row.
  bool b_int = false, c_exact = false;
  bool b_bytes = false;  // B's sums come as bytes (psb) from the bit-sliced counts
  std::vector<int32_t> lines_i;
  std::vector<int> line_of;
  std::vector<int64_t> block_sum;
  void AddLinesBInt(int h, int j);
  void ConvertLinesBInt(int h, int64_t sign);
  void ReadoutCExact(const int32_t* xm, int64_t r0, int64_t r1, int h, int64_t sign);

  const uint64_t* XPlane(int h, int t) const { return xplanes.data() + (h * p.x_bits + t) * words; }

  // Bit planes of the block's positive (h = 0) and negative (h = 1) magnitudes (the table's
  // build_planes).
  void BuildPlanesScalar(const int32_t* xm, int64_t r0, int64_t r1);
#if defined(__AVX512F__) && defined(__AVX512BW__)
  void BuildPlanesAvx512(const int32_t* xm, int64_t r0, int64_t r1);
#endif

  // Partial sums of cycle j (phase h, block b) into psi[(j*S + q)*ncp + cp] from the planes:
  // the block's first wn words (W > 0: wn = W, known at compile time) of each plane.
  template <int W>
  void PopcountSums(int64_t b, int h, int j, int64_t wn);

  // Partial sums of cycle j by adding the byte rows of the driven word lines (1-bit DACs and
  // cells, pw.bytes built): the table's row_sums.
  void RowSumsScalar(int64_t b, int h, int j, int64_t wn);
#if defined(__AVX2__)
  void RowSumsAvx2(int64_t b, int h, int j, int64_t wn);
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__)
  void RowSumsAvx512(int64_t b, int h, int j, int64_t wn);
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__GFNI__)
  // The same sums as bytes into psb by bit-sliced counters over the driven rows' bits
  // (pw.row_bits): carry-save adders, 512 bit lines per vector, then a transpose to bytes.
  void RowCountsAvx512(int64_t b, int h, int j, int64_t wn);
#endif
  // The current cycle's sums go to psb as bytes (the window reads them; set by the sample loop
  // for the AVX-512 row sums only), not to psi.
  bool sums8 = false;
  std::vector<uint8_t> psb;  // [j][q][cp], bytes
  bool row_sums = false;            // pw.bytes can serve this call's partial sums
  std::vector<int32_t> row_list;    // the driven lines' byte-row offsets
  static constexpr int64_t kRowSumsMaxLines = 96;  // above it the popcount is cheaper

  // Partial sums from per-cell conductances: word line after word line, as the reference.
  void ConductanceSums(const int32_t* xm, int64_t r0, int64_t r1, int h, int j);

#if defined(__AVX512F__) && defined(__AVX512DQ__)
  // Dataflow A with small noise and a linear ADC, exactly: the code is a monotone function of the
  // draw z (every float step is), so when the central region's extreme draws zlo, zhi give the
  // same code and clipping side, every central draw does, and its inverse CDF need not be
  // evaluated. Lanes where they differ get the full rational; tail draws (~5 %) are listed and
  // converted after the slice's vector loop, 16 at a time, with the quantile table's z. With
  // integer partial sums, one code per unit and every central draw moving the input by less
  // than half a code (rounding included), the code is clamp(v, 0, M) and clipping is v > M: no
  // float step at all. Same results as ConvertA.
  void ConvertAShortcutAvx512(int64_t m, int64_t b, int h, int j, int64_t sign, bool integer);
#endif

  // Dataflow A read-out of cycle j by direct codes (analog_direct_codes.cc): the window or the
  // guide (ConvertADirectGuide; adds the segment's codes, *clipped its clipped count).
  void ConvertADirect(int64_t m, int64_t b, int h, int j, int64_t sign);
  void ConvertADirectGuide(uint64_t first, const int32_t* v, int j, int64_t sign,
                           int64_t* clipped);

  // Dataflow A read-out of cycle j: noise -> ADC -> shift -> accumulate, 8 conversions at a time.
  void ConvertA(int64_t m, int64_t b, int h, int j, int64_t sign, bool integer);

  void Sample(int64_t m);

  // ---- Noiseless dataflow A by a code table (aspeed7; analog_convert_a.cc) ----
  // The call's table (CodeTableApplies), else null; use_table8: its vector variant runs, fed
  // with byte sums (psb) where the row counts or row sums give them.
  const CodeTable* table = nullptr;
  bool use_table8 = false;
  void SetCodeTable(const CodeTable* t);
  // The sample's table codes in int32 (SetCodeTable sizes it where no sum can overflow), added
  // to acc at the end of the sample (FoldTableAcc).
  std::vector<int32_t> acc32;
  void FoldTableAcc();
  // Few driven lines (CodeTable::zero_to, ident_to): a cycle whose nonzero driven lines
  // cannot reach a partial sum above zero_to has only codes 0 (nothing to add); one that cannot
  // exceed ident_to has code = partial sum everywhere, so its codes' shift-add is the cycle's
  // exact product, sum over the driven rows of chunk_r level[r][cp], added from the levels
  // without partial sums. table_few_lines: the most driven lines either holds for (-1: none).
  int64_t table_zero_lines = -1, table_ident_lines = -1, table_few_lines = -1;
  void ConvertATableFewLines(int64_t r0, int h, int j, int64_t sign, int64_t nonzero,
                             int64_t wn);
  // The largest partial sum a cycle with `lines` driven lines can give.
  int64_t LinesBound(int64_t lines) const {
    return lines * ((int64_t{1} << pd) - 1) * ((int64_t{1} << pr) - 1);
  }
  int64_t table_vbound = 0;  // the current cycle's LinesBound (TableSegment's lookups)
  // Dataflow A read-out of cycle j from the table (psb when sums8, else psi).
  void ConvertATable(int h, int j, int64_t sign);
};

// ---- The one dispatch table of the ISA variants (XNNPACK style) ---------------------------------
// Every inner loop with vector variants has one function or Worker member per ISA, named by it
// (...Avx512, ...Avx2); Kernels() (analog_dispatch.cc) holds those this build's target supports,
// picked in one place, and the kernel calls through it. The variants of an entry compute the same
// bits (the reference's float and double steps, lane by lane), so the choice never changes a
// result; the tests run the variant the machine has.
struct AnalogKernels {
  const char* isa;  // "avx512" or "avx2" (the entries' own variants may be narrower)
  // 128 normals of Philox groups g and g + 1 into out (central values; the tail lanes listed as
  // (position << 12 | table index), positions from pos): analog_noise.cc.
  int64_t (*group_pair_normals)(uint64_t key, uint64_t stream, uint64_t g, float* out,
                                uint32_t pos, uint32_t* list, int64_t n);
  // One row of conversions, code << shift added into acc: analog_convert_a.cc.
  int64_t (*transfer_row)(const AdcTransfer& adc, const int32_t* xi, const float* xf,
                          const float* z, int64_t n, int shift, int64_t sign, int64_t* acc);
  // Dataflow A with small noise, exact without the inverse CDF (null: no variant).
  void (Worker::*convert_a_small_noise)(int64_t m, int64_t b, int h, int j, int64_t sign,
                                        bool integer);
  // Dataflow C's first columns: analog_dataflow_bc.cc.
  int64_t (Worker::*readout_c_columns)(int64_t sign);
  // One slice's partial sums from the bit planes, [W] for blocks of W words (0: any):
  // analog_partial_sums.cc.
  void (*popcount_columns[3])(const uint64_t* const* x, int na, const uint64_t* planes, int pr,
                              int64_t ncp, int64_t nw, int64_t stride, int64_t cp0, int32_t* out);
  // The lossless read-out's product, whole column tiles: analog_lossless.cc.
  int64_t (Worker::*exact_product_tiles)(int64_t k0, int64_t kn, int64_t kcp, int64_t rows,
                                         int64_t rows_padded);
  // The bit planes of a block's inputs: analog_pack.cc.
  void (Worker::*build_planes)(const int32_t* xm, int64_t r0, int64_t r1);
  // Bit planes of levels of at most 8 bits, tasks of (block, 64 columns): analog_pack.cc.
  void (*pack_planes8)(const AnalogProblem& p, PackedAnalogWeights& out, int64_t t0, int64_t t1);
  // Partial sums by row addition: analog_partial_sums.cc.
  void (Worker::*row_sums)(int64_t b, int h, int j, int64_t wn);
  // One segment of dataflow A's direct codes: analog_direct_codes.cc.
  int64_t (*direct_codes_segment)(const uint16_t* guide, const int32_t* v, const uint32_t* w,
                                  int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                                  int64_t* acc, int64_t cp0, uint32_t* unsure, int64_t* nu);
  // One segment of the direct codes' window (null: no variant; the guide then).
  int64_t (*direct_window_segment)(const DirectPlan& d, const int32_t* v32, const uint8_t* v8,
                                   const uint16_t* u, int64_t ncp, int S, int pr, int shift_j,
                                   int64_t sign, int64_t* acc, uint32_t* slow, int64_t* ns);
  // Noiseless dataflow A from the code table, byte tables (null: no variant): analog_convert_a.cc
  // (aspeed7).
  int64_t (*code_table_segment)(const CodeTable& t, const int32_t* v32, const uint8_t* v8,
                                int64_t ncp, int S, int pr, int shift_j, int64_t sign,
                                int64_t* acc, int32_t* acc32, int64_t vbound);
};
const AnalogKernels& Kernels();

#if defined(__AVX512F__) && defined(__AVX512BW__)
// The segments' int64 shift-add (the window's and the code table's): 8 columns a vector.
// Lanes 8 g .. 8 g + 7 of 32 unsigned 16-bit sums, widened to int64 (g < 4).
inline __m512i Widen16To64(__m512i v, int g) {
  return _mm512_cvtepu16_epi64(g == 0   ? _mm512_castsi512_si128(v)
                               : g == 1 ? _mm512_extracti32x4_epi32(v, 1)
                               : g == 2 ? _mm512_extracti32x4_epi32(v, 2)
                                        : _mm512_extracti32x4_epi32(v, 3));
}
// Lanes 8 half .. 8 half + 7 of 16 unsigned 32-bit sums, widened to int64 (half < 2).
inline __m512i Widen32To64(__m512i v, int half) {
  return _mm512_cvtepu32_epi64(half == 0 ? _mm512_castsi512_si256(v)
                                         : _mm512_extracti64x4_epi64(v, 1));
}
// acc[8 g .. 8 g + 7] += sign * (x << shift), for the columns whose bits of lm (one per column
// from acc[0]) are set.
inline void ShiftAddInt64(int64_t* acc, int g, uint64_t lm, __m512i x, __m128i shift,
                          int64_t sign) {
  x = _mm512_sll_epi64(x, shift);
  const __mmask8 am = static_cast<__mmask8>(lm >> (8 * g));
  int64_t* a = acc + 8 * g;
  const __m512i a0 = _mm512_maskz_loadu_epi64(am, a);
  _mm512_mask_storeu_epi64(a, am, sign > 0 ? _mm512_add_epi64(a0, x) : _mm512_sub_epi64(a0, x));
}
#endif

}  // namespace pim::kernels::fast::internal
