// The analog_crossbar macro: exactness at full resolution, decompositions and dataflows (numbers
// and counts), transposed reads, hardware parameters, noise determinism, calibration; training
// through it on the synthetic data set (ref/fast and 1/2-thread identical, learns).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "pimtrain/base/registry.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/macro/analog_config.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/nn/staged_matmul.h"
#include "pimtrain/sim/session.h"
#include "test_util.h"

namespace pim {
namespace {

std::unique_ptr<Macro> MakeMacro(const std::string& yaml) {
  return Registry<Macro>::CreateFrom(ParseYaml("{impl: analog_crossbar, " + yaml + "}", "test"));
}

struct Mats {
  int64_t m, k, n;
  std::vector<float> x, w, y;
};

Mats Random(int64_t m, int64_t k, int64_t n, uint64_t seed, bool relu_x) {
  Mats a{m, k, n, {}, {}, {}};
  const CounterRng rng(seed);
  a.x.resize(static_cast<size_t>(m * k));
  a.w.resize(static_cast<size_t>(k * n));
  a.y.resize(static_cast<size_t>(m * n));
  for (size_t i = 0; i < a.x.size(); ++i) {
    const float v = rng.Normal(i);
    a.x[i] = relu_x ? std::max(v, 0.0f) : v;
  }
  for (size_t i = 0; i < a.w.size(); ++i) a.w[i] = 0.1f * rng.Normal(1000000 + i);
  return a;
}

ActionCounts Forward(Macro& mac, Mats& a, Direction dir = Direction::kForward, int64_t step = 0) {
  RunContext ctx;
  ctx.seed = 5;
  ctx.step = step;
  ActionCounts c;
  mac.Program(ConstMatrixView(a.w.data(), a.k, a.n, a.n), ctx, c);
  c.Clear();
  if (dir == Direction::kForward) {
    mac.Multiply(ConstMatrixView(a.x.data(), a.m, a.k, a.k), MatrixView{a.y.data(), a.m, a.n, a.n},
                 dir, ctx, c);
  } else {
    a.y.resize(static_cast<size_t>(a.m * a.k));
    mac.Multiply(ConstMatrixView(a.x.data(), a.m, a.n, a.n), MatrixView{a.y.data(), a.m, a.k, a.k},
                 dir, ctx, c);
  }
  return c;
}

TEST(AnalogMacroTest, FullResolutionAdcEqualsTheIdealProductForEveryDecompositionAndDataflow) {
  for (const char* dec : {"decomposition: bit_serial", "decomposition: native, weight_bits: 4",
                          "decomposition: differential, weight_bits: 4",
                          "decomposition: custom, dac_bits: 2, cell_bits: 2, weight_encoding: "
                          "differential"}) {
    for (const char* df : {"A", "B"}) {
      const std::string cfg = std::string(dec) + ", input_bits: 4, rows: 64, dataflow: " + df;
      Mats a = Random(5, 150, 11, 3, false);
      auto analog = MakeMacro(cfg);
      ActionCounts c = Forward(*analog, a);
      const std::vector<float> got = a.y;
      auto ideal = MakeMacro(cfg + ", forward: ideal");
      Forward(*ideal, a);
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_NEAR(got[i], a.y[i], 1e-4 * (1 + std::fabs(a.y[i]))) << cfg << " at " << i;
      }
      EXPECT_EQ(c.Get("adc_clipped"), 0) << cfg;
      EXPECT_GT(c.Get("adc_conversions"), 0) << cfg;
    }
  }
}

TEST(AnalogMacroTest, DecompositionsGiveDifferentNumbersAndCountsOnTheSameWeights) {
  // 4-bit weights and inputs, a 4-bit ADC over its full range: each scheme loses differently.
  std::vector<std::vector<float>> ys;
  std::vector<int64_t> conversions;
  for (const char* dec : {"bit_serial", "native", "differential"}) {
    auto mac = MakeMacro(std::string("decomposition: ") + dec +
                         ", input_bits: 4, weight_bits: 4, rows: 64, adc: {bits: 4}");
    Mats a = Random(4, 100, 9, 8, true);
    ActionCounts c = Forward(*mac, a);
    ys.push_back(a.y);
    conversions.push_back(c.Get("adc_conversions"));
  }
  EXPECT_NE(ys[0], ys[1]);
  EXPECT_NE(ys[1], ys[2]);
  EXPECT_NE(conversions[0], conversions[1]);
  EXPECT_NE(conversions[1], conversions[2]);
}

TEST(AnalogMacroTest, HardwareParamsFollowTheDataflowFormulas) {
  const struct {
    const char* df;
    double bits, conv;
  } want[] = {{"A", 8, 64}, {"B", 11, 15}, {"C", 8, 1}};
  for (const auto& w : want) {
    auto mac = MakeMacro(std::string("dataflow: ") + w.df + ", rows: 128, input_bits: 8");
    auto hp = mac->HardwareParams();
    EXPECT_EQ(hp["adc_bits"], w.bits) << w.df;
    EXPECT_EQ(hp["conversions_per_group"], w.conv) << w.df;
    EXPECT_EQ(hp["slices"], 8);
    EXPECT_EQ(hp["dac_bits"], 1);
  }
  auto tuned = MakeMacro("dataflow: A, adc: {bits: 5}");
  EXPECT_EQ(tuned->HardwareParams()["adc_bits"], 5);
}

// INL must leave every analog converter monotone, the transposed read's too: with the formula's
// resolutions (128 rows forward: 7 bits; 64 cols / 8 slices = 8-row transposed blocks: 4 bits)
// 5 LSB fits the forward ADC (< 127 / 4) but not the transposed one (< 15 / 4), unless that read
// is ideal; 3 LSB fits both.
TEST(AnalogMacroTest, InlIsCheckedForMonotonicityInBothDirections) {
  const std::string base = "dataflow: A, rows: 128, cols: 64, input_bits: 8, error_bits: 8, ";
  try {
    MakeMacro(base + "adc: {inl_lsb: 5}");
    ADD_FAILURE() << "a non-monotone transposed ADC was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("transposed read's 4-bit ADC"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("inl_lsb"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(MakeMacro(base + "backward: ideal, adc: {inl_lsb: 5}"));
  EXPECT_NO_THROW(MakeMacro(base + "adc: {inl_lsb: 3}"));
  EXPECT_THROW(MakeMacro(base + "adc: {inl_lsb: 40}"), ConfigError);  // the forward one
}

TEST(AnalogMacroTest, TransposedReadApproximatesWTransposedAndConvertsPerSlice) {
  auto mac = MakeMacro("rows: 64, cols: 64, input_bits: 8, error_bits: 8");
  Mats a = Random(3, 40, 24, 4, false);  // errors: 3 x 24, outputs 3 x 40
  ActionCounts c = Forward(*mac, a, Direction::kTransposed);
  std::vector<float> w(a.w.size());
  mac->ReadWeights(MatrixView{w.data(), a.k, a.n, a.n});
  double err = 0, norm = 0;
  for (int64_t i = 0; i < a.m; ++i) {
    for (int64_t r = 0; r < a.k; ++r) {
      double exact = 0;
      for (int64_t col = 0; col < a.n; ++col) exact += a.x[i * a.n + col] * w[r * a.n + col];
      err += (a.y[i * a.k + r] - exact) * (a.y[i * a.k + r] - exact);
      norm += exact * exact;
    }
  }
  EXPECT_LT(err, 1e-3 * norm);
  EXPECT_GT(c.Get("adc_conversions"), 0);
  // Each slice's bit lines are driven in a cycle of their own: 8 reads per input cycle.
  EXPECT_EQ(c.Get("input_cycles") % 8, 0);
}

// weight_scale: column. Columns whose weights differ by 64x: one layer-wide power-of-two scale
// rounds the small columns to a few levels, a scale per column keeps every column at full
// width (its largest |w| on the top level). The read-out with column scales is still the exact
// product of the quantized operands at full ADC resolution (forward), W^T within the errors'
// quantization (transposed), and the column multiplies are counted.
TEST(AnalogMacroTest, ColumnWeightScalesKeepSmallColumnsAndStayExactAtFullResolution) {
  const std::string cfg = "rows: 64, cols: 64, input_bits: 4, weight_bits: 4, error_bits: 8, "
                          "decomposition: custom, dac_bits: 4, cell_bits: 1";
  Mats a = Random(5, 90, 12, 6, true);
  for (int64_t r = 0; r < a.k; ++r) {
    for (int64_t c = 0; c < a.n; ++c) a.w[r * a.n + c] *= std::ldexp(1.0f, -(c % 4) * 2);
  }
  // Relative squared error of the stored weights, worst column.
  auto worst_column_error = [&](Macro& mac) {
    std::vector<float> w(a.w.size());
    mac.ReadWeights(MatrixView{w.data(), a.k, a.n, a.n});
    double worst = 0;
    for (int64_t c = 0; c < a.n; ++c) {
      double e = 0, nrm = 0;
      for (int64_t r = 0; r < a.k; ++r) {
        const double d = w[r * a.n + c] - a.w[r * a.n + c];
        e += d * d;
        nrm += static_cast<double>(a.w[r * a.n + c]) * a.w[r * a.n + c];
      }
      worst = std::max(worst, e / nrm);
    }
    return worst;
  };
  auto tensor = MakeMacro(cfg);
  Forward(*tensor, a);
  auto column = MakeMacro(cfg + ", weight_scale: column");
  ActionCounts c = Forward(*column, a);
  const std::vector<float> got = a.y;
  const double e_tensor = worst_column_error(*tensor), e_column = worst_column_error(*column);
  EXPECT_GT(e_tensor, 0.5) << "the 1/64 columns should round to almost nothing";
  EXPECT_LT(e_column, 0.05) << "tensor " << e_tensor << ", column " << e_column;
  EXPECT_EQ(c.Get("out_scale_multiplies"), a.m * a.n);
  EXPECT_EQ(c.Get("adc_clipped"), 0);
  // Forward at full ADC resolution: the exact product of the quantized operands.
  auto ideal = MakeMacro(cfg + ", weight_scale: column, forward: ideal");
  Forward(*ideal, a);
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], a.y[i], 1e-4 * (1 + std::fabs(a.y[i]))) << "at " << i;
  }
  // Transposed through the arrays: dy W^T of the stored weights, up to the 8-bit errors.
  Mats b = a;
  b.x.resize(static_cast<size_t>(b.m * b.n));
  const CounterRng rng(9);
  for (size_t i = 0; i < b.x.size(); ++i) b.x[i] = rng.Normal(i);
  ActionCounts ct = Forward(*column, b, Direction::kTransposed);
  std::vector<float> w(a.w.size());
  column->ReadWeights(MatrixView{w.data(), a.k, a.n, a.n});
  double err = 0, norm = 0;
  for (int64_t i = 0; i < b.m; ++i) {
    for (int64_t r = 0; r < b.k; ++r) {
      double exact = 0;
      for (int64_t col = 0; col < b.n; ++col) exact += b.x[i * b.n + col] * w[r * b.n + col];
      err += (b.y[i * b.k + r] - exact) * (b.y[i * b.k + r] - exact);
      norm += exact * exact;
    }
  }
  EXPECT_LT(err, 1e-3 * norm);
  EXPECT_EQ(ct.Get("out_scale_multiplies"), b.m * b.n);
}

// input_scale: mse. 20 000 inputs uniform in [0, 4) and one of 100: the max rule's 4-bit step is
// 8 (100 / 8 <= 15), which rounds every small input to 0; the least-squares exponent is 0
// (step 1, the outlier saturating at 15). The bound it returns sets exactly that exponent, the
// read-out through it is closer to the product of the unquantized inputs, and the search is
// counted (4 candidates per input) in the next forward read.
TEST(AnalogMacroTest, MseInputScaleSaturatesAnOutlierAndKeepsTheSmallInputs) {
  const std::string cfg = "rows: 512, cols: 64, input_bits: 4, weight_bits: 4, "
                          "decomposition: custom, dac_bits: 4, cell_bits: 1, forward: ideal";
  const int64_t m = 100, k = 200, n = 8;
  const CounterRng rng(12);
  std::vector<float> x(m * k), w(k * n), y(m * n), exact(m * n, 0.0f);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 4.0f * rng.Uniform(i);
  x[17] = 100.0f;
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.1f * rng.Normal(500000 + i);
  auto max_rule = MakeMacro(cfg);
  auto mse_rule = MakeMacro(cfg + ", input_scale: mse");
  const ConstMatrixView xv(x.data(), m, k, k);
  EXPECT_LT(max_rule->ForwardInputBound(xv), 0.0f);  // the default: the largest |x|
  const float bound = mse_rule->ForwardInputBound(xv);
  EXPECT_EQ(bound, 15.0f);
  std::vector<float> wq(w.size());
  auto error = [&](Macro& mac, float max_abs, ActionCounts& c) {
    RunContext ctx;
    ctx.input_max_abs = max_abs;
    mac.Program(ConstMatrixView(w.data(), k, n, n), ctx, c);
    mac.ReadWeights(MatrixView{wq.data(), k, n, n});
    mac.Multiply(xv, MatrixView{y.data(), m, n, n}, Direction::kForward, ctx, c);
    double e = 0;
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double p = 0;
        for (int64_t r = 0; r < k; ++r) p += x[i * k + r] * wq[r * n + j];
        if (i == 0) continue;  // the row with the outlier saturates under the mse rule
        e += (y[i * n + j] - p) * (y[i * n + j] - p);
      }
    }
    return e;
  };
  ActionCounts c_max, c_mse;
  const double e_max = error(*max_rule, -1.0f, c_max);
  const double e_mse = error(*mse_rule, bound, c_mse);
  EXPECT_LT(e_mse, 0.1 * e_max) << "max rule " << e_max << ", mse rule " << e_mse;
  EXPECT_EQ(c_mse.Get("digital_macs") - c_max.Get("digital_macs"), 4 * m * k);
}

// gradient_inputs: quantized. GC multiplies the input codes the forward read applied, at that
// read's scale: after a forward read whose bound 30 sets the 4-bit step to 2, dW = Q2(x)^T dy
// with Q2(x) = 2 round_half_even(x / 2) (x itself has max 15: step 1 under its own max);
// the default multiplies x itself.
TEST(AnalogMacroTest, QuantizedGradientInputsAreTheForwardReadsCodes) {
  const std::string cfg = "rows: 64, cols: 64, input_bits: 4, weight_bits: 4, "
                          "decomposition: custom, dac_bits: 4, cell_bits: 1, forward: ideal";
  const int64_t m = 6, k = 10, n = 3;
  const CounterRng rng(21);
  std::vector<float> x(m * k), w(k * n), y(m * n), dy(m * n), dw(k * n);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 15.0f * rng.Uniform(i);
  x[0] = 15.0f;
  for (size_t i = 0; i < w.size(); ++i) w[i] = rng.Normal(1000 + i);
  for (size_t i = 0; i < dy.size(); ++i) dy[i] = rng.Normal(2000 + i);
  for (const bool quantized : {false, true}) {
    auto mac = MakeMacro(cfg + (quantized ? ", gradient_inputs: quantized" : ""));
    RunContext ctx;
    ActionCounts c;
    mac->Program(ConstMatrixView(w.data(), k, n, n), ctx, c);
    ctx.input_max_abs = 30.0f;
    mac->Multiply(ConstMatrixView(x.data(), m, k, k), MatrixView{y.data(), m, n, n},
                  Direction::kForward, ctx, c);
    ctx.input_max_abs = -1.0f;
    mac->GradientCalc(ConstMatrixView(x.data(), m, k, k), ConstMatrixView(dy.data(), m, n, n),
                      MatrixView{dw.data(), k, n, n}, ctx, c);
    for (int64_t r = 0; r < k; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        double want = 0;
        for (int64_t i = 0; i < m; ++i) {
          const double xi = quantized ? 2.0 * std::nearbyint(x[i * k + r] / 2.0) : x[i * k + r];
          want += xi * dy[i * n + j];
        }
        ASSERT_NEAR(dw[r * n + j], want, 1e-4 * (1 + std::fabs(want)))
            << (quantized ? "quantized" : "fp") << " at " << r << ", " << j;
      }
    }
  }
}

// The transposed levels are built on the first transposed read after a programming: a read
// after reprogramming must see the new weights, exactly as a macro programmed with them alone.
TEST(AnalogMacroTest, TransposedReadAfterReprogrammingUsesTheNewWeights) {
  for (const char* kernel : {"fast", "ref"}) {
    const std::string cfg = std::string("rows: 64, cols: 64, kernel: ") + kernel;
    auto mac = MakeMacro(cfg), fresh = MakeMacro(cfg);
    Mats a = Random(3, 40, 24, 4, false), b = a;
    Forward(*mac, a, Direction::kTransposed);
    for (size_t i = 0; i < b.w.size(); i += 3) b.w[i] = -b.w[i];  // a third of the weights
    Mats c = b;
    Forward(*mac, b, Direction::kTransposed);
    Forward(*fresh, c, Direction::kTransposed);
    EXPECT_EQ(b.y, c.y) << kernel;
    EXPECT_NE(a.y, b.y) << kernel;
  }
}

TEST(AnalogMacroTest, NoiseIsKeyedSoRepeatsMatchAndStepsDiffer) {
  const std::string cfg = "thermal_noise: {sigma: 2.0}, adc: {bits: 6}";
  Mats a = Random(6, 200, 10, 5, true);
  auto m1 = MakeMacro(cfg);
  Forward(*m1, a, Direction::kForward, 3);
  const auto y1 = a.y;
  auto m2 = MakeMacro(cfg);
  Forward(*m2, a, Direction::kForward, 3);
  EXPECT_EQ(y1, a.y);
  auto m3 = MakeMacro(cfg);
  Forward(*m3, a, Direction::kForward, 4);
  EXPECT_NE(y1, a.y);
}

TEST(AnalogMacroTest, CalibrationShrinksTheRangeAndReducesTheError) {
  const std::string cfg = "input_bits: 4, weight_bits: 4, rows: 128";
  Mats a = Random(32, 256, 16, 6, true);
  std::vector<float> exact;
  auto err = [&](const std::vector<float>& y) {
    double e = 0;
    for (size_t i = 0; i < y.size(); ++i) e += (y[i] - exact[i]) * (y[i] - exact[i]);
    return e;
  };
  auto ideal = MakeMacro(cfg + ", forward: ideal");
  Forward(*ideal, a);
  exact = a.y;
  ASSERT_GT(err(std::vector<float>(exact.size(), 0.0f)), 0.0);
  auto fixed = MakeMacro(cfg + ", adc: {bits: 4}");
  Forward(*fixed, a);
  const double e_fixed = err(a.y);
  auto cal = MakeMacro(cfg + ", adc: {bits: 4, range: calibrated}");
  Forward(*cal, a);
  const double e_cal = err(a.y);
  auto* t = dynamic_cast<AnalogTunable*>(cal.get());
  ASSERT_NE(t, nullptr);
  EXPECT_LT(t->adc_full_scale_fraction(), 0.5);
  EXPECT_LT(e_cal, 0.5 * e_fixed);
}

// adc.transposed_range: calibrated. Neural-PIM's shape (dataflow C, differential 9-bit
// weights in 1-bit cells, 8-bit NNADC, SINAD 50 dB): the transposed read sums 8-row blocks
// (128 columns / 2 polarities / 8 slices) over a full range of 8 x 255 x 255, so typical error
// partial sums sit in the bottom codes and the SINAD noise (full scale / 316, about 0.8 LSB)
// swamps them. A range calibrated on the first transposed input shrinks, cuts the error against
// the exact transposed product, is counted as calibration work, and leaves the forward read's
// numbers as they were.
TEST(AnalogMacroTest, TransposedRangeCalibrationShrinksTheBackwardRangeOnly) {
  const std::string cfg =
      "rows: 128, cols: 128, input_bits: 8, weight_bits: 9, decomposition: custom, dac_bits: 4, "
      "cell_bits: 1, weight_encoding: differential, dataflow: C, output_bits: 8, sinad: {db: 50}";
  auto exact_of = [&](const std::string& c, Mats a, Direction dir) {
    auto m = MakeMacro(c);
    Forward(*m, a, dir);
    return a.y;
  };
  auto err = [](const std::vector<float>& y, const std::vector<float>& e) {
    double s = 0;
    for (size_t i = 0; i < y.size(); ++i) s += (y[i] - e[i]) * (y[i] - e[i]);
    return s;
  };
  const Mats a = Random(64, 96, 64, 11, false);  // errors 64 x 64 -> 64 x 96
  const std::vector<float> exact = exact_of(cfg + ", backward: ideal", a, Direction::kTransposed);
  Mats full = a, cal = a;
  auto mf = MakeMacro(cfg + ", adc: {range: calibrated}");
  Forward(*mf, full, Direction::kTransposed);
  auto mc = MakeMacro(cfg + ", adc: {range: calibrated, transposed_range: calibrated}");
  Forward(*mc, cal, Direction::kTransposed);
  // Measured 0.0625 (2^-4) on these operands; the full range is 1.
  EXPECT_LT(mc->HardwareParams().at("adc_full_scale_fraction_transposed"), 0.25);
  EXPECT_EQ(mf->HardwareParams().at("adc_full_scale_fraction_transposed"), 1.0);
  // Measured: 3.8 against 469 (124x); the full range reads mostly SINAD noise.
  EXPECT_LT(err(cal.y, exact), 0.05 * err(full.y, exact));
  ActionCounts work;
  mc->TakeCalibrationCounts(work);
  EXPECT_GT(work.Get("adc_conversions"), 0);
  EXPECT_GT(work.Get("digital_macs"), 0);
  // The forward read is untouched by the option.
  const Mats fa = Random(16, 96, 64, 12, true);
  EXPECT_EQ(exact_of(cfg + ", adc: {range: calibrated}", fa, Direction::kForward),
            exact_of(cfg + ", adc: {range: calibrated, transposed_range: calibrated}", fa,
                     Direction::kForward));
}

// Calibration spreads its 256 rows over the whole call: a 512-row input whose halves differ in
// scale calibrates to the same range whichever half comes first (taking the first 256 rows
// would calibrate on one half only).
TEST(AnalogMacroTest, CalibrationSamplesRowsAcrossTheCall) {
  const std::string cfg = "input_bits: 4, weight_bits: 4, rows: 128, adc: {bits: 4, range: calibrated}";
  Mats base = Random(512, 256, 16, 8, true);
  auto fraction = [&](bool small_first) {
    Mats a = base;
    for (int64_t r = 0; r < a.m; ++r) {
      const bool small = (r < 256) == small_first;
      for (int64_t c = 0; c < a.k; ++c) a.x[r * a.k + c] *= small ? 0.125f : 1.0f;
    }
    auto mac = MakeMacro(cfg);
    Forward(*mac, a);
    return dynamic_cast<AnalogTunable*>(mac.get())->adc_full_scale_fraction();
  };
  const double sl = fraction(true), ls = fraction(false);
  EXPECT_EQ(sl, ls);
  EXPECT_LT(sl, 1.0);
}

const char* kAnalogCnn = R"(
seed: 4
data: {impl: synthetic, train_size: 64, test_size: 32, height: 8, width: 8, channels: 2, classes: 4,
       noise: 1.0}
model:
  impl: sequential
  layers:
    - {impl: conv2d, out_channels: 6, kernel: 3, padding: 1}
    - {impl: relu}
    - {impl: max_pool2d, kernel: 2}
    - {impl: flatten}
    - {impl: linear, out_features: 16}
    - {impl: relu}
    - {impl: linear, out_features: 4}
train: {epochs: 2, batch_size: 16, optimizer: {impl: sgd, learning_rate: 0.05, momentum: 0.9}}
pim:
  macro: {impl: analog_crossbar, rows: 16, cols: 32, input_bits: 6, weight_bits: 6,
          dataflow: A, adc: {bits: 5, inl_lsb: 0.5}, thermal_noise: {sigma: 0.25}}
)";

ConfigNode Resolve(const std::vector<std::string>& sets) {
  return testing::ResolveYaml(kAnalogCnn, "analog.yaml", sets);
}

std::vector<std::vector<float>> Weights(Session& s) { return testing::StateValues(s); }

// Trains the CNN twice, with `a` and with `b` set, and compares the weights; both with INL (the
// general read-out) and without (5-bit ADC over 16-row blocks: the lossless read-out).
void ExpectSameTraining(const char* a, const char* b) {
  for (const char* inl : {"pim.macro.adc.inl_lsb=0.5", "pim.macro.adc.inl_lsb=0"}) {
    Session one(Resolve({a, inl}));
    one.Train("", false, {});
    Session two(Resolve({b, inl}));
    two.Train("", false, {});
    EXPECT_EQ(Weights(one), Weights(two)) << a << " vs " << b << ", " << inl;
  }
}

// With INL the read-out takes the general path, where fast equals the reference bit for bit.
// Without it (the lossless read-out) fast samples the draws as sparse tails, the same law drawn
// differently (kernels/analog_test.cc checks it against the reference in distribution and
// against ref::AnalogMatMulSparseTails bit for bit), so the weights differ there.
TEST(AnalogTrainingTest, RefAndFastKernelsTrainToIdenticalWeightsWithNoiseOn) {
  const char* inl = "pim.macro.adc.inl_lsb=0.5";
  Session one(Resolve({"pim.macro.kernel=fast", inl}));
  one.Train("", false, {});
  Session two(Resolve({"pim.macro.kernel=ref", inl}));
  two.Train("", false, {});
  EXPECT_EQ(Weights(one), Weights(two));
}

TEST(AnalogTrainingTest, OneAndTwoThreadsGiveIdenticalWeights) {
  ExpectSameTraining("threads=1", "threads=2");
}

// The mse input scale is searched over the whole batch (a conv layer's groups share it) and
// column weight scales: still identical at 1 and 2 threads, and a different training from the
// max rule's (the option reaches the layers).
TEST(AnalogTrainingTest, MseInputScaleAndColumnScalesTrainIdenticallyAtOneAndTwoThreads) {
  const std::string mse = "pim.macro.input_scale=mse", col = "pim.macro.weight_scale=column";
  Session one(Resolve({"threads=1", mse, col}));
  one.Train("", false, {});
  Session two(Resolve({"threads=2", mse, col}));
  two.Train("", false, {});
  EXPECT_EQ(Weights(one), Weights(two));
  Session max_rule(Resolve({"threads=1"}));
  max_rule.Train("", false, {});
  EXPECT_NE(Weights(one), Weights(max_rule));
}

TEST(AnalogTrainingTest, LearnsOnTheMacroAndCountsConversionsAndClipping) {
  testing::TempDir dir;
  Session s(Resolve({"train.epochs=4"}));
  TrainSummary sum = s.Train(dir.path(), false, {});
  EXPECT_GT(sum.test_accuracy, 0.5);
  const auto& hw = sum.epochs.back().hardware_json;
  EXPECT_NE(hw.find("adc_conversions"), std::string::npos);
  EXPECT_NE(hw.find("adc_clipped"), std::string::npos);
  EXPECT_NE(hw.find("input_cycles"), std::string::npos);
}

}  // namespace
}  // namespace pim

namespace pim {
namespace {

const char* kQatCnn = R"(
seed: 4
data: {impl: synthetic, train_size: 64, test_size: 32, height: 8, width: 8, channels: 2, classes: 4,
       noise: 1.0}
model:
  impl: sequential
  layers:
    - {impl: conv2d, out_channels: 6, kernel: 3, padding: 1}
    - {impl: batch_norm}
    - {impl: relu}
    - {impl: max_pool2d, kernel: 2}
    - {impl: flatten}
    - {impl: linear, out_features: 4}
train: {epochs: 3, batch_size: 16, optimizer: {impl: sgd, learning_rate: 0.05, momentum: 0.9},
        algorithm: {impl: pim_qat, calibrate_every: 2}}
pim:
  macro: {impl: analog_crossbar, rows: 16, cols: 32, input_bits: 4, weight_bits: 4,
          adc: {bits: 3, inl_lsb: 0.3}, thermal_noise: {sigma: 0.3}}
)";

ConfigNode ResolveQat(const std::vector<std::string>& sets) {
  ConfigNode merged = ParseYaml(kQatCnn, "qat.yaml");
  for (const auto& s : sets) ApplySet(merged, s);
  return ValidateRoot(merged);
}

TEST(PimQatTest, TrainsWithTheAdcInTheLoopAndSetsTheReadouts) {
  Session s(ResolveQat({}));
  TrainSummary sum = s.Train("", false, {});
  EXPECT_GT(sum.test_accuracy, 0.5);
  auto* t = dynamic_cast<AnalogTunable*>(s.network().layer(0).matmul()->macro());
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->readout(Direction::kForward), AnalogTunable::Readout::kAnalog);
  EXPECT_EQ(t->readout(Direction::kTransposed), AnalogTunable::Readout::kIdeal);  // STE
  EXPECT_LT(t->adc_full_scale_fraction(), 1.0);  // forward rescaling moved the range
  EXPECT_GT(t->output_gain(), 0.0);
}

TEST(PimQatTest, CalibrateModeKeepsTheWeightsAndReestimatesBatchNorm) {
  testing::TempDir dir;
  {
    Session s(ResolveQat({"train.algorithm.adc_in_loop=false", "train.epochs=2"}));
    s.Train(dir.File("qat"), false, {});
  }
  Session deploy(ResolveQat({"train.epochs=1", "train.algorithm.mode=calibrate",
                             "train.algorithm.init_from=" + dir.File("qat")}));
  NamedTensors before;
  std::vector<std::vector<float>> loaded;
  for (auto& [name, t] : deploy.trainer().StateTensors()) {
    if (name.rfind("layers.", 0) == 0) loaded.emplace_back(t->data(), t->data() + t->numel());
  }
  deploy.Train("", false, {});
  size_t i = 0;
  bool bn_changed = false;
  for (auto& [name, t] : deploy.trainer().StateTensors()) {
    if (name.rfind("layers.", 0) != 0) continue;
    std::vector<float> now(t->data(), t->data() + t->numel());
    if (name.find("running_") != std::string::npos) {
      bn_changed = bn_changed || now != loaded[i];
    } else {
      EXPECT_EQ(now, loaded[i]) << name;  // no weight update in calibration
    }
    ++i;
  }
  EXPECT_TRUE(bn_changed);
}

}  // namespace
}  // namespace pim
