// Analog device physics: device response models, pulsed update rules, the io read path, the
// analog training algorithms; thread-count determinism of every new path (docs/devices.md).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/device/array.h"
#include "pimtrain/device/device.h"
#include "pimtrain/device/drift.h"
#include "pimtrain/device/io.h"
#include "pimtrain/device/trainable.h"
#include "pimtrain/device/update.h"
#include "pimtrain/macro/macro.h"
#include "pimtrain/sim/session.h"
#include "test_util.h"

namespace pim {
namespace {

std::shared_ptr<const Device> MakeDevice(const std::string& yaml) {
  return std::shared_ptr<const Device>(
      Registry<Device>::CreateFrom(ParseYaml(yaml, "device.yaml")));
}

TEST(DeviceTest, ConstantStepWithoutSpreadsMovesByDwMinPerPulse) {
  auto dev = MakeDevice(
      "{impl: constant_step, dw_min: 0.01, dw_min_dtod: 0, dw_min_std: 0, w_max_dtod: 0, "
      "w_min_dtod: 0, up_down_dtod: 0}");
  DeviceArray a(dev, 1, 1, 7);
  float w0 = 0;
  a.Set(ConstMatrixView(&w0, 1, 1, 1), 1);
  const CounterRng rng(3);
  a.Pulse(0, 10, 1, rng, 0);
  EXPECT_NEAR(a.hidden()[0], 0.1f, 1e-5);
  a.Pulse(0, 100, 1, rng, 0);  // clipped at w_max 0.6
  EXPECT_FLOAT_EQ(a.hidden()[0], 0.6f);
  a.Pulse(0, 30, -1, rng, 0);
  EXPECT_NEAR(a.hidden()[0], 0.3f, 1e-5);
}

TEST(DeviceTest, SoftBoundsStepShrinksLinearlyToTheBound) {
  auto dev = MakeDevice(
      "{impl: soft_bounds, dw_min: 0.01, dw_min_dtod: 0, dw_min_std: 0, w_max_dtod: 0, "
      "w_min_dtod: 0, up_down_dtod: 0}");
  DeviceArray a(dev, 1, 1, 7);
  float w0 = 0.3f;
  a.Set(ConstMatrixView(&w0, 1, 1, 1), 1);
  const CounterRng rng(3);
  a.Pulse(0, 1, 1, rng, 0);
  EXPECT_NEAR(a.hidden()[0], 0.3f + 0.01f * (1 - 0.3f / 0.6f), 1e-6);
  a.Pulse(0, 5000, 1, rng, 0);
  EXPECT_NEAR(a.hidden()[0], 0.6f, 1e-3);  // approaches, never passes, the bound
  EXPECT_LE(a.hidden()[0], 0.6f);
}

TEST(DeviceTest, DeviceToDeviceSpreadsAreFixedByTheKeyAndDifferPerCell) {
  auto dev = MakeDevice("{impl: soft_bounds}");
  DeviceArray a(dev, 4, 8, 42), b(dev, 4, 8, 42), c(dev, 4, 8, 43);
  EXPECT_EQ(a.cells().dw_up, b.cells().dw_up);
  EXPECT_EQ(a.cells().b_max, b.cells().b_max);
  EXPECT_NE(a.cells().dw_up, c.cells().dw_up);
  EXPECT_NE(a.cells().dw_up[0], a.cells().dw_up[1]);
}

TEST(DeviceTest, ExpStepGranularityIsTheDownStepAtZero) {
  auto dev = MakeDevice("{impl: exp_step}");
  const double f = 1 - 0.36833 * std::exp(-12.78785 * 0.2425);
  EXPECT_NEAR(dev->Granularity(), 0.001 * f, 1e-9);
}

TEST(DeviceTest, NeuroSimCurveReachesGmaxAfterPmaxPulsesAndIsNonlinear) {
  auto dev = MakeDevice("{impl: neurosim_nonlinear, sigma_c2c: 0}");
  DeviceArray a(dev, 1, 1, 1);
  float w0 = -1;
  a.Set(ConstMatrixView(&w0, 1, 1, 1), 1);
  const CounterRng rng(1);
  a.Pulse(0, 1, 1, rng, 0);
  const float first = a.hidden()[0] + 1;
  a.Pulse(0, 95, 1, rng, 0);
  const float before_last = a.hidden()[0];
  a.Pulse(0, 1, 1, rng, 0);
  EXPECT_NEAR(a.hidden()[0], 1.0f, 1e-4);            // P_max = 97 pulses span the range
  EXPECT_GT(first, 2.0f / 97 * 2);                   // NL 2.4: early steps much larger
  EXPECT_LT(a.hidden()[0] - before_last, 2.0f / 97);  // and late ones smaller than linear
}

TEST(DeviceTest, PiecewiseStepReadsItsTableFromCsvAndRejectsBadRows) {
  testing::TempDir dir;
  const std::string good = dir.path() + "/steps.csv";
  std::ofstream(good) << "up,down\n2,1\n1,1\n0.5,1\n";
  auto dev = MakeDevice("{impl: piecewise_step, dw_min_dtod: 0, w_max_dtod: 0, w_min_dtod: 0, "
                        "up_down_dtod: 0, dw_min_std: 0, table: " + good + "}");
  EXPECT_NEAR(dev->Granularity(), 0.001, 1e-12);
  DeviceArray a(dev, 1, 1, 1);
  float w0 = -0.6f;
  a.Set(ConstMatrixView(&w0, 1, 1, 1), 1);
  a.Pulse(0, 1, 1, CounterRng(1), 0);
  EXPECT_NEAR(a.hidden()[0], -0.6f + 0.002f, 1e-6);  // the table's first node: 2 x dw_min
  const std::string bad = dir.path() + "/bad.csv";
  std::ofstream(bad) << "1,1\nx,2\n";
  EXPECT_THROW(MakeDevice("{impl: piecewise_step, table: " + bad + "}"), ConfigError);
}

// E[n_rc] = lr |x_r d_c| / epsilon (spec 7.7): mean weight change over many update cycles.
TEST(UpdateTest, StochasticPulsesGiveTheExpectedMeanChange) {
  auto dev = MakeDevice(
      "{impl: constant_step, dw_min: 0.001, dw_min_dtod: 0, dw_min_std: 0, w_max: 100, "
      "w_min: -100, w_max_dtod: 0, w_min_dtod: 0, up_down_dtod: 0}");
  auto rule = Registry<UpdateRule>::CreateFrom(ParseYaml("{impl: stochastic_pulses}", "u"));
  DeviceArray a(dev, 2, 3, 1);
  std::vector<float> w0(6, 0.0f);
  a.Set(ConstMatrixView(w0.data(), 2, 3, 3), 1);
  const float x[2] = {1.0f, 0.5f}, d[3] = {0.2f, -0.1f, 0.05f};
  const float lr = 0.01f;
  const int cycles = 4000;
  for (int t = 0; t < cycles; ++t) {
    UpdateContext uc;
    uc.step = t;
    ActionCounts counts;
    rule->Apply(a, ConstMatrixView(x, 1, 2, 2), ConstMatrixView(d, 1, 3, 3), lr, uc, 1, counts);
  }
  for (int r = 0; r < 2; ++r) {
    for (int c = 0; c < 3; ++c) {
      const double expect = -lr * x[r] * d[c] * cycles;
      // pulses per cycle ~ binomial; the mean over 4000 cycles is within 4 sigma
      const double per = std::fabs(lr * x[r] * d[c]) / 0.001;
      const double sigma = std::sqrt(per * cycles) * 0.001;
      EXPECT_NEAR(a.hidden()[r * 3 + c], expect, 4 * sigma + 1e-6) << r << "," << c;
    }
  }
}

TEST(UpdateTest, WriteVerifyReachesItsTargetWithinTolerance) {
  auto dev = MakeDevice("{impl: soft_bounds, dw_min: 0.001}");
  auto rule = Registry<UpdateRule>::CreateFrom(
      ParseYaml("{impl: write_verify, max_iterations: 20, tolerance: 1.0}", "u"));
  DeviceArray a(dev, 1, 4, 5);
  std::vector<float> w0(4, 0.0f);
  a.Set(ConstMatrixView(w0.data(), 1, 4, 4), 1);
  const float x = 1.0f, d[4] = {0.5f, -0.5f, 0.2f, 0.0f};
  ActionCounts counts;
  rule->Apply(a, ConstMatrixView(&x, 1, 1, 1), ConstMatrixView(d, 1, 4, 4), 0.1f, UpdateContext{},
              1, counts);
  for (int c = 0; c < 4; ++c) EXPECT_NEAR(a.hidden()[c], -0.1f * d[c], 2.5e-3) << c;
  EXPECT_GT(counts.Get(kCountVerifyReads), 0);
  EXPECT_EQ(counts.Get(kCountCellsPulsed), 3);
}

TEST(IoTest, PerfectIoIsTheExactProductAndDefaultsQuantize) {
  const float w[6] = {0.1f, -0.2f, 0.3f, 0.4f, -0.5f, 0.6f};  // 2 x 3
  const float x[2] = {0.7f, -0.3f};
  float y[3], yt[3];
  IoParams perfect;
  perfect.is_perfect = true;
  ActionCounts c;
  AnalogRead(perfect, ConstMatrixView(x, 1, 2, 2), w, 2, 3, false, 1, 1, MatrixView{y, 1, 3, 3},
             nullptr, c);
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(y[j], x[0] * w[j] + x[1] * w[3 + j], 1e-6);
  IoParams io;  // spec defaults: out_noise 0.06 in units of the input scale max|x|
  io.out_noise = 0;
  AnalogRead(io, ConstMatrixView(x, 1, 2, 2), w, 2, 3, false, 1, 1, MatrixView{yt, 1, 3, 3},
             nullptr, c);
  for (int j = 0; j < 3; ++j) {
    EXPECT_NEAR(yt[j], y[j], 0.7 * (2 * 12.0 / 510 + 0.02));  // ADC step and DAC step
  }
}

std::unique_ptr<Macro> MakeCrossbar(const std::string& yaml) {
  return Registry<Macro>::CreateFrom(ParseYaml(
      "{impl: analog_crossbar, decomposition: native, rows: 8, cols: 8, " + yaml + "}", "m.yaml"));
}

// pim.macro.mapping (aihwkit MappingParameter): the largest |w| of the layer (or of each column)
// is programmed at omega x the device range, the reads and ReadWeights carry the digital scale
// back, and an update of the ideal device is the exact step of W (not of W_dev).
TEST(MappingTest, WeightsUseOmegaOfTheRangeAndReadBackUnchanged) {
  const float w[6] = {0.01f, -0.02f, 0.03f, 0.04f, -0.05f, 0.006f};  // 2 x 3
  const float x[2] = {0.7f, -0.3f};
  for (bool columnwise : {false, true}) {
    SCOPED_TRACE(columnwise);
    auto m = MakeCrossbar(std::string("device: {impl: ideal}, io: {is_perfect: true}, mapping: "
                                      "{weight_scaling_omega: 0.5, weight_scaling_columnwise: ") +
                          (columnwise ? "true" : "false") + "}");
    RunContext ctx;
    ActionCounts c;
    m->Program(ConstMatrixView(w, 2, 3, 3), ctx, c);
    auto* at = dynamic_cast<AnalogTrainable*>(m.get());
    ASSERT_NE(at, nullptr);
    const float* h = at->weight_array().hidden();
    // Ideal device range 0.6 (PulsedParams' w_max): max |w_dev| = 0.3 per layer / per column.
    const float col_max[3] = {0.04f, 0.05f, 0.03f};
    for (int i = 0; i < 6; ++i) {
      const float alpha = columnwise ? col_max[i % 3] / 0.3f : 0.05f / 0.3f;
      EXPECT_NEAR(h[i], w[i] / alpha, 1e-6) << i;
    }
    EXPECT_NEAR(std::fabs(h[4]), 0.3f, 1e-6);
    float back[6], y[3], dx[2];
    m->ReadWeights(MatrixView{back, 2, 3, 3});
    for (int i = 0; i < 6; ++i) EXPECT_NEAR(back[i], w[i], 1e-8) << i;
    c.Clear();
    m->Multiply(ConstMatrixView(x, 1, 2, 2), MatrixView{y, 1, 3, 3}, Direction::kForward, ctx, c);
    for (int j = 0; j < 3; ++j) EXPECT_NEAR(y[j], x[0] * w[j] + x[1] * w[3 + j], 1e-7);
    EXPECT_EQ(c.Get("out_scale_multiplies"), 3);
    const float dy[3] = {1.0f, -2.0f, 0.5f};
    m->Multiply(ConstMatrixView(dy, 1, 3, 3), MatrixView{dx, 1, 2, 2}, Direction::kTransposed,
                ctx, c);
    for (int r = 0; r < 2; ++r) {
      EXPECT_NEAR(dx[r], dy[0] * w[3 * r] + dy[1] * w[3 * r + 1] + dy[2] * w[3 * r + 2], 1e-7);
    }
    m->UpdateInArray(ConstMatrixView(x, 1, 2, 2), ConstMatrixView(dy, 1, 3, 3), 0.1f, ctx, c);
    m->ReadWeights(MatrixView{back, 2, 3, 3});
    for (int r = 0; r < 2; ++r) {
      for (int q = 0; q < 3; ++q) {
        EXPECT_NEAR(back[3 * r + q], w[3 * r + q] - 0.1f * x[r] * dy[q], 1e-6) << r << q;
      }
    }
  }
  // Asymmetric bounds: the range is the smaller side (reram_sb: w_max 1.25, w_min -0.75).
  auto m = MakeCrossbar("device: {impl: soft_bounds, w_max: 1.25, w_min: -0.75, w_max_dtod: 0, "
                        "w_min_dtod: 0}, io: {}, mapping: {weight_scaling_omega: 0.8}");
  RunContext ctx;
  ActionCounts c;
  m->Program(ConstMatrixView(w, 2, 3, 3), ctx, c);
  EXPECT_NEAR(dynamic_cast<AnalogTrainable*>(m.get())->weight_array().hidden()[4], -0.6f, 1e-6);
  // Off device mode the mapping has nothing to map: one line naming the key.
  EXPECT_THROW(MakeCrossbar("mapping: {weight_scaling_omega: 0.5}"), ConfigError);
}

const char* kAnalogMlp = R"(
seed: 5
data: {impl: synthetic, train_size: 96, test_size: 32, height: 4, width: 4, channels: 2,
       classes: 4, noise: 0.5}
model: {impl: mlp, layers: [32, 16, 4]}
train: {epochs: 2, batch_size: 16, optimizer: {impl: sgd, learning_rate: 0.1},
        algorithm: {impl: analog_sgd}}
pim:
  macro:
    impl: analog_crossbar
    decomposition: native
    rows: 16
    cols: 8
    device: {impl: soft_bounds, write_noise_std: 1.0}
    update: {impl: stochastic_pulses}
    io: {w_noise: 0.01}
)";

ConfigNode ResolveAnalog(const std::vector<std::string>& sets) {
  return testing::ResolveYaml(kAnalogMlp, "analog.yaml", sets);
}

// Every new path: device models, update rules, algorithms; same seed -> same bits at 1 and 2
// threads, and the run changes the weights.
TEST(DeviceTrainingTest, EveryPathIsBitIdenticalAtOneAndTwoThreads) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"pim.macro.device={impl: constant_step}"},
      {"pim.macro.device={impl: exp_step, write_noise_std: 2}"},
      {"pim.macro.device={impl: neurosim_nonlinear}", "pim.macro.update.impl=deterministic_pulses"},
      {"pim.macro.update.impl=write_verify"},
      {"train.algorithm.impl=mixed_precision"},
      {"train.algorithm.impl=tiki_taka", "train.algorithm.rows_per_transfer=8"},
      {"train.algorithm.impl=chopped_tiki_taka", "train.algorithm.rows_per_transfer=8"},
      {"train.algorithm.impl=tiki_taka", "pim.macro.mapping.weight_scaling_omega=0.5",
       "pim.macro.mapping.weight_scaling_columnwise=true"},
      {"train.algorithm.impl=mixed_precision", "pim.macro.mapping.weight_scaling_omega=0.5"},
      {"train.algorithm.impl=backprop", "pim.macro.io.ir_drop=1.0",
       "pim.macro.io.w_noise_type=pcm_read"},
  };
  for (const auto& extra : cases) {
    std::vector<std::string> one = extra, two = extra;
    one.push_back("threads=1");
    two.push_back("threads=2");
    Session a(ResolveAnalog(one));
    TrainSummary sa = a.Train("", false, {});
    Session b(ResolveAnalog(two));
    b.Train("", false, {});
    std::string name;
    for (const auto& e : extra) name += e + " ";
    EXPECT_EQ(testing::StateValues(a), testing::StateValues(b)) << name;
    EXPECT_GT(sa.test_accuracy, 0.0) << name;
  }
}

TEST(DeviceTrainingTest, AnalogSgdLearnsTheSyntheticTask) {
  Session s(ResolveAnalog({"train.epochs=4"}));
  TrainSummary r = s.Train("", false, {});
  EXPECT_GT(r.test_accuracy, 0.6);
}

// Every device preset merges onto an analog config and trains (synthetic data, one epoch).
TEST(DeviceTrainingTest, EveryDevicePresetTrains) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(PIMTRAIN_SOURCE_DIR) +
                                                           "/presets/devices")) {
    if (e.path().extension() != ".yaml") continue;
    SCOPED_TRACE(e.path().string());
    ConfigNode merged = ParseYaml(kAnalogMlp, "analog.yaml");
    MergeInto(merged, LoadYamlFile(e.path().string()));
    ApplySet(merged, "train.epochs=1");
    ConfigNode c = ValidateRoot(merged);
    ASSERT_TRUE(c.At("source").Has("citation"));
    ASSERT_TRUE(c.At("source").Has("assumptions"));
    Session s(c);
    TrainSummary r = s.Train("", false, {});
    EXPECT_GT(r.test_accuracy, 0.0);
    ++n;
  }
  EXPECT_GE(n, 9);
}

// A run stopped after epoch 1 and resumed from its checkpoint ends bit-identical to the
// uninterrupted run, for every algorithm that keeps state between steps (Tiki-Taka's H,
// choppers, next row and fast array A; mixed precision's chi; C's write-noise read weights).
TEST(DeviceTrainingTest, ResumeIsBitIdenticalWithTheAlgorithmsState) {
  const std::vector<std::vector<std::string>> cases = {
      {"train.algorithm.impl=analog_sgd"},
      {"train.algorithm.impl=mixed_precision"},
      {"train.algorithm.impl=tiki_taka", "train.algorithm.rows_per_transfer=5"},
      {"train.algorithm.impl=chopped_tiki_taka", "train.algorithm.rows_per_transfer=5",
       "train.algorithm.in_chop_prob=0.5"},
      // With a mapping: its scales and C's device values are restored (out_scale, c_hidden).
      {"train.algorithm.impl=analog_sgd", "pim.macro.mapping.weight_scaling_omega=0.5",
       "pim.macro.mapping.weight_scaling_columnwise=true"},
      {"train.algorithm.impl=mixed_precision", "pim.macro.mapping.weight_scaling_omega=0.5"},
  };
  for (const auto& extra : cases) {
    SCOPED_TRACE(extra[0]);
    std::vector<std::string> sets = extra;
    sets.push_back("train.epochs=3");
    testing::TempDir dir;
    Session full(ResolveAnalog(sets));
    full.Train(dir.File("full"), false, {});
    ASSERT_TRUE(testing::TrainAndStopAfterEpoch(ResolveAnalog(sets), dir.File("cut"), 1));
    Session resumed(ResolveAnalog(sets));
    resumed.Train(dir.File("cut"), true, {});
    const auto a = testing::StateValues(full), b = testing::StateValues(resumed);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(a, b);
    int named = 0;  // the algorithm's state is in the checkpoint (all but analog_sgd add some)
    for (auto& [name, t] : resumed.trainer().StateTensors()) named += name.rfind("algorithm.", 0) == 0;
    EXPECT_GE(named, 2);  // C's write-noise read weights of both layers, at least
  }
}

// backprop reprograms each weight every step, and the programming's write noise is keyed by the
// step: a resumed run programs its arrays with the last update's key, so it reads what the
// uninterrupted run read (its weights, then its test accuracy after each epoch, are the same).
TEST(DeviceTrainingTest, BackpropWithWriteNoiseResumesBitIdentical) {
  const std::vector<std::string> sets = {"train.algorithm.impl=backprop", "train.epochs=3"};
  testing::TempDir dir;
  Session full(ResolveAnalog(sets));
  const TrainSummary f = full.Train(dir.File("full"), false, {});
  ASSERT_TRUE(testing::TrainAndStopAfterEpoch(ResolveAnalog(sets), dir.File("cut"), 1));
  Session resumed(ResolveAnalog(sets));
  const TrainSummary r = resumed.Train(dir.File("cut"), true, {});
  EXPECT_EQ(testing::StateValues(full), testing::StateValues(resumed));
  ASSERT_EQ(f.epochs.size(), r.epochs.size());
  for (size_t e = 0; e < f.epochs.size(); ++e) {
    EXPECT_EQ(f.epochs[e].test_loss, r.epochs[e].test_loss) << "epoch " << e + 1;
  }
  // eval from the checkpoint reads the arrays as the run's last evaluation did.
  Session eval(ResolveAnalog(sets));
  EXPECT_EQ(eval.EvaluateCheckpoint(dir.File("full")).loss, f.epochs.back().test_loss);
}

// metrics.jsonl carries each layer's device pulses and verify reads per epoch, and their sum.
TEST(DeviceTrainingTest, MetricsCarryPulsesAndVerifyReadsPerLayerAndEpoch) {
  testing::TempDir dir;
  Session s(ResolveAnalog({"pim.macro.update.impl=write_verify"}));
  s.Train(dir.File("run"), false, {});
  std::ifstream in(dir.File("run/metrics.jsonl"));
  int lines = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    ++lines;
    const auto j = nlohmann::json::parse(line);
    ASSERT_TRUE(j.contains("device")) << line;
    int64_t pulses = 0, reads = 0;
    ASSERT_EQ(j["layers"].size(), 2u);
    for (const auto& l : j["layers"]) {
      ASSERT_TRUE(l.contains("device")) << line;
      EXPECT_GT(l["device"]["pulses"].get<int64_t>(), 0);
      EXPECT_GT(l["device"]["verify_reads"].get<int64_t>(), 0);
      EXPECT_EQ(l["device"]["pulses"].get<int64_t>(),
                l["actions"]["update"]["device_pulses"].get<int64_t>());
      pulses += l["device"]["pulses"].get<int64_t>();
      reads += l["device"]["verify_reads"].get<int64_t>();
    }
    EXPECT_EQ(j["device"]["pulses"].get<int64_t>(), pulses);
    EXPECT_EQ(j["device"]["verify_reads"].get<int64_t>(), reads);
  }
  EXPECT_EQ(lines, 2);
}

// backprop on a pulsed device reprograms exactly; the run says that the pulses do not act.
TEST(DeviceTrainingTest, BackpropOnAPulsedDeviceWarnsThatPulsesDoNotAct) {
  std::vector<std::string> infos;
  SessionCallbacks cb;
  cb.on_info = [&](const std::string& m) { infos.push_back(m); };
  Session s(ResolveAnalog({"train.algorithm.impl=backprop", "train.epochs=1"}));
  s.Train("", false, cb);
  ASSERT_EQ(infos.size(), 1u);
  EXPECT_NE(infos[0].find("warning: pim.macro.device soft_bounds"), std::string::npos) << infos[0];
  infos.clear();
  Session quiet(ResolveAnalog({"train.algorithm.impl=backprop", "train.epochs=1",
                               "pim.macro.device={impl: ideal}", "pim.macro.update.impl=ideal"}));
  quiet.Train("", false, cb);
  EXPECT_TRUE(infos.empty());
}

TEST(DeviceTrainingTest, DeviceBlockNeedsNativeDecomposition) {
  EXPECT_THROW(Session(ResolveAnalog({"pim.macro.decomposition=bit_serial"})), ConfigError);
}

TEST(DeviceTrainingTest, AnalogSgdRefusesAMacroWithoutDevices) {
  ConfigNode merged = ParseYaml(kAnalogMlp, "analog.yaml");
  ConfigNode* macro = merged.Find("pim")->Find("macro");
  macro->Erase("device");
  macro->Erase("update");
  macro->Erase("io");
  macro->Erase("decomposition");
  Session s(ValidateRoot(merged));
  EXPECT_THROW(s.Train("", false, {}), UnsupportedError);
}

}  // namespace
}  // namespace pim

namespace pim {
namespace {

TEST(DeploymentTest, DriftShrinksWeightsAndCompensationRestoresTheirScale) {
  std::vector<float> w(4096);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(0.37f * i) * 0.1f;
  auto mean_abs = [](const std::vector<float>& v) {
    double s = 0;
    for (float x : v) s += std::fabs(x);
    return s / v.size();
  };
  DeploymentParams d;
  d.programming_noise = d.read_noise = d.compensation = false;
  std::vector<float> exact = w;
  ApplyDeployment(d, 1, 0, exact.data(), static_cast<int64_t>(exact.size()));
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(exact[i], w[i], 1e-6);  // t = 0: no drift
  d.t_inference = 31536000;  // one year: (t/t0)^-nu with nu ~ 0.05..0.1 shrinks |w|
  std::vector<float> drifted = w;
  ApplyDeployment(d, 1, 0, drifted.data(), static_cast<int64_t>(drifted.size()));
  EXPECT_LT(mean_abs(drifted), 0.6 * mean_abs(w));
  d.compensation = true;
  std::vector<float> comp = w;
  ApplyDeployment(d, 1, 0, comp.data(), static_cast<int64_t>(comp.size()));
  EXPECT_NEAR(mean_abs(comp), mean_abs(w), 1e-3 * mean_abs(w));
}

TEST(DeploymentTest, StuckAtFaultsAreFixedBySeedAndHitTheirFraction) {
  std::vector<float> w(20000, 0.05f);
  DeploymentParams d;
  d.programming_noise = d.read_noise = d.drift = d.compensation = false;
  d.stuck_at_zero_prob = 0.1;
  std::vector<float> a = w, b = w;
  d.repetition = 0;
  ApplyDeployment(d, 3, 1, a.data(), static_cast<int64_t>(a.size()));
  d.repetition = 5;  // another programming: the same cells are stuck
  ApplyDeployment(d, 3, 1, b.data(), static_cast<int64_t>(b.size()));
  EXPECT_EQ(a, b);
  int64_t zero = 0;
  for (float x : a) zero += x == 0.0f;  // the g+ device of a positive weight stuck at 0
  EXPECT_NEAR(static_cast<double>(zero) / a.size(), 0.1, 0.01);
}

}  // namespace
}  // namespace pim

namespace pim {
namespace {

// `pimtrain eval --drift-time`: the drift table from a checkpoint; a negative time is a one-line
// user error with exit code 2.
TEST(DeploymentCliTest, EvalPrintsTheDriftTableAndRejectsNegativeTimes) {
  testing::TempDir dir;
  testing::WriteTinyMnist(dir.path(), 128, 64, 28, /*gzip=*/true);
  const std::string config = dir.File("pcm.yaml");
  WriteFileAtomic(config, "seed: 3\nthreads: 2\ndata: {impl: fashion_mnist, dir: " + dir.path() +
                              "}\nmodel: {impl: mlp, layers: [784, 16, 10]}\n"
                              "train: {epochs: 1, batch_size: 32}\n"
                              "pim: {macro: {impl: analog_crossbar, decomposition: native, "
                              "io: {w_noise: 0.0175, w_noise_type: pcm_read}}}\n");
  const std::string out = dir.File("run");
  auto r = testing::RunCommand(std::string(PIMTRAIN_CLI) + " train " + config + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto e = testing::RunCommand(std::string(PIMTRAIN_CLI) + " eval " + out +
                               "/config.yaml --checkpoint " + out +
                               " --drift-time 1 31536000 --repeats 2");
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_NE(e.out.find("| 1 s |"), std::string::npos) << e.out;
  EXPECT_NE(e.out.find("| 1 year |"), std::string::npos) << e.out;
  auto bad = testing::RunCommand(std::string(PIMTRAIN_CLI) + " eval " + out +
                                 "/config.yaml --checkpoint " + out + " --drift-time=-5");
  EXPECT_EQ(bad.exit_code, 2) << bad.out << bad.err;
  EXPECT_NE(bad.err.find("--drift-time"), std::string::npos) << bad.err;
  EXPECT_EQ(bad.out.find("| drift time"), std::string::npos) << "a headed empty table: " << bad.out;
  auto missing = testing::RunCommand(std::string(PIMTRAIN_CLI) + " eval " + out +
                                     "/config.yaml --checkpoint " + dir.File("none") +
                                     " --drift-time 1");
  EXPECT_EQ(missing.exit_code, 2) << missing.out << missing.err;
  EXPECT_NE(missing.err.find("no such checkpoint"), std::string::npos) << missing.err;
  EXPECT_EQ(missing.out.find("| drift time"), std::string::npos) << missing.out;
}

}  // namespace
}  // namespace pim
