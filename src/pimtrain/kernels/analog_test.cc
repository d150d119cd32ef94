// Analog crossbar kernels: ref/fast parity (codes, outputs, counts) with noise, non-linearity and
// programming variation on, at 1 and 2 threads; the ADC transfer; the dataflow formulas; the
// coordinate-keyed noise.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/analog.h"
#include "pimtrain/kernels/fast/analog_worker.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/numerics/adc.h"

namespace pim::kernels {
namespace {

struct Case {
  int64_t m, k, n;
  int x_bits, dac_bits, cell_bits, slices, polarities;
  bool signed_inputs, variation, skip;
  int64_t block;
  Dataflow dataflow;
  int adc_bits;
  double range_fraction;  // full scale as a fraction of the largest possible partial sum
  double sigma, inl_lsb, nnsa_sigma;
};

struct Data {
  std::vector<int32_t> x, w;
  std::vector<float> g;
  AnalogProblem p;
};

// The largest partial sum one conversion of the dataflow can see.
double MaxPartialSum(const Case& c) {
  const double cell = (1 << c.cell_bits) - 1, dac = (1 << c.dac_bits) - 1;
  const double a = static_cast<double>(c.block) * cell * dac;
  const int cycles = InputCycles(c.x_bits, c.dac_bits);
  if (c.dataflow == Dataflow::kA) return a;
  // B: a buffer line sums its anti-diagonal's partial sums over every row block (R-Mapping).
  if (c.dataflow == Dataflow::kB) {
    return a * detail::FullestLineB(cycles, c.slices, c.dac_bits, c.cell_bits) *
           static_cast<double>((c.k + c.block - 1) / c.block);
  }
  return static_cast<double>(c.block) * ((1 << c.x_bits) - 1) *
         ((1 << (c.slices * c.cell_bits)) - 1);
}

Data Make(const Case& c, uint64_t seed) {
  Data d;
  const CounterRng rng(seed);
  uint64_t i = 0;
  const int64_t ncp = c.n * c.polarities;
  d.x.resize(static_cast<size_t>(c.m * c.k));
  const int32_t xmax = (1 << c.x_bits) - 1;
  for (auto& v : d.x) {
    // A third zeros (zero cycles get skipped), the rest spread over the whole range.
    const uint64_t r = rng.Below(i++, 3);
    int32_t mag = r == 0 ? 0 : static_cast<int32_t>(rng.Below(i++, xmax + 1));
    if (c.signed_inputs && rng.Below(i++, 2) == 1) mag = -mag;
    v = mag;
  }
  // Some rows all zero within a block, so whole cycles are skipped.
  if (c.m > 1) {
    for (int64_t r = 0; r < c.k; ++r) d.x[static_cast<size_t>(r)] = 0;
  }
  const int32_t wmax = (1 << (c.slices * c.cell_bits)) - 1;
  d.w.resize(static_cast<size_t>(c.k * ncp));
  for (auto& v : d.w) v = static_cast<int32_t>(rng.Below(i++, wmax + 1));
  if (c.variation) {
    d.g.resize(static_cast<size_t>(c.k * c.slices * ncp));
    const int cmask = (1 << c.cell_bits) - 1;
    for (int64_t r = 0; r < c.k; ++r) {
      for (int q = 0; q < c.slices; ++q) {
        for (int64_t cp = 0; cp < ncp; ++cp) {
          const int level = (d.w[r * ncp + cp] >> (q * c.cell_bits)) & cmask;
          d.g[(r * c.slices + q) * ncp + cp] =
              static_cast<float>(level) * (1.0f + 0.05f * (2.0f * rng.Uniform(i++) - 1.0f));
        }
      }
    }
  }
  AnalogProblem& p = d.p;
  p.m = c.m;
  p.k = c.k;
  p.n = c.n;
  p.x = d.x.data();
  p.ldx = c.k;
  p.x_bits = c.x_bits;
  p.signed_inputs = c.signed_inputs;
  p.dac_bits = c.dac_bits;
  p.w = d.w.data();
  p.polarities = c.polarities;
  p.cell_bits = c.cell_bits;
  p.slices = c.slices;
  p.conductance = c.variation ? d.g.data() : nullptr;
  p.block = c.block;
  p.tile_cols = 64;
  p.skip_zero_cycles = c.skip;
  p.readout.dataflow = c.dataflow;
  p.readout.adc =
      MakeAdcTransfer(c.adc_bits, c.range_fraction * MaxPartialSum(c), c.inl_lsb, c.sigma);
  p.readout.nnsa_sigma = static_cast<float>(c.nnsa_sigma);
  p.noise_key = MixKey(seed, 77);
  return d;
}

struct Result {
  std::vector<int64_t> y;
  AnalogCounts counts;
};

Result RunRef(Data& d) {
  Result r;
  r.y.assign(static_cast<size_t>(d.p.m * d.p.n), -1);
  AnalogProblem p = d.p;
  p.y = r.y.data();
  p.ldy = p.n;
  ref::AnalogMatMul(p, r.counts);
  return r;
}

// The reference with dataflow A's draws sampled as sparse tails (the fast kernel's sampling).
Result RunRefSparse(Data& d) {
  Result r;
  r.y.assign(static_cast<size_t>(d.p.m * d.p.n), -3);
  AnalogProblem p = d.p;
  p.y = r.y.data();
  p.ldy = p.n;
  ref::AnalogMatMulSparseTails(p, r.counts);
  return r;
}

// The fast kernel's sampling, reference side (direct codes, sparse tails, else the definition).
Result RunRefAsFast(Data& d) {
  Result r;
  r.y.assign(static_cast<size_t>(d.p.m * d.p.n), -4);
  AnalogProblem p = d.p;
  p.y = r.y.data();
  p.ldy = p.n;
  ref::AnalogMatMulAsFast(p, r.counts);
  return r;
}

Result RunFast(Data& d, ThreadPool* pool, bool prepack) {
  Result r;
  r.y.assign(static_cast<size_t>(d.p.m * d.p.n), -2);
  AnalogProblem p = d.p;
  p.y = r.y.data();
  p.ldy = p.n;
  fast::PackedAnalogWeights packed;
  if (prepack) fast::PackWeights(p, packed, pool);
  fast::AnalogMatMul(p, prepack ? &packed : nullptr, r.counts, pool);
  return r;
}

void ExpectSameCounts(const AnalogCounts& a, const AnalogCounts& b, const std::string& what) {
  EXPECT_EQ(a.macs, b.macs) << what;
  EXPECT_EQ(a.input_cycles, b.input_cycles) << what;
  EXPECT_EQ(a.skipped_input_cycles, b.skipped_input_cycles) << what;
  EXPECT_EQ(a.dac_conversions, b.dac_conversions) << what;
  EXPECT_EQ(a.cell_reads, b.cell_reads) << what;
  EXPECT_EQ(a.adc_conversions, b.adc_conversions) << what;
  EXPECT_EQ(a.adc_clipped, b.adc_clipped) << what;
  EXPECT_EQ(a.shift_adds, b.shift_adds) << what;
  EXPECT_EQ(a.sample_holds, b.sample_holds) << what;
  EXPECT_EQ(a.analog_buffer_writes, b.analog_buffer_writes) << what;
  EXPECT_EQ(a.tia_conversions, b.tia_conversions) << what;
  EXPECT_EQ(a.analog_buffer_reads, b.analog_buffer_reads) << what;
  EXPECT_EQ(a.analog_accumulations, b.analog_accumulations) << what;
  EXPECT_EQ(a.tile_accumulations, b.tile_accumulations) << what;
  EXPECT_EQ(a.input_buffer_reads, b.input_buffer_reads) << what;
  EXPECT_EQ(a.output_buffer_writes, b.output_buffer_writes) << what;
}

// The fast kernel at 1 thread and at 2 threads (case t prepacks the weights in one of them)
// against the reference's result r: the same outputs and counts, bit for bit.
void ExpectFastAtOneAndTwoThreads(const Result& r, Data& d, ThreadPool* two, int t,
                                  const std::string& what) {
  const Result f1 = RunFast(d, nullptr, t % 2 == 0);
  const Result f2 = RunFast(d, two, t % 2 == 1);
  EXPECT_EQ(r.y, f1.y) << what;
  EXPECT_EQ(r.y, f2.y) << what;
  ExpectSameCounts(r.counts, f1.counts, what);
  ExpectSameCounts(r.counts, f2.counts, what);
}

TEST(AnalogKernelTest, FastEqualsRefOnRandomCasesWithNoiseAtOneAndTwoThreads) {
  ThreadPool two(2);
  const CounterRng rng(2024);
  uint64_t i = 0;
  int64_t conversions = 0, clipped = 0, direct_cases = 0;
  for (int t = 0; t < 48; ++t) {
    Case c;
    c.m = 1 + static_cast<int64_t>(rng.Below(i++, 9));
    c.k = 1 + static_cast<int64_t>(rng.Below(i++, 300));
    c.n = 1 + static_cast<int64_t>(rng.Below(i++, 21));
    c.x_bits = 1 + static_cast<int>(rng.Below(i++, 8));
    c.dac_bits = 1 + static_cast<int>(rng.Below(i++, std::min(c.x_bits, 4)));
    c.cell_bits = 1 + static_cast<int>(rng.Below(i++, 4));
    c.slices = 1 + static_cast<int>(rng.Below(i++, std::min(8, 16 / c.cell_bits)));
    c.polarities = 1 + static_cast<int>(rng.Below(i++, 2));
    c.signed_inputs = rng.Below(i++, 2) == 1;
    c.variation = rng.Below(i++, 4) == 0;
    c.skip = rng.Below(i++, 4) != 0;
    const int64_t blocks[] = {16, 64, 100, 128, 192, 256};
    c.block = blocks[rng.Below(i++, 6)];
    c.dataflow = static_cast<Dataflow>(rng.Below(i++, 3));
    c.adc_bits = 2 + static_cast<int>(rng.Below(i++, 7));
    // Ranges well below the largest partial sum, so some conversions clip and most do not.
    c.range_fraction = 0.05 + 0.4 * rng.Uniform(i++);
    c.sigma = rng.Below(i++, 5) == 0 ? 0.0 : 0.3 + 3.0 * rng.Uniform(i++);
    c.inl_lsb = rng.Below(i++, 2) == 0 ? 0.0 : 0.4;
    c.nnsa_sigma = c.dataflow == Dataflow::kC && c.sigma > 0 ? 0.7 : 0.0;
    Data d = Make(c, 1000 + t);
    // B: two in three cases read their buffer lines with gains (CASCADE's per-line range).
    d.p.readout.line_gains = c.dataflow == Dataflow::kB && t % 3 != 0;
    const std::string what = "case " + std::to_string(t) + " dataflow " +
                             std::to_string(static_cast<int>(c.dataflow)) + " k " +
                             std::to_string(c.k) + " block " + std::to_string(c.block);
    direct_cases += detail::DirectCodes(d.p);
    Result r = RunRefAsFast(d);
    ExpectFastAtOneAndTwoThreads(r, d, &two, t, what);
    if (!detail::DirectCodes(d.p)) {
      EXPECT_EQ(RunRef(d).y, r.y) << what;  // the definition
    }
    conversions += r.counts.adc_conversions;
    clipped += r.counts.adc_clipped;
  }
  EXPECT_GT(direct_cases, 1);
  // The data exercise the ADC's clipping: some conversions clip, most do not.
  ASSERT_GT(conversions, 0);
  const double frac = static_cast<double>(clipped) / static_cast<double>(conversions);
  EXPECT_GT(frac, 0.0);
  EXPECT_LT(frac, 1.0);
}

// The operand shape of a random parity case; CaseOf gives a Case with it and defaults elsewhere.
struct CaseShape {
  int x_bits, dac_bits, cell_bits, slices;
  int64_t block;
};
Case CaseOf(const CaseShape& sh) {
  Case c;
  c.x_bits = sh.x_bits;
  c.dac_bits = sh.dac_bits;
  c.cell_bits = sh.cell_bits;
  c.slices = sh.slices;
  c.block = sh.block;
  return c;
}

// Dataflows B and C with integer levels: the fast kernel sums B's buffer lines in int64 and
// computes C's NNS+A result (without its noise) as the block's integer product, where the
// reference adds doubles; the numbers must be the same, bit for bit, with ADC noise, INL,
// clipping, line gains, 16-bit inputs with 512-row blocks (C's products past int32) and 4-bit
// cells, at 1 and 2 threads; and equal to the definition.
TEST(AnalogKernelTest, FastEqualsRefOnIntegerDataflowsBAndC) {
  ThreadPool two(2);
  const CounterRng rng(991);
  uint64_t i = 0;
  const CaseShape shapes[] = {{8, 1, 1, 8, 128}, {16, 1, 1, 8, 512}, {8, 2, 4, 2, 33}, {16, 4, 2, 8, 100},
                {5, 1, 3, 2, 16},  {8, 8, 1, 8, 127}};
  int64_t clipped = 0, conversions = 0;
  for (int t = 0; t < 36; ++t) {
    const auto& sh = shapes[t % 6];
    Case c = CaseOf(sh);
    c.m = 1 + static_cast<int64_t>(rng.Below(i++, 4));
    c.k = 1 + static_cast<int64_t>(rng.Below(i++, static_cast<uint64_t>(3 * sh.block)));
    c.n = 1 + static_cast<int64_t>(rng.Below(i++, 40));
    c.polarities = 1 + static_cast<int>(rng.Below(i++, 2));
    c.signed_inputs = rng.Below(i++, 2) == 1;
    c.variation = false;
    c.skip = rng.Below(i++, 4) != 0;
    c.dataflow = (t / 6) % 2 == 0 ? Dataflow::kC : Dataflow::kB;
    c.adc_bits = 3 + static_cast<int>(rng.Below(i++, 8));
    c.range_fraction = 0.02 + 0.5 * rng.Uniform(i++);
    c.sigma = rng.Below(i++, 3) == 0 ? 0.0 : 0.2 + 40.0 * rng.Uniform(i++);
    c.inl_lsb = rng.Below(i++, 2) == 0 ? 0.0 : 0.4;
    c.nnsa_sigma = 0.0;
    Data d = Make(c, 9100 + t);
    d.p.readout.line_gains = c.dataflow == Dataflow::kB && t % 3 != 0;
    const std::string what = "case " + std::to_string(t) + " dataflow " +
                             std::to_string(static_cast<int>(c.dataflow)) + " k " +
                             std::to_string(c.k) + " block " + std::to_string(c.block);
    const Result r = RunRef(d);
    ExpectFastAtOneAndTwoThreads(r, d, &two, t, what);
    conversions += r.counts.adc_conversions;
    clipped += r.counts.adc_clipped;
  }
  ASSERT_GT(conversions, 0);
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, conversions);
}

// Random parity cases on the shapes the presets use and the random cases above do not reach:
// 16-bit inputs (isaac), 512-row blocks (pimqat), 8-bit DACs, 4-bit cells, odd block sizes;
// every dataflow, noise small (the lossless read-out's sparse tails, compared with the
// reference's own sparse-tail sampling, which is the definition elsewhere) and large, INL,
// variation, at 1 and 2 threads.
TEST(AnalogKernelTest, FastEqualsRefOnPresetShapesAtOneAndTwoThreads) {
  ThreadPool two(2);
  const CounterRng rng(77);
  uint64_t i = 0;
  int64_t sparse_cases = 0, direct_cases = 0, conversions = 0;
  const CaseShape shapes[] = {{16, 1, 2, 4, 128},  // isaac: 16-bit inputs, 2-bit cells
                {16, 2, 1, 8, 33},   // 16-bit inputs, odd blocks
                {8, 1, 1, 8, 512},   // pimqat: 512-row blocks
                {8, 1, 2, 4, 512},
                {8, 8, 1, 8, 127},   // 8-bit DACs (one cycle), odd block
                {8, 8, 4, 2, 5},     // 8-bit DACs and 4-bit cells
                {6, 2, 4, 3, 255},   // 4-bit cells, odd block
                {7, 4, 4, 1, 17}};
  for (int t = 0; t < 40; ++t) {
    const auto& sh = shapes[t % 8];
    Case c = CaseOf(sh);
    c.m = 1 + static_cast<int64_t>(rng.Below(i++, 5));
    c.k = sh.block + 1 + static_cast<int64_t>(rng.Below(i++, static_cast<uint64_t>(sh.block)));
    c.n = 1 + static_cast<int64_t>(rng.Below(i++, 19));
    c.polarities = 1 + static_cast<int>(rng.Below(i++, 2));
    c.signed_inputs = rng.Below(i++, 2) == 1;
    c.variation = rng.Below(i++, 5) == 0;
    c.skip = rng.Below(i++, 4) != 0;
    c.dataflow = static_cast<Dataflow>(rng.Below(i++, 3));
    const int kind = static_cast<int>(rng.Below(i++, 3));
    // 0: the formula's resolution at full range with small noise (lossless for A without
    // variation), 1: a coarse ADC over a fraction of the range, 2: INL and large noise.
    const DataflowFigures f = DataflowFormula(c.dataflow, c.x_bits, c.slices * c.cell_bits,
                                              c.cell_bits, c.dac_bits, c.block, 12);
    c.adc_bits = kind == 0 ? std::min(f.adc_bits, 16) : 3 + static_cast<int>(rng.Below(i++, 5));
    c.range_fraction = kind == 0 ? 1.0 : 0.05 + 0.4 * rng.Uniform(i++);
    c.sigma = kind == 0 ? 0.2 : kind == 1 ? 0.7 : 2.5;
    c.inl_lsb = kind == 2 ? 0.4 : 0.0;
    c.nnsa_sigma = c.dataflow == Dataflow::kC ? 0.5 : 0.0;
    Data d = Make(c, 5000 + t);
    const std::string what = "case " + std::to_string(t) + " x_bits " +
                             std::to_string(c.x_bits) + " dac " + std::to_string(c.dac_bits) +
                             " cell " + std::to_string(c.cell_bits) + " block " +
                             std::to_string(c.block) + " dataflow " +
                             std::to_string(static_cast<int>(c.dataflow)) + " kind " +
                             std::to_string(kind);
    const bool sparse = detail::SparseTails(d.p);
    sparse_cases += sparse;
    direct_cases += detail::DirectCodes(d.p);
    Result r = RunRefAsFast(d);
    if (sparse) {
      EXPECT_EQ(RunRefSparse(d).y, r.y) << what;
    }
    ExpectFastAtOneAndTwoThreads(r, d, &two, t, what);
    if (!sparse && !detail::DirectCodes(d.p)) {
      EXPECT_EQ(RunRef(d).y, r.y) << what;  // the definition off sparse tails and direct codes
    }
    conversions += r.counts.adc_conversions;
  }
  EXPECT_GT(sparse_cases, 0);
  EXPECT_GT(direct_cases, 0);
  EXPECT_GT(conversions, 0);
}

TEST(AnalogKernelTest, DataflowABatchOfManySamplesMatchesAcrossThreadCounts) {
  // The benchmark's configuration (8b x 8b, 1-bit cells, 1-bit DAC, 128-row blocks), noise on,
  // enough samples that two threads really split the work.
  Case c{64, 300, 40, 8, 1, 1, 8, 1, true, false, true, 128, Dataflow::kA, 6, 0.15, 1.5, 0.0, 0};
  Data d = Make(c, 5);
  ThreadPool two(2);
  ASSERT_TRUE(detail::DirectCodes(d.p));
  Result r = RunRefAsFast(d);
  Result f = RunFast(d, &two, true);
  EXPECT_EQ(r.y, f.y);
  EXPECT_EQ(RunFast(d, nullptr, true).y, f.y);
  ExpectSameCounts(r.counts, f.counts, "batch");
  const double frac =
      static_cast<double>(r.counts.adc_clipped) / static_cast<double>(r.counts.adc_conversions);
  EXPECT_GT(frac, 0.0);
  EXPECT_LT(frac, 1.0);
}

// The fast kernel's vector paths of dataflow A (1-bit DAC and cells): one- and two-word blocks,
// a short last block, 8 / 16 columns at a time with a scalar tail, both signs; noise with INL,
// and small noise without INL (the shortcut that skips the inverse CDF when no central draw can
// change the code: integer steps, a coarse ADC where some can, programming variation).
TEST(AnalogKernelTest, DataflowAVectorPathsMatchTheReference) {
  int64_t conversions = 0, clipped = 0;
  // Chains: bits, range fraction, sigma, INL, variation. {3, 0.05, 0.2}: one code per unit and
  // small noise (the shortcut's integer form), with many partial sums above the 7 codes.
  const struct {
    int adc_bits;
    double range, sigma, inl;
    bool variation;
  } chains[] = {{5, 0.2, 1.2, 0.4, false}, {5, 0.2, 0.2, 0.0, false}, {3, 0.2, 0.5, 0.0, false},
                {3, 0.2, 0.5, 0.0, true}, {3, 0.05, 0.2, 0.0, false}};
  for (const auto& ch : chains) {
  for (int64_t block : {64, 128}) {
    for (int64_t k : {block * 2, block * 2 + 21}) {
      for (int64_t n : {16, 37}) {
        Case c{5, k, n, 8, 1, 1, 8, 1, true, ch.variation, true, block, Dataflow::kA,
               ch.adc_bits, ch.range, ch.sigma, ch.inl, 0};
        Data d = Make(c, static_cast<uint64_t>(k * 100 + n));
        Result r = RunRefAsFast(d);
        Result f = RunFast(d, nullptr, true);
        const std::string what = "bits " + std::to_string(ch.adc_bits) + " block " +
                                 std::to_string(block) + " k " + std::to_string(k) + " n " +
                                 std::to_string(n);
        EXPECT_EQ(r.y, f.y) << what;
        ExpectSameCounts(r.counts, f.counts, what);
        conversions += r.counts.adc_conversions;
        clipped += r.counts.adc_clipped;
      }
    }
  }
  }
  ASSERT_GT(conversions, 0);
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, conversions);
}

// The lossless read-out (an ADC with one code per unit over the largest partial sum, small
// noise): the fast kernel takes the exact integer product and converts only the tail draws. Same
// codes and counts as the reference, clipping at both ends (v = 0 pushed below, v = M above),
// odd k, short blocks, multi-bit DACs and cells, differential pairs, column tiles of 64 + tail.
TEST(AnalogKernelTest, LosslessReadoutEqualsTheSparseTailReferenceWithClippingAtBothEnds) {
  ThreadPool two(2);
  int64_t conversions = 0, clipped = 0, clipped_top = 0;
  const struct {
    int64_t m, k, n;
    int x_bits, dac_bits, cell_bits, slices, polarities;
    int64_t block;
    int adc_bits;
  } cases[] = {{6, 301, 37, 8, 1, 1, 8, 1, 128, 8},   {5, 61, 20, 8, 1, 1, 8, 2, 15, 4},
               {9, 33, 70, 6, 2, 2, 3, 1, 5, 6},      {4, 130, 9, 8, 1, 1, 8, 2, 64, 7},
               {3, 200, 130, 8, 1, 1, 8, 1, 128, 8},  {96, 300, 12, 8, 1, 1, 8, 1, 128, 8},
               // 15-bit inputs over 65 blocks: corrections can pass int32 (the int64 path).
               {3, 520, 6, 15, 1, 1, 2, 1, 8, 8}};
  for (const auto& cs : cases) {
    // The last sigma puts one tail draw's sigma z on 1/2 (converted by the full transfer).
    const double on_half = 0.5 / static_cast<double>(GaussianFrom16(65535 - 100));
    for (double sigma : {0.0, 0.1, 0.24, on_half}) {
      Case c{cs.m, cs.k, cs.n, cs.x_bits, cs.dac_bits, cs.cell_bits, cs.slices, cs.polarities,
             true, false, true, cs.block, Dataflow::kA, cs.adc_bits, 1.0, sigma, 0.0, 0.0};
      Data d = Make(c, static_cast<uint64_t>(cs.k * 7 + cs.n));
      // A full-scale corner: sample 1's first block all at the largest input and the first
      // columns' levels all ones, so those partial sums sit at the top code.
      const int64_t ncp = c.n * c.polarities;
      for (int64_t r = 0; r < std::min(c.k, c.block); ++r) {
        d.x[static_cast<size_t>(c.k + r)] = (1 << c.x_bits) - 1;
        for (int64_t cp = 0; cp < std::min<int64_t>(ncp, 4); ++cp) {
          d.w[static_cast<size_t>(r * ncp + cp)] = (1 << (c.slices * c.cell_bits)) - 1;
        }
      }
      // Uses the lossless path only when the largest partial sum is a code and the noise small.
      const double vmax = static_cast<double>(c.block) * ((1 << c.dac_bits) - 1) *
                          ((1 << c.cell_bits) - 1);
      ASSERT_LE(vmax, d.p.readout.adc.max_code);
      ASSERT_TRUE(LosslessReadout(d.p));
      const std::string what = "k " + std::to_string(c.k) + " n " + std::to_string(c.n) +
                               " sigma " + std::to_string(sigma);
      Result r = RunRefSparse(d);
      Result f1 = RunFast(d, nullptr, true);
      Result f2 = RunFast(d, &two, false);
      EXPECT_EQ(r.y, f1.y) << what;
      EXPECT_EQ(r.y, f2.y) << what;
      ExpectSameCounts(r.counts, f1.counts, what);
      ExpectSameCounts(r.counts, f2.counts, what);
      if (sigma == 0.0) {
        EXPECT_EQ(r.counts.adc_clipped, 0) << what;
      }
      conversions += r.counts.adc_conversions;
      clipped += r.counts.adc_clipped;
      if (vmax == d.p.readout.adc.max_code) clipped_top += r.counts.adc_clipped;
    }
  }
  ASSERT_GT(conversions, 0);
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, conversions);
  EXPECT_GT(clipped_top, 0);
  // The last case has enough samples that the two-thread run really splits them (the kernel
  // hands out chunks of at least 2^16 / (blocks n slices 4) samples).
  const auto& big = cases[5];  // (cases[6] is the int64-correction one)
  EXPECT_GT(big.m, (int64_t{1} << 16) / (((big.k + big.block - 1) / big.block) * big.n * 8 * 4));
  // Dataflow B without noise: the buffer lines fit the formula's resolution (+ log2 cycles).
  for (int pol : {1, 2}) {
    // 150 rows in 3 blocks of 64: the fullest line holds 3 blocks' partial sums, at most
    // 3 x 8 x 64 = 1536: 11 bits, one more than the formula's 10 for one block.
    const DataflowFigures f = DataflowFormula(Dataflow::kB, 8, 8, 1, 1, 64, 8);
    Case cb{100, 150, 9, 8, 1, 1, 8, pol, true, false, true, 64, Dataflow::kB, f.adc_bits + 1,
            1.0, 0.0, 0.0, 0.0};
    Data d = Make(cb, 21 + pol);
    ASSERT_TRUE(LosslessReadout(d.p));
    Result r = RunRefSparse(d);
    Result f1 = RunFast(d, nullptr, true);
    Result f2 = RunFast(d, &two, true);
    EXPECT_EQ(r.y, f1.y);
    EXPECT_EQ(r.y, f2.y);
    ExpectSameCounts(r.counts, f1.counts, "dataflow B");
    ExpectSameCounts(r.counts, f2.counts, "dataflow B");
    EXPECT_GT(r.counts.analog_buffer_writes, 0);
    cb.sigma = 0.1;  // B with noise: the general path
    EXPECT_FALSE(LosslessReadout(Make(cb, 1).p));
    cb.sigma = 0.0;
    cb.adc_bits -= 1;  // the fullest line above the top code
    EXPECT_FALSE(LosslessReadout(Make(cb, 1).p));
  }
  // Not lossless: noise that a central draw can carry across a code boundary, a coarser code,
  // a partial sum above the top code, non-linearity.
  Case c{2, 50, 5, 8, 1, 1, 8, 1, true, false, true, 128, Dataflow::kA, 8, 1.0, 0.3, 0.0, 0.0};
  EXPECT_FALSE(LosslessReadout(Make(c, 1).p));
  c.sigma = 0.1;
  EXPECT_TRUE(LosslessReadout(Make(c, 1).p));
  c.adc_bits = 7;
  EXPECT_FALSE(LosslessReadout(Make(c, 1).p));
  c.adc_bits = 8;
  c.range_fraction = 3.0;
  EXPECT_FALSE(LosslessReadout(Make(c, 1).p));
  c.range_fraction = 1.0;
  c.inl_lsb = 0.3;
  EXPECT_FALSE(LosslessReadout(Make(c, 1).p));
}

TEST(AnalogKernelTest, FullResolutionAdcWithoutNoiseIsExact) {
  for (Dataflow df : {Dataflow::kA, Dataflow::kB, Dataflow::kC}) {
    for (int pol : {1, 2}) {
      Case c{3, 200, 9, 6, 2, 2, 3, pol, true, false, true, 128, df, 0, 1.0, 0, 0, 0};
      // C: an NNADC with one code per unit over block x 63 x 63 (19 bits); 9 columns per
      // polarity take the fast kernel's 8-column path and its scalar remainder.
      const DataflowFigures f = DataflowFormula(df, 6, 6, 2, 2, 128, 19);
      // B: 200 rows in 2 blocks, whose partial sums share the buffer lines (one bit more).
      c.adc_bits = f.adc_bits + (df == Dataflow::kB ? 1 : 0);
      Data d = Make(c, 9);
      Result r = RunFast(d, nullptr, true);
      EXPECT_EQ(r.counts.adc_clipped, 0);
      for (int64_t m = 0; m < c.m; ++m) {
        for (int64_t col = 0; col < c.n; ++col) {
          int64_t exact = 0;
          for (int64_t row = 0; row < c.k; ++row) {
            const int64_t wv = pol == 1 ? d.w[row * c.n + col]
                                        : d.w[(row * c.n + col) * 2] - d.w[(row * c.n + col) * 2 + 1];
            exact += d.x[m * c.k + row] * wv;
          }
          EXPECT_EQ(r.y[m * c.n + col], exact) << "dataflow " << static_cast<int>(df);
        }
      }
    }
  }
}

// Dataflow B with line gains: lossless lines give the exact product in units of 2^-E codes (E
// the largest line gain: log2 8 = 3 for 8 cycles x 8 slices), on both kernels, over 3 row
// blocks that share the lines; a coarse ADC reads the sparse edge lines finer with gains.
TEST(AnalogKernelTest, BufferLineGainsKeepTheProductAndRefineTheEdgeLines) {
  ThreadPool two(2);
  Case c{6, 300, 5, 8, 1, 1, 8, 1, false, false, true, 128, Dataflow::kB, 13, 1.0, 0, 0, 0};
  Data d = Make(c, 17);
  d.p.readout.line_gains = true;
  ASSERT_TRUE(LosslessReadout(d.p));
  const std::vector<int> groups = SignificanceGroups(8, 8, 1, 1);
  const std::vector<int> gains = detail::LineGainsB(8, 8, 1, 1, groups, true);
  ASSERT_EQ(detail::LineGainShiftB(gains), 3);
  EXPECT_EQ(gains.front(), 3);   // one partial sum per block: x8
  EXPECT_EQ(gains[7], 0);        // the fullest line, 8 partial sums
  Result r = RunRef(d);
  Result f1 = RunFast(d, nullptr, false);
  Result f2 = RunFast(d, &two, true);
  EXPECT_EQ(r.y, f1.y);
  EXPECT_EQ(r.y, f2.y);
  ExpectSameCounts(r.counts, f1.counts, "gains");
  for (int64_t m = 0; m < c.m; ++m) {
    for (int64_t col = 0; col < c.n; ++col) {
      int64_t exact = 0;
      for (int64_t row = 0; row < c.k; ++row) exact += d.x[m * c.k + row] * d.w[row * c.n + col];
      EXPECT_EQ(r.y[m * c.n + col], exact << 3);
    }
  }
  // 3 blocks x 8 x 128 = 3072 on a 6-bit ADC: the error with gains is smaller.
  c.adc_bits = 6;
  Data coarse = Make(c, 17);
  double err_plain = 0, err_gain = 0;
  Result plain = RunFast(coarse, nullptr, false);
  coarse.p.readout.line_gains = true;
  Result gained = RunFast(coarse, nullptr, false);
  EXPECT_EQ(gained.y, RunRef(coarse).y);
  for (size_t i = 0; i < r.y.size(); ++i) {
    const double exact = static_cast<double>(r.y[i]) / 8;
    err_plain += std::pow(plain.y[i] * coarse.p.readout.adc.lsb - exact, 2);
    err_gain += std::pow(gained.y[i] * coarse.p.readout.adc.lsb / 8 - exact, 2);
  }
  EXPECT_LT(err_gain, err_plain);
}

// Neural-PIM's formulas (spec section 5) for 8b x 8b, 1-bit cells, 1-bit DACs, 128 rows, and the
// conversions the kernels actually perform per weight group (one column, one row block).
TEST(AnalogKernelTest, DataflowConversionsPerWeightGroupFollowTheFormulas) {
  const struct {
    Dataflow d;
    int bits;
    int64_t conv;
  } want[] = {{Dataflow::kA, 8, 64}, {Dataflow::kB, 11, 15}, {Dataflow::kC, 8, 1}};
  for (const auto& w : want) {
    const DataflowFigures f = DataflowFormula(w.d, 8, 8, 1, 1, 128, 8);
    EXPECT_EQ(f.adc_bits, w.bits);
    EXPECT_EQ(f.conversions_per_group, w.conv);
    EXPECT_EQ(f.input_cycles, 8);
    Case c{1, 128, 1, 8, 1, 1, 8, 1, false, false, false, 128, w.d, f.adc_bits, 1.0, 0, 0, 0};
    Data d = Make(c, 3);
    Result r = RunRef(d);
    Result fr = RunFast(d, nullptr, false);
    EXPECT_EQ(r.counts.adc_conversions, w.conv);
    EXPECT_EQ(fr.counts.adc_conversions, w.conv);
    EXPECT_EQ(r.counts.input_cycles, 8);  // latency: ceil(P_I / P_D) cycles in all three
  }
  // Multi-bit cells and DACs: A with P_R = P_D = 2 adds the extra bit; B adds log2 of cycles.
  EXPECT_EQ(DataflowFormula(Dataflow::kA, 8, 8, 2, 2, 128, 8).adc_bits, 11);
  EXPECT_EQ(DataflowFormula(Dataflow::kA, 8, 8, 2, 2, 128, 8).conversions_per_group, 16);
  EXPECT_EQ(DataflowFormula(Dataflow::kB, 8, 8, 2, 2, 128, 8).adc_bits, 13);
  EXPECT_EQ(DataflowFormula(Dataflow::kB, 8, 8, 2, 2, 128, 8).conversions_per_group, 7);
  EXPECT_EQ(DataflowFormula(Dataflow::kA, 8, 8, 2, 1, 128, 8).adc_bits, 9);
  EXPECT_EQ(DataflowFormula(Dataflow::kC, 8, 8, 1, 4, 128, 6).adc_bits, 6);
}

TEST(AnalogKernelTest, SkippedZeroCyclesCostNothingAndChangeNothing) {
  Case c{4, 256, 9, 8, 1, 1, 8, 1, true, false, true, 128, Dataflow::kA, 5, 0.2, 0, 0, 0};
  Data d = Make(c, 11);
  // Positive inputs only: the negative phase is skipped whole.
  for (auto& v : d.x) v = std::abs(v);
  Result skip = RunRef(d);
  d.p.skip_zero_cycles = false;
  Result all = RunRef(d);
  EXPECT_EQ(skip.y, all.y);  // without noise a zero cycle converts to code 0
  EXPECT_GT(skip.counts.skipped_input_cycles, 0);
  EXPECT_LT(skip.counts.adc_conversions, all.counts.adc_conversions);
  EXPECT_EQ(all.counts.skipped_input_cycles, 0);
}

// Sparse tails (analog.h): the events of a segment are independent per conversion with
// probability tails / 65536, and an event's draw is uniform over the tail values, so every
// draw that can move a code appears with NoiseNormal's law.
TEST(AnalogNoiseTest, SparseTailEventsFollowTheDrawLaw) {
  const AdcTransfer adc = MakeAdcTransfer(8, 255.0, 0.0, 0.25);
  const detail::TailPlan plan = detail::MakeTailPlan(adc, 128.0);
  ASSERT_GT(plan.tails, 0u);
  ASSERT_LT(plan.tails, 2 * kGaussTail);
  // |sigma z| <= 1.1 at sigma 1/4: every tail offset is -1 or +1 (the fast kernel's unit path).
  EXPECT_TRUE(plan.unit);
  EXPECT_FALSE(detail::MakeTailPlan(MakeAdcTransfer(8, 255.0, 0.0, 0.5), 128.0).unit);
  const double p = plan.tails / 65536.0;
  const int64_t len = 1000, segments = 2000;
  std::vector<int64_t> pos(len);
  std::vector<uint32_t> idx(len);
  std::vector<int64_t> at_pos(len, 0), per_draw(65536, 0);
  int64_t events = 0, pairs = 0, continued_gaps = 0;
  for (int64_t sgm = 0; sgm < segments; ++sgm) {
    const int64_t n = detail::SparseTailEvents(77, sgm, 3, 1, 0, 8, 5, len, plan, pos.data(),
                                               idx.data());
    for (int64_t t = 0; t < n; ++t) {
      ASSERT_LT(pos[t], len);
      if (t > 0) {
        ASSERT_GT(pos[t], pos[t - 1]);
        pairs += pos[t] == pos[t - 1] + 1;
        continued_gaps += pos[t] - pos[t - 1] > detail::kGapSteps;
      }
      ++at_pos[pos[t]];
      // The table index back to its 16-bit draw: outside [lo, hi).
      const uint32_t h = idx[t] < kGaussTail ? idx[t] : idx[t] + detail::kTailHiBase;
      ASSERT_TRUE(h < plan.lo || h >= plan.hi) << h;
      ++per_draw[h];
    }
    events += n;
  }
  const double draws = static_cast<double>(len * segments);
  // Rate, and adjacent pairs at p^2 (independence), each within 5 standard deviations.
  EXPECT_NEAR(events / draws, p, 5 * std::sqrt(p * (1 - p) / draws));
  const double pair_rate = static_cast<double>(pairs) / (draws - segments);
  EXPECT_NEAR(pair_rate, p * p, 5 * std::sqrt(p * p / (draws - segments)));
  EXPECT_GT(continued_gaps, 0);  // gaps past one gap word occur and are continued
  // Every position equally likely: the first and the second half of the segment.
  int64_t first_half = 0;
  for (int64_t i = 0; i < len / 2; ++i) first_half += at_pos[i];
  EXPECT_NEAR(static_cast<double>(first_half) / events, 0.5, 5 * std::sqrt(0.25 / events));
  // Lower against upper tail, and the outermost draws against the inner ones, at the shares
  // NoiseNormal's uniform 16-bit draw gives them.
  int64_t lower = 0, outer = 0;
  for (uint32_t h = 0; h < plan.lo; ++h) lower += per_draw[h];
  for (uint32_t h = 0; h < plan.lo / 4; ++h) outer += per_draw[h] + per_draw[65535 - h];
  const double share_lo = static_cast<double>(plan.lo) / plan.tails;
  EXPECT_NEAR(static_cast<double>(lower) / events, share_lo,
              5 * std::sqrt(share_lo * (1 - share_lo) / events));
  const double share_out = 2.0 * (plan.lo / 4) / plan.tails;
  EXPECT_NEAR(static_cast<double>(outer) / events, share_out,
              5 * std::sqrt(share_out * (1 - share_out) / events));
}

TEST(AnalogNoiseTest, FillNormalsEqualsNoiseNormalAtAnyOffset) {
  for (uint64_t start : {uint64_t{0}, uint64_t{5}, uint64_t{63}, uint64_t{64}, uint64_t{1000003},
                         (uint64_t{1} << 40) + 17}) {
    for (int64_t count : {1, 7, 64, 65, 200, 300}) {
      std::vector<float> v(static_cast<size_t>(count));
      fast::FillNormals(123, 4, start, count, v.data());
      // The uniforms behind them (the lossless read-out's tail search reads the same halves).
      std::vector<uint32_t> h(static_cast<size_t>(count));
      fast::FillUniforms(123, 4, start, count, h.data());
      for (int64_t i = 0; i < count; ++i) {
        ASSERT_EQ(v[i], NoiseNormal(123, 4, start + i)) << start << " " << i;
        ASSERT_LT(h[i], 65536u);
        ASSERT_EQ(GaussianDraw(h[i], NoiseRefineWord(123, 4, start + i)), v[i])
            << start << " " << i;
      }
    }
  }
}

// Long runs take the whole-group paths (8 and 16 lanes) and the batched tail patching.
TEST(AnalogNoiseTest, FillNormalsEqualsNoiseNormalOverLongRuns) {
  for (uint64_t start : {uint64_t{0}, uint64_t{64 * 3}, uint64_t{29}, (uint64_t{1} << 35) - 64 * 5}) {
    for (int64_t count : {int64_t{64 * 7}, int64_t{40000}}) {
      std::vector<float> v(static_cast<size_t>(count));
      fast::FillNormals(7, 1, start, count, v.data());
      for (int64_t i = 0; i < count; ++i) {
        ASSERT_EQ(v[i], NoiseNormal(7, 1, start + i)) << start << " " << i;
      }
    }
  }
}

TEST(AnalogNoiseTest, NormalsHaveUnitVarianceAndGaussianTails) {
  const int64_t n = 1 << 18;
  std::vector<float> v(n);
  fast::FillNormals(99, 1, 0, n, v.data());
  double s = 0, s2 = 0, s4 = 0;
  int64_t beyond2 = 0;
  for (float z : v) {
    s += z;
    s2 += z * z;
    s4 += static_cast<double>(z) * z * z * z;
    beyond2 += std::fabs(z) > 2.0f;
  }
  EXPECT_NEAR(s / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.01);
  EXPECT_NEAR(s4 / n, 3.0, 0.06);                    // kurtosis of a normal
  EXPECT_NEAR(static_cast<double>(beyond2) / n, 0.0455, 0.002);  // P(|z| > 2)
  // Every 16-bit value maps monotonically, to the normal quantile of its probability cell.
  for (uint32_t h = 1; h < 65536; ++h) ASSERT_GT(GaussianFrom16(h), GaussianFrom16(h - 1));
  EXPECT_NEAR(GaussianFrom16(55138), 1.0, 1e-3);  // Phi(1) = 0.841345 = 55138.5 / 65536
  EXPECT_NEAR(GaussianFrom16(0), -4.3, 0.05);
}

// The outermost cells are continuous: NoiseNormal's law is not cut at 4.3 sigma. Beyond 4.5
// sigma (past the midpoint of the last 16-bit cell, so a truncated law has none) the draws come
// at the Gaussian rate 2 Phi(-4.5) = 6.8e-6, and they reach 5 sigma; the refined draws of a cell
// stay inside it, monotone in the refinement word.
TEST(AnalogNoiseTest, NormalsAreNotTruncatedInTheTails) {
  const int64_t n = int64_t{1} << 24;
  std::vector<float> v(static_cast<size_t>(n));
  fast::FillNormals(4242, 1, 0, n, v.data());
  int64_t beyond45 = 0, beyond4 = 0;
  float most = 0;
  for (float z : v) {
    beyond45 += std::fabs(z) > 4.5f;
    beyond4 += std::fabs(z) > 4.0f;
    most = std::max(most, std::fabs(z));
  }
  const double e45 = n * std::erfc(4.5 / std::sqrt(2.0)), e4 = n * std::erfc(4.0 / std::sqrt(2.0));
  EXPECT_NEAR(static_cast<double>(beyond45), e45, 5 * std::sqrt(e45)) << "expected " << e45;
  EXPECT_NEAR(static_cast<double>(beyond4), e4, 5 * std::sqrt(e4)) << "expected " << e4;
  EXPECT_GT(most, 4.6f);
  for (uint32_t h : {0u, 1u, 63u, 65472u, 65535u}) {
    const bool upper = h >= 32768;
    const uint32_t c = upper ? 65535 - h : h;
    const double za = GaussianQuantile(c / 65536.0), zb = GaussianQuantile((c + 1) / 65536.0);
    float prev = upper ? 1e9f : -1e9f;
    for (uint64_t u : {uint64_t{0}, uint64_t{1} << 20, uint64_t{1} << 40, uint64_t{1} << 63,
                       ~uint64_t{0} - (uint64_t{1} << 20)}) {
      const float z = GaussianRefined(h, u);
      const double zl = upper ? -z : z;
      EXPECT_GE(zl, za * (1 + 1e-6)) << h << " " << u;
      EXPECT_LE(zl, zb * (1 - 1e-6) + 1e-6) << h << " " << u;
      if (upper) {
        EXPECT_LE(z, prev) << h;
      } else {
        EXPECT_GE(z, prev) << h;
      }
      prev = z;
    }
  }
  EXPECT_LT(GaussianRefined(0, 0), -10.2f);  // Phi^-1(2^-81) = -10.28
  EXPECT_GT(GaussianRefined(65535, 0), 10.2f);
}

// The sparse-tail sampling (fast kernel, and ref::AnalogMatMulSparseTails) against the
// definition (ref::AnalogMatMul, one NoiseNormal draw per conversion) in distribution, over many
// keys: one conversion per output (1-bit cells in one slice, inputs 0 or 2^j so only cycle j,
// "plane" j, is applied), so the code error d = y / 2^j - v of every conversion is seen. Per
// plane: the rates of d = -1 and d = +1 (flip rates), and the mean and variance of d, against
// the Gaussian's (expected counts from erfc, with v = 0 unable to go down and v = M unable to go
// up) within 5 standard deviations, for both samplings; at sigma = 0.11 LSB too, where a law cut
// at 4.3 sigma moves no code at all.
TEST(AnalogKernelTest, SparseTailsMatchTheReferenceInDistribution) {
  const struct {
    double sigma;
    int64_t block;
    int adc_bits, keys;
    int64_t m, n;
  } setups[] = {{0.25, 7, 3, 5, 400, 512}, {0.17, 7, 3, 5, 400, 512}, {0.11, 7, 3, 40, 400, 512}};
  for (const auto& st : setups) {
    for (int j : {0, 5}) {
      if (st.sigma < 0.116 && j != 0) continue;  // the small-sigma case on one plane (time)
      const int64_t k = st.block, n = st.n, m = st.m;
      std::vector<int32_t> x(static_cast<size_t>(m * k)), w(static_cast<size_t>(k * n));
      const CounterRng rng(static_cast<uint64_t>(j * 1000 + st.block));
      uint64_t ri = 0;
      for (auto& v : x) v = rng.Below(ri++, 2) == 1 ? (1 << j) : 0;
      for (int64_t r = 0; r < k; ++r) {
        for (int64_t c = 0; c < n; ++c) {
          // Column 0 all zero (v = 0: clipping below), column 1 all one (v = M when the input
          // is all ones: clipping above), the others random.
          w[static_cast<size_t>(r * n + c)] =
              c == 0 ? 0 : c == 1 ? 1 : static_cast<int32_t>(rng.Below(ri++, 2));
        }
      }
      for (int64_t r = 0; r < k; ++r) x[static_cast<size_t>(r)] = 1 << j;  // sample 0: all on
      std::vector<int64_t> exact(static_cast<size_t>(m * n), 0);
      for (int64_t s = 0; s < m; ++s) {
        for (int64_t c = 0; c < n; ++c) {
          for (int64_t r = 0; r < k; ++r) {
            exact[static_cast<size_t>(s * n + c)] +=
                (x[static_cast<size_t>(s * k + r)] >> j) * w[static_cast<size_t>(r * n + c)];
          }
        }
      }
      AnalogProblem p;
      p.m = m;
      p.k = k;
      p.n = n;
      p.x = x.data();
      p.ldx = k;
      p.x_bits = 8;
      p.signed_inputs = false;
      p.dac_bits = 1;
      p.w = w.data();
      p.cell_bits = 1;
      p.slices = 1;
      p.block = st.block;
      p.readout.adc = MakeAdcTransfer(st.adc_bits, static_cast<double>(st.block), 0.0, st.sigma);
      ASSERT_TRUE(detail::SparseTails(p));
      const double top = p.readout.adc.max_code;
      // Expected counts: d = +1 needs sigma z in [1/2, 3/2) (and v < M), d = -1 mirrored (v > 0);
      // |d| = 2 is counted in `other`.
      const double p1 = 0.5 * (std::erfc(0.5 / st.sigma / std::sqrt(2.0)) -
                               std::erfc(1.5 / st.sigma / std::sqrt(2.0)));
      double e_up = 0, e_down = 0;
      for (int64_t v : exact) {
        e_up += v < top ? p1 : 0.0;
        e_down += v > 0 ? p1 : 0.0;
      }
      e_up *= st.keys;
      e_down *= st.keys;
      for (int kind = 0; kind < 3; ++kind) {  // definition, fast, reference sparse tails
        int64_t up = 0, down = 0, other = 0;
        double sum = 0, sum2 = 0;
        std::vector<int64_t> y(static_cast<size_t>(m * n));
        for (int key = 0; key < st.keys; ++key) {
          p.noise_key = MixKey(99, static_cast<uint64_t>(key), static_cast<uint64_t>(j));
          p.y = y.data();
          p.ldy = n;
          AnalogCounts counts;
          if (kind == 0) ref::AnalogMatMul(p, counts);
          if (kind == 1) fast::AnalogMatMul(p, nullptr, counts, nullptr);
          if (kind == 2) ref::AnalogMatMulSparseTails(p, counts);
          for (size_t i = 0; i < y.size(); ++i) {
            ASSERT_EQ(y[i] % (int64_t{1} << j), 0);
            const int64_t d = (y[i] >> j) - exact[i];
            up += d == 1;
            down += d == -1;
            other += d != 0 && d != 1 && d != -1;
            sum += static_cast<double>(d);
            sum2 += static_cast<double>(d * d);
          }
        }
        const double conv = static_cast<double>(st.keys * m * n);
        const std::string what = "sigma " + std::to_string(st.sigma) + " plane " +
                                 std::to_string(j) + " sampling " + std::to_string(kind);
        EXPECT_NEAR(static_cast<double>(up), e_up, 5 * std::sqrt(e_up) + 2) << what;
        EXPECT_NEAR(static_cast<double>(down), e_down, 5 * std::sqrt(e_down) + 2) << what;
        EXPECT_LE(other, 2) << what;
        // Mean and variance of d (Poisson bounds on the counts behind them).
        EXPECT_NEAR(sum / conv, (e_up - e_down) / conv,
                    5 * std::sqrt(e_up + e_down) / conv + 2 / conv) << what;
        EXPECT_NEAR(sum2 / conv, (e_up + e_down) / conv, 5 * std::sqrt(e_up + e_down) / conv +
                                                             8 / conv) << what;
        if (st.sigma < 0.116) {
          EXPECT_GT(up + down, 10) << what;  // a law cut at 4.3 sigma gives none
        }
      }
    }
  }
}

// Many-plane outputs (8-bit signed inputs, 8 slices, differential pairs): the error per output
// e = y - x W over many keys has the same mean, variance and rate of e != 0 under the sparse-tail
// sampling (fast kernel) as under the definition, within 5 two-sample standard deviations.
TEST(AnalogKernelTest, SparseTailOutputErrorsMatchTheReference) {
  Case c{24, 256, 16, 8, 1, 1, 8, 2, true, false, true, 128, Dataflow::kA, 8, 1.0, 0.22, 0.0, 0.0};
  Data d = Make(c, 31);
  ASSERT_TRUE(detail::SparseTails(d.p));
  Data exact_d = d;
  exact_d.p.readout.adc.sigma = 0.0f;
  const Result exact = RunRef(exact_d);
  const int keys = 12;
  double mean[2], var[2], nz[2], n_out = 0;
  for (int kind = 0; kind < 2; ++kind) {
    double s = 0, s2 = 0, z = 0, cnt = 0;
    for (int key = 0; key < keys; ++key) {
      d.p.noise_key = MixKey(5, static_cast<uint64_t>(key));
      const Result r = kind == 0 ? RunRef(d) : RunFast(d, nullptr, true);
      for (size_t i = 0; i < r.y.size(); ++i) {
        const double e = static_cast<double>(r.y[i] - exact.y[i]);
        s += e;
        s2 += e * e;
        z += e != 0;
        cnt += 1;
      }
    }
    mean[kind] = s / cnt;
    var[kind] = s2 / cnt - mean[kind] * mean[kind];
    nz[kind] = z / cnt;
    n_out = cnt;
  }
  ASSERT_GT(var[0], 100.0);  // the noise is visible: many flips, some in high planes
  EXPECT_NEAR(mean[0], mean[1], 5 * std::sqrt((var[0] + var[1]) / n_out));
  // Var of a sample variance ~ 2 var^2 / n for near-normal errors; a safety factor 2 for the
  // heavier tails of a few high-plane flips.
  EXPECT_NEAR(var[0], var[1], 10 * std::sqrt(2 * (var[0] * var[0] + var[1] * var[1]) / n_out));
  EXPECT_NEAR(nz[0], nz[1], 5 * std::sqrt((nz[0] * (1 - nz[0]) + nz[1] * (1 - nz[1])) / n_out));
}

TEST(AdcTransferTest, RoundsClipsAndFlagsClipping) {
  const AdcTransfer a = MakeAdcTransfer(3, 70.0, 0.0, 0.0);  // lsb 10, codes 0..7
  EXPECT_FLOAT_EQ(a.lsb, 10.0f);
  EXPECT_EQ(a.Convert(0.0f, 0).code, 0);
  EXPECT_EQ(a.Convert(14.0f, 0).code, 1);
  EXPECT_EQ(a.Convert(15.0f, 0).code, 2);  // half to even: 1.5 -> 2
  EXPECT_EQ(a.Convert(25.0f, 0).code, 2);  // 2.5 -> 2
  EXPECT_FALSE(a.Convert(74.0f, 0).clipped);
  EXPECT_EQ(a.Convert(76.0f, 0).code, 7);
  EXPECT_TRUE(a.Convert(76.0f, 0).clipped);
  EXPECT_TRUE(a.Convert(-6.0f, 0).clipped);
  EXPECT_EQ(a.Convert(-6.0f, 0).code, 0);
  // Enough bits: never coarser than one partial-sum unit, so integers convert exactly.
  const AdcTransfer e = MakeAdcTransfer(8, 128.0, 0.0, 0.0);
  for (int v = 0; v <= 128; ++v) EXPECT_EQ(e.Convert(static_cast<float>(v), 0).code, v);
  // Noise moves the input by sigma * z.
  const AdcTransfer nz = MakeAdcTransfer(8, 128.0, 0.0, 2.0);
  EXPECT_EQ(nz.Convert(50.0f, 1.0f).code, 52);
  EXPECT_NEAR(SinadSigma(100.0, 40.0), 1.0, 1e-12);
}

TEST(AdcTransferTest, BowNonlinearityIsMonotoneWithThePeakInlAtMidScale) {
  const AdcTransfer a = MakeAdcTransfer(6, 63.0, 3.0, 0.0);  // lsb 1, 3 LSB INL
  int prev = -1;
  int max_dev = 0;
  for (int v = 0; v <= 63; ++v) {
    const int code = a.Convert(static_cast<float>(v), 0).code;
    EXPECT_GE(code, prev);
    prev = code;
    max_dev = std::max(max_dev, code - v);
  }
  EXPECT_EQ(max_dev, 3);
  EXPECT_EQ(a.Convert(0.0f, 0).code, 0);
  EXPECT_EQ(a.Convert(63.0f, 0).code, 63);
}

// The transposed read's ADC checked like the forward one: the resolutions a macro resolves for
// both directions (128 rows forward; 64 columns / 8 slices = 8-row transposed blocks: 4 bits,
// where 3 LSB of INL is near the monotone limit of 15 / 4), each at the INL the macro gives it (inl_lsb capped per converter), swept in 1/16 LSB
// steps over the whole range and past both ends: codes never decrease, both ends stay fixed,
// and the peak deviation from the ideal code is the configured INL at mid-scale. Then every
// resolution from 1 to 16 bits at the largest INL the macro admits (just under (2^bits-1)/4).
TEST(AdcTransferTest, TransposedReadInlIsMonotoneLikeTheForwardOne) {
  auto mac = Registry<Macro>::CreateFrom(ParseYaml(
      "{impl: analog_crossbar, dataflow: A, rows: 128, cols: 64, input_bits: 8, error_bits: 8, "
      "adc: {inl_lsb: 3}}",
      "test"));
  const auto hp = mac->HardwareParams();
  const int fwd_bits = static_cast<int>(hp.at("adc_bits"));
  const int t_bits = static_cast<int>(hp.at("adc_bits_transposed"));
  EXPECT_GT(fwd_bits, t_bits);
  EXPECT_EQ(t_bits, 4);
  auto sweep = [](int bits, double inl, int* peak) {
    const double m = std::ldexp(1.0, bits) - 1;
    const AdcTransfer a = MakeAdcTransfer(bits, m, inl, 0.0);  // lsb 1
    int prev = a.Convert(-3.0f, 0).code;
    EXPECT_EQ(prev, 0) << bits << " bits";
    *peak = 0;
    for (int s = -16 * 3; s <= 16 * (static_cast<int>(m) + 3); ++s) {
      const float v = static_cast<float>(s) / 16;
      const int code = a.Convert(v, 0).code;
      EXPECT_GE(code, prev) << bits << " bits, inl " << inl << ", input " << v;
      prev = code;
      if (v >= 0 && v <= m) *peak = std::max(*peak, code - static_cast<int>(std::nearbyint(v)));
    }
    EXPECT_EQ(prev, static_cast<int>(m)) << bits << " bits";
  };
  for (int bits : {fwd_bits, t_bits}) {
    int peak = 0;
    sweep(bits, 3.0, &peak);
    EXPECT_EQ(peak, 3) << bits << " bits";
  }
  for (int bits = 1; bits <= 16; ++bits) {
    int peak = 0;
    sweep(bits, 0.99 * (std::ldexp(1.0, bits) - 1) / 4.0, &peak);
  }
}

// ---- Direct codes (detail::DirectCodes; docs/analog.md, "Direct codes") ----------------------

// The fast kernel's direct codes against their reference side (ref::AnalogMatMulAsFast, a
// linear search of one 64-bit uniform per conversion over the law's thresholds) bit for bit:
// codes, outputs and counts, at 1 and 2 threads, over DAC and cell widths, odd blocks and column
// counts (the row's scalar rest), differential pairs, signed inputs, ADCs with one code per unit
// and with a non-integer step, sigma from 0.02 units (only far-tail draws move a code) to 3.
// Where the plan has a window (AVX-512) the guide runs too (DirectWindowEnabled() = false): the
// same bits; both ways are exercised (window and guide-only configurations counted).
TEST(AnalogKernelTest, DirectCodesEqualTheirReferenceBitForBit) {
  ThreadPool two(2);
  const CounterRng rng(4242);
  uint64_t i = 0;
  const CaseShape shapes[] = {{8, 1, 1, 8, 128}, {8, 2, 2, 4, 64}, {6, 1, 2, 3, 100}, {8, 1, 1, 8, 37}};
  const double sigmas[] = {0.02, 0.3, 1.0, 3.0};
  int direct = 0, windowed = 0;
  int64_t unit_lsb = 0, coarse_lsb = 0;
  for (int t = 0; t < 40; ++t) {
    const auto& sh = shapes[t % 4];
    Case c{1 + static_cast<int64_t>(rng.Below(i++, 4)), 0, 0, sh.x_bits, sh.dac_bits,
           sh.cell_bits, sh.slices, 1 + static_cast<int>(rng.Below(i++, 2)), rng.Below(i++, 2) == 1,
           false, rng.Below(i++, 4) != 0, sh.block, Dataflow::kA, 0, 0.0, 0.0, 0.0, 0.0};
    c.k = sh.block + 1 + static_cast<int64_t>(rng.Below(i++, static_cast<uint64_t>(sh.block) * 2));
    c.n = 1 + static_cast<int64_t>(rng.Below(i++, 23));
    c.adc_bits = 3 + static_cast<int>(rng.Below(i++, 6));
    c.range_fraction = rng.Below(i++, 2) == 0 ? 1.0 : 0.1 + 0.5 * rng.Uniform(i++);
    c.sigma = sigmas[rng.Below(i++, 4)];
    Data d = Make(c, 9000 + static_cast<uint64_t>(t));
    if (!detail::DirectCodes(d.p)) continue;
    ++direct;
    (d.p.readout.adc.inv_lsb == 1.0f ? unit_lsb : coarse_lsb) += 1;
    const std::string what = "case " + std::to_string(t) + " adc " + std::to_string(c.adc_bits) +
                             " sigma " + std::to_string(c.sigma) + " n " + std::to_string(c.n);
    const bool window =
        fast::internal::DirectPlan(d.p.readout.adc,
                                   static_cast<int64_t>(detail::MaxPartialSum(d.p)))
            .win_k > 0;
    windowed += window;
    const Result r = RunRefAsFast(d);
    ExpectFastAtOneAndTwoThreads(r, d, &two, t, what);
    if (window) {
      // The guide on the same configuration: the same bits.
      fast::internal::DirectWindowEnabled() = false;
      const Result g = RunFast(d, &two, t % 2 == 0);
      fast::internal::DirectWindowEnabled() = true;
      EXPECT_EQ(r.y, g.y) << what << " (guide)";
      ExpectSameCounts(r.counts, g.counts, what + " (guide)");
    }
  }
  EXPECT_GT(direct, 25);
  if (fast::internal::Kernels().direct_window_segment != nullptr) {
    EXPECT_GT(windowed, 8);
  }
  EXPECT_GT(direct - windowed, 5);  // the guide's own configurations
  EXPECT_GT(unit_lsb, 3);
  EXPECT_GT(coarse_lsb, 3);
}

// The guide table and the exact outcome: a guide entry not marked unsure gives the outcome of
// every uniform in its bucket (checked at random words, both halves random); Outcome equals the
// 64-bit count of thresholds reached, also where the high word equals a threshold's high word
// (the only case that draws the low word), one below and one above it.
TEST(AnalogKernelTest, DirectCodeGuideAndLowWordGiveTheLawsOutcome) {
  for (const double sigma : {0.05, 0.5, 2.0}) {
    const AdcTransfer adc = MakeAdcTransfer(6, 128.0, 0.0, sigma);  // lsb 128/63
    const int64_t vmax = 128;
    const fast::internal::DirectPlan plan(adc, vmax);
    const detail::CodeLaw& law = plan.law;
    const uint64_t key = 321;
    auto exact = [&](int64_t v, uint64_t u) {
      int o = law.o_lo[static_cast<size_t>(v)];
      for (uint32_t k = law.start[static_cast<size_t>(v)];
           k < law.start[static_cast<size_t>(v + 1)]; ++k) {
        o += u >= law.bounds[k];
      }
      return o;
    };
    const CounterRng rng(static_cast<uint64_t>(sigma * 100));
    int64_t sure = 0, unsure = 0;
    for (uint64_t t = 0; t < 200000; ++t) {
      const int64_t v = static_cast<int64_t>(rng.Below(2 * t, vmax + 1));
      const std::array<uint32_t, 4> blk = rng.Block(2 * t + 1);
      const uint64_t u = (static_cast<uint64_t>(blk[0]) << 32) | blk[1];
      const uint32_t w1 = static_cast<uint32_t>(u >> 32);
      const uint32_t e = plan.guide[static_cast<size_t>(
          (v << fast::internal::kGuideBits) | (w1 >> (32 - fast::internal::kGuideBits)))];
      const AdcTransfer::Result r = detail::CodeOfOutcome(exact(v, u), law.max_code);
      if ((e & fast::internal::kGuideUnsure) != 0) {
        ++unsure;
        continue;
      }
      ++sure;
      ASSERT_EQ(static_cast<int>(e & fast::internal::kGuideCode), r.code) << v << " " << u;
      ASSERT_EQ((e & fast::internal::kGuideClip) != 0, r.clipped) << v << " " << u;
    }
    EXPECT_GT(sure, 190000) << sigma;  // unsure buckets are rare
    // High words at and around each threshold's.
    int64_t at = 0;
    for (int64_t v = 0; v <= vmax; v += 9) {
      for (uint32_t k = law.start[static_cast<size_t>(v)];
           k < law.start[static_cast<size_t>(v + 1)]; ++k) {
        const uint32_t hb = static_cast<uint32_t>(law.bounds[k] >> 32);
        for (const uint32_t w1 : {hb - 1, hb, hb + 1}) {
          for (uint64_t idx : {uint64_t{5}, uint64_t{1000003}}) {
            const uint64_t u = (static_cast<uint64_t>(w1) << 32) |
                               (detail::CodeUniform(key, idx) & 0xFFFFFFFFu);
            ASSERT_EQ(plan.Outcome(v, w1, key, idx), exact(v, u)) << v << " " << k;
            at += w1 == hb;
          }
        }
      }
    }
    EXPECT_GT(at, 10);
    (void)unsure;
  }
}

// The window (DirectPlan::WindowOutcome, the vector path's decision): where it calls a draw fast
// its outcome is the 64-bit count of thresholds reached, at random uniforms and at top halves
// equal to, one below and one above every window threshold's (random low 48 bits); slow draws
// are rare (at most 1e-3 here); the window is wider for larger noise; and partial sums of 192
// or more (guide only) have none. CodeUniform is its three streams' bits in place.
TEST(AnalogKernelTest, DirectCodeWindowGivesTheLawsOutcome) {
  int last_k = 0;
  for (const double sigma : {0.05, 0.25, 0.5, 1.0}) {
    for (const int bits : {6, 8}) {
      const AdcTransfer adc = MakeAdcTransfer(bits, 128.0, 0.0, sigma);  // lsb 128/63 or 1
      const int64_t vmax = 128;
      const fast::internal::DirectPlan plan(adc, vmax);
      ASSERT_GT(plan.win_k, 0) << sigma << " " << bits;
      ASSERT_EQ(plan.win_tables, 3);
      if (bits == 8) {
        EXPECT_GE(plan.win_k, last_k) << sigma;
        last_k = plan.win_k;
      }
      const CounterRng rng(static_cast<uint64_t>(sigma * 100) + static_cast<uint64_t>(bits));
      int64_t fast = 0, slow = 0;
      for (uint64_t t = 0; t < 200000; ++t) {
        const int64_t v = static_cast<int64_t>(rng.Below(2 * t, vmax + 1));
        const std::array<uint32_t, 4> blk = rng.Block(2 * t + 1);
        const uint64_t u = (static_cast<uint64_t>(blk[0]) << 32) | blk[1];
        int o = 0;
        if (!plan.WindowOutcome(v, static_cast<uint32_t>(u >> 48), &o)) {
          ++slow;
          continue;
        }
        ++fast;
        ASSERT_EQ(o, plan.ExactOutcome(v, u)) << v << " " << u;
      }
      EXPECT_LT(slow, 200) << sigma << " " << bits;
      int64_t at = 0, at_fast = 0;
      const int64_t np = 64 * plan.win_tables;
      for (int64_t v = 0; v <= vmax; ++v) {
        for (int k = 0; k < plan.win_k; ++k) {
          const uint32_t top = plan.win[static_cast<size_t>(k * np + v)];
          for (const uint32_t u16 : {top - 1, top, top + 1}) {
            if (u16 > 0xFFFF) continue;
            const uint64_t u = (static_cast<uint64_t>(u16) << 48) |
                               (static_cast<uint64_t>(rng.Block(1000000 + at)[0]) << 16);
            int o = 0;
            const bool f = plan.WindowOutcome(v, u16, &o);
            if (u16 == top) {
              EXPECT_FALSE(f) << v << " " << k;
            }
            if (f) {
              ASSERT_EQ(o, plan.ExactOutcome(v, u)) << v << " " << k << " " << u16;
              ++at_fast;
            }
            ++at;
          }
        }
      }
      EXPECT_GT(at_fast, at / 3);
    }
  }
  EXPECT_GE(last_k, 6);
  const fast::internal::DirectPlan big(MakeAdcTransfer(8, 192.0, 0.0, 0.5), 192);
  EXPECT_EQ(big.win_k, 0);
  const uint64_t key = 99, i = 12345;
  const uint64_t u = detail::CodeUniform(key, i);
  // i & 7 = 1: the upper half of word 0; i & 3 = 1: word 1.
  EXPECT_EQ(u >> 48, Ars4x32(key, detail::kCodeStreamHi, i >> 3)[0] >> 16);
  EXPECT_EQ((u >> 16) & 0xFFFFFFFFu, Ars4x32(key, detail::kCodeStreamLo, i >> 2)[1]);
  EXPECT_EQ(u & 0xFFFF, Ars4x32(key, detail::kCodeStreamLo16, i >> 3)[0] >> 16);
}

// Direct codes against the definition (ref::AnalogMatMul, one Gaussian draw per conversion) in
// distribution, over many keys: one conversion per output (1-bit cells in one slice, inputs 0
// or 2^j, so only plane j is applied) with a non-integer ADC step (2 bits over 7 units: lsb
// 7/3), so the output is the code of partial sum v in 0..7. Per v and code, the counts of the
// definition, the fast kernel and the reference direct codes against the Gaussian's expected
// counts (erfc, written here from the transfer), within 5 Poisson standard deviations; the
// clipped count likewise; and per plane the flip rate (code != the noiseless code) and the
// mean and variance of the code error, fast against the definition, two-sample.
TEST(AnalogKernelTest, DirectCodesMatchTheGaussianLawInDistribution) {
  const int64_t k = 7, n = 512, m = 300;
  const int keys = 4;
  for (const double sigma : {0.5, 1.2}) {
    for (int j : {0, 5}) {
      std::vector<int32_t> x(static_cast<size_t>(m * k)), w(static_cast<size_t>(k * n));
      const CounterRng rng(static_cast<uint64_t>(j * 1000 + sigma * 10));
      uint64_t ri = 0;
      for (auto& v : x) v = rng.Below(ri++, 2) == 1 ? (1 << j) : 0;
      for (auto& v : w) v = static_cast<int32_t>(rng.Below(ri++, 2));
      // Row 0 on in every sample: no cycle j is skipped (a skipped one converts nothing).
      for (int64_t s = 0; s < m; ++s) x[static_cast<size_t>(s * k)] = 1 << j;
      std::vector<int64_t> vs(static_cast<size_t>(m * n), 0);
      for (int64_t s = 0; s < m; ++s) {
        for (int64_t c = 0; c < n; ++c) {
          for (int64_t r = 0; r < k; ++r) {
            vs[static_cast<size_t>(s * n + c)] +=
                (x[static_cast<size_t>(s * k + r)] >> j) * w[static_cast<size_t>(r * n + c)];
          }
        }
      }
      AnalogProblem p;
      p.m = m;
      p.k = k;
      p.n = n;
      p.x = x.data();
      p.ldx = k;
      p.x_bits = 8;
      p.signed_inputs = false;
      p.dac_bits = 1;
      p.w = w.data();
      p.cell_bits = 1;
      p.slices = 1;
      p.block = k;
      p.readout.adc = MakeAdcTransfer(2, 7.0, 0.0, sigma);
      ASSERT_TRUE(detail::DirectCodes(p));
      const int top = static_cast<int>(p.readout.adc.max_code);
      const double lsb = 1.0 / static_cast<double>(p.readout.adc.inv_lsb);
      auto phi = [&](double a, int64_t v) {  // P(t < a) for partial sum v
        return 0.5 * std::erfc(-((a * lsb - static_cast<double>(v)) / sigma) / std::sqrt(2.0));
      };
      // Expected counts per (v, code) and of clipping.
      std::vector<double> expect(static_cast<size_t>(8 * (top + 1)), 0.0);
      double expect_clip = 0;
      for (int64_t v : vs) {
        for (int c = 0; c <= top; ++c) {
          const double lo = c == 0 ? 0.0 : phi(c - 0.5, v);
          const double hi = c == top ? 1.0 : phi(c + 0.5, v);
          expect[static_cast<size_t>(v * (top + 1) + c)] += (hi - lo) * keys;
        }
        expect_clip += (phi(-0.5, v) + 1.0 - phi(top + 0.5, v)) * keys;
      }
      double flips[3], mean[3], var[3];
      const double conv = static_cast<double>(keys) * static_cast<double>(m * n);
      for (int kind = 0; kind < 3; ++kind) {  // definition, fast, reference direct codes
        std::vector<int64_t> got(expect.size(), 0);
        int64_t clipped = 0;
        double f = 0, s1 = 0, s2 = 0;
        std::vector<int64_t> y(static_cast<size_t>(m * n));
        for (int key = 0; key < keys; ++key) {
          p.noise_key = MixKey(7, static_cast<uint64_t>(key), static_cast<uint64_t>(j));
          p.y = y.data();
          p.ldy = n;
          AnalogCounts counts;
          if (kind == 0) ref::AnalogMatMul(p, counts);
          if (kind == 1) fast::AnalogMatMul(p, nullptr, counts, nullptr);
          if (kind == 2) ref::AnalogMatMulAsFast(p, counts);
          clipped += counts.adc_clipped;
          for (size_t e = 0; e < y.size(); ++e) {
            ASSERT_EQ(y[e] % (int64_t{1} << j), 0);
            const int64_t code = y[e] >> j;
            ASSERT_GE(code, 0);
            ASSERT_LE(code, top);
            ++got[static_cast<size_t>(vs[e] * (top + 1) + code)];
            const int64_t clean = std::min<int64_t>(
                top, std::llround(static_cast<double>(vs[e]) / lsb));
            const double d = static_cast<double>(code - clean);
            f += d != 0;
            s1 += d;
            s2 += d * d;
          }
        }
        const std::string what = "sigma " + std::to_string(sigma) + " plane " +
                                 std::to_string(j) + " sampling " + std::to_string(kind);
        for (size_t e = 0; e < expect.size(); ++e) {
          EXPECT_NEAR(static_cast<double>(got[e]), expect[e], 5 * std::sqrt(expect[e]) + 3)
              << what << " v " << e / (top + 1) << " code " << e % (top + 1);
        }
        EXPECT_NEAR(static_cast<double>(clipped), expect_clip, 5 * std::sqrt(expect_clip) + 3)
            << what;
        flips[kind] = f / conv;
        mean[kind] = s1 / conv;
        var[kind] = s2 / conv - mean[kind] * mean[kind];
      }
      ASSERT_GT(flips[0], 0.01);  // the noise moves codes
      for (int kind = 1; kind < 3; ++kind) {
        EXPECT_NEAR(flips[kind], flips[0],
                    5 * std::sqrt(2 * flips[0] * (1 - flips[0]) / conv)) << kind;
        EXPECT_NEAR(mean[kind], mean[0], 5 * std::sqrt(2 * var[0] / conv)) << kind;
        EXPECT_NEAR(var[kind], var[0], 10 * std::sqrt(2 * 2 * var[0] * var[0] / conv)) << kind;
      }
    }
  }
}

// Partial sums of 1-bit DACs and cells by adding the driven word lines' byte rows (at most 96
// lines driven) or by popcount (more): inputs with a tenth, half and nine tenths of the rows on,
// so cycles fall on both sides; 128- and 200-row blocks, a short last block, odd columns. Without
// noise (a coarse ADC, so not lossless) against the definition, with noise (direct codes)
// against their reference side; 1 and 2 threads.
TEST(AnalogKernelTest, PartialSumsByRowAdditionEqualThePopcount) {
  ThreadPool two(2);
  for (const int64_t block : {128, 200}) {
    for (const double on : {0.1, 0.5, 0.9}) {
      for (const double sigma : {0.0, 0.7}) {
        Case c{6, 2 * block + 37, 21, 8, 1, 1, 8, 2, true, false, true, block, Dataflow::kA,
               6, 1.0, sigma, 0.0, 0.0};
        Data d = Make(c, static_cast<uint64_t>(block * 10 + on * 10));
        const CounterRng rng(static_cast<uint64_t>(on * 100));
        uint64_t ri = 0;
        for (auto& v : d.x) {
          v = rng.Uniform(ri++) < on ? 255 : 0;  // every plane of a row on or off together
          if (rng.Below(ri++, 2) == 1) v = -v;
        }
        const std::string what = "block " + std::to_string(block) + " on " + std::to_string(on) +
                                 " sigma " + std::to_string(sigma);
        const Result r = sigma == 0 ? RunRef(d) : RunRefAsFast(d);
        const Result f1 = RunFast(d, nullptr, true), f2 = RunFast(d, &two, false);
        EXPECT_EQ(r.y, f1.y) << what;
        EXPECT_EQ(r.y, f2.y) << what;
        ExpectSameCounts(r.counts, f1.counts, what);
        ExpectSameCounts(r.counts, f2.counts, what);
      }
    }
  }
}

// Many-plane outputs under direct codes (8-bit signed inputs, 8 slices, differential pairs, a
// 6-bit ADC over the block's range: a non-integer step): the error per output e = y - y0 (y0
// the noiseless read-out) over many keys has the same mean, variance and rate of e != 0 as
// under the definition, within 5 two-sample standard deviations.
TEST(AnalogKernelTest, DirectCodeOutputErrorsMatchTheReference) {
  Case c{16, 256, 16, 8, 1, 1, 8, 2, true, false, true, 128, Dataflow::kA, 6, 1.0, 0.5, 0.0, 0.0};
  Data d = Make(c, 41);
  ASSERT_TRUE(detail::DirectCodes(d.p));
  Data clean_d = d;
  clean_d.p.readout.adc.sigma = 0.0f;
  const Result clean = RunRef(clean_d);
  const int keys = 8;
  double mean[2], var[2], nz[2], n_out = 0;
  for (int kind = 0; kind < 2; ++kind) {  // definition, fast
    double s = 0, s2 = 0, z = 0, cnt = 0;
    for (int key = 0; key < keys; ++key) {
      d.p.noise_key = MixKey(6, static_cast<uint64_t>(key));
      const Result r = kind == 0 ? RunRef(d) : RunFast(d, nullptr, true);
      for (size_t i = 0; i < r.y.size(); ++i) {
        const double e = static_cast<double>(r.y[i] - clean.y[i]);
        s += e;
        s2 += e * e;
        z += e != 0;
        cnt += 1;
      }
    }
    mean[kind] = s / cnt;
    var[kind] = s2 / cnt - mean[kind] * mean[kind];
    nz[kind] = z / cnt;
    n_out = cnt;
  }
  ASSERT_GT(var[0], 100.0);  // the noise is visible
  EXPECT_NEAR(mean[0], mean[1], 5 * std::sqrt((var[0] + var[1]) / n_out));
  EXPECT_NEAR(var[0], var[1], 10 * std::sqrt(2 * (var[0] * var[0] + var[1] * var[1]) / n_out));
  EXPECT_NEAR(nz[0], nz[1], 5 * std::sqrt((nz[0] * (1 - nz[0]) + nz[1] * (1 - nz[1])) / n_out));
}

// ---- The shift form (DirectPlan::ShiftOutcome; docs/analog.md, "Shift-invariant laws") -------

// Unit-step ADCs (lsb 1: every v's law one law shifted by v): the plan has a shift form, its
// decision (the vector search's scalar model) gives the 64-bit count of thresholds reached where
// it calls a draw fast, at random uniforms and at top halves equal to, one below and one above
// every searched top and at 0 and 0xFFFF (random low 48 bits), for the bucket form and the binary
// search alike, on every v including those that
// clip below (v near 0) and above (full scale 40 over 128 rows: M = 63 at lsb 1); slow draws are
// rare; a non-integer step (6 bits over 128: lsb 128/63) has none.
TEST(AnalogKernelTest, DirectCodeShiftFormGivesTheLawsOutcome) {
  struct Law {
    int bits;
    double full_scale, sigma;
  };
  const Law laws[] = {{8, 128.0, 0.02}, {8, 128.0, 0.3},  {8, 128.0, 0.5}, {8, 128.0, 1.0},
                      {8, 128.0, 2.0},  {8, 128.0, 3.0},  {6, 40.0, 0.3},  {6, 40.0, 1.0},
                      {6, 40.0, 2.5},   {4, 12.0, 0.7},   {8, 128.0, 1.7}};
  const int64_t vmax = 128;
  int with_tops = 0, buckets = 0;
  // One decision (plan's: the bucket form where shift_c > 0, else the binary search) checked.
  auto check = [&](const fast::internal::DirectPlan& plan, const Law& l, const std::string& what) {
    const CounterRng rng(static_cast<uint64_t>(l.sigma * 1000) + static_cast<uint64_t>(l.bits));
    int64_t slow = 0, clipped_lo = 0, clipped_hi = 0;
    const int top_o = plan.law.max_code + 2;
    for (uint64_t t = 0; t < 200000; ++t) {
      const int64_t v = static_cast<int64_t>(rng.Below(2 * t, vmax + 1));
      const std::array<uint32_t, 4> blk = rng.Block(2 * t + 1);
      const uint64_t u = (static_cast<uint64_t>(blk[0]) << 32) | blk[1];
      int o = 0;
      if (!plan.ShiftOutcome(v, static_cast<uint32_t>(u >> 48), &o)) {
        ++slow;
        continue;
      }
      ASSERT_EQ(o, plan.ExactOutcome(v, u)) << what << " v " << v << " u " << u;
      clipped_lo += o == 0;
      clipped_hi += o == top_o;
    }
    EXPECT_LT(slow, 200) << what;
    if (l.sigma >= 0.3) {
      EXPECT_GT(clipped_lo, 0) << what;
    }
    if (l.full_scale < vmax) {
      EXPECT_GT(clipped_hi, 0) << what;
    }
    std::vector<uint32_t> tops = {0, 0xFFFF};
    for (int j = 0; j < 64 && plan.shift_tops[static_cast<size_t>(j)] != 0xFFFF; ++j) {
      tops.push_back(plan.shift_tops[static_cast<size_t>(j)]);
    }
    with_tops += tops.size() > 2;
    int64_t at = 0, at_fast = 0;
    for (int64_t v = 0; v <= vmax; ++v) {
      for (const uint32_t top : tops) {
        for (const uint32_t u16 : {top - 1, top, top + 1}) {
          if (u16 > 0xFFFF) continue;
          const std::array<uint32_t, 4> blk = rng.Block(1000000 + static_cast<uint64_t>(at));
          const uint64_t u = (static_cast<uint64_t>(u16) << 48) |
                             (static_cast<uint64_t>(blk[0]) << 16) | (blk[1] & 0xFFFF);
          int o = 0;
          const bool f = plan.ShiftOutcome(v, u16, &o);
          if (u16 == top) {
            EXPECT_FALSE(f) << what << " v " << v << " top " << top;
          }
          if (f) {
            ASSERT_EQ(o, plan.ExactOutcome(v, u)) << what << " v " << v << " u16 " << u16;
            ++at_fast;
          }
          ++at;
        }
      }
    }
    EXPECT_GT(at_fast, at / 3) << what;
  };
  for (const Law& l : laws) {
    const AdcTransfer adc = MakeAdcTransfer(l.bits, l.full_scale, 0.0, l.sigma);
    ASSERT_EQ(adc.inv_lsb, 1.0f);
    const fast::internal::DirectPlan plan(adc, vmax);
    const std::string what = std::to_string(l.bits) + " bits, sigma " + std::to_string(l.sigma);
    if (plan.win_k == 0) continue;  // the shift form shares the window's domain
    ASSERT_GE(plan.shift_steps, 0) << what;
    buckets += plan.shift_c > 0;
    check(plan, l, what + (plan.shift_c > 0 ? " (buckets)" : " (search)"));
    if (plan.shift_c > 0) {
      fast::internal::DirectPlan search = plan;  // the binary search on the same law
      search.shift_c = 0;
      check(search, l, what + " (search)");
    }
  }
  EXPECT_GT(with_tops, 12);
  EXPECT_GT(buckets, 5);
  // A non-integer step is not shift-invariant: no shift form (the per-v window).
  const fast::internal::DirectPlan coarse(MakeAdcTransfer(6, 128.0, 0.0, 1.0), vmax);
  EXPECT_GT(coarse.win_k, 0);
  EXPECT_EQ(coarse.shift_steps, -1);
}

// The shift form in the kernel against the reference side (ref::AnalogMatMulAsFast) bit for bit
// and against the per-v window (DirectShiftEnabled() = false) and the guide: unit-step ADCs
// (clipping below, and above where the full scale is under the largest partial sum), sigma 0.02
// to 3 units, 1-bit and wider DACs and cells, odd column counts, differential pairs, signed
// inputs, 1 and 2 threads.
TEST(AnalogKernelTest, DirectCodeShiftFormEqualsItsReferenceBitForBit) {
  ThreadPool two(2);
  const CounterRng rng(5151);
  uint64_t i = 0;
  const CaseShape shapes[] = {{8, 1, 1, 8, 128}, {8, 1, 1, 8, 64}, {6, 1, 2, 3, 40}, {8, 2, 1, 4, 37}};
  const double sigmas[] = {0.02, 0.3, 0.5, 1.0, 2.0, 3.0};
  int shifted = 0, clip_hi = 0;
  for (int t = 0; t < 36; ++t) {
    const auto& sh = shapes[t % 4];
    Case c{1 + static_cast<int64_t>(rng.Below(i++, 4)), 0, 0, sh.x_bits, sh.dac_bits,
           sh.cell_bits, sh.slices, 1 + static_cast<int>(rng.Below(i++, 2)), rng.Below(i++, 2) == 1,
           false, rng.Below(i++, 4) != 0, sh.block, Dataflow::kA, 0, 0.0, 0.0, 0.0, 0.0};
    c.k = sh.block + 1 + static_cast<int64_t>(rng.Below(i++, static_cast<uint64_t>(sh.block) * 2));
    c.n = 1 + static_cast<int64_t>(rng.Below(i++, 40));
    c.adc_bits = 6 + static_cast<int>(rng.Below(i++, 3));
    // Full scale at most 2^bits - 1 units: lsb 1; below the largest partial sum it clips above.
    const double vm = MaxPartialSum(c);
    const double fs = std::min(vm, static_cast<double>((1 << c.adc_bits) - 1)) *
                      (rng.Below(i++, 2) == 0 ? 1.0 : 0.3 + 0.6 * rng.Uniform(i++));
    c.range_fraction = fs / vm;
    c.sigma = sigmas[rng.Below(i++, 6)];
    Data d = Make(c, 7000 + static_cast<uint64_t>(t));
    if (!detail::DirectCodes(d.p)) continue;
    if (d.p.readout.adc.inv_lsb != 1.0f) continue;
    const fast::internal::DirectPlan plan(d.p.readout.adc,
                                          static_cast<int64_t>(detail::MaxPartialSum(d.p)));
    const std::string what = "case " + std::to_string(t) + " adc " + std::to_string(c.adc_bits) +
                             " sigma " + std::to_string(c.sigma) + " n " + std::to_string(c.n);
    const Result r = RunRefAsFast(d);
    ExpectFastAtOneAndTwoThreads(r, d, &two, t, what);
    if (plan.shift_steps < 0) continue;
    ++shifted;
    clip_hi += fs < vm;
    fast::internal::DirectShiftEnabled() = false;
    const Result w = RunFast(d, &two, t % 2 == 0);
    fast::internal::DirectShiftEnabled() = true;
    fast::internal::DirectWindowEnabled() = false;
    const Result g = RunFast(d, nullptr, t % 2 == 1);
    fast::internal::DirectWindowEnabled() = true;
    EXPECT_EQ(r.y, w.y) << what << " (window)";
    EXPECT_EQ(r.y, g.y) << what << " (guide)";
    ExpectSameCounts(r.counts, w.counts, what + " (window)");
    ExpectSameCounts(r.counts, g.counts, what + " (guide)");
  }
  EXPECT_GT(shifted, 12);
  EXPECT_GT(clip_hi, 3);
}

// Noiseless dataflow A with integer partial sums (aspeed7): the fast kernel converts by a table
// of the definition's codes per partial sum (fast::internal::CodeTable). Bit for bit the
// definition (ref::AnalogMatMul), outputs and every count: ADC bits 2-8, full and calibrated
// ranges, INL on and off, one or two polarities, signed and unsigned inputs, odd blocks (37, 85,
// 255; 16 and 9, where cycles with few driven lines give only codes 0 or code = partial sum)
// and columns, sums below and above 128, multi-bit DACs and cells (the popcount's int32 sums),
// 12 slices (the slices' codes past 16 bits), dense inputs, 1 and 2 threads. Without noise
// a partial sum v >= 0 cannot clip below; the cases reach code 0, code M and clip above M.
TEST(AnalogKernelTest, NoiselessCodeTableEqualsTheDefinitionBitForBit) {
  ThreadPool two(2);
  const CounterRng rng(7070);
  uint64_t i = 0;
  const CaseShape shapes[] = {{8, 1, 1, 8, 128}, {8, 1, 1, 8, 37},  {8, 1, 1, 8, 200},
                              {8, 1, 1, 8, 255}, {8, 2, 1, 4, 85},  {6, 1, 2, 3, 60},
                              {8, 1, 1, 12, 100}, {8, 1, 1, 8, 16},  {8, 2, 1, 4, 9}};
  int tabled = 0, with_inl = 0, calibrated = 0;
  int64_t conversions = 0, clipped = 0;
  for (int t = 0; t < 90; ++t) {
    const auto& sh = shapes[t % 9];
    Case c = CaseOf(sh);
    c.m = 1 + static_cast<int64_t>(rng.Below(i++, 4));
    c.k = sh.block + 1 + static_cast<int64_t>(rng.Below(i++, static_cast<uint64_t>(sh.block) * 2));
    c.n = 1 + static_cast<int64_t>(rng.Below(i++, 70));
    c.polarities = 1 + static_cast<int>(rng.Below(i++, 2));
    c.signed_inputs = rng.Below(i++, 2) == 1;
    c.variation = false;
    c.skip = rng.Below(i++, 4) != 0;
    c.dataflow = Dataflow::kA;
    c.adc_bits = 2 + static_cast<int>(rng.Below(i++, 7));
    c.range_fraction = rng.Below(i++, 2) == 0 ? 1.0 : 0.05 + 0.55 * rng.Uniform(i++);
    const double m_code = std::ldexp(1.0, c.adc_bits) - 1.0;
    c.inl_lsb = rng.Below(i++, 2) == 0 ? 0.0 : 0.2 * m_code * rng.Uniform(i++);
    c.sigma = 0.0;
    c.nnsa_sigma = 0.0;
    Data d = Make(c, 7000 + static_cast<uint64_t>(t));
    if (t % 3 == 0) {
      // Dense inputs and a column of the largest levels: partial sums up to the block's largest.
      for (auto& v : d.x) v = v < 0 ? -((1 << c.x_bits) - 1) : (1 << c.x_bits) - 1;
      const int64_t ncp = c.n * c.polarities;
      for (int64_t r = 0; r < c.k; ++r) d.w[static_cast<size_t>(r * ncp)] = (1 << (c.slices * c.cell_bits)) - 1;
    }
    if (!fast::internal::CodeTableApplies(d.p)) continue;
    ++tabled;
    with_inl += c.inl_lsb != 0.0;
    calibrated += c.range_fraction != 1.0;
    const std::string what = "case " + std::to_string(t) + " adc " + std::to_string(c.adc_bits) +
                             " range " + std::to_string(c.range_fraction) + " inl " +
                             std::to_string(c.inl_lsb) + " block " + std::to_string(c.block) +
                             " n " + std::to_string(c.n);
    const Result r = RunRef(d);
    ExpectFastAtOneAndTwoThreads(r, d, &two, t, what);
    conversions += r.counts.adc_conversions;
    clipped += r.counts.adc_clipped;
  }
  EXPECT_GT(tabled, 55);
  EXPECT_GT(with_inl, 10);
  EXPECT_GT(calibrated, 10);
  ASSERT_GT(conversions, 0);
  EXPECT_GT(clipped, 0);
  EXPECT_LT(clipped, conversions);
}

// The code table itself: entry v is AdcTransfer::Convert(float(v), 0), clipping monotone in v;
// the vector variant (fast::internal::Kernels().code_table_segment, where the build has it)
// equals the scalar one on random partial sums as bytes and as int32, odd column counts, 1-12
// slices, 1- and 2-bit cells, both signs, sums below and above 128.
TEST(AnalogKernelTest, CodeTableSegmentVariantsEqualTheScalarTable) {
  const CounterRng rng(7171);
  uint64_t i = 0;
  const auto vector = fast::internal::Kernels().code_table_segment;
  int compared = 0;
  for (int t = 0; t < 200; ++t) {
    const int bits = 2 + static_cast<int>(rng.Below(i++, 7));
    const int64_t vmax = std::array<int64_t, 5>{37, 100, 127, 128, 255}[rng.Below(i++, 5)];
    const double fs = (0.05 + 1.0 * rng.Uniform(i++)) * static_cast<double>(vmax);
    const double inl =
        rng.Below(i++, 2) == 0 ? 0.0 : 0.2 * (std::ldexp(1.0, bits) - 1.0) * rng.Uniform(i++);
    const AdcTransfer adc = MakeAdcTransfer(bits, fs, inl, 0.0);
    const fast::internal::CodeTable table(adc, vmax);
    for (int64_t v = 0; v <= vmax; ++v) {
      const AdcTransfer::Result r = adc.Convert(static_cast<float>(v), 0.0f);
      ASSERT_EQ(table.code[static_cast<size_t>(v)], r.code) << v;
      ASSERT_EQ(table.clipped[static_cast<size_t>(v)] != 0, r.clipped) << v;
      if (table.bytes) {
        ASSERT_EQ(table.code8[v], r.code) << v;
      }
      ASSERT_EQ(r.clipped, v >= table.vclip) << v;
    }
    ASSERT_TRUE(table.bytes);
    const int pr = 1 + static_cast<int>(rng.Below(i++, 2));
    const int S = 1 + static_cast<int>(rng.Below(i++, pr == 1 ? 12 : 6));
    const int64_t ncp = std::array<int64_t, 6>{1, 17, 63, 64, 65, 130}[rng.Below(i++, 6)];
    const int shift_j = static_cast<int>(rng.Below(i++, 8));
    const int64_t sign = rng.Below(i++, 2) == 0 ? 1 : -1;
    std::vector<int32_t> v32(static_cast<size_t>(S * ncp));
    std::vector<uint8_t> v8(v32.size());
    for (size_t e = 0; e < v32.size(); ++e) {
      // Half the sums at the ends of the range (code 0 and the clipped ones).
      const uint64_t kind = rng.Below(i++, 4);
      const int64_t v = kind == 0   ? 0
                        : kind == 1 ? vmax - static_cast<int64_t>(rng.Below(i++, 3))
                                    : static_cast<int64_t>(rng.Below(i++, static_cast<uint64_t>(vmax) + 1));
      v32[e] = static_cast<int32_t>(v);
      v8[e] = static_cast<uint8_t>(v);
    }
    std::vector<int64_t> acc0(static_cast<size_t>(ncp));
    for (auto& a : acc0) a = static_cast<int64_t>(rng.Below(i++, 1 << 20)) - (1 << 19);
    std::vector<int64_t> want = acc0;
    const int64_t want_clip = fast::internal::CodeTableSegmentScalar(
        table, v32.data(), nullptr, ncp, S, pr, shift_j, sign, want.data(), nullptr, vmax);
    std::vector<int64_t> scalar8 = acc0;
    EXPECT_EQ(fast::internal::CodeTableSegmentScalar(table, nullptr, v8.data(), ncp, S, pr,
                                                     shift_j, sign, scalar8.data(), nullptr, vmax),
              want_clip);
    EXPECT_EQ(scalar8, want);
    // The scalar variant against the definition's transfer, conversion by conversion.
    std::vector<int64_t> def = acc0;
    int64_t def_clip = 0;
    for (int q = 0; q < S; ++q) {
      for (int64_t cp = 0; cp < ncp; ++cp) {
        const AdcTransfer::Result r =
            adc.Convert(static_cast<float>(v32[static_cast<size_t>(q * ncp + cp)]), 0.0f);
        def[static_cast<size_t>(cp)] += sign * (static_cast<int64_t>(r.code) << (shift_j + q * pr));
        def_clip += r.clipped;
      }
    }
    EXPECT_EQ(want, def);
    EXPECT_EQ(want_clip, def_clip);
    if (vector == nullptr) continue;
    ++compared;
    for (const bool bytes : {true, false}) {
      std::vector<int64_t> got = acc0;
      const int64_t clip = vector(table, bytes ? nullptr : v32.data(), bytes ? v8.data() : nullptr,
                                  ncp, S, pr, shift_j, sign, got.data(), nullptr, vmax);
      const std::string what = "t " + std::to_string(t) + " bits " + std::to_string(bits) +
                               " vmax " + std::to_string(vmax) + " S " + std::to_string(S) +
                               " pr " + std::to_string(pr) + " ncp " + std::to_string(ncp) +
                               (bytes ? " bytes" : " int32");
      EXPECT_EQ(got, want) << what;
      EXPECT_EQ(clip, want_clip) << what;
      // Into int32 accumulators (the scalar variant's and the vector one's).
      std::vector<int32_t> a32(acc0.begin(), acc0.end()), s32 = a32;
      EXPECT_EQ(vector(table, bytes ? nullptr : v32.data(), bytes ? v8.data() : nullptr, ncp, S,
                       pr, shift_j, sign, nullptr, a32.data(), vmax),
                want_clip)
          << what;
      fast::internal::CodeTableSegmentScalar(table, bytes ? nullptr : v32.data(),
                                             bytes ? v8.data() : nullptr, ncp, S, pr, shift_j,
                                             sign, nullptr, s32.data(), vmax);
      EXPECT_EQ(std::vector<int64_t>(a32.begin(), a32.end()), want) << what;
      EXPECT_EQ(a32, s32) << what;
    }
  }
  if (vector != nullptr) {
    EXPECT_EQ(compared, 200);
  }
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__GFNI__)
// The bit-sliced counts' row bits straight from the levels (aspeed7) equal those through
// LevelBitsRow's bytes: 1-12 slices, column counts multiples of 16 and not, bits past the row's
// end zero.
TEST(AnalogKernelTest, RowBitsFromLevelsEqualThoseFromBytes) {
  const CounterRng rng(7272);
  uint64_t i = 0;
  for (const int S : {1, 3, 8, 12}) {
    for (const int64_t ncp : {16, 48, 64, 256, 37, 130}) {
      const int64_t len = S * ncp, words = (len + 511) / 512 * 8;
      std::vector<int32_t> lv(static_cast<size_t>(ncp));
      for (auto& v : lv) v = static_cast<int32_t>(rng.Below(i++, uint64_t{1} << S));
      std::vector<uint8_t> row(static_cast<size_t>(words * 64), 0);
      fast::internal::LevelBitsRow(lv.data(), ncp, S, row.data());
      std::vector<uint64_t> want(static_cast<size_t>(words)), got(want.size(), ~uint64_t{0});
      fast::internal::RowBitsFromBytes(row.data(), len, want.data());
      fast::internal::RowBitsFromLevels(lv.data(), ncp, S, got.data());
      EXPECT_EQ(got, want) << "S " << S << " ncp " << ncp;
    }
  }
}
#endif

}  // namespace
}  // namespace pim::kernels
