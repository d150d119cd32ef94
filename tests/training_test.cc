// End-to-end training tests: determinism across thread counts, resume after interruption,
// checkpoint integrity, config errors from the session.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/sim/session.h"
#include "test_util.h"

namespace pim {
namespace {

// A small but complete config: synthetic images, a CNN with BN and dropout (to exercise every
// source of randomness), Adam and a cosine schedule.
const char* kCnnConfig = R"(
seed: 5
data: {impl: synthetic, train_size: 96, test_size: 48, height: 8, width: 8, channels: 2, classes: 4}
model:
  impl: sequential
  layers:
    - {impl: conv2d, out_channels: 4, kernel: 3, padding: 1}
    - {impl: batch_norm}
    - {impl: relu}
    - {impl: max_pool2d, kernel: 2}
    - {impl: flatten}
    - {impl: dropout, p: 0.25}
    - {impl: linear, out_features: 4}
train:
  epochs: 3
  batch_size: 20
  optimizer: {impl: adam, learning_rate: 0.01}
  schedule: {impl: cosine, warmup_epochs: 1}
)";

ConfigNode Resolve(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  return testing::ResolveYaml(yaml, "test.yaml", sets);
}

std::vector<std::vector<float>> Weights(Session& s) { return testing::StateValues(s); }

// metrics.jsonl without the wall-clock fields.
std::string StripTimes(const std::string& jsonl) {
  std::istringstream in(jsonl);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    j.erase("seconds");
    j.erase("eval_seconds");
    out += j.dump() + "\n";
  }
  return out;
}

TEST(TrainingTest, SameSeedGivesBitIdenticalResultsAtOneAndTwoThreads) {
  Session one(Resolve(kCnnConfig, {"threads=1"}));
  TrainSummary a = one.Train("", false, {});
  Session two(Resolve(kCnnConfig, {"threads=2"}));
  TrainSummary b = two.Train("", false, {});
  EXPECT_EQ(Weights(one), Weights(two));
  ASSERT_EQ(a.epochs.size(), b.epochs.size());
  for (size_t i = 0; i < a.epochs.size(); ++i) {
    EXPECT_EQ(a.epochs[i].train_loss, b.epochs[i].train_loss);
    EXPECT_EQ(a.epochs[i].test_accuracy, b.epochs[i].test_accuracy);
  }
}

TEST(TrainingTest, DifferentSeedsGiveDifferentWeights) {
  Session a(Resolve(kCnnConfig, {"train.epochs=1"}));
  a.Train("", false, {});
  Session b(Resolve(kCnnConfig, {"train.epochs=1", "seed=6"}));
  b.Train("", false, {});
  EXPECT_NE(Weights(a), Weights(b));
}

TEST(TrainingTest, LearnsTheSyntheticTask) {
  Session s(Resolve(kCnnConfig, {"train.epochs=6"}));
  TrainSummary r = s.Train("", false, {});
  EXPECT_GT(r.test_accuracy, 0.6);  // 4 classes: chance is 0.25
  EXPECT_LT(r.epochs.back().train_loss, r.epochs.front().train_loss);
}

TEST(TrainingTest, ResumeAfterInterruptionIsBitIdentical) {
  testing::TempDir dir;
  std::string full = dir.File("full"), cut = dir.File("cut");
  {
    Session s(Resolve(kCnnConfig));
    s.Train(full, false, {});
  }
  {
    // Interrupt after the first epoch's checkpoint, as a kill would.
    Session s(Resolve(kCnnConfig));
    SessionCallbacks cb;
    cb.on_epoch = [](const EpochMetrics& m) {
      if (m.epoch == 1) throw std::runtime_error("interrupted");
    };
    EXPECT_THROW(s.Train(cut, false, cb), std::runtime_error);
    EXPECT_EQ(ReadCheckpointInfo(cut + "/checkpoint.bin").epochs_done, 1);
  }
  Session resumed(Resolve(kCnnConfig, {"threads=1"}));  // threads may differ on resume
  resumed.Train(cut, true, {});
  Session a(Resolve(kCnnConfig)), b(Resolve(kCnnConfig));
  LoadCheckpoint(full + "/checkpoint.bin", a.trainer().StateTensors());
  LoadCheckpoint(cut + "/checkpoint.bin", b.trainer().StateTensors());
  EXPECT_EQ(Weights(a), Weights(b));
  EXPECT_EQ(StripTimes(ReadFile(full + "/metrics.jsonl")),
            StripTimes(ReadFile(cut + "/metrics.jsonl")));
}

TEST(TrainingTest, ResumeRefusesADifferentConfig) {
  testing::TempDir dir;
  Session s(Resolve(kCnnConfig, {"train.epochs=1"}));
  s.Train(dir.path(), false, {});
  Session other(Resolve(kCnnConfig, {"train.epochs=1", "train.batch_size=10"}));
  try {
    other.Train(dir.path(), true, {});
    FAIL() << "resumed with a different config";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("train.batch_size"), std::string::npos) << e.what();
  }
}

TEST(TrainingTest, CorruptCheckpointIsRefusedAndLeavesWeightsAlone) {
  testing::TempDir dir;
  Session s(Resolve(kCnnConfig, {"train.epochs=1"}));
  s.Train(dir.path(), false, {});
  std::string path = dir.File("checkpoint.bin");
  std::string bytes = ReadFile(path);
  auto before = Weights(s);
  for (size_t pos : {size_t{3}, bytes.size() / 2, bytes.size() - 2}) {
    std::string bad = bytes;
    bad[pos] ^= 0x40;
    WriteFileAtomic(path, bad);
    EXPECT_THROW(LoadCheckpoint(path, s.trainer().StateTensors()), DataError);
  }
  WriteFileAtomic(path, bytes.substr(0, bytes.size() - 100));
  EXPECT_THROW(LoadCheckpoint(path, s.trainer().StateTensors()), DataError);
  EXPECT_EQ(Weights(s), before);
}

TEST(TrainingTest, RunDirectoryHoldsMetricsSummaryAndConfig) {
  testing::TempDir dir;
  Session s(Resolve(kCnnConfig, {"train.epochs=2"}));
  s.Train(dir.path(), false, {});
  std::istringstream lines(ReadFile(dir.File("metrics.jsonl")));
  int count = 0;
  for (std::string line; std::getline(lines, line); ++count) {
    auto j = nlohmann::json::parse(line);
    for (const char* k : {"epoch", "train_loss", "train_accuracy", "test_accuracy", "seconds"}) {
      EXPECT_TRUE(j.contains(k)) << k;
    }
    EXPECT_EQ(j["epoch"], count + 1);
  }
  EXPECT_EQ(count, 2);
  auto summary = nlohmann::json::parse(ReadFile(dir.File("summary.json")));
  for (const char* k : {"test_accuracy", "epochs", "train_seconds", "config"}) {
    EXPECT_TRUE(summary.contains(k)) << k;
  }
  EXPECT_EQ(summary["config"]["train"]["batch_size"], 20);
  // The saved config resolves to the same config.
  ConfigNode saved = ValidateRoot(ParseYaml(ReadFile(dir.File("config.yaml")), "saved"));
  EXPECT_EQ(FirstDifference(saved, s.config(), {}), "");
  // No temp files left behind.
  for (const auto& name : {"metrics.jsonl", "summary.json", "checkpoint.bin", "config.yaml"}) {
    EXPECT_TRUE(FileExists(dir.File(name))) << name;
  }
}

TEST(TrainingTest, ModelThatDoesNotFitTheDataIsAConfigError) {
  try {
    Session s(Resolve("data: {impl: synthetic}\nmodel: {impl: mlp, layers: [100, 10]}\n"));
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.layers[0]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("64 features"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pim
