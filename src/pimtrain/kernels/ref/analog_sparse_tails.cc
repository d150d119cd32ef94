// Sparse tails, reference side: which read-outs are lossless, the tail plan, the scalar event walk
// and ref::AnalogMatMulSparseTails, written from the sampling's equations (kernels/analog.h,
// docs/analog.md "Sparse tails"). Nothing here calls the fast kernel; the fast kernel uses the
// plan and must reproduce this sampling bit for bit.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/analog.h"

namespace pim::kernels {

bool LosslessReadout(const AnalogProblem& p) {
  const AdcTransfer& adc = p.readout.adc;
  if (p.readout.dataflow == Dataflow::kC || p.conductance != nullptr || adc.inl_k != 0.0f ||
      adc.inv_lsb != 1.0f || adc.lsb != 1.0f || p.x_bits > 15 || p.slices * p.cell_bits > 15) {
    return false;
  }
  // The largest partial sum must be a code: then, without noise, code = partial sum.
  const double vmax = detail::MaxPartialSum(p);
  if (p.readout.dataflow == Dataflow::kB) {
    // B converts buffer lines, each the sum of the partial sums of one significance: lossless
    // without noise when the fullest line fits the codes.
    if (adc.sigma != 0.0f) return false;
    // Lines collect every row block of the output (R-Mapping).
    const int cycles = InputCycles(p.x_bits, p.dac_bits);
    const int most = detail::FullestLineB(cycles, p.slices, p.dac_bits, p.cell_bits);
    const double blocks = static_cast<double>((p.k + p.block - 1) / p.block);
    return vmax * most * std::max(1.0, blocks) <= static_cast<double>(adc.max_code);
  }
  if (vmax > static_cast<double>(adc.max_code)) return false;
  if (adc.sigma == 0.0f) return true;
  // |fl(v + fl(sigma z)) - v| <= sigma |z| (1 + 2^-23) + 2^-24 2^ceil(log2(vmax + 1)) for
  // 0 <= v <= vmax: below 1/2 for every central draw z, v + sigma z rounds back to v.
  const double zmax = std::max(-static_cast<double>(GaussianFrom16(kGaussTail)),
                               static_cast<double>(GaussianFrom16(65535 - kGaussTail)));
  return static_cast<double>(adc.sigma) * zmax * (1 + std::ldexp(1.0, -23)) +
             std::ldexp(1.0, static_cast<int>(std::ceil(std::log2(vmax + 1))) - 24) <
         0.5;
}

namespace detail {

namespace {
// The largest |z| a refined draw reaches: p >= 2^-81 (GaussianRefined), Phi^-1(2^-81) = -10.28.
constexpr double kRefinedZMax = 11.0;
}  // namespace

// Code offsets of the tail draws (see TailPlan): e[idx] = round(zs) when zs = fl(sigma z) lies
// strictly closer than 1/2 - err to that integer, err bounding the rounding of the float sum
// v + zs; the few draws closer to a half-integer get kUnsafeTail and the full transfer. A refined
// cell's draws are continuous over its quantile range: the offset holds for the cell when both
// ends (widened by 1e-6, more than any rounding of the quantile or of sigma z) satisfy it with
// the same integer.
TailPlan MakeTailPlan(const AdcTransfer& adc, double vmax) {
  const float* table = GetGaussianTable().tail;
  TailPlan plan;
  std::vector<int32_t>& e = plan.e;
  e.resize(2 * kGaussTail);
  // One bound for all draws, from the largest |sigma z| (a refined draw's).
  const double zs_max = static_cast<double>(adc.sigma) * kRefinedZMax;
  const double err =
      std::ldexp(1.0, static_cast<int>(std::ceil(std::log2(vmax + zs_max + 2))) - 24);
  auto offset = [err](double zs) -> int32_t {
    if (!std::isfinite(zs)) return kUnsafeTail;
    const double r = std::nearbyint(zs);
    return std::fabs(zs - r) < 0.5 - err ? static_cast<int32_t>(r) : kUnsafeTail;
  };
  for (uint32_t i = 0; i < 2 * kGaussTail; ++i) {
    const uint32_t h = i < kGaussTail ? i : i + kTailHiBase;
    if (!RefinedCell(h)) {
      e[i] = offset(static_cast<double>(adc.sigma * table[i]));
      continue;
    }
    const bool upper = h >= 32768;
    const uint32_t c = upper ? 65535 - h : h;
    // Lower cell c: z in [Phi^-1(c / 65536), Phi^-1((c + 1) / 65536)], both negative.
    double za = GaussianQuantile(std::ldexp(static_cast<double>(c), -16)) * (1 + 1e-6);
    double zb = GaussianQuantile(std::ldexp(static_cast<double>(c) + 1, -16)) * (1 - 1e-6);
    if (upper) {
      const double t = -za;
      za = -zb;
      zb = t;
    }
    const int32_t ea = offset(static_cast<double>(adc.sigma) * za);
    const int32_t eb = offset(static_cast<double>(adc.sigma) * zb);
    e[i] = ea == eb ? ea : kUnsafeTail;
  }
  // Draws next to the centre with e = 0 change nothing (v in [0, vmax] is a code).
  uint32_t lo = kGaussTail;
  while (lo > 0 && e[lo - 1] == 0) --lo;
  uint32_t hi = 65536 - kGaussTail;
  while (hi < 65536 && e[hi - kTailHiBase] == 0) ++hi;
  plan.lo = lo;
  plan.hi = hi;
  plan.tails = lo + (65536 - hi);
  uint32_t ulo = lo, uhi = hi - kTailHiBase;
  while (ulo > 0 && e[ulo - 1] == kUnsafeTail) --ulo;
  while (uhi < 2 * kGaussTail && e[uhi] == kUnsafeTail) ++uhi;
  plan.unsafe_lo = ulo;
  plan.unsafe_hi = uhi;
  uint32_t olo = 0, ohi = 2 * kGaussTail;
  while (olo < ulo && e[olo] == kUnsafeTail) ++olo;
  while (ohi > uhi && e[ohi - 1] == kUnsafeTail) --ohi;
  plan.outer_lo = olo;
  plan.outer_hi = ohi;
  plan.unit = true;
  for (uint32_t i = olo; i < ulo; ++i) plan.unit = plan.unit && e[i] == -1;
  for (uint32_t i = uhi; i < ohi; ++i) plan.unit = plan.unit && e[i] == 1;
  // P(gap >= g) = q^g, q = 1 - tails / 65536: q^g by repeated multiplication (exact steps, the
  // same on every machine), rounded to a 32-bit threshold.
  const double q = 1.0 - static_cast<double>(plan.tails) / 65536.0;
  double qg = 1.0;
  plan.gap_thr[0] = uint64_t{1} << 32;
  for (int g = 1; g <= kGapSteps; ++g) {
    qg *= q;
    plan.gap_thr[g] = static_cast<uint64_t>(std::nearbyint(std::ldexp(qg, 32)));
  }
  return plan;
}

double MaxPartialSum(const AnalogProblem& p) {
  return static_cast<double>(p.block) * ((1 << p.dac_bits) - 1) * ((1 << p.cell_bits) - 1);
}

bool SparseTails(const AnalogProblem& p) {
  return p.readout.dataflow == Dataflow::kA && p.readout.adc.sigma != 0.0f && LosslessReadout(p);
}

int64_t SparseTailEvents(uint64_t key, int64_t m, int64_t blocks, int64_t b, int h, int cycles,
                         int j, int64_t len, const TailPlan& plan, int64_t* pos, uint32_t* idx) {
  if (plan.tails == 0) return 0;
  const uint64_t gaps = SparseTailStream(m, blocks, b, h, cycles, j, 0);
  const uint64_t events = SparseTailStream(m, blocks, b, h, cycles, j, 1);
  int64_t n = 0, at = -1;  // at: the last conversion passed
  for (uint64_t k = 0;; ++k) {
    const int g = GapLength(plan, SparseTailWord(key, gaps, k));
    if (g == kGapSteps) {
      at += kGapSteps;
      if (at + 1 >= len) return n;
      continue;
    }
    at += g + 1;
    if (at >= len) return n;
    const uint32_t u = SparseTailWord(key, events, static_cast<uint64_t>(n));
    const uint32_t s = static_cast<uint32_t>((static_cast<uint64_t>(u) * plan.tails) >> 32);
    pos[n] = at;
    idx[n++] = TailIndex(TailDraw(plan, s));
  }
}

}  // namespace detail

namespace ref {

void AnalogMatMulSparseTails(const AnalogProblem& p, AnalogCounts& counts) {
  if (!detail::SparseTails(p)) {
    AnalogMatMul(p, counts);
    return;
  }
  const detail::TailPlan plan = detail::MakeTailPlan(p.readout.adc, detail::MaxPartialSum(p));
  std::vector<int64_t> pos;
  std::vector<uint32_t> idx;
  // Every conversion of the segment gets a draw: where no tail event is, a cell uniform over
  // [lo, hi) (32-bit multiply-shift of word 2, placed by words 0, 1 in a refined cell: Philox at
  // the conversion's coordinates, stream kNoiseStreamA ^ kRefineStream); at an event, its tail
  // value. All are converted in full by the loop.
  const SegmentDraws draws = [&](int64_t m, int64_t blocks, int64_t b, int h,
                                           int cycles, int j, int64_t len, float* z) {
    const uint64_t first = detail::NoiseIndex(m, blocks, b, h, cycles, j, len, 0);
    const uint64_t width = plan.hi - plan.lo;
    for (int64_t i = 0; i < len; ++i) {
      const std::array<uint32_t, 4> w =
          Philox4x32(p.noise_key, kNoiseStreamA ^ kRefineStream, first + static_cast<uint64_t>(i));
      const uint32_t cell = plan.lo + static_cast<uint32_t>((w[2] * width) >> 32);
      z[i] = GaussianDraw(cell, (static_cast<uint64_t>(w[1]) << 32) | w[0]);
    }
    pos.resize(static_cast<size_t>(len));
    idx.resize(static_cast<size_t>(len));
    const int64_t n = detail::SparseTailEvents(p.noise_key, m, blocks, b, h, cycles, j, len, plan,
                                               pos.data(), idx.data());
    const uint64_t refine = detail::SparseTailStream(m, blocks, b, h, cycles, j, 2);
    for (int64_t t = 0; t < n; ++t) {
      z[pos[t]] =
          detail::SparseTailValue(p.noise_key, refine, static_cast<uint64_t>(t), idx[t]);
    }
  };
  AnalogMatMulWithDraws(p, draws, counts);
}

}  // namespace ref
}  // namespace pim::kernels
