// The vector paths of the analog training step against their scalar definitions, bit for bit at
// 1 and 2 threads: Philox4x32 on scattered counters (base/philox_simd.h), the io read path
// (AnalogRead vs AnalogReadRef), the stochastic pulsed update (line masks from 16-bit uniforms,
// pulse normals in vector lanes) against a reference written here from docs/devices.md; and the
// law of the pulse normals as the update applies them.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>

#include "pimtrain/base/config.h"
#include "pimtrain/base/philox_simd.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/device/array.h"
#include "pimtrain/device/device.h"
#include "pimtrain/device/io.h"
#include "pimtrain/device/update.h"
#include "pimtrain/numerics/adc.h"

namespace pim {
namespace {

std::shared_ptr<const Device> MakeDevice(const std::string& yaml) {
  return std::shared_ptr<const Device>(
      Registry<Device>::CreateFrom(ParseYaml(yaml, "device.yaml")));
}

TEST(PhiloxSimdTest, EveryLaneIsTheScalarBlockOfItsCounter) {
  std::mt19937_64 g(3);
  for (int variant = 0; variant < 4; ++variant) {
    const bool with_hi = variant & 1, with_streams = variant & 2;
    const int64_t n = 53;  // 3 x 16 + 5: both vector widths and the scalar tail
    std::vector<uint32_t> lo(n), hi(n), slo(n), w[4];
    for (auto& v : w) v.resize(n);
    const uint64_t key = g(), stream = g();
    for (int64_t j = 0; j < n; ++j) {
      lo[j] = static_cast<uint32_t>(g());
      hi[j] = with_hi ? static_cast<uint32_t>(g()) : 0u;
      slo[j] = with_streams ? static_cast<uint32_t>(g()) : static_cast<uint32_t>(stream);
    }
    PhiloxBlocks(key, stream, lo.data(), with_hi ? hi.data() : nullptr,
                 with_streams ? slo.data() : nullptr, n, w[0].data(), w[1].data(), w[2].data(),
                 w[3].data());
    for (int64_t j = 0; j < n; ++j) {
      const uint64_t st = ((stream >> 32) << 32) | slo[j];
      const auto b = Philox4x32(key, st, lo[j] | static_cast<uint64_t>(hi[j]) << 32);
      for (int k = 0; k < 4; ++k) ASSERT_EQ(w[k][j], b[k]) << j << " word " << k;
    }
  }
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// AnalogRead's vector loops against AnalogReadRef: every io option, both directions, bound
// management repeats, 1 and 2 threads; the outputs and the counts equal.
TEST(IoFastTest, AnalogReadEqualsTheReferenceBitForBit) {
  const int64_t m = 21, rows = 37, cols = 19;
  std::mt19937 g(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> w(rows * cols), xf(m * rows), xt(m * cols);
  for (float& v : w) v = 0.3f * nd(g);
  for (float& v : xf) v = nd(g);
  for (float& v : xt) v = nd(g);
  for (int j = 0; j < rows; ++j) xf[3 * rows + j] = 0.0f;  // a zero sample
  std::vector<IoParams> cases(6);
  cases[1].out_bound = 0.5;  // bound management repeats
  cases[2].inp_noise = 0.05, cases[2].w_noise = 0.02, cases[2].nm_thres = 1.5;
  cases[3].w_noise = 0.03, cases[3].w_noise_type = WeightNoiseType::kPcmRead,
  cases[3].ir_drop = 1.0;
  cases[4].out_noise = 0, cases[4].inp_res = 0, cases[4].out_res = 0;
  cases[5].noise_management = NoiseManagement::kNone, cases[5].inp_res = 50,
  cases[5].out_res = 300;
  int64_t repeats = 0;
  for (size_t ci = 0; ci < cases.size(); ++ci) {
    for (bool transposed : {false, true}) {
      const std::vector<float>& x = transposed ? xt : xf;
      const int64_t k = transposed ? cols : rows, n = transposed ? rows : cols;
      std::vector<float> ref(m * n);
      ActionCounts cref;
      AnalogReadRef(cases[ci], ConstMatrixView(x.data(), m, k, k), w.data(), rows, cols,
                    transposed, 99, 1, MatrixView{ref.data(), m, n, n}, nullptr, cref);
      repeats += cref.Get("bm_repeats");
      for (int threads : {1, 2}) {
        ThreadPool pool(threads);
        std::vector<float> y(m * n);
        ActionCounts c;
        AnalogRead(cases[ci], ConstMatrixView(x.data(), m, k, k), w.data(), rows, cols,
                   transposed, 99, 1, MatrixView{y.data(), m, n, n}, &pool, c);
        EXPECT_TRUE(SameBits(y, ref)) << "case " << ci << " transposed " << transposed
                                      << " threads " << threads;
        EXPECT_EQ(c.Get("bm_repeats"), cref.Get("bm_repeats"));
        EXPECT_EQ(c.Get("adc_conversions"), cref.Get("adc_conversions"));
      }
    }
  }
  EXPECT_GT(repeats, 0);  // case 1 exercised bound management
}

// The stochastic pulsed update from its definition (docs/devices.md): cycle s, line l (rows then
// columns) fires in slot t when NoiseUniform16(key, s, t L + l) < round(min(p_l, 1) 65536);
// cell (r, c) gets popcount(mask_r & mask_c) pulses, pulse p with the normal
// NoiseNormal(key, m + s, index(i, p)) (block i + size8 (p / 8), word p % 4, half p / 4 % 2).
void ReferencePulses(DeviceArray& a, ConstMatrixView x, ConstMatrixView d, float lr,
                     const UpdateContext& ctx, uint64_t tag, int desired_bl) {
  const int64_t m = x.rows, rows = a.rows(), cols = a.cols(), lines = rows + cols;
  const double eps = a.granularity(), lam = std::fabs(lr);
  const uint64_t key = MixKey(ctx.seed, static_cast<uint64_t>(ctx.layer),
                              static_cast<uint64_t>(ctx.step), MixKey(tag, 0x7370));
  const uint64_t size8 = (static_cast<uint64_t>(a.size()) + 7) & ~uint64_t{7};
  const float lsign = lr > 0 ? 1.0f : -1.0f;
  for (int64_t s = 0; s < m; ++s) {
    double xm = 0, dm = 0;
    for (int64_t r = 0; r < rows; ++r) xm = std::max(xm, double{std::fabs(x.Row(s)[r])});
    for (int64_t c = 0; c < cols; ++c) dm = std::max(dm, double{std::fabs(d.Row(s)[c])});
    if (xm == 0 || dm == 0) continue;
    const double k = lam * xm * dm / eps;
    const int bl = std::clamp(static_cast<int>(std::ceil(k)), 1, desired_bl);
    const double ab = std::sqrt(lam / (eps * bl));
    const double dmu = k > desired_bl ? dm * desired_bl / k : dm;
    const float a_scale = static_cast<float>(ab * std::sqrt(xm / dmu));
    const float b_scale = static_cast<float>(ab * std::sqrt(dmu / xm));
    std::vector<uint64_t> mask(lines, 0);
    for (int64_t l = 0; l < lines; ++l) {
      const float v = l < rows ? b_scale * std::fabs(x.Row(s)[l])
                               : a_scale * std::fabs(d.Row(s)[l - rows]);
      const uint32_t thr = static_cast<uint32_t>(std::nearbyint(std::min(v, 1.0f) * 65536.0f));
      for (int t = 0; t < bl; ++t) {
        if (NoiseUniform16(key, s, static_cast<uint64_t>(t * lines + l)) < thr) {
          mask[l] |= uint64_t{1} << t;
        }
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const int n = std::popcount(mask[r] & mask[rows + c]);
        if (n == 0) continue;
        const int64_t i = r * cols + c;
        std::vector<float> xi(n);
        for (int p = 0; p < n; ++p) {
          const uint64_t b = static_cast<uint64_t>(i) + size8 * static_cast<uint64_t>(p >> 3);
          xi[p] = NoiseNormal(key, static_cast<uint64_t>(m + s),
                              64 * (b >> 3) + (b & 7) + 8 * static_cast<uint64_t>(p & 7));
        }
        const uint8_t nn = static_cast<uint8_t>(n);
        // sign(lr x_r d_c) > 0: down
        const bool down = (x.Row(s)[r] * lsign > 0) == (d.Row(s)[c] > 0);
        const int8_t dir = down ? -1 : 1;
        const uint32_t cell = static_cast<uint32_t>(i);
        Device::PulseBatch one;
        one.cell = &cell, one.n = &nn, one.dir = &dir, one.xi = xi.data(), one.count = 1;
        a.device().PulseDrawn(a.mutable_hidden(), a.cells(), one);
      }
    }
  }
}

TEST(UpdateFastTest, StochasticPulsesEqualTheReferenceBitForBit) {
  auto dev = MakeDevice("{impl: soft_bounds}");  // spec defaults: every spread on
  auto rule = Registry<UpdateRule>::CreateFrom(ParseYaml("{impl: stochastic_pulses}", "u"));
  const int64_t rows = 40, cols = 23, m = 9;
  std::mt19937 g(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(m * rows), d(m * cols), w0(rows * cols);
  for (float& v : x) v = std::max(0.0f, nd(g));  // ReLU-like: zeros
  for (float& v : d) v = 0.1f * nd(g);
  for (float& v : w0) v = 0.2f * nd(g);
  for (int64_t c = 0; c < cols; ++c) d[4 * cols + c] = 0;  // a cycle with no error
  // lr 0.05: BL 1-2; lr 2: BL up to 31 (cells with more than 8 pulses in a cycle).
  for (float lr : {0.05f, -0.05f, 2.0f}) {
    DeviceArray ref(dev, rows, cols, 42);
    ref.Set(ConstMatrixView(w0.data(), rows, cols, cols), 1);
    UpdateContext uc;
    uc.seed = 3, uc.step = 17, uc.layer = 2;
    ReferencePulses(ref, ConstMatrixView(x.data(), m, rows, rows),
                    ConstMatrixView(d.data(), m, cols, cols), lr, uc, 1, 31);
    std::vector<float> want(ref.hidden(), ref.hidden() + ref.size());
    for (int threads : {1, 2}) {
      ThreadPool pool(threads);
      DeviceArray a(dev, rows, cols, 42);
      a.Set(ConstMatrixView(w0.data(), rows, cols, cols), 1);
      uc.pool = &pool;
      ActionCounts counts;
      rule->Apply(a, ConstMatrixView(x.data(), m, rows, rows),
                  ConstMatrixView(d.data(), m, cols, cols), lr, uc, 1, counts);
      std::vector<float> got(a.hidden(), a.hidden() + a.size());
      EXPECT_TRUE(SameBits(got, want)) << "lr " << lr << " threads " << threads;
      EXPECT_GT(counts.Get(kCountDevicePulses), counts.Get(kCountCellsPulsed) * (lr > 1 ? 2 : 0));
      EXPECT_FALSE(SameBits(got, w0));
    }
  }
}

// The cycle-to-cycle normals as the update applies them: constant_step without spreads,
// dw_min_std 1, every line firing once (lr = dw_min = 2^-10, |x| = |d| = 1: k = 1, BL 1,
// p = q = 1), so each cell's change is dw_min (1 + xi). Mean, variance and two tails of the 2^17 xi within 4.5
// standard errors of N(0, 1).
TEST(UpdateFastTest, PulseNormalsFollowTheStandardNormalLaw) {
  auto dev = MakeDevice(
      "{impl: constant_step, dw_min: 0.0009765625, dw_min_dtod: 0, dw_min_std: 1, w_max: 100, "
      "w_min: -100, w_max_dtod: 0, w_min_dtod: 0, up_down_dtod: 0}");
  auto rule = Registry<UpdateRule>::CreateFrom(ParseYaml("{impl: stochastic_pulses}", "u"));
  const int64_t rows = 512, cols = 256, n = rows * cols;
  DeviceArray a(dev, rows, cols, 1);
  std::vector<float> w0(n, 0.0f), x(rows, 1.0f), d(cols, -1.0f);
  a.Set(ConstMatrixView(w0.data(), rows, cols, cols), 1);
  ActionCounts counts;
  rule->Apply(a, ConstMatrixView(x.data(), 1, rows, rows), ConstMatrixView(d.data(), 1, cols, cols),
              0.0009765625f, UpdateContext{}, 1, counts);
  ASSERT_EQ(counts.Get(kCountDevicePulses), n);  // one up pulse per cell
  double s1 = 0, s2 = 0;
  int64_t beyond2 = 0, beyond3 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double xi = a.hidden()[i] / 0.0009765625 - 1.0;
    s1 += xi;
    s2 += xi * xi;
    beyond2 += std::fabs(xi) > 2;
    beyond3 += std::fabs(xi) > 3;
  }
  const double mean = s1 / n, var = s2 / n - mean * mean;
  EXPECT_LT(std::fabs(mean), 4.5 / std::sqrt(n));
  EXPECT_LT(std::fabs(var - 1.0), 4.5 * std::sqrt(2.0 / n));
  const double p2 = 0.0455003, p3 = 0.0026998;
  EXPECT_LT(std::fabs(beyond2 - p2 * n), 4.5 * std::sqrt(p2 * (1 - p2) * n));
  EXPECT_LT(std::fabs(beyond3 - p3 * n), 4.5 * std::sqrt(p3 * (1 - p3) * n));
}

}  // namespace
}  // namespace pim
