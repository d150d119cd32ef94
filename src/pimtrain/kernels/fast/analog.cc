// Fast analog crossbar multiply, the driver: splits the samples over the threads, one Worker
// each (analog_worker.h), and walks each sample's blocks, phases and input cycles. The
// concerns live beside it (analog_worker.h lists the files). Equal to ref::AnalogMatMulAsFast bit
// for bit (codes, outputs and counts), which is ref::AnalogMatMul off the sparse-tail and
// direct-code configurations.

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/rng.h"
#include <memory>
#include <mutex>

#include "pimtrain/kernels/fast/analog_worker.h"

// GCC 12 flags the AVX-512 intrinsics' internal _mm512_undefined_* operands (a false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace pim::kernels::fast {

namespace internal {

Worker::Worker(const AnalogProblem& prob, const PackedAnalogWeights& packed,
               const TailPlan* tail_plan, const DirectPlan* direct_plan)
    : p(prob), pw(packed), plan(tail_plan), lossless(tail_plan != nullptr),
      direct(direct_plan) {
  pd = p.dac_bits;
  pr = p.cell_bits;
  S = p.slices;
  cycles = InputCycles(p.x_bits, pd);
  ncp = p.n * p.polarities;
  blocks = (p.k + p.block - 1) / p.block;
  words = pw.words;
  arrays_per_block = (ncp * S + p.tile_cols - 1) / p.tile_cols;
  groups = SignificanceGroups(cycles, S, pd, pr);
  gains = detail::LineGainsB(cycles, S, pd, pr, groups,
                             p.readout.dataflow == Dataflow::kB && p.readout.line_gains);
  gain_shift = detail::LineGainShiftB(gains);
  xplanes.resize(static_cast<size_t>(2 * p.x_bits * words));
  acc.resize(static_cast<size_t>(ncp));
  applied.resize(static_cast<size_t>(cycles));
  if (!lossless) {
    // Partial sums and draws of the converting paths (the lossless one needs none).
    ps.resize(static_cast<size_t>(cycles * S * ncp));
    psi.resize(static_cast<size_t>(cycles * S * ncp));
    z.resize(static_cast<size_t>(S * ncp));
    if (p.readout.dataflow == Dataflow::kC) z_nnsa.resize(static_cast<size_t>(cycles * ncp));
    if (p.readout.dataflow == Dataflow::kB) {
      z_lines.resize(groups.size() * static_cast<size_t>(ncp));
      // Every partial sum of every block in one line would still fit int32 (else the doubles).
      b_int = p.conductance == nullptr &&
              static_cast<double>(blocks) * cycles * S * static_cast<double>(p.block) *
                      ((1 << pd) - 1) * ((1 << pr) - 1) <
                  2147483647.0;
      if (b_int) {
        lines_i.resize(2 * groups.size() * static_cast<size_t>(ncp));
        line_x.resize(static_cast<size_t>(ncp));
        line_of.resize(static_cast<size_t>(cycles * S));
        for (int j = 0; j < cycles; ++j) {
          for (int q = 0; q < S; ++q) {
            line_of[j * S + q] = static_cast<int>(
                std::find(groups.begin(), groups.end(), j * pd + q * pr) - groups.begin());
          }
        }
      } else {
        lines.resize(2 * groups.size() * static_cast<size_t>(ncp));
      }
    }
    c_exact = p.readout.dataflow == Dataflow::kC && p.conductance == nullptr &&
              p.readout.nnsa_sigma == 0.0f;
    if (c_exact) {
      block_sum.resize(static_cast<size_t>(ncp));
      line_x.resize(static_cast<size_t>(ncp));
    }
  }
  // Worth it when the central draws span less than one code (most conversions then do not
  // depend on them); exact only for a linear transfer (INL's float steps need not be
  // monotone).
  const AdcTransfer& adc = p.readout.adc;
  const float zspan = GaussianFrom16(65535 - kGaussTail) - GaussianFrom16(kGaussTail);
  row_sums = !lossless && (!pw.bytes.empty() || !pw.row_bits.empty()) &&
             p.conductance == nullptr && p.dac_bits == 1 &&
             p.cell_bits == 1 && p.block <= 255;
  if (row_sums) row_list.resize(static_cast<size_t>(p.block));
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__GFNI__)
  // B: the bit-sliced counts as bytes, summed into the lines from there.
  b_bytes = b_int && row_sums && !pw.row_bits.empty();
  if (b_bytes) psb.resize(static_cast<size_t>(cycles * S * ncp));
#endif
  if (direct != nullptr) {
    // One high word per conversion (and up to 3 before the segment's first, its ARS block's);
    // no normals.
    code_words.resize(static_cast<size_t>(S * ncp + 8));
    code_halves.resize(static_cast<size_t>(S * ncp / 2 + 8));
    code_lo.resize(static_cast<size_t>(S * ncp + 8));
    unsure_pos.resize(static_cast<size_t>(S * ncp + 8));
    use_window = direct->win_k > 0 && Kernels().direct_window_segment != nullptr &&
                 DirectWindowEnabled();
#if defined(__AVX512F__) && defined(__AVX512BW__)
    // The AVX-512 row sums hand the window bytes (sums of at most block <= 255 cells).
    if (use_window && row_sums) psb.resize(static_cast<size_t>(cycles * S * ncp));
#endif
    ars = std::make_unique<ArsKeys>(p.noise_key);
  }
  shortcut = direct == nullptr && Kernels().convert_a_small_noise != nullptr && !lossless &&
             p.readout.dataflow == Dataflow::kA && adc.sigma != 0.0f &&
             adc.inl_k == 0.0f && adc.sigma * zspan * adc.inv_lsb < 1.0f;
  if (shortcut) {
    uni.resize(static_cast<size_t>(S * ncp));
    tails.resize(static_cast<size_t>(ncp + 16));
  }
  if (lossless && p.readout.adc.sigma != 0.0f) {
    gap_tables = std::make_unique<GapTables>(*plan);
    ars = std::make_unique<ArsKeys>(p.noise_key);
    ev_pos.resize(static_cast<size_t>(S * ncp + 16));
    ev_idx.resize(static_cast<size_t>(S * ncp));
    slice_of.resize(static_cast<size_t>(S * ncp));
    for (int q = 0; q < S; ++q) {
      std::fill(slice_of.begin() + q * ncp, slice_of.begin() + (q + 1) * ncp,
                static_cast<uint8_t>(q));
    }
    // |corr| <= blocks * 2 phases * sum_j 2^(j pd) * top (a code moves by at most top).
    const double bound = static_cast<double>(blocks) * 2.0 * std::ldexp(1.0, p.x_bits + pd) *
                         (p.readout.adc.max_code + 1.0);
    narrow_corr = bound < 2147483647.0;
    if (narrow_corr) {
      corr32.assign(static_cast<size_t>(S * ncp), 0);
    } else {
      corr64.assign(static_cast<size_t>(S * ncp), 0);
    }
  }
}

void Worker::Sample(int64_t m) {
  const int32_t* xm = p.x + m * p.ldx;
  std::fill(acc.begin(), acc.end(), 0);
  std::fill(lines.begin(), lines.end(), 0.0);
  std::fill(lines_i.begin(), lines_i.end(), 0);
  phase_any[0] = phase_any[1] = 0;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t r0 = b * p.block, r1 = std::min(p.k, r0 + p.block), rows = r1 - r0;
    c.input_buffer_reads += rows * arrays_per_block;
    (this->*Kernels().build_planes)(xm, r0, r1);
    const int64_t wn = (rows + 63) / 64;  // words holding this block's rows
    for (int h = 0; h < (p.signed_inputs ? 2 : 1); ++h) {
      const int64_t sign = h == 0 ? 1 : -1;
      bool phase_applied = false;
      for (int j = 0; j < cycles; ++j) {
        // Word lines driven in this cycle: rows whose chunk is nonzero.
        int64_t nonzero = 0;
        for (int64_t w = 0; w < wn; ++w) {
          uint64_t any = 0;
          for (int a = 0; a < pd; ++a) {
            const int t = j * pd + a;
            if (t < p.x_bits) any |= XPlane(h, t)[w];
          }
          nonzero += __builtin_popcountll(any);
        }
        applied[j] = nonzero > 0 || !p.skip_zero_cycles;
        const int64_t reads = arrays_per_block * p.reads_per_cycle;
        if (!applied[j]) {
          c.skipped_input_cycles += reads;
          continue;
        }
        phase_applied = true;
        c.input_cycles += reads;
        c.dac_conversions += rows * reads;
        c.cell_reads += nonzero * ncp * S;
        if (lossless) {
          // The codes' sum is in prod; only the noise's tail draws change it (dataflow A).
          const int64_t len = S * ncp;
          if (p.readout.dataflow == Dataflow::kA) {
            // No draw can move a code when the tails' e are all 0 (sigma below ~0.116 LSB:
            // the 16-bit quantiles end at 4.3 sigma): nothing to look at.
            if (p.readout.adc.sigma != 0.0f && plan->tails > 0) {
              CorrectTails(m, b, h, j, sign);
            }
            c.adc_conversions += len;
            c.sample_holds += len;
            c.shift_adds += len;
          } else {
            // B: every partial sum through its TIA into the analog buffer, read once.
            c.tia_conversions += len;
            c.analog_buffer_writes += len;
            c.analog_buffer_reads += len;
          }
          continue;
        }
        if (c_exact) {
          // C: the block's product replaces the cycles' partial sums (ReadoutCExact).
          continue;
        }
        if (table != nullptr) {
          if (nonzero <= table_few_lines) {
            // So few driven lines that every code is 0 or its partial sum.
            ConvertATableFewLines(r0, h, j, sign, nonzero, wn);
            continue;
          }
          table_vbound = LinesBound(nonzero);
        }
        sums8 = false;
        if (p.conductance != nullptr) {
          ConductanceSums(xm, r0, r1, h, j);
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__GFNI__)
        } else if (row_sums && (use_window || b_bytes || use_table8) && !psb.empty() &&
                   !pw.row_bits.empty()) {
          // Bit-sliced counts cost ~4 instructions per driven row and 512 bit lines: cheaper
          // than the popcount at any number of driven rows.
          sums8 = true;
          RowCountsAvx512(b, h, j, wn);
#endif
        } else if (row_sums && !pw.bytes.empty() && nonzero <= kRowSumsMaxLines) {
          sums8 = (use_window || use_table8) && !psb.empty();
          (this->*Kernels().row_sums)(b, h, j, wn);
        } else if (words == 1) {
          PopcountSums<1>(b, h, j, 1);
        } else if (words == 2) {
          // A short last block's padding words are zero in both operands.
          PopcountSums<2>(b, h, j, 2);
        } else {
          PopcountSums<0>(b, h, j, wn);
        }
        const bool integer = p.conductance == nullptr;
        if (p.readout.dataflow == Dataflow::kA) {
          ConvertA(m, b, h, j, sign, integer);
        } else if (b_int) {
          AddLinesBInt(h, j);
        } else if (integer) {
          const int64_t len = S * ncp;
          for (int64_t i = 0; i < len; ++i) {
            ps[j * len + i] = static_cast<float>(psi[j * len + i]);
          }
        }
        if (p.readout.dataflow == Dataflow::kB) {
          c.tia_conversions += S * ncp;
          c.analog_buffer_writes += S * ncp;
          c.analog_buffer_reads += S * ncp;
        }
      }
      if (!phase_applied) continue;
      if (p.readout.dataflow == Dataflow::kB) phase_any[h] = 1;
      if (lossless) continue;
      if (p.readout.dataflow == Dataflow::kB && b_int) {
        // R-Mapping: the block's partial sums joined the lines cycle by cycle (AddLinesBInt).
      } else if (p.readout.dataflow == Dataflow::kB) {
        // R-Mapping: this block's partial sums join the output's buffer lines.
        detail::AccumulateLinesB(ps.data(), applied.data(), cycles, S, ncp, groups, pd, pr,
                                 lines.data() + h * groups.size() * ncp);
      } else if (p.readout.dataflow == Dataflow::kC) {
        if (p.readout.nnsa_sigma != 0.0f) {
          FillNormals(p.noise_key, kNoiseStreamNnsa,
                      detail::NoiseIndex(m, blocks, b, h, cycles, 0, ncp, 0), cycles * ncp,
                      z_nnsa.data());
        }
        if (p.readout.adc.sigma != 0.0f) {
          FillNormals(p.noise_key, kNoiseStreamNnadc,
                      detail::NoiseIndex(m, blocks, b, h, 1, 0, ncp, 0), ncp, z.data());
        }
        if (c_exact) {
          ReadoutCExact(xm, r0, r1, h, sign);
          continue;
        }
        const int64_t done = (this->*Kernels().readout_c_columns)(sign);
        detail::ReadoutC(ps.data(), applied.data(), cycles, S, ncp, pd, pr, p.readout,
                         z_nnsa.data(), z.data(), sign, acc.data(), c, done);
      }
    }
  }
  if (p.readout.dataflow == Dataflow::kB) {
    // Each buffer line converted once per output and applied phase, after the last block.
    const int64_t nl = static_cast<int64_t>(groups.size());
    for (int h = 0; h < 2; ++h) {
      if (!phase_any[h]) continue;
      if (lossless) {
        c.adc_conversions += nl * ncp;
        c.sample_holds += nl * ncp;
        c.shift_adds += nl * ncp;
        continue;
      }
      if (p.readout.adc.sigma != 0.0f) {
        FillNormals(p.noise_key, kNoiseStreamB, detail::NoiseIndex(m, 1, 0, h, nl, 0, ncp, 0),
                    nl * ncp, z_lines.data());
      }
      if (b_int) {
        ConvertLinesBInt(h, h == 0 ? 1 : -1);
        continue;
      }
      detail::ConvertLinesB(lines.data() + h * nl * ncp, ncp, groups, gains, p.readout,
                            z_lines.data(), h == 0 ? 1 : -1, acc.data(), c);
    }
  }
  if (!acc32.empty()) FoldTableAcc();  // the code table's int32 sums (ConvertATable)
  int64_t* y = p.y + m * p.ldy;
  if (lossless) {
    // Locals, not members: stores through a and cq could otherwise alias this->ncp, and the
    // loops would reload it every element instead of vectorizing.
    const int64_t n_cp = ncp;
    int64_t* __restrict a = acc.data();
    auto fold = [&](auto& corr) {
      if (corr.empty()) return;
      // acc[cp] += sum_q corr[q ncp + cp] << q pr; corr back to zero.
      for (int q = 0; q < S; ++q) {
        auto* __restrict cq = corr.data() + q * n_cp;
        const int sh = q * pr;
        for (int64_t cp = 0; cp < n_cp; ++cp) a[cp] += static_cast<int64_t>(cq[cp]) << sh;
        std::fill(cq, cq + n_cp, 0);
      }
    };
    fold(corr32);
    fold(corr64);
    const int64_t* __restrict pr_m = prod.data() + (m - prod_m0) * n_cp;
    // B's line gains: a lossless line converts to value 2^e_l, added << (s + E - e_l).
    const int e = gain_shift;
    for (int64_t cp = 0; cp < n_cp; ++cp) a[cp] += pr_m[cp] << e;
  }
  if (p.polarities == 1) {
    std::copy(acc.begin(), acc.begin() + p.n, y);
  } else {
    for (int64_t col = 0; col < p.n; ++col) y[col] = acc[col * 2] - acc[col * 2 + 1];
  }
}

}  // namespace internal

using internal::Worker;
using detail::kTailHiBase;
using detail::kUnsafeTail;
using detail::TailIndex;
using detail::kGapSteps;
using detail::TailPlan;


namespace {
// The caller thread's last few plans of one kind (tail plans, direct-code laws, code tables),
// keyed by the transfer parameters they depend on: a network's layers and directions alternate
// between several. The oldest is dropped past 16.
template <class T, size_t K>
class PlanCache {
 public:
  template <class Make>
  const T* Get(const std::array<double, K>& key, Make make) {
    auto it = std::find_if(items_.begin(), items_.end(),
                           [&](const Item& c) { return c.key == key; });
    if (it != items_.end()) return it->plan.get();
    if (items_.size() == kMax) items_.erase(items_.begin());
    items_.push_back({key, make()});
    return items_.back().plan.get();
  }

 private:
  static constexpr size_t kMax = 16;
  struct Item {
    std::array<double, K> key;
    std::unique_ptr<T> plan;
  };
  std::vector<Item> items_;
};
}  // namespace

void AnalogMatMul(const AnalogProblem& p, const PackedAnalogWeights* packed, AnalogCounts& counts,
                  ThreadPool* pool) {
  PIM_CHECK(p.m >= 0 && p.k >= 0 && p.n >= 0 && p.block >= 1 && p.tile_cols >= 1);
  PIM_CHECK(p.x_bits >= 1 && p.x_bits <= 16 && p.dac_bits >= 1 && p.dac_bits <= 8);
  PIM_CHECK(p.cell_bits >= 1 && p.cell_bits <= 4 && p.slices >= 1 &&
            p.slices * p.cell_bits <= 16 && (p.polarities == 1 || p.polarities == 2));
  PackedAnalogWeights local;
  if (packed == nullptr) {
    PackWeights(p, local, pool);
    packed = &local;
  }
  PIM_CHECK_MSG(packed->k == p.k && packed->ncp == p.n * p.polarities && packed->block == p.block &&
                    packed->bits == p.slices * p.cell_bits,
                "packed analog weights do not match the problem");
  const int64_t ncp = p.n * p.polarities;
  const int64_t blocks = (p.k + p.block - 1) / p.block;
  // Work per sample ~ conversions; chunks of whole samples.
  const int64_t per_sample = std::max<int64_t>(1, blocks * ncp * p.slices * 4);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / per_sample);
  // Sparse tails: the plan depends on sigma, M and vmax only.
  thread_local PlanCache<TailPlan, 3> plans;
  const bool lossless = LosslessReadout(p) && !packed->pairs.empty();
  const TailPlan* plan = nullptr;
  if (lossless) {
    static const TailPlan kNoTails;  // no noise: no sparse tails are drawn
    plan = &kNoTails;
  }
  if (lossless && p.readout.adc.sigma != 0.0f) {
    const double vmax = detail::MaxPartialSum(p);
    plan = plans.Get({p.readout.adc.sigma, p.readout.adc.max_code, vmax}, [&] {
      return std::make_unique<TailPlan>(detail::MakeTailPlan(p.readout.adc, vmax));
    });
  }
  // Direct codes: the law and its guide depend on sigma, lsb, M and vmax only.
  thread_local PlanCache<internal::DirectPlan, 4> directs;
  const internal::DirectPlan* direct = nullptr;
  if (!lossless && detail::DirectCodes(p) && p.conductance == nullptr) {
    const int64_t vmax = static_cast<int64_t>(detail::MaxPartialSum(p));
    direct = directs.Get({p.readout.adc.sigma, p.readout.adc.inv_lsb, p.readout.adc.max_code,
                          static_cast<double>(vmax)},
                         [&] { return std::make_unique<internal::DirectPlan>(p.readout.adc, vmax); });
  }
  // Noiseless dataflow A with integer partial sums: the code table (aspeed7), which depends on
  // the transfer's lsb, M, INL and sigma and on vmax.
  thread_local PlanCache<internal::CodeTable, 5> tables;
  const internal::CodeTable* table = nullptr;
  if (!lossless && internal::CodeTableApplies(p)) {
    const int64_t vmax = static_cast<int64_t>(detail::MaxPartialSum(p));
    const AdcTransfer& adc = p.readout.adc;
    table = tables.Get({adc.inv_lsb, adc.max_code, adc.inl_k, adc.sigma, static_cast<double>(vmax)},
                       [&] { return std::make_unique<internal::CodeTable>(adc, vmax); });
  }
  // 1-bit DACs and cells: the cells as byte rows for partial sums by row addition, or (the
  // direct codes' window, AVX-512 with GFNI) as bit rows for the bit-sliced counts; each built
  // once per programming (PackWeights clears them), when a call first needs it, here in the
  // calling thread.
  static std::mutex bytes_mu;  // two callers of the same weights must not both build them
  std::unique_lock<std::mutex> bytes_lock(bytes_mu);
  if (!lossless && p.conductance == nullptr && p.dac_bits == 1 && p.cell_bits == 1 &&
      p.block <= 255 && p.m > 0) {
    const int64_t len = p.slices * ncp;
    bool bits_wanted = false;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__GFNI__)
    // The code table's vector variant reads byte counts (noiseless dataflow A, aspeed7).
    const bool table8 = table != nullptr && table->bytes &&
                        internal::Kernels().code_table_segment != nullptr;
    // B's lines take byte counts too (Worker::AddLinesBInt).
    bits_wanted = (direct != nullptr && direct->win_k > 0 &&
                   internal::Kernels().direct_window_segment != nullptr &&
                   internal::DirectWindowEnabled()) ||
                  p.readout.dataflow == Dataflow::kB || table8;
    if (bits_wanted && packed->row_bits.empty()) {
      const int64_t rw = (len + 511) / 512 * 8;
      packed->row_bit_words = rw;
      packed->row_bits.assign(static_cast<size_t>(blocks * p.block * rw), 0);
      std::vector<uint8_t> row((len + 511) / 512 * 512, 0);
      for (int64_t r = 0; r < p.k; ++r) {
        if (ncp % 16 == 0) {
          internal::RowBitsFromLevels(p.w + r * ncp, ncp, p.slices,
                                      packed->row_bits.data() + r * rw);
          continue;
        }
        internal::LevelBitsRow(p.w + r * ncp, ncp, p.slices, row.data());
        internal::RowBitsFromBytes(row.data(), len, packed->row_bits.data() + r * rw);
      }
    }
#endif
    if (!bits_wanted && packed->bytes.empty()) {
      const int64_t rb = (len + 31) / 32 * 32;
      packed->bytes.assign(static_cast<size_t>(blocks * p.block * rb), 0);
      packed->row_bytes = rb;
      for (int64_t r = 0; r < p.k; ++r) {
        internal::LevelBitsRow(p.w + r * ncp, ncp, p.slices, packed->bytes.data() + r * rb);
      }
    }
  }
  bytes_lock.unlock();
  auto run = [&](int64_t m0, int64_t m1) {
    Worker wk(p, *packed, plan, direct);
    wk.SetCodeTable(table);
    if (wk.lossless) wk.ExactProduct(m0, m1);
    for (int64_t m = m0; m < m1; ++m) wk.Sample(m);
    return wk.c;
  };
  AnalogCounts total;
  if (pool == nullptr || p.m <= grain) {
    total = run(0, p.m);
  } else {
    std::mutex mu;
    pool->ParallelFor(p.m, grain, [&](int64_t m0, int64_t m1) {
      AnalogCounts part = run(m0, m1);
      std::lock_guard<std::mutex> lock(mu);
      total += part;  // integer sums: the order of the chunks does not change them
    });
  }
  total.tile_accumulations = p.m * p.n * std::max<int64_t>(blocks - 1, 0);
  total.output_buffer_writes = p.m * p.n;
  total.macs = p.m * p.k * p.n;
  counts = total;
}

}  // namespace pim::kernels::fast
