// CLI golden runs: train/eval/describe on a tiny generated IDX set, and user errors -> exit 2.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "pimtrain/base/io.h"
#include "test_util.h"

namespace pim {
namespace {

using testing::RunCommand;

std::string Cli() { return PIMTRAIN_CLI; }

// Writes a tiny MNIST-shaped set and a config that trains an MLP on it.
struct TinyRun {
  testing::TempDir dir;
  std::string config;
  TinyRun() {
    testing::WriteTinyMnist(dir.path(), 200, 100, 28, /*gzip=*/true);
    config = dir.File("tiny.yaml");
    WriteFileAtomic(config, "seed: 3\nthreads: 2\ndata: {impl: fashion_mnist, dir: " + dir.path() +
                                "}\nmodel: {impl: mlp, layers: [784, 32, 10]}\n"
                                "train: {epochs: 2, batch_size: 32}\n");
  }
};

void ExpectUserError(const testing::CommandResult& r, std::initializer_list<const char*> parts) {
  EXPECT_EQ(r.exit_code, 2) << r.err;
  std::string err = r.err;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  EXPECT_EQ(err.find('\n'), std::string::npos) << "one line expected: " << r.err;
  EXPECT_EQ(err.rfind("pimtrain: error: ", 0), 0u) << r.err;
  for (const char* p : parts) EXPECT_NE(r.err.find(p), std::string::npos) << r.err;
}

TEST(CliTest, TrainsEvaluatesAndWritesTheRunDirectory) {
  TinyRun run;
  std::string out = run.dir.File("run");
  auto r = RunCommand(Cli() + " train " + run.config + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("epoch   1/2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("test accuracy:"), std::string::npos) << r.out;
  auto summary = nlohmann::json::parse(ReadFile(out + "/summary.json"));
  double acc = summary["test_accuracy"];
  EXPECT_GT(acc, 0.5);
  // eval reproduces the final test accuracy from the checkpoint.
  auto e = RunCommand(Cli() + " eval " + out + "/config.yaml --checkpoint " + out);
  ASSERT_EQ(e.exit_code, 0) << e.err;
  char expect[32];
  std::snprintf(expect, sizeof(expect), "%.2f%%", 100 * acc);
  EXPECT_NE(e.out.find(expect), std::string::npos) << e.out << " vs " << expect;
}

TEST(CliTest, SetOverridesTheConfig) {
  TinyRun run;
  std::string out = run.dir.File("run");
  auto r = RunCommand(Cli() + " train " + run.config + " --set train.epochs=1 --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto summary = nlohmann::json::parse(ReadFile(out + "/summary.json"));
  EXPECT_EQ(summary["epochs"], 1);
}

TEST(CliTest, ResumeAfterSigkillContinuesToTheSameWeights) {
  TinyRun run;
  std::string full = run.dir.File("full"), cut = run.dir.File("cut");
  const std::string sets = " --set train.epochs=4 ";
  ASSERT_EQ(RunCommand(Cli() + " train " + run.config + sets + "--out " + full).exit_code, 0);
  // Start a run, SIGKILL it once its first checkpoint exists, then resume it.
  std::string script = Cli() + " train " + run.config + sets + "--out " + cut +
                       " >/dev/null & pid=$!; while [ ! -f " + cut +
                       "/checkpoint.bin ] && kill -0 $pid 2>/dev/null; do sleep 0.01; done; "
                       "kill -9 $pid 2>/dev/null; wait $pid; true";
  RunCommand("bash -c '" + script + "'");
  auto r = RunCommand(Cli() + " train --resume " + cut);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Checkpoints embed the same config, progress and tensors: byte for byte, except the
  // metrics' wall-clock seconds inside the header. Compare the tensor payload tail instead.
  std::string a = ReadFile(full + "/checkpoint.bin"), b = ReadFile(cut + "/checkpoint.bin");
  size_t payload = 4 * (784 * 32 + 32 + 32 * 10 + 10) * 2;  // weights + SGD velocity
  ASSERT_GT(a.size(), payload + 4);
  ASSERT_GT(b.size(), payload + 4);
  EXPECT_EQ(a.substr(a.size() - 4 - payload, payload), b.substr(b.size() - 4 - payload, payload));
}

TEST(CliTest, ARunThatFailsBeforeItsFirstEpochLeavesNoRunDirectory) {
  TinyRun run;
  // Diverges at its first steps: the error names the step, and the directory this run made
  // (holding only config.yaml) is gone, so no later --resume takes it for a killed run.
  std::string out = run.dir.File("diverged");
  const std::string sets =
      " --set train.optimizer.learning_rate=100 --set train.batch_size=4 --set train.epochs=3";
  auto r = RunCommand(Cli() + " train " + run.config + sets + " --out " + out);
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.err.find("step"), std::string::npos) << r.err;
  EXPECT_FALSE(FileExists(out + "/config.yaml")) << r.err;
  EXPECT_FALSE(FileExists(out));
  // A directory that was there before the run is the user's: it stays, with what it held.
  std::string mine = run.dir.File("mine");
  MakeDirs(mine);
  WriteFileAtomic(mine + "/notes.txt", "keep\n");
  r = RunCommand(Cli() + " train " + run.config + sets + " --out " + mine);
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_EQ(ReadFile(mine + "/notes.txt"), "keep\n");
  // A run with zero epochs still writes its directory (config and summary).
  std::string zero = run.dir.File("zero");
  ASSERT_EQ(RunCommand(Cli() + " train " + run.config + " --set train.epochs=0 --out " + zero)
                .exit_code, 0);
  EXPECT_TRUE(FileExists(zero + "/summary.json"));
}

TEST(CliTest, UnknownKeyIsOneLineWithSuggestionAndExitTwo) {
  TinyRun run;
  ExpectUserError(RunCommand(Cli() + " train " + run.config + " --set train.epocs=2"),
                  {"unknown key 'train.epocs'", "did you mean 'epochs'"});
}

TEST(CliTest, OutOfRangeValueNamesPathAndRange) {
  TinyRun run;
  ExpectUserError(RunCommand(Cli() + " train " + run.config + " --set train.batch_size=0"),
                  {"train.batch_size", "outside [1,"});
}

TEST(CliTest, MissingConfigAndDataAreUserErrors) {
  ExpectUserError(RunCommand(Cli() + " train /nonexistent.yaml"), {"nonexistent.yaml"});
  TinyRun run;
  ExpectUserError(RunCommand(Cli() + " train " + run.config + " --set data.dir=/nonexistent"),
                  {"/nonexistent"});
}

TEST(CliTest, MalformedYamlIsAUserError) {
  TinyRun run;
  WriteFileAtomic(run.dir.File("bad.yaml"), "train: {epochs: [\n");
  ExpectUserError(RunCommand(Cli() + " train " + run.dir.File("bad.yaml")), {"bad.yaml"});
}

TEST(CliTest, EvalRefusesAMissingCheckpoint) {
  TinyRun run;
  ExpectUserError(RunCommand(Cli() + " eval " + run.config + " --checkpoint /nonexistent"),
                  {"/nonexistent"});
}

TEST(CliTest, DescribeListsImplementationsAndParameters) {
  auto all = RunCommand(Cli() + " describe");
  ASSERT_EQ(all.exit_code, 0);
  for (const char* s : {"layer:", "conv2d", "optimizer:", "sgd", "dataset:", "fashion_mnist",
                        "train.epochs"}) {
    EXPECT_NE(all.out.find(s), std::string::npos) << s;
  }
  auto conv = RunCommand(Cli() + " describe layer/conv2d");
  ASSERT_EQ(conv.exit_code, 0);
  EXPECT_NE(conv.out.find("out_channels"), std::string::npos) << conv.out;
  ExpectUserError(RunCommand(Cli() + " describe layer/conv3d"), {"did you mean 'conv2d'"});
  ExpectUserError(RunCommand(Cli() + " describe nonsense"), {"'nonsense'", "config file"});
}

// `describe CONFIG`: the config's model as built for its data (every layer, its shapes).
TEST(CliTest, DescribeAConfigPrintsItsModel) {
  TinyRun run;
  auto r = RunCommand(Cli() + " describe " + run.config);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("input [28, 28, 1]"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("25450 parameters"), std::string::npos) << r.out;  // 784*32+32 + 32*10+10
  EXPECT_NE(r.out.find("linear 784 -> 32"), std::string::npos) << r.out;
}

TEST(CliTest, BadCommandLineIsExitTwo) {
  auto r = RunCommand(Cli() + " frobnicate");
  EXPECT_EQ(r.exit_code, 2) << r.err;
}

}  // namespace
}  // namespace pim
