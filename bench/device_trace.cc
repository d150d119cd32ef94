// pimtrain_device_trace MODEL DEVICES UP DOWN: UP up pulses then DOWN down pulses on DEVICES
// devices of MODEL (spec defaults, starting at w = 0); prints the mean and std of w every 100
// pulses, for bench/device_study.py's independent numpy check.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "pimtrain/base/registry.h"
#include "pimtrain/device/array.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: pimtrain_device_trace MODEL DEVICES UP DOWN\n");
    return 2;
  }
  try {
    const std::string model = argv[1];
    const int64_t n = std::atoll(argv[2]);
    const int up = std::atoi(argv[3]), down = std::atoi(argv[4]);
    auto dev = std::shared_ptr<const pim::Device>(pim::Registry<pim::Device>::CreateFrom(
        pim::ParseYaml("{impl: " + model + "}", "argv")));
    pim::DeviceArray a(dev, 1, n, 12345);
    std::vector<float> w0(static_cast<size_t>(n), 0.0f);
    a.Set(pim::ConstMatrixView(w0.data(), 1, n, n), 1);
    for (int k = 0; k < up + down; ++k) {
      const pim::CounterRng rng(pim::MixKey(7, static_cast<uint64_t>(k)));
      for (int64_t i = 0; i < n; ++i) {
        a.Pulse(i, 1, k < up ? 1 : -1, rng, static_cast<uint64_t>(i) << 8);
      }
      if ((k + 1) % 100 == 0) {
        double s = 0, s2 = 0;
        for (int64_t i = 0; i < n; ++i) {
          s += a.hidden()[i];
          s2 += double{a.hidden()[i]} * a.hidden()[i];
        }
        const double m = s / n;
        std::printf("%.6f %.6f\n", m, std::sqrt(std::max(0.0, s2 / n - m * m)));
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pimtrain_device_trace: error: %s\n", e.what());
    return 2;
  }
  return 0;
}
