// Training with weighted layers on a PIM macro: determinism, ref/fast parity through a whole
// training run, resume, and the per-layer hardware statistics in metrics.jsonl.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "pimtrain/base/io.h"
#include "pimtrain/sim/session.h"
#include "test_util.h"

namespace pim {
namespace {

const char* kPimCnn = R"(
seed: 9
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
  macro: {impl: digital_bitserial, rows: 16, cols: 8, input_bits: 8, weight_bits: 8}
)";

ConfigNode Resolve(const std::vector<std::string>& sets) {
  ConfigNode merged = ParseYaml(kPimCnn, "pim.yaml");
  for (const auto& s : sets) ApplySet(merged, s);
  return ValidateRoot(merged);
}

std::vector<std::vector<float>> Weights(Session& s) {
  std::vector<std::vector<float>> out;
  for (auto& [name, t] : s.trainer().StateTensors()) out.emplace_back(t->data(), t->data() + t->numel());
  return out;
}

TEST(PimTrainingTest, RefAndFastKernelsTrainToIdenticalWeights) {
  Session fast(Resolve({"pim.macro.kernel=fast"}));
  fast.Train("", false, {});
  Session ref(Resolve({"pim.macro.kernel=ref"}));
  ref.Train("", false, {});
  EXPECT_EQ(Weights(fast), Weights(ref));
}

TEST(PimTrainingTest, OneAndTwoThreadsGiveIdenticalWeights) {
  Session one(Resolve({"threads=1", "pim.macro.rounding=stochastic"}));
  one.Train("", false, {});
  Session two(Resolve({"threads=2", "pim.macro.rounding=stochastic"}));
  two.Train("", false, {});
  EXPECT_EQ(Weights(one), Weights(two));
}

TEST(PimTrainingTest, MacroChangesTheNumbersButStillLearns) {
  Session pim(Resolve({"train.epochs=4"}));
  TrainSummary a = pim.Train("", false, {});
  ConfigNode fp32 = Resolve({"train.epochs=4"});
  fp32.Find("pim")->Erase("macro");
  Session ref(fp32);
  TrainSummary b = ref.Train("", false, {});
  EXPECT_NE(Weights(pim), Weights(ref));
  EXPECT_GT(a.test_accuracy, 0.5);
  EXPECT_NEAR(a.test_accuracy, b.test_accuracy, 0.2);
}

TEST(PimTrainingTest, ResumeOnTheMacroIsBitIdentical) {
  for (const char* master : {"true", "false"}) {
    testing::TempDir dir;
    std::vector<std::string> sets = {"train.epochs=3", std::string("pim.macro.master_weights=") + master};
    {
      Session s(Resolve(sets));
      s.Train(dir.File("full"), false, {});
    }
    ASSERT_TRUE(testing::TrainAndStopAfterEpoch(Resolve(sets), dir.File("cut"), 1));
    Session resumed(Resolve(sets));
    resumed.Train(dir.File("cut"), true, {});
    Session a(Resolve(sets)), b(Resolve(sets));
    LoadCheckpoint(dir.File("full") + "/checkpoint.bin", a.trainer().StateTensors());
    LoadCheckpoint(dir.File("cut") + "/checkpoint.bin", b.trainer().StateTensors());
    EXPECT_EQ(Weights(a), Weights(b)) << "master_weights=" << master;
  }
}

TEST(PimTrainingTest, MetricsReportSparsityAndActionsPerStage) {
  testing::TempDir dir;
  Session s(Resolve({"train.epochs=1"}));
  s.Train(dir.path(), false, {});
  std::istringstream in(ReadFile(dir.File("metrics.jsonl")));
  std::string line;
  std::getline(in, line);
  auto j = nlohmann::json::parse(line);
  ASSERT_TRUE(j.contains("layers"));
  ASSERT_EQ(j["layers"].size(), 3u);  // conv, linear, linear
  for (const auto& l : j["layers"]) {
    for (const char* stage : {"forward", "backward", "gradient", "update"}) {
      ASSERT_TRUE(l["actions"].contains(stage)) << stage;
    }
    EXPECT_GT(l["actions"]["forward"]["macs"].get<int64_t>(), 0);
    EXPECT_GT(l["actions"]["update"]["weight_writes"].get<int64_t>(), 0);
    double f = l["error_zero_fraction"];
    EXPECT_GE(f, 0.0);
    EXPECT_LE(f, 1.0);
  }
  // Layers after a ReLU see zero activations, and the macro skips their cycles.
  auto& second = j["layers"][1];
  EXPECT_GT(second["input_zero_fraction"].get<double>(), 0.05);
  EXPECT_GT(second["actions"]["forward"]["skipped_zero_cycles"].get<int64_t>(), 0);
}

TEST(PimTrainingTest, PlacementHiddenKeepsFirstAndLastLayersDigital) {
  testing::TempDir dir;
  Session s(Resolve({"train.epochs=1", "pim.placement=hidden"}));
  s.Train(dir.path(), false, {});
  auto j = nlohmann::json::parse(ReadFile(dir.File("metrics.jsonl")));
  ASSERT_EQ(j["layers"].size(), 1u);
  EXPECT_EQ(j["layers"][0]["layer"], 4);
}

}  // namespace
}  // namespace pim
