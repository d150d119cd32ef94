// `stochastic_pulses` update (aihwkit's stochastic-compressed pulsed update, spec section 1):
// each sample of the batch is one update cycle. Rows (inputs) fire with p_r = B |x_r| and
// columns (outputs) with q_c = A |d_c| in each of BL slots; every coincidence is one pulse on
// cell (r, c) with sign(lr x_r d_c) > 0 = down, so E[n_rc] = lr |x_r d_c| / epsilon <= BL.
// update_bl_management and update_management set BL, A and B from the sample's max |x|, |d|.
#include <bit>
#include <cmath>

#include "pimtrain/base/registry.h"
#include "pimtrain/device/update.h"

namespace pim {
namespace {

// 16-bit uniforms: 4 Philox words = 8 slots per block; a line fires in slot t when
// u_t < threshold = round(p 65536) (p resolved to 2^-16).
uint64_t LineMask(const CounterRng& rng, uint64_t line, uint32_t threshold, int bl) {
  if (threshold == 0) return 0;
  uint64_t mask = 0;
  for (int b = 0; b * 8 < bl; ++b) {
    const auto w = rng.Block(line * 8 + static_cast<uint64_t>(b));
    for (int j = 0; j < 8 && b * 8 + j < bl; ++j) {
      const uint32_t u = (w[j >> 1] >> ((j & 1) * 16)) & 0xffffu;
      mask |= static_cast<uint64_t>(u < threshold) << (b * 8 + j);
    }
  }
  return mask;
}

class StochasticPulses final : public UpdateRule {
 public:
  explicit StochasticPulses(const ConfigNode& p)
      : desired_bl_(static_cast<int>(p.GetInt("desired_bl"))),
        fixed_bl_(p.GetBool("fixed_bl")),
        um_(p.GetBool("update_management")),
        ublm_(p.GetBool("update_bl_management")),
        grad_scale_(p.GetDouble("um_grad_scale")),
        res_(p.GetDouble("res")) {}
  static Schema GetSchema() {
    Schema s;
    s.Add(Param::Int("desired_bl").Default(31).Range(1, 64).Unit("slots").Doc(
        "bit-stream length BL (pulse slots per update cycle)"));
    s.Add(Param::Bool("fixed_bl").Default(true).Doc(
        "keep BL (false, without UBLM: BL = ceil(lr/epsilon) when desired_bl epsilon < lr)"));
    s.Add(Param::Bool("update_management").Default(true).Doc(
        "balance the row and column probabilities by sqrt(max|x|/max|d|) (UM)"));
    s.Add(Param::Bool("update_bl_management").Default(true).Doc(
        "BL = min(ceil(lr max|x| max|d| / epsilon), desired_bl) per cycle (UBLM; forces UM)"));
    s.Add(Param::Float("um_grad_scale").Default(1.0).Range(1e-6, 1e6).Doc(
        "scale of max|d| in the UBLM estimate"));
    s.Add(Param::Float("res").Default(0.0).Range(0, 1).Doc(
        "resolution of the line probabilities (0: continuous; 2^-16 at the finest)"));
    return s;
  }
  int max_pulses() const override { return desired_bl_; }

  void Apply(DeviceArray& a, ConstMatrixView x, ConstMatrixView d, float lr,
             const UpdateContext& ctx, uint64_t tag, ActionCounts& counts) const override {
    const int64_t m = x.rows, rows = a.rows(), cols = a.cols();
    const double eps = a.granularity(), lam = std::fabs(lr);
    if (lam == 0) return;
    const float lsign = lr > 0 ? 1.0f : -1.0f;
    const uint64_t key = MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer),
                                static_cast<uint64_t>(ctx.step), MixKey(tag, 0x7370));
    // Per sample: the line masks (rows then columns), BL, the active columns.
    row_masks_.assign(static_cast<size_t>(m * rows), 0);
    col_masks_.assign(static_cast<size_t>(m * cols), 0);
    active_.assign(static_cast<size_t>(m * cols), 0);
    n_active_.assign(static_cast<size_t>(m), 0);
    std::vector<int> bls(static_cast<size_t>(m), 0);
    ThreadPool& pool = ctx.pool != nullptr ? *ctx.pool : DefaultPool();
    pool.ParallelFor(m, 1, [&](int64_t s0, int64_t s1) {
      for (int64_t s = s0; s < s1; ++s) {
        const float* xs = x.Row(s);
        const float* ds = d.Row(s);
        double xm = 0, dm = 0;
        for (int64_t r = 0; r < rows; ++r) xm = std::max(xm, double{std::fabs(xs[r])});
        for (int64_t c = 0; c < cols; ++c) dm = std::max(dm, double{std::fabs(ds[c])});
        if (xm == 0 || dm == 0) continue;
        int bl = desired_bl_;
        double k = lam * xm * grad_scale_ * dm / eps;
        if (!fixed_bl_ && !ublm_ && eps * desired_bl_ < lam) {
          bl = std::min(64, static_cast<int>(std::ceil(lam / eps)));
        }
        if (ublm_) bl = std::clamp(static_cast<int>(std::ceil(k)), 1, desired_bl_);
        double ab = std::sqrt(lam / (eps * bl));
        double a_scale = ab, b_scale = ab;
        if (!fixed_bl_ && !ublm_ && eps * desired_bl_ < lam) a_scale = b_scale = 1;
        if (um_ || ublm_) {
          double dmu = dm;
          if (k > desired_bl_) dmu *= desired_bl_ / k;
          a_scale *= std::sqrt(xm / dmu);
          b_scale *= std::sqrt(dmu / xm);
        }
        bls[s] = bl;
        const CounterRng rng(key, static_cast<uint64_t>(s));
        uint64_t* rm = row_masks_.data() + s * rows;
        for (int64_t r = 0; r < rows; ++r) {
          rm[r] = LineMask(rng, static_cast<uint64_t>(r), Threshold(b_scale * std::fabs(xs[r])),
                           bl);
        }
        uint64_t* cm = col_masks_.data() + s * cols;
        int32_t* act = active_.data() + s * cols;
        int32_t na = 0;
        for (int64_t c = 0; c < cols; ++c) {
          cm[c] = LineMask(rng, static_cast<uint64_t>(rows + c),
                           Threshold(a_scale * std::fabs(ds[c])), bl);
          if (cm[c] != 0) act[na++] = static_cast<int32_t>(c);
        }
        n_active_[s] = na;
      }
    });
    // Pulses: cells are independent, so rows run in parallel; each cell sees its samples in
    // order (aihwkit's sequential update cycles).
    std::vector<int64_t> pulses(static_cast<size_t>(rows), 0), cells(pulses.size(), 0);
    pool.ParallelFor(rows, 4, [&](int64_t r0, int64_t r1) {
      for (int64_t s = 0; s < m; ++s) {
        const uint64_t* rm = row_masks_.data() + s * rows;
        const uint64_t* cm = col_masks_.data() + s * cols;
        const int32_t* act = active_.data() + s * cols;
        const int32_t na = n_active_[s];
        if (na == 0) continue;
        const float* xs = x.Row(s);
        const float* ds = d.Row(s);
        const CounterRng rng(key, static_cast<uint64_t>(m + s));
        for (int64_t r = r0; r < r1; ++r) {
          const uint64_t mr = rm[r];
          if (mr == 0) continue;
          const float sx = xs[r] * lsign;
          for (int32_t j = 0; j < na; ++j) {
            const int32_t c = act[j];
            const int n = std::popcount(mr & cm[c]);
            if (n == 0) continue;
            const int64_t i = r * cols + c;
            const int dir = sx * ds[c] > 0 ? -1 : 1;
            a.Pulse(i, n, dir, rng, static_cast<uint64_t>(i) << 8);
            pulses[r] += n;
            ++cells[r];
          }
        }
      }
    });
    int64_t p = 0, c = 0, slots = 0;
    for (int64_t r = 0; r < rows; ++r) p += pulses[r], c += cells[r];
    for (int64_t s = 0; s < m; ++s) slots += bls[s];
    counts.Add(kCountDevicePulses, p);
    counts.Add(kCountCellsPulsed, c);
    counts.Add(kCountPulseSlots, slots);
  }

 private:
  uint32_t Threshold(double p) const {
    p = std::min(p, 1.0);
    if (res_ > 0) p = std::nearbyint(p / res_) * res_;
    return static_cast<uint32_t>(std::nearbyint(std::min(p, 1.0) * 65536.0));
  }

  int desired_bl_;
  bool fixed_bl_, um_, ublm_;
  double grad_scale_, res_;
  // Scratch, reused across calls (a layer's macro owns its rule; calls are not concurrent).
  mutable std::vector<uint64_t> row_masks_, col_masks_;
  mutable std::vector<int32_t> active_, n_active_;
};

PIM_REGISTER(UpdateRule, StochasticPulses, "stochastic_pulses",
             "coincidences of row and column bit streams (aihwkit's pulsed update, UM, UBLM)");

}  // namespace
}  // namespace pim
