// Pulsed-update speed: one stochastic_pulses batch (64 update cycles) into the MLP's first
// layer (784 x 256 soft_bounds devices, spec defaults), 1 thread. Inputs shaped like the speed
// figure's: x like pixels (about half zero, the rest in (0, 1]), d small errors (standard deviation 6e-4), lr 0.05, so BL
// is 1 and about 1e3 cells are pulsed per cycle (the counters report the pulses per batch).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/parallel.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/device/array.h"
#include "pimtrain/device/update.h"

namespace {

void BM_StochasticPulses(benchmark::State& state) {
  const int64_t rows = 784, cols = 256, m = 64;
  auto dev = std::shared_ptr<const pim::Device>(pim::Registry<pim::Device>::CreateFrom(
      pim::ParseYaml("{impl: soft_bounds}", "device.yaml")));
  auto rule = pim::Registry<pim::UpdateRule>::CreateFrom(
      pim::ParseYaml("{impl: stochastic_pulses}", "update.yaml"));
  pim::DeviceArray a(dev, rows, cols, 42);
  std::mt19937 g(5);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> w0(rows * cols), x(m * rows), d(m * cols);
  for (float& v : w0) v = 0.05f * nd(g);
  for (float& v : x) v = u(g) < 0.5f ? 0.0f : u(g);
  for (float& v : d) v = static_cast<float>(state.range(0)) * 1e-4f * nd(g);
  a.Set(pim::ConstMatrixView(w0.data(), rows, cols, cols), 1);
  pim::ThreadPool pool(1);
  pim::UpdateContext uc;
  uc.pool = &pool;
  int64_t pulses = 0;
  for (auto _ : state) {
    pim::ActionCounts counts;
    rule->Apply(a, pim::ConstMatrixView(x.data(), m, rows, rows),
                pim::ConstMatrixView(d.data(), m, cols, cols), 0.05f, uc, 1, counts);
    pulses += counts.Get(pim::kCountDevicePulses);
    ++uc.step;
  }
  state.counters["pulses_per_batch"] = static_cast<double>(pulses) / state.iterations();
  state.counters["pulses_per_s"] = benchmark::Counter(static_cast<double>(pulses),
                                                      benchmark::Counter::kIsRate);
}
BENCHMARK(BM_StochasticPulses)->Arg(6)->Unit(benchmark::kMillisecond);

}  // namespace
