// FP digital CIM (fp_digital, ISSCC 2025 14.5) measurements, as Google Benchmark counters:
//  - FpApproxNmed: NMED of the approximate MAC (broken-array multipliers, lower-part-OR
//    adders, bias compensation) against the exact MAC on random data;
//  - FpDotError: relative error of single dot products (BF16 / FP8 through the whole macro:
//    encode, pre-alignment, MAC, FP32 output) against FP64, by exponent spread;
//  - FpDcimFast / FpMacroForward vs Sgemm: speed of the fast kernel and of a whole forward
//    Multiply against OpenBLAS sgemm on the same shape.
// bench/fp_study.py runs these with --benchmark_format=json and tabulates the counters.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/fp_dcim.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/numerics/formats.h"
#include "pimtrain/numerics/prealign.h"

namespace {

using pim::kernels::DcimProblem;

// Aligned operands of `bits`: uniform over the full range (kind 0), or Gaussian vectors encoded
// to BF16/FP8 and pre-aligned vector-wise (kind 1: the magnitudes the datapath really sees).
std::vector<int32_t> Operand(int64_t vectors, int64_t len, int bits, int kind, uint64_t key) {
  pim::CounterRng rng(key);
  std::vector<int32_t> out(static_cast<size_t>(vectors * len));
  if (kind == 0) {
    const int64_t span = int64_t{1} << bits, lo = -(span / 2);
    for (int64_t i = 0; i < vectors * len; ++i) {
      out[i] = static_cast<int32_t>(lo + static_cast<int64_t>(rng.Below(i, span)));
    }
    return out;
  }
  const pim::fp::Format f = bits <= 4 ? pim::fp::Format::kE4M3 : pim::fp::Format::kBF16;
  std::vector<uint32_t> codes(static_cast<size_t>(len));
  pim::fp::AlignCounts c;
  for (int64_t v = 0; v < vectors; ++v) {
    for (int64_t e = 0; e < len; ++e) codes[e] = pim::fp::Encode(f, rng.Normal(v * len + e));
    int shared = 0;
    pim::fp::SharedExponent(f, codes.data(), len, 1, nullptr, &shared, c);
    pim::fp::AlignVector(f, codes.data(), len, 1, nullptr, shared, bits,
                         pim::fp::AlignRounding::kTruncate, out.data() + v * len, 1, c);
  }
  return out;
}

// NMED = mean |S_approx - S_exact| / max |S|, S one 64-input MAC (all nibble passes, shift-add):
// normalized by the largest possible |S| (NMED_max_pct, the usual definition) and by the
// largest |S| observed (NMED_obs_pct). Args: bits, dropped columns, OR bits, bias (0/1), kind.
void FpApproxNmed(benchmark::State& state) {
  const int bits = static_cast<int>(state.range(0));
  const int64_t m = 256, k = 64, n = 64;
  std::vector<int32_t> x = Operand(m, k, bits, static_cast<int>(state.range(4)), 1);
  std::vector<int32_t> wt = Operand(n, k, bits, static_cast<int>(state.range(4)), 2);  // n x k
  std::vector<float> exact(m * n), approx(m * n);
  DcimProblem p;
  p.m = m;
  p.k = k;
  p.n = n;
  p.x = {x.data(), k, 1, bits};
  p.w = {wt.data(), 1, k, bits};
  p.out_format = pim::fp::Format::kFP32;  // |S| < 2^24: exact
  p.ldy = n;
  pim::kernels::DcimCounts c;
  p.y = exact.data();
  pim::kernels::fast::DcimMatMul(p, c, nullptr);
  p.approx = {true, static_cast<int>(state.range(1)), static_cast<int>(state.range(2)),
              state.range(3) != 0};
  p.y = approx.data();
  for (auto _ : state) pim::kernels::fast::DcimMatMul(p, c, nullptr);
  double err = 0, bias = 0, max_obs = 0;
  for (int64_t i = 0; i < m * n; ++i) {
    err += std::fabs(approx[i] - exact[i]);
    bias += approx[i] - exact[i];
    max_obs = std::max(max_obs, std::fabs(static_cast<double>(exact[i])));
  }
  const double max_possible = static_cast<double>(k) * std::ldexp(1.0, 2 * (bits - 1));
  state.counters["NMED_max_pct"] = 100 * err / (m * n) / max_possible;
  state.counters["NMED_obs_pct"] = 100 * err / (m * n) / max_obs;
  state.counters["bias_pct_obs"] = 100 * bias / (m * n) / max_obs;
}
BENCHMARK(FpApproxNmed)
    ->ArgsProduct({{4, 8}, {0, 1, 2, 3, 4}, {0, 2, 4, 6}, {0, 1}, {0, 1}})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

std::unique_ptr<pim::Macro> MakeMacro(const std::string& yaml) {
  return pim::Registry<pim::Macro>::CreateFrom(
      pim::ParseYaml("{impl: fp_digital, " + yaml + "}", "fp_bench"));
}

// Relative error of dot products of length 256 through the macro (FP32 output, so only the
// input/weight encoding and the pre-alignment lose), against FP64. 256 vectors; element
// magnitudes 2^-u with u uniform in [0, spread] (dist 0), or all at 2^-spread but one at 1 per
// vector (dist 1: one huge element); each vector also gets its own scale 2^-U{0..spread} (which
// only layer-wise alignment feels). Args: format (0 BF16, 1 FP8 E4M3), width, layer (0/1),
// spread, dist. Counters: median |y - y64| / |y64| and mean |y - y64| / sum |x w|.
void FpDotError(benchmark::State& state) {
  const bool fp8 = state.range(0) == 1;
  const int bits = static_cast<int>(state.range(1));
  const bool layer = state.range(2) == 1;
  const int spread = static_cast<int>(state.range(3));
  const bool huge = state.range(4) == 1;
  const int64_t batch = 256, k = 256, n = 8;
  pim::CounterRng rng(42);
  std::vector<float> x(batch * k), w(k * n);
  for (int64_t i = 0; i < k * n; ++i) w[i] = rng.Normal(i);
  for (int64_t b = 0; b < batch; ++b) {
    const int vec_scale = static_cast<int>(rng.Below(1000000 + b, spread + 1));
    for (int64_t e = 0; e < k; ++e) {
      const auto r = rng.Block(2000000 + b * k + e);
      const double u = huge ? (e == 0 ? 0.0 : spread) : spread * pim::CounterRng::ToUnitFloat(r[0]);
      const double mag = std::ldexp(std::exp2(-u), -vec_scale) * (1.0 + (r[1] >> 8) * 0x1p-24);
      x[b * k + e] = static_cast<float>(r[2] & 1 ? -mag : mag);
    }
  }
  const std::string fmt = fp8 ? "input_format: e4m3, weight_format: e4m3, "
                              : "input_format: bf16, weight_format: bf16, ";
  auto m = MakeMacro(fmt + "output_format: fp32, alignment: " + (layer ? "layer" : "vector") +
                     ", input_bits: " + std::to_string(bits) + ", weight_bits: " +
                     std::to_string(bits));
  pim::RunContext ctx;
  pim::ActionCounts counts;
  m->Program(pim::ConstMatrixView(w.data(), k, n, n), ctx, counts);
  std::vector<float> y(batch * n);
  for (auto _ : state) {
    m->Multiply(pim::ConstMatrixView(x.data(), batch, k, k), pim::MatrixView(y.data(), batch, n, n),
                pim::Direction::kForward, ctx, counts);
  }
  std::vector<double> rel;
  double l1 = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0, a = 0;
      for (int64_t e = 0; e < k; ++e) {
        s += double{x[b * k + e]} * w[e * n + j];
        a += std::fabs(double{x[b * k + e]} * w[e * n + j]);
      }
      const double d = std::fabs(y[b * n + j] - s);
      rel.push_back(s != 0 ? d / std::fabs(s) : 0);
      l1 += d / a;
    }
  }
  std::nth_element(rel.begin(), rel.begin() + rel.size() / 2, rel.end());
  state.counters["rel_err_median"] = rel[rel.size() / 2];
  state.counters["rel_err_l1"] = l1 / static_cast<double>(batch * n);
}
BENCHMARK(FpDotError)
    ->ArgsProduct({{0, 1}, {4, 8, 12}, {0, 1}, {0, 2, 4, 8, 12, 16}, {0, 1}})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

// Speed on an MLP layer's forward shape (64 x 784 x 256): the fast kernel on aligned BF16
// mantissas (8 bits; results + counts), a whole macro Multiply (encode, align, MAC,
// renormalize), and OpenBLAS sgemm, one thread each.
void FpDcimFast(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  const int bits = static_cast<int>(state.range(3));
  std::vector<int32_t> x = Operand(m, k, bits, 0, 1), w = Operand(k, n, bits, 0, 2);
  std::vector<float> y(m * n);
  DcimProblem p;
  p.m = m;
  p.k = k;
  p.n = n;
  p.x = {x.data(), k, 1, bits};
  p.w = {w.data(), n, 1, bits};
  p.y = y.data();
  p.ldy = n;
  for (auto _ : state) {
    pim::kernels::DcimCounts c;
    pim::kernels::fast::DcimMatMul(p, c, nullptr);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["MAC/s"] = benchmark::Counter(static_cast<double>(m * k * n) * state.iterations(),
                                               benchmark::Counter::kIsRate);
}
BENCHMARK(FpDcimFast)->Args({64, 784, 256, 8})->Args({64, 784, 256, 4})->Args({64, 784, 256, 12});

void FpMacroForward(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  pim::CounterRng rng(3);
  std::vector<float> x(m * k), w(k * n), y(m * n);
  for (int64_t i = 0; i < m * k; ++i) x[i] = rng.Uniform(i);
  for (int64_t i = 0; i < k * n; ++i) w[i] = 0.05f * rng.Normal(i + m * k);
  auto mac = MakeMacro(state.range(3) == 8 ? "input_format: bf16"
                                           : "input_format: e4m3, weight_format: e4m3");
  pim::ThreadPool one(1);
  pim::RunContext ctx;
  ctx.pool = &one;
  pim::ActionCounts counts;
  mac->Program(pim::ConstMatrixView(w.data(), k, n, n), ctx, counts);
  for (auto _ : state) {
    mac->Multiply(pim::ConstMatrixView(x.data(), m, k, k), pim::MatrixView(y.data(), m, n, n),
                  pim::Direction::kForward, ctx, counts);
  }
  state.counters["MAC/s"] = benchmark::Counter(static_cast<double>(m * k * n) * state.iterations(),
                                               benchmark::Counter::kIsRate);
}
BENCHMARK(FpMacroForward)->Args({64, 784, 256, 8})->Args({64, 784, 256, 4});

void FpSgemm(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  std::vector<float> x(m * k, 0.5f), w(k * n, 0.25f), y(m * n);
  openblas_set_num_threads(1);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m),
                static_cast<int>(n), static_cast<int>(k), 1.0f, x.data(), static_cast<int>(k),
                w.data(), static_cast<int>(n), 0.0f, y.data(), static_cast<int>(n));
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["MAC/s"] = benchmark::Counter(static_cast<double>(m * k * n) * state.iterations(),
                                               benchmark::Counter::kIsRate);
}
BENCHMARK(FpSgemm)->Args({64, 784, 256});

}  // namespace
