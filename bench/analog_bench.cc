// Analog crossbar kernel speed: ADC conversions per second (one conversion = one block partial
// sum: AND + popcount over the block's word lines, noise, ADC, shift-add), fast kernel against
// the reference loops, single thread and the default pool.
#include <benchmark/benchmark.h>

#include <vector>

#include "pimtrain/base/parallel.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/analog.h"

namespace {

using pim::kernels::AnalogCounts;
using pim::kernels::AnalogProblem;

struct Setup {
  std::vector<int32_t> x, w;
  std::vector<int64_t> y;
  AnalogProblem p;
  pim::kernels::fast::PackedAnalogWeights packed;
};

// The speed figure's layer: 8-bit inputs (activations: ~half zero, as after a ReLU), 8-bit
// weights (offset-encoded, 8 one-bit cells), 1-bit DACs, 128-row blocks, dataflow A, a 6-bit ADC
// over a quarter of the largest partial sum (one code per unit), thermal noise sigma = quarter /
// 4 units: 4 (sigma 1, the kernel figure's setting), 1 (sigma 0.25, the MLP speed figure's,
// where the exact small-noise shortcut applies) or 0 (off). lossless != 0: instead an 8-bit ADC
// over the whole 0..128 range (one code per unit, the MLP speed figure's converter: the
// lossless read-out path, docs/analog.md) with sigma = quarter / 4 units.
Setup Make(int64_t m, int64_t k, int64_t n, int64_t quarter, int64_t lossless = 0) {
  Setup s;
  const pim::CounterRng rng(7);
  uint64_t i = 0;
  s.x.resize(static_cast<size_t>(m * k));
  for (auto& v : s.x) v = rng.Below(i++, 2) ? static_cast<int32_t>(rng.Below(i++, 256)) : 0;
  s.w.resize(static_cast<size_t>(k * n));
  for (auto& v : s.w) v = static_cast<int32_t>(rng.Below(i++, 256));
  s.y.resize(static_cast<size_t>(m * n));
  AnalogProblem& p = s.p;
  p.m = m;
  p.k = k;
  p.n = n;
  p.x = s.x.data();
  p.ldx = k;
  p.x_bits = 8;
  p.signed_inputs = true;
  p.dac_bits = 1;
  p.w = s.w.data();
  p.polarities = 1;
  p.cell_bits = 1;
  p.slices = 8;
  p.block = 128;
  p.tile_cols = 128;
  p.readout.dataflow = pim::Dataflow::kA;
  p.readout.adc = lossless != 0
                      ? pim::MakeAdcTransfer(8, 128.0, 0.0, 0.25 * static_cast<double>(quarter))
                      : pim::MakeAdcTransfer(6, 32.0, 0.0, 0.25 * static_cast<double>(quarter));
  p.noise_key = 99;
  p.y = s.y.data();
  p.ldy = n;
  pim::kernels::fast::PackWeights(p, s.packed, nullptr);
  return s;
}

void BM_AnalogFast(benchmark::State& state) {
  Setup s = Make(state.range(0), state.range(1), state.range(2), state.range(3), state.range(5));
  pim::ThreadPool* pool = state.range(4) != 0 ? &pim::DefaultPool() : nullptr;
  int64_t conversions = 0;
  for (auto _ : state) {
    AnalogCounts c;
    pim::kernels::fast::AnalogMatMul(s.p, &s.packed, c, pool);
    conversions += c.adc_conversions;
    benchmark::DoNotOptimize(s.y.data());
  }
  state.counters["conv/s"] =
      benchmark::Counter(static_cast<double>(conversions), benchmark::Counter::kIsRate);
}
// m, k, n, noise sigma in quarter units, pool, lossless read-out
BENCHMARK(BM_AnalogFast)
    ->Args({64, 784, 256, 4, 0, 0})
    ->Args({64, 784, 256, 1, 0, 0})
    ->Args({64, 784, 256, 0, 0, 0})
    ->Args({64, 256, 128, 4, 0, 0})
    ->Args({64, 784, 256, 4, 1, 0})
    ->Args({64, 784, 256, 1, 0, 1})
    ->Args({64, 784, 256, 0, 0, 1})
    ->Unit(benchmark::kMillisecond);

void BM_AnalogRef(benchmark::State& state) {
  Setup s = Make(state.range(0), state.range(1), state.range(2), state.range(3));
  int64_t conversions = 0;
  for (auto _ : state) {
    AnalogCounts c;
    pim::kernels::ref::AnalogMatMul(s.p, c);
    conversions += c.adc_conversions;
    benchmark::DoNotOptimize(s.y.data());
  }
  state.counters["conv/s"] =
      benchmark::Counter(static_cast<double>(conversions), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AnalogRef)->Args({4, 784, 256, 4})->Unit(benchmark::kMillisecond);

}  // namespace
