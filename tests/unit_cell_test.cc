// Unit cells (src/pimtrain/device/unit_cell.h, impl/one_sided.cc): the one-sided differential
// pair's read, where its pulses land, its refresh, and the pair through training.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/device/array.h"
#include "pimtrain/device/unit_cell.h"
#include "pimtrain/sim/session.h"
#include "test_util.h"

namespace pim {
namespace {

std::shared_ptr<const Device> MakeDevice(const std::string& yaml) {
  return std::shared_ptr<const Device>(
      Registry<Device>::CreateFrom(ParseYaml(yaml, "device.yaml")));
}

// Constant steps of 0.01 on devices in [0, 1], no spreads or noise: states are countable.
const char* kExactPair =
    "{impl: one_sided, device: {impl: constant_step, dw_min: 0.01, dw_min_dtod: 0, "
    "dw_min_std: 0, w_max: 1, w_min: 0, w_max_dtod: 0, w_min_dtod: 0, up_down_dtod: 0, "
    "reset_std: 0}}";

TEST(UnitCellTest, ReadIsTheDifferenceAndPulsesPotentiateTheirDevice) {
  DeviceArray a(MakeDevice(kExactPair), 1, 2, 7);
  const float w[2] = {0.2f, -0.1f};
  a.Set(ConstMatrixView(w, 1, 2, 2), 1);
  const std::vector<float>& g = *UnitCellState(a);
  ASSERT_EQ(g.size(), 4u);
  EXPECT_EQ(DevicesPerWeight(a), 2);
  EXPECT_NEAR(g[0], 0.2f, 1e-6);  // programmed: the difference on one device, the other reset
  EXPECT_NEAR(g[1], 0.0f, 1e-6);
  EXPECT_NEAR(g[2], 0.0f, 1e-6);
  EXPECT_NEAR(g[3], 0.1f, 1e-6);
  const CounterRng rng(3);
  a.Pulse(0, 10, 1, rng, 0);  // up: g+ rises
  EXPECT_NEAR(g[0], 0.3f, 1e-5);
  EXPECT_NEAR(g[1], 0.0f, 1e-6);
  a.Pulse(0, 20, -1, rng, 0);  // down: g- rises (potentiation only), g+ untouched
  EXPECT_NEAR(g[0], 0.3f, 1e-5);
  EXPECT_NEAR(g[1], 0.2f, 1e-5);
  for (int i = 0; i < 2; ++i) EXPECT_FLOAT_EQ(a.hidden()[i], g[2 * i] - g[2 * i + 1]);
  EXPECT_NEAR(a.hidden()[0], 0.1f, 1e-5);
  EXPECT_NEAR(a.hidden()[1], -0.1f, 1e-6);  // the other pair never moved
  // Bounds of the pair: g+ in [0, 1] minus g- in [0, 1].
  EXPECT_FLOAT_EQ(a.cells().b_max[0], 1.0f);
  EXPECT_FLOAT_EQ(a.cells().b_min[0], -1.0f);
  EXPECT_DOUBLE_EQ(a.granularity(), 0.01);
}

TEST(UnitCellTest, RefreshFiresOnlyPastBothThresholdsAndKeepsTheWeight) {
  DeviceArray a(MakeDevice(kExactPair), 1, 1, 7);
  const float w0 = 0;
  a.Set(ConstMatrixView(&w0, 1, 1, 1), 1);
  const std::vector<float>& g = *UnitCellState(a);
  const CounterRng rng(9);
  ActionCounts counts;
  // g+ to 0.8 (> 0.75) while g- is 0 (< 0.25): saturated one side, no refresh.
  a.Pulse(0, 40, 1, rng, 0);
  a.Pulse(0, 40, 1, rng, 0);
  EXPECT_NEAR(g[0], 0.8f, 1e-5);
  TakeUnitCellCounts(a, counts);
  EXPECT_EQ(counts.Get(kCountDevicePulses), 0);
  EXPECT_EQ(counts.Get(kCountVerifyReads), 4);  // two checks, each reading both devices
  // g- to 0.2: still below 0.25, no refresh.
  a.Pulse(0, 20, -1, rng, 0);
  EXPECT_NEAR(g[1], 0.2f, 1e-5);
  EXPECT_NEAR(a.hidden()[0], 0.6f, 1e-5);
  // g- to 0.3 (> 0.25) with g+ at 0.8 (> 0.75): refresh, both reset, 0.5 reprogrammed on g+.
  a.Pulse(0, 10, -1, rng, 0);
  EXPECT_NEAR(g[1], 0.0f, 1e-6);
  EXPECT_NEAR(g[0], 0.5f, 0.5f * 0.01f);
  EXPECT_NEAR(a.hidden()[0], 0.5f, 0.5f * 0.01f);  // within half a granularity
  counts.Clear();
  TakeUnitCellCounts(a, counts);
  EXPECT_EQ(counts.Get(kCountDevicePulses), 2 + 50);  // two resets, 50 steps of 0.01
  EXPECT_EQ(counts.Get(kCountVerifyReads), 2 * 2 + 2);  // 2 checks, 1 verify read, 2 devices
  counts.Clear();
  TakeUnitCellCounts(a, counts);  // taken once
  EXPECT_EQ(counts.Get(kCountDevicePulses), 0);
}

TEST(UnitCellTest, RefreshOfANegativeWeightProgramsTheMinusDevice) {
  DeviceArray a(MakeDevice(kExactPair), 1, 1, 7);
  const float w0 = -0.5f;  // g- = 0.5
  a.Set(ConstMatrixView(&w0, 1, 1, 1), 1);
  const std::vector<float>& g = *UnitCellState(a);
  const CounterRng rng(9);
  a.Pulse(0, 30, 1, rng, 0);  // g+ 0.3: 0.5 is not past 0.75
  EXPECT_NEAR(g[0], 0.3f, 1e-5);
  a.Pulse(0, 26, -1, rng, 0);  // g- 0.76 > 0.75, g+ 0.3 > 0.25: refresh to w = -0.46
  EXPECT_NEAR(g[0], 0.0f, 1e-6);
  EXPECT_NEAR(g[1], 0.46f, 0.005f);
}

TEST(UnitCellTest, SoftBoundsPairRefreshKeepsTheWeightWithinItsGranularity) {
  // Soft-bounds devices with their spreads and cycle-to-cycle noise: after every refresh the
  // pair holds its weight within the verify tolerance or a step of the device it programmed.
  auto dev = MakeDevice("{impl: one_sided, refresh_tolerance: 0.5}");
  DeviceArray a(dev, 8, 8, 11);
  std::vector<float> w(64, 0.0f);
  a.Set(ConstMatrixView(w.data(), 8, 8, 8), 1);
  const CounterRng rng(5);
  ActionCounts counts;
  int refreshes = 0;
  for (int cycle = 0; cycle < 400; ++cycle) {
    for (int64_t i = 0; i < 64; ++i) {
      const float before = a.hidden()[i];
      const int dir = ((i + cycle) % 3 == 0) ? -1 : 1;
      const std::vector<float> g0(UnitCellState(a)->begin() + 2 * i,
                                  UnitCellState(a)->begin() + 2 * i + 2);
      a.Pulse(i, 3, dir, rng, (static_cast<uint64_t>(i) << 8) + cycle * 1000003ull);
      const std::vector<float>& g = *UnitCellState(a);
      const bool reset = g[2 * i] < g0[0] || g[2 * i + 1] < g0[1];  // potentiation only
      if (reset) {
        ++refreshes;
        // 3 noisy steps moved the weight before the refresh read it: bound by 3 max steps.
        EXPECT_NEAR(a.hidden()[i], before, 3 * 0.001 * 2.5 + 0.001 * 2.5) << i;
      }
    }
  }
  EXPECT_GT(refreshes, 0);
  TakeUnitCellCounts(a, counts);
  EXPECT_GT(counts.Get(kCountDevicePulses), 2 * refreshes);
}

TEST(UnitCellTest, BadConfigsAreRejected) {
  EXPECT_THROW(MakeDevice("{impl: one_sided, device: {impl: ideal}}"), ConfigError);
  EXPECT_THROW(MakeDevice("{impl: one_sided, device: {impl: one_sided}}"), ConfigError);
  EXPECT_THROW(MakeDevice("{impl: one_sided, refresh_lower: 0.8}"), ConfigError);
  EXPECT_THROW(MakeDevice("{impl: one_sided, refresh_upper: 1.5}"), ConfigError);
}

// Sliced cell: w = sum gamma_q g_q; single_fixed moves only its device, all moves every one.
TEST(UnitCellTest, SlicedCellReadsTheWeightedSumAndUpdatesByPolicy) {
  const std::string inner =
      "device: {impl: constant_step, dw_min: 0.01, dw_min_dtod: 0, dw_min_std: 0, w_max: 1, "
      "w_min: -1, w_max_dtod: 0, w_min_dtod: 0, up_down_dtod: 0}";
  DeviceArray a(MakeDevice("{impl: sliced, gamma: [1, 0.1], update_index: 1, " + inner + "}"),
                1, 1, 7);
  const float w0 = 1.05f;  // device 0 (gamma 1) holds 1, device 1 (gamma 0.1) holds 0.5
  a.Set(ConstMatrixView(&w0, 1, 1, 1), 1);
  const std::vector<float>& g = *UnitCellState(a);
  EXPECT_NEAR(g[0], 1.0f, 1e-6);
  EXPECT_NEAR(g[1], 0.5f, 1e-5);
  EXPECT_NEAR(a.hidden()[0], 1.05f, 1e-5);
  EXPECT_NEAR(a.granularity(), 0.001, 1e-9);  // 0.1 x 0.01: the fine device takes the pulses
  const CounterRng rng(3);
  a.Pulse(0, 20, -1, rng, 0);
  EXPECT_NEAR(g[0], 1.0f, 1e-6);
  EXPECT_NEAR(g[1], 0.3f, 1e-5);
  EXPECT_NEAR(a.hidden()[0], 1.03f, 1e-5);
  DeviceArray b(MakeDevice("{impl: sliced, devices: 3, policy: all, " + inner + "}"), 1, 1, 7);
  const float z = 0;
  b.Set(ConstMatrixView(&z, 1, 1, 1), 1);
  b.Pulse(0, 3, 1, rng, 0);
  for (int q = 0; q < 3; ++q) EXPECT_NEAR((*UnitCellState(b))[q], 0.03f, 1e-6);
  EXPECT_NEAR(b.hidden()[0], 0.03f, 1e-6);  // gamma 1/3 each
  ActionCounts counts;
  TakeUnitCellCounts(b, counts);
  EXPECT_EQ(counts.Get(kCountDevicePulses), 6);  // the other two devices' pulses
  EXPECT_THROW(MakeDevice("{impl: sliced, gamma: [1]}"), ConfigError);
  EXPECT_THROW(MakeDevice("{impl: sliced, update_index: 2}"), ConfigError);
  EXPECT_THROW(MakeDevice("{impl: sliced, gamma: [1, 0]}"), ConfigError);
}

const char* kPairMlp = R"(
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
    device: {impl: one_sided, device: {impl: soft_bounds, w_min: 0, dw_min: 0.01,
             write_noise_std: 1.0}, refresh_upper: 0.6, refresh_lower: 0.1}
    update: {impl: stochastic_pulses}
    io: {w_noise: 0.01}
)";

ConfigNode ResolvePair(const std::vector<std::string>& sets) {
  return testing::ResolveYaml(kPairMlp, "pair.yaml", sets);
}

TEST(UnitCellTrainingTest, PairPathsAreBitIdenticalAtOneAndTwoThreadsAndRefresh) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"pim.macro.update.impl=write_verify"},
      {"train.algorithm.impl=mixed_precision"},
      {"pim.macro.device={impl: sliced, gamma: [1, 0.25], update_index: 1, device: {impl: "
       "soft_bounds, dw_min: 0.02, write_noise_std: 1.0}}"},
      {"pim.macro.device={impl: sliced, devices: 3, policy: all}"},
  };
  for (const auto& extra : cases) {
    std::vector<std::string> one = extra, two = extra;
    one.push_back("threads=1");
    two.push_back("threads=2");
    Session a(ResolvePair(one));
    TrainSummary sa = a.Train("", false, {});
    Session b(ResolvePair(two));
    b.Train("", false, {});
    const std::string name = extra.empty() ? "analog_sgd" : extra[0];
    const auto va = testing::StateValues(a);
    EXPECT_EQ(va, testing::StateValues(b)) << name;
    EXPECT_GT(sa.test_accuracy, 0.0) << name;
    int named = 0;
    for (auto& [n, t] : a.trainer().StateTensors()) named += n.find("c_cells") != n.npos;
    EXPECT_EQ(named, 2) << name;  // both layers' pairs are in the checkpoint
  }
}

TEST(UnitCellTrainingTest, OneSidedPairLearnsTheSyntheticTask) {
  Session s(ResolvePair({"train.epochs=4"}));
  TrainSummary r = s.Train("", false, {});
  EXPECT_GT(r.test_accuracy, 0.6);
  // The refresh fired during training: the same run without it ends elsewhere.
  Session n(ResolvePair({"train.epochs=4", "pim.macro.device.refresh=false"}));
  n.Train("", false, {});
  EXPECT_NE(testing::StateValues(s), testing::StateValues(n));
}

TEST(UnitCellTrainingTest, ResumeKeepsBothDevicesOfEveryPair) {
  const std::vector<std::string> sets = {"train.epochs=3"};
  testing::TempDir dir;
  Session full(ResolvePair(sets));
  full.Train(dir.File("full"), false, {});
  ASSERT_TRUE(testing::TrainAndStopAfterEpoch(ResolvePair(sets), dir.File("cut"), 1));
  Session resumed(ResolvePair(sets));
  resumed.Train(dir.File("cut"), true, {});
  const auto a = testing::StateValues(full), b = testing::StateValues(resumed);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(a, b);
}

TEST(UnitCellTrainingTest, IdealUpdateAndTikiTakaAreRefusedOnAPair) {
  EXPECT_THROW(Session(ResolvePair({"pim.macro.update.impl=ideal"})), ConfigError);
  // Refused when the session is built (before data and model), naming the device's key.
  for (const char* algo : {"tiki_taka", "chopped_tiki_taka"}) {
    for (const char* cell : {"one_sided", "sliced"}) {
      SCOPED_TRACE(std::string(algo) + " on " + cell);
      try {
        Session s(ResolvePair({std::string("train.algorithm.impl=") + algo,
                               std::string("pim.macro.device={impl: ") + cell + "}"}));
        ADD_FAILURE() << "not refused";
      } catch (const UnsupportedError& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("pim.macro.device"), std::string::npos) << msg;
        EXPECT_NE(msg.find(std::string("(") + cell + ")"), std::string::npos) << msg;
        EXPECT_NE(msg.find(algo), std::string::npos) << msg;
      }
    }
  }
  // The same cells under analog_sgd and Tiki-Taka on one device are accepted.
  Session pair(ResolvePair({}));
  Session single(ResolvePair({"train.algorithm.impl=tiki_taka",
                              "pim.macro.device={impl: soft_bounds}"}));
}

}  // namespace
}  // namespace pim
