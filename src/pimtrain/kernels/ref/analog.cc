// Reference analog crossbar multiply: the array's cycle-by-cycle read-out, written to read like
// "for each input cycle, each weight slice, each column: partial sum over the row block ->
// (noise) -> ADC -> shift -> accumulate" (docs/analog.md).
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/kernels/analog.h"

namespace pim::kernels {

PIM_DECLARE_COUNTERS(
    AnalogKernelCounters, "analog kernel",
    {"macs", "MAC", "FP BP GC CAL", "logical multiply-accumulates (m k n)"},
    {"input_cycles", "array cycle", "FP BP CAL",
     "array read cycles: (array, applied input cycle, read)"},
    {"skipped_input_cycles", "array cycle", "FP BP CAL",
     "array read cycles skipped because the block's inputs were all 0"},
    {"dac_conversions", "word-line drive", "FP BP CAL",
     "word lines driven per applied array cycle"},
    {"cell_reads", "cell read", "FP BP CAL", "cells on driven (nonzero-input) rows x bit lines"},
    {"adc_conversions", "conversion", "FP BP CAL", "ADC conversions"},
    {"adc_clipped", "conversion", "FP BP CAL",
     "conversions whose ideal code fell outside the range"},
    {"shift_adds", "add", "FP BP CAL", "ADC codes (or bit-plane sums) shifted and added digitally"},
    {"sample_holds", "capture", "FP BP CAL", "sample-and-hold captures"},
    {"analog_buffer_writes", "write", "FP BP CAL",
     "dataflow B: partial sums written into buffer RRAM cells (one-shot, through a TIA)"},
    {"tia_conversions", "conversion", "FP BP CAL",
     "dataflow B: bit-line currents turned into buffer write voltages by trans-impedance "
     "amplifiers"},
    {"analog_buffer_reads", "cell read", "FP BP CAL",
     "dataflow B: buffer cells read when a buffer line is summed in current for its conversion"},
    {"analog_accumulations", "step", "FP BP CAL", "dataflow C: neural shift-and-add (NNS+A) steps"},
    {"tile_accumulations", "add", "FP BP GC CAL", "digital adds merging row blocks' results"},
    {"input_buffer_reads", "element", "FP BP CAL", "input elements read out to the arrays"},
    {"output_buffer_writes", "element", "FP BP CAL", "finished outputs written"});

void AnalogCounts::AddTo(ActionCounts& counts) const {
  counts.Add("macs", macs);
  counts.Add("input_cycles", input_cycles);
  counts.Add("skipped_input_cycles", skipped_input_cycles);
  counts.Add("dac_conversions", dac_conversions);
  counts.Add("cell_reads", cell_reads);
  counts.Add("adc_conversions", adc_conversions);
  counts.Add("adc_clipped", adc_clipped);
  counts.Add("shift_adds", shift_adds);
  counts.Add("sample_holds", sample_holds);
  counts.Add("analog_buffer_writes", analog_buffer_writes);
  counts.Add("tia_conversions", tia_conversions);
  counts.Add("analog_buffer_reads", analog_buffer_reads);
  counts.Add("analog_accumulations", analog_accumulations);
  counts.Add("tile_accumulations", tile_accumulations);
  counts.Add("input_buffer_reads", input_buffer_reads);
  counts.Add("output_buffer_writes", output_buffer_writes);
}

std::vector<int> SignificanceGroups(int cycles, int slices, int dac_bits, int cell_bits) {
  std::vector<int> s;
  for (int j = 0; j < cycles; ++j) {
    for (int q = 0; q < slices; ++q) s.push_back(j * dac_bits + q * cell_bits);
  }
  std::sort(s.begin(), s.end());
  s.erase(std::unique(s.begin(), s.end()), s.end());
  return s;
}

namespace detail {

int FullestLineB(int cycles, int slices, int dac_bits, int cell_bits) {
  int most = 0;
  for (int s : SignificanceGroups(cycles, slices, dac_bits, cell_bits)) {
    int n = 0;
    for (int j = 0; j < cycles; ++j) {
      for (int q = 0; q < slices; ++q) n += j * dac_bits + q * cell_bits == s;
    }
    most = std::max(most, n);
  }
  return most;
}

void AccumulateLinesB(const float* ps, const uint8_t* applied, int cycles, int slices,
                      int64_t ncp, const std::vector<int>& groups, int dac_bits, int cell_bits,
                      double* lines) {
  const int64_t nl = static_cast<int64_t>(groups.size());
  for (int64_t l = 0; l < nl; ++l) {
    const int s = groups[l];
    double* line = lines + l * ncp;
    for (int j = 0; j < cycles; ++j) {
      if (!applied[j]) continue;
      for (int q = 0; q < slices; ++q) {
        if (j * dac_bits + q * cell_bits != s) continue;
        const float* row = ps + (j * slices + q) * ncp;
        for (int64_t cp = 0; cp < ncp; ++cp) line[cp] += row[cp];
      }
    }
  }
}

std::vector<int> LineGainsB(int cycles, int slices, int dac_bits, int cell_bits,
                            const std::vector<int>& groups, bool line_gains) {
  std::vector<int> e(groups.size(), 0);
  if (!line_gains) return e;
  const int most = FullestLineB(cycles, slices, dac_bits, cell_bits);
  for (size_t l = 0; l < groups.size(); ++l) {
    int n = 0;
    for (int j = 0; j < cycles; ++j) {
      for (int q = 0; q < slices; ++q) n += j * dac_bits + q * cell_bits == groups[l];
    }
    while (n > 0 && (n << (e[l] + 1)) <= most) ++e[l];
  }
  return e;
}

int LineGainShiftB(const std::vector<int>& gains) {
  return gains.empty() ? 0 : *std::max_element(gains.begin(), gains.end());
}

void ConvertLinesB(const double* lines, int64_t ncp, const std::vector<int>& groups,
                   const std::vector<int>& gains, const AnalogReadout& ro, const float* z,
                   int64_t sign, int64_t* acc, AnalogCounts& c) {
  const int64_t nl = static_cast<int64_t>(groups.size());
  const int big = LineGainShiftB(gains);
  for (int64_t l = 0; l < nl; ++l) {
    const int shift = groups[l] + big - gains[l];
    // The line's gain 2^e_l (a power of two: exact in double, then one rounding to float).
    const double g = std::ldexp(1.0, gains[l]);
    for (int64_t cp = 0; cp < ncp; ++cp) {
      const float zl = ro.adc.sigma != 0.0f ? z[l * ncp + cp] : 0.0f;
      const AdcTransfer::Result r =
          ro.adc.Convert(static_cast<float>(lines[l * ncp + cp] * g), zl);
      acc[cp] += sign * (static_cast<int64_t>(r.code) << shift);
      c.adc_clipped += r.clipped;
    }
  }
  c.adc_conversions += nl * ncp;
  c.sample_holds += nl * ncp;
  c.shift_adds += nl * ncp;
}

void ReadoutC(const float* ps, const uint8_t* applied, int cycles, int slices, int64_t ncp,
              int dac_bits, int cell_bits, const AnalogReadout& ro, const float* z_nnsa,
              const float* z_adc, int64_t sign, int64_t* acc, AnalogCounts& c,
              int64_t cp_begin) {
  const double feedback = std::ldexp(1.0, -dac_bits);
  const double unscale = std::ldexp(1.0, (cycles - 1) * dac_bits);
  // 2^(q P_R): multiplying by it is ldexp (exact).
  double weight[16];
  for (int q = 0; q < slices; ++q) weight[q] = std::ldexp(1.0, q * cell_bits);
  for (int64_t cp = cp_begin; cp < ncp; ++cp) {
    // NNS+A: V_j = 2^-P_D V_{j-1} + sum_q 2^(q P_R) ps_jq (+ noise), LSB-first inputs.
    double v = 0;
    for (int j = 0; j < cycles; ++j) {
      double s = 0;
      if (applied[j]) {
        for (int q = 0; q < slices; ++q) {
          s += static_cast<double>(ps[(j * slices + q) * ncp + cp]) * weight[q];
        }
      }
      v = v * feedback + s;
      if (ro.nnsa_sigma != 0.0f) {
        v += static_cast<double>(ro.nnsa_sigma) * z_nnsa[j * ncp + cp];
      }
    }
    const float z = ro.adc.sigma != 0.0f ? z_adc[cp] : 0.0f;
    const AdcTransfer::Result r = ro.adc.Convert(static_cast<float>(v * unscale), z);
    acc[cp] += sign * static_cast<int64_t>(r.code);
    c.adc_clipped += r.clipped;
  }
  const int64_t cols = ncp - cp_begin;
  c.analog_accumulations += cycles * cols;
  c.sample_holds += cycles * cols;
  c.adc_conversions += cols;
  c.shift_adds += cols;
}


}  // namespace detail

namespace ref {

namespace {

// The loop of AnalogMatMulWithDraws (draws) and AnalogMatMulWithCodes (codes non-null: dataflow
// A's integer conversions take codes(v, i) instead of a draw and the transfer).
void MatMul(const AnalogProblem& p, const SegmentDraws& draws, const CodeSampler* codes,
            AnalogCounts& counts) {
  PIM_CHECK(p.m >= 0 && p.k >= 0 && p.n >= 0 && p.block >= 1 && p.tile_cols >= 1);
  PIM_CHECK(p.x_bits >= 1 && p.x_bits <= 16 && p.dac_bits >= 1 && p.dac_bits <= 8);
  PIM_CHECK(p.cell_bits >= 1 && p.cell_bits <= 4 && p.slices >= 1 &&
            p.slices * p.cell_bits <= 16 && (p.polarities == 1 || p.polarities == 2));
  const int pd = p.dac_bits, pr = p.cell_bits, S = p.slices;
  const int cycles = InputCycles(p.x_bits, pd);
  const int64_t ncp = p.n * p.polarities;
  const int64_t blocks = (p.k + p.block - 1) / p.block;
  const int64_t arrays_per_block = (ncp * S + p.tile_cols - 1) / p.tile_cols;
  const int32_t xmax = (1 << p.x_bits) - 1, dmask = (1 << pd) - 1, cmask = (1 << pr) - 1;
  const std::vector<int> groups = SignificanceGroups(cycles, S, pd, pr);
  AnalogCounts c;

  // The cell of slice q at (r, cp) as the array conducts it.
  auto cell = [&](int64_t r, int q, int64_t cp) -> float {
    if (p.conductance != nullptr) return p.conductance[(r * S + q) * ncp + cp];
    return static_cast<float>((p.w[r * ncp + cp] >> (q * pr)) & cmask);
  };
  for (int64_t r = 0; r < p.k; ++r) {
    for (int64_t cp = 0; cp < ncp; ++cp) {
      PIM_CHECK_MSG(p.w[r * ncp + cp] >= 0 && p.w[r * ncp + cp] < (1 << (S * pr)),
                    "analog weight level out of range");
    }
  }

  std::vector<int64_t> acc(static_cast<size_t>(ncp));
  std::vector<float> ps(static_cast<size_t>(cycles * S * ncp));
  std::vector<int32_t> chunk(static_cast<size_t>(p.block));
  std::vector<uint8_t> applied(static_cast<size_t>(cycles));
  std::vector<float> z_nnsa(static_cast<size_t>(cycles * ncp)), z_adc(static_cast<size_t>(ncp));
  std::vector<float> z_lines(groups.size() * static_cast<size_t>(ncp));
  // Dataflow B's buffer lines of one sample, per phase: lines[(h * nl + l) * ncp + cp].
  const int64_t nl = static_cast<int64_t>(groups.size());
  std::vector<double> lines(p.readout.dataflow == Dataflow::kB ? 2 * nl * ncp : 0);
  uint8_t phase_any[2] = {0, 0};
  const std::vector<int> gains =
      detail::LineGainsB(cycles, S, pd, pr, groups, p.readout.line_gains);
  // Dataflow A's draws of one segment (m, b, h, j): z_seg[q * ncp + cp].
  const bool noisy_a = p.readout.dataflow == Dataflow::kA && p.readout.adc.sigma != 0.0f &&
                       codes == nullptr;
  const bool coded = codes != nullptr && p.readout.dataflow == Dataflow::kA &&
                     p.conductance == nullptr;
  std::vector<float> z_seg(noisy_a ? static_cast<size_t>(S * ncp) : 0);
  for (int64_t m = 0; m < p.m; ++m) {
    const int32_t* xm = p.x + m * p.ldx;
    for (int64_t r = 0; r < p.k; ++r) {
      PIM_CHECK_MSG(std::abs(xm[r]) <= xmax && (p.signed_inputs || xm[r] >= 0),
                    "analog input out of range");
    }
    std::fill(acc.begin(), acc.end(), 0);
    std::fill(lines.begin(), lines.end(), 0.0);
    phase_any[0] = phase_any[1] = 0;
    for (int64_t b = 0; b < blocks; ++b) {  // one row block: the arrays sharing these word lines
      const int64_t r0 = b * p.block, r1 = std::min(p.k, r0 + p.block), rows = r1 - r0;
      c.input_buffer_reads += rows * arrays_per_block;
      for (int h = 0; h < (p.signed_inputs ? 2 : 1); ++h) {  // phase: positive, then negative x
        const int64_t sign = h == 0 ? 1 : -1;
        bool phase_applied = false;
        for (int j = 0; j < cycles; ++j) {  // input cycle: one DAC chunk, LSB first
          int64_t nonzero = 0;
          for (int64_t r = r0; r < r1; ++r) {
            const int32_t part = h == 0 ? std::max(xm[r], 0) : std::max(-xm[r], 0);
            chunk[r - r0] = (part >> (j * pd)) & dmask;
            nonzero += chunk[r - r0] != 0;
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
          if (noisy_a) draws(m, blocks, b, h, cycles, j, S * ncp, z_seg.data());
          for (int q = 0; q < S; ++q) {      // weight slice
            for (int64_t cp = 0; cp < ncp; ++cp) {  // bit line (column, polarity)
              // Partial sum over the block: integer levels sum exactly; conductances in float,
              // word line after word line.
              float sum;
              int64_t isum = 0;
              if (p.conductance != nullptr) {
                sum = 0.0f;
                for (int64_t r = r0; r < r1; ++r) {
                  if (chunk[r - r0] != 0) sum += static_cast<float>(chunk[r - r0]) * cell(r, q, cp);
                }
              } else {
                for (int64_t r = r0; r < r1; ++r) {
                  isum += chunk[r - r0] * static_cast<int64_t>(cell(r, q, cp));
                }
                sum = static_cast<float>(isum);
              }
              ps[(j * S + q) * ncp + cp] = sum;
              if (p.readout.dataflow != Dataflow::kA) continue;
              // Dataflow A: this partial sum -> noise -> ADC -> shift -> accumulate.
              const float z = noisy_a ? z_seg[q * ncp + cp] : 0.0f;
              const AdcTransfer::Result res =
                  coded ? (*codes)(isum, detail::NoiseIndex(m, blocks, b, h, cycles, j, S * ncp,
                                                            q * ncp + cp))
                        : p.readout.adc.Convert(sum, z);
              acc[cp] += sign * (static_cast<int64_t>(res.code) << (j * pd + q * pr));
              c.adc_clipped += res.clipped;
              ++c.adc_conversions;
              ++c.sample_holds;
              ++c.shift_adds;
            }
          }
          if (p.readout.dataflow == Dataflow::kB) {
            // Each bit line's current through its TIA into one buffer cell, read once when its
            // line is summed.
            c.tia_conversions += S * ncp;
            c.analog_buffer_writes += S * ncp;
            c.analog_buffer_reads += S * ncp;
          }
        }
        if (!phase_applied) continue;
        if (p.readout.dataflow == Dataflow::kB) {
          // R-Mapping: this block's partial sums join the output's buffer lines; converted
          // after the last block.
          phase_any[h] = 1;
          detail::AccumulateLinesB(ps.data(), applied.data(), cycles, S, ncp, groups, pd, pr,
                                   lines.data() + h * nl * ncp);
        } else if (p.readout.dataflow == Dataflow::kC) {
          // The NNS+A and NNADC draws of this (m, b, h), at their coordinates.
          if (p.readout.nnsa_sigma != 0.0f) {
            for (int j = 0; j < cycles; ++j) {
              for (int64_t cp = 0; cp < ncp; ++cp) {
                z_nnsa[j * ncp + cp] =
                    NoiseNormal(p.noise_key, kNoiseStreamNnsa,
                                detail::NoiseIndex(m, blocks, b, h, cycles, j, ncp, cp));
              }
            }
          }
          if (p.readout.adc.sigma != 0.0f) {
            for (int64_t cp = 0; cp < ncp; ++cp) {
              z_adc[cp] = NoiseNormal(p.noise_key, kNoiseStreamNnadc,
                                      detail::NoiseIndex(m, blocks, b, h, 1, 0, ncp, cp));
            }
          }
          detail::ReadoutC(ps.data(), applied.data(), cycles, S, ncp, pd, pr, p.readout,
                           z_nnsa.data(), z_adc.data(), sign, acc.data(), c);
        }
      }
    }
    if (p.readout.dataflow == Dataflow::kB) {
      for (int h = 0; h < 2; ++h) {
        if (!phase_any[h]) continue;
        // The buffer lines' draws of this (m, h), at their coordinates.
        if (p.readout.adc.sigma != 0.0f) {
          for (int64_t l = 0; l < nl; ++l) {
            for (int64_t cp = 0; cp < ncp; ++cp) {
              z_lines[l * ncp + cp] = NoiseNormal(p.noise_key, kNoiseStreamB,
                                                  detail::NoiseIndex(m, 1, 0, h, nl, l, ncp, cp));
            }
          }
        }
        detail::ConvertLinesB(lines.data() + h * nl * ncp, ncp, groups, gains, p.readout,
                              z_lines.data(), h == 0 ? 1 : -1, acc.data(), c);
      }
    }
    int64_t* y = p.y + m * p.ldy;
    for (int64_t col = 0; col < p.n; ++col) {
      y[col] = acc[col * p.polarities];
      if (p.polarities == 2) y[col] -= acc[col * 2 + 1];  // W- column subtracted digitally
    }
  }
  c.tile_accumulations = p.m * p.n * std::max<int64_t>(blocks - 1, 0);
  c.output_buffer_writes = p.m * p.n;
  c.macs = p.m * p.k * p.n;
  counts = c;
}

}  // namespace

void AnalogMatMulWithDraws(const AnalogProblem& p, const SegmentDraws& draws,
                           AnalogCounts& counts) {
  MatMul(p, draws, nullptr, counts);
}

void AnalogMatMulWithCodes(const AnalogProblem& p, const CodeSampler& codes,
                           AnalogCounts& counts) {
  MatMul(p, SegmentDraws(), &codes, counts);
}

void AnalogMatMul(const AnalogProblem& p, AnalogCounts& counts) {
  // One draw per conversion from NoiseNormal at the conversion's coordinates.
  const SegmentDraws per_conversion = [&p](int64_t m, int64_t blocks, int64_t b, int h,
                                           int cycles, int j, int64_t len, float* z) {
    const uint64_t first = detail::NoiseIndex(m, blocks, b, h, cycles, j, len, 0);
    for (int64_t i = 0; i < len; ++i) z[i] = NoiseNormal(p.noise_key, kNoiseStreamA, first + i);
  };
  AnalogMatMulWithDraws(p, per_conversion, counts);
}

}  // namespace ref
}  // namespace pim::kernels
