// Bit-serial PIM kernel speed: the exact 8b x 8b (and wider) fast kernel (result and counts)
// against OpenBLAS sgemm on the same shapes, single-threaded, in multiply-accumulates per second.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/kernels/bitserial.h"
#include "pimtrain/macro/macro.h"

namespace {

using pim::Signedness;

std::vector<int32_t> RandomInts(int64_t n, int bits, uint64_t key) {
  pim::CounterRng rng(key);
  const int64_t span = int64_t{1} << bits, lo = -(span / 2);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<int32_t>(lo + rng.Below(i, span));
  return v;
}

std::vector<float> RandomFloats(int64_t n, uint64_t key) {
  pim::CounterRng rng(key);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[i] = 2.0f * rng.Uniform(i) - 1.0f;
  return v;
}

void SetMacRate(benchmark::State& state, int64_t macs) {
  state.counters["MAC/s"] =
      benchmark::Counter(static_cast<double>(macs) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}

// Exact integer Y = X W of signed operands (X `bits_x`, W `bits_w` wide), plus every action
// count, on `threads` threads.
void BitSerialFast(benchmark::State& state, int bits_x, int bits_w, int threads = 1) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  std::vector<int32_t> x = RandomInts(m * k, bits_x, 1), w = RandomInts(k * n, bits_w, 2);
  std::vector<int64_t> y(static_cast<size_t>(m * n));
  pim::kernels::BitSerialProblem p;
  p.m = m;
  p.k = k;
  p.n = n;
  p.x = {x.data(), k, 1, bits_x, Signedness::kSigned};
  p.w = {w.data(), n, 1, bits_w, Signedness::kSigned};
  p.tile_k = 256;
  p.tile_n = 256;
  p.y = y.data();
  p.ldy = n;
  pim::kernels::BitSerialCounts counts;
  pim::ThreadPool pool(threads);
  for (auto _ : state) {
    pim::kernels::fast::BitSerialMatMul(p, counts, threads > 1 ? &pool : nullptr);
    benchmark::DoNotOptimize(y.data());
  }
  SetMacRate(state, m * k * n);
}

void BM_BitSerialFast8x8(benchmark::State& state) { BitSerialFast(state, 8, 8); }
// T-PIM's error propagation (8-bit errors x 16-bit stored weights) and, transposed, its
// gradient calculation (16-bit dY stored, 8-bit X streamed).
void BM_BitSerialFast8x16(benchmark::State& state) { BitSerialFast(state, 8, 16); }
void BM_BitSerialFast16x8(benchmark::State& state) { BitSerialFast(state, 16, 8); }
void BM_BitSerialFast16x16(benchmark::State& state) { BitSerialFast(state, 16, 16); }
void BM_BitSerialFast8x8TwoThreads(benchmark::State& state) { BitSerialFast(state, 8, 8, 2); }

void BM_OpenBlasSgemm(benchmark::State& state) {
  openblas_set_num_threads(1);
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  std::vector<float> a = RandomFloats(m * k, 1), b = RandomFloats(k * n, 2);
  std::vector<float> c(static_cast<size_t>(m * n));
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(m),
                static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a.data(),
                static_cast<blasint>(k), b.data(), static_cast<blasint>(n), 0.0f, c.data(),
                static_cast<blasint>(n));
    benchmark::DoNotOptimize(c.data());
  }
  SetMacRate(state, m * k * n);
}

// The whole macro call: quantize x, the kernel, dequantize y (8-bit inputs, 8-bit forward
// weights read from 16-bit storage).
void BM_DigitalBitSerialMacroForward(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  std::unique_ptr<pim::Macro> macro = pim::Registry<pim::Macro>::CreateFrom(
      pim::ParseYaml("{impl: digital_bitserial, input_bits: 8, weight_bits: 8}", "bench"));
  std::vector<float> x = RandomFloats(m * k, 1), w = RandomFloats(k * n, 2);
  std::vector<float> y(static_cast<size_t>(m * n));
  pim::ActionCounts counts;
  macro->Program(pim::ConstMatrixView(w.data(), k, n, n), pim::RunContext{}, counts);
  pim::ThreadPool one(1);
  pim::RunContext ctx;
  ctx.pool = &one;
  for (auto _ : state) {
    counts.Clear();
    macro->Multiply(pim::ConstMatrixView(x.data(), m, k, k), pim::MatrixView{y.data(), m, n, n},
                    pim::Direction::kForward, ctx, counts);
    benchmark::DoNotOptimize(y.data());
  }
  SetMacRate(state, m * k * n);
}

// Shapes: batch x rows (reduction) x cols, as in an MLP on 28x28 images and square layers.
void Shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"m", "k", "n"});
  b->Args({64, 784, 256});
  b->Args({64, 256, 128});
  b->Args({256, 256, 256});
  b->Args({1024, 1024, 64});
}

BENCHMARK(BM_BitSerialFast8x8)->Apply(Shapes);
BENCHMARK(BM_OpenBlasSgemm)->Apply(Shapes);
BENCHMARK(BM_BitSerialFast8x16)->Apply(Shapes);
BENCHMARK(BM_BitSerialFast16x8)->Apply(Shapes);
BENCHMARK(BM_BitSerialFast16x16)->Apply(Shapes);
BENCHMARK(BM_BitSerialFast8x8TwoThreads)->Apply(Shapes)->UseRealTime();
BENCHMARK(BM_DigitalBitSerialMacroForward)->Apply(Shapes);

}  // namespace
