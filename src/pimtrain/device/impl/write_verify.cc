// `write_verify` update: per batch, each cell whose target w - lr dW differs from its state by
// more than tolerance x epsilon is programmed, read back and corrected, up to max_iterations
// times: n = round((target - read) / epsilon) pulses (capped), then a verify read
// (read = weight + read_noise_std xi), stop when |target - read| <= tolerance x epsilon.
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/device/update.h"

namespace pim {
namespace {

class WriteVerify final : public UpdateRule {
 public:
  explicit WriteVerify(const ConfigNode& p)
      : iterations_(static_cast<int>(p.GetInt("max_iterations"))),
        tolerance_(p.GetDouble("tolerance")),
        read_noise_(p.GetDouble("read_noise_std")),
        max_pulses_(static_cast<int>(p.GetInt("max_pulses"))) {}
  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("max_iterations").Default(5).Range(1, 1000).Doc(
        "program-verify iterations per cell and update"));
    s.Add(Param::Float("tolerance").Default(0.5).Range(0, 1e6).Doc(
        "accepted |target - read|, in units of the device granularity"));
    s.Add(Param::Float("read_noise_std").Default(0.0).Range(0, 100).Doc(
        "Gaussian noise of a verify read, absolute weight units"));
    s.Add(Param::Int("max_pulses").Default(31).Range(1, 1 << 20).Unit("pulses").Doc(
        "most pulses per cell and iteration"));
    return s;
  }
  int max_pulses() const override { return max_pulses_; }
  void Apply(DeviceArray& a, ConstMatrixView x, ConstMatrixView d, float lr,
             const UpdateContext& ctx, uint64_t tag, ActionCounts& counts) const override {
    std::vector<float> dw;
    OuterGradient(x, d, dw, ctx.pool);
    counts.Add("digital_macs", x.rows * x.cols * d.cols);
    const double eps = a.granularity(), tol = tolerance_ * eps;
    const uint64_t key = MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer),
                                static_cast<uint64_t>(ctx.step), MixKey(tag, 0x7776));
    const CounterRng rng(key, 0), read_rng(key, 1);
    const int64_t rows = a.rows(), cols = a.cols();
    std::vector<int64_t> pulses(rows, 0), cells(rows, 0), reads(rows, 0), slots(rows, 0);
    ThreadPool& pool = ctx.pool != nullptr ? *ctx.pool : DefaultPool();
    const DeviceCells& dc = a.cells();
    pool.ParallelFor(rows, 8, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t i = r * cols + c;
          const double w0 = a.hidden()[i];
          const double target = std::clamp(w0 - lr * dw[i], double{dc.b_min[i]},
                                           double{dc.b_max[i]});
          double seen = a.read()[i];
          if (std::fabs(target - seen) <= tol) continue;
          ++cells[r];
          for (int it = 0; it < iterations_; ++it) {
            const double k = std::clamp(std::round((target - seen) / eps),
                                        -static_cast<double>(max_pulses_),
                                        static_cast<double>(max_pulses_));
            if (k == 0) break;
            const int nk = static_cast<int>(std::fabs(k));
            const uint64_t ctr = (static_cast<uint64_t>(i) << 24) |
                                 (static_cast<uint64_t>(it) << 16);
            a.Pulse(i, nk, k > 0 ? 1 : -1, rng, ctr);
            pulses[r] += nk;
            slots[r] = std::max<int64_t>(slots[r], it + 1);
            seen = a.read()[i] + (read_noise_ > 0 ? read_noise_ * read_rng.Normal(ctr) : 0.0);
            ++reads[r];
            if (std::fabs(target - seen) <= tol) break;
          }
        }
      }
    });
    int64_t p = 0, c = 0, rd = 0, it = 0;
    for (int64_t r = 0; r < rows; ++r) p += pulses[r], c += cells[r], rd += reads[r],
                                      it = std::max(it, slots[r]);
    counts.Add(kCountDevicePulses, p);
    counts.Add(kCountCellsPulsed, c);
    counts.Add(kCountVerifyReads, rd);
    counts.Add(kCountPulseSlots, it * max_pulses_);  // each iteration: up to max_pulses slots
  }

 private:
  int iterations_;
  double tolerance_, read_noise_;
  int max_pulses_;
};

PIM_REGISTER(UpdateRule, WriteVerify, "write_verify",
             "program, read back and correct each changed cell, up to max_iterations times");

}  // namespace
}  // namespace pim
