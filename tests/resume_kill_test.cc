// A run SIGKILLed at any moment (start-up, data loading, an epoch, a checkpoint write, the final
// summary) and restarted with --resume, twice, ends with the uninterrupted run's weights, bit
// for bit; every file the killed run left is whole (old or new contents, never half of one).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "pimtrain/base/config.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/rng.h"
#include "pimtrain/train/checkpoint.h"
#include "test_util.h"

namespace pim {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Starts `pimtrain train CONFIG --out DIR [--resume DIR]` (output to DIR.log); returns its pid.
pid_t StartTrain(const std::string& config, const std::string& dir, bool resume) {
  const std::string cli = PIMTRAIN_CLI;
  const std::string log = dir + ".log";
  pid_t pid = ::fork();
  if (pid == 0) {
    FILE* f = std::fopen(log.c_str(), "a");
    if (f != nullptr) {
      ::dup2(fileno(f), STDOUT_FILENO);
      ::dup2(fileno(f), STDERR_FILENO);
    }
    if (resume) {
      ::execl(cli.c_str(), cli.c_str(), "train", config.c_str(), "--out", dir.c_str(), "--resume",
              dir.c_str(), static_cast<char*>(nullptr));
    } else {
      ::execl(cli.c_str(), cli.c_str(), "train", config.c_str(), "--out", dir.c_str(),
              static_cast<char*>(nullptr));
    }
    ::_exit(127);
  }
  return pid;
}

// Waits for `pid`, killing it with SIGKILL after `kill_after` seconds (< 0: never). Returns
// true when it was killed, false when it exited by itself (with status 0, checked).
bool RunOrKill(pid_t pid, double kill_after) {
  const double t0 = Now();
  while (true) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "the run failed (status " << status << ")";
      return false;
    }
    if (kill_after >= 0 && Now() - t0 >= kill_after) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return !(WIFEXITED(status));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// The tensor payload of a checkpoint (everything between the header and the CRC).
std::string Payload(const std::string& file) {
  const std::string bytes = ReadFile(file);
  uint32_t header_len = 0;
  for (int i = 0; i < 4; ++i) header_len |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[8 + i])) << (8 * i);
  return bytes.substr(12 + header_len, bytes.size() - 16 - header_len);
}

// The metrics lines without their timings.
std::string Metrics(const std::string& jsonl) {
  std::istringstream in(jsonl);
  std::string out;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    for (const char* k : {"seconds", "eval_seconds"}) j.erase(k);
    out += j.dump() + "\n";
  }
  return out;
}

// Every output a killed run left in `dir` is whole.
void ExpectNoHalfWrittenFiles(const std::string& dir, const std::string& when) {
  SCOPED_TRACE(when);
  if (FileExists(dir + "/config.yaml")) {
    EXPECT_NO_THROW(LoadYamlFile(dir + "/config.yaml"));
  }
  if (FileExists(dir + "/checkpoint.bin")) {
    EXPECT_NO_THROW(ReadCheckpointInfo(dir + "/checkpoint.bin"));
  }
  if (FileExists(dir + "/metrics.jsonl")) {
    const std::string m = ReadFile(dir + "/metrics.jsonl");
    EXPECT_TRUE(!m.empty() && m.back() == '\n') << "metrics.jsonl ends mid-line";
    EXPECT_NO_THROW(Metrics(m));
  }
  if (FileExists(dir + "/summary.json")) {
    EXPECT_NO_THROW(nlohmann::json::parse(ReadFile(dir + "/summary.json")));
  }
}

// `trials` runs, each killed at two random moments and resumed to the end.
void KillAndResume(int trials, uint64_t seed) {
  testing::TempDir dir;
  testing::WriteTinyMnist(dir.path(), 200, 50, 28, /*gzip=*/true);
  const std::string config = dir.File("run.yaml");
  WriteFileAtomic(config, "seed: 5\nthreads: 2\ndata: {impl: fashion_mnist, dir: " + dir.path() +
                              "}\nmodel: {impl: mlp, layers: [784, 24, 10]}\n"
                              "train: {epochs: 3, batch_size: 20}\n");
  const std::string ref = dir.File("ref");
  double t0 = Now();
  ASSERT_FALSE(RunOrKill(StartTrain(config, ref, false), -1));
  const double wall = Now() - t0;
  const std::string want = Payload(ref + "/checkpoint.bin");
  const std::string want_metrics = Metrics(ReadFile(ref + "/metrics.jsonl"));
  const auto want_summary = nlohmann::json::parse(ReadFile(ref + "/summary.json"));
  ASSERT_EQ(ReadCheckpointInfo(ref + "/checkpoint.bin").epochs_done, 3);

  const CounterRng rng(MixKey(seed, 0x6B111));
  int killed = 0;
  for (int t = 0; t < trials; ++t) {
    const std::string run = dir.File("trial" + std::to_string(t));
    bool resume = false;
    for (int k = 0; k < 2; ++k) {
      // Anywhere from the process start to just past the uninterrupted run's end.
      const double at = 1.05 * wall * rng.Uniform(2 * t + k);
      killed += RunOrKill(StartTrain(config, run, resume), at);
      ExpectNoHalfWrittenFiles(run, "trial " + std::to_string(t) + " kill " + std::to_string(k));
      resume = true;
    }
    ASSERT_FALSE(RunOrKill(StartTrain(config, run, true), -1)) << ReadFile(run + ".log");
    SCOPED_TRACE(ReadFile(run + ".log"));
    ASSERT_TRUE(FileExists(run + "/checkpoint.bin"));
    EXPECT_EQ(Crc32(Payload(run + "/checkpoint.bin").data(), want.size()),
              Crc32(want.data(), want.size()))
        << "trial " << t;
    EXPECT_TRUE(Payload(run + "/checkpoint.bin") == want) << "trial " << t;
    EXPECT_EQ(Metrics(ReadFile(run + "/metrics.jsonl")), want_metrics) << "trial " << t;
    const auto summary = nlohmann::json::parse(ReadFile(run + "/summary.json"));
    EXPECT_EQ(summary["test_accuracy"], want_summary["test_accuracy"]);
    EXPECT_EQ(summary["epochs"], want_summary["epochs"]);
    // The killed runs' temp files are gone once a resumed run has finished.
    for (const auto& e : std::filesystem::directory_iterator(run)) {
      EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
    }
  }
  EXPECT_GT(killed, 0) << "no trial was killed before the end";
}

TEST(ResumeKillTest, KilledTwiceAtRandomMomentsEndsBitIdentical) { KillAndResume(3, 1); }

// CTest label "slow" (tests/CMakeLists.txt: suites ending in SlowTest).
TEST(ResumeKillSlowTest, TwentyFourTrialsKilledTwiceEachEndBitIdentical) {
  KillAndResume(24, 2);
}

TEST(ResumeKillTest, ResumingADirectoryWithAConfigButNoCheckpointStartsFromTheBeginning) {
  testing::TempDir dir;
  testing::WriteTinyMnist(dir.path(), 60, 20, 28, /*gzip=*/false);
  const std::string config = dir.File("run.yaml");
  const std::string base = "data: {impl: fashion_mnist, dir: " + dir.path() +
                           "}\nmodel: {impl: mlp, layers: [784, 8, 10]}\n";
  WriteFileAtomic(config, base + "train: {epochs: 1, batch_size: 20}\n");
  const std::string cli = PIMTRAIN_CLI;
  // What a run killed during data loading leaves: its config only.
  const std::string run = dir.File("run");
  MakeDirs(run);
  WriteFileAtomic(run + "/config.yaml",
                  ToYaml(testing::ResolveYaml(ReadFile(config), "run.yaml")));
  testing::CommandResult r =
      testing::RunCommand(cli + " train " + config + " --out " + run + " --resume " + run);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("has no checkpoint yet"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("starting it from the beginning"), std::string::npos) << r.err;
  EXPECT_EQ(ReadCheckpointInfo(run + "/checkpoint.bin").epochs_done, 1);
  // Without a config the run's own config.yaml serves.
  const std::string run2 = dir.File("run2");
  MakeDirs(run2);
  WriteFileAtomic(run2 + "/config.yaml", ReadFile(run + "/config.yaml"));
  r = testing::RunCommand(cli + " train --resume " + run2);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Payload(run2 + "/checkpoint.bin") == Payload(run + "/checkpoint.bin"));

  // A directory whose config differs is refused, and left as it was.
  const std::string run3 = dir.File("run3");
  MakeDirs(run3);
  const std::string other = ToYaml(testing::ResolveYaml(ReadFile(config), "run.yaml", {"seed=9"}));
  WriteFileAtomic(run3 + "/config.yaml", other);
  r = testing::RunCommand(cli + " train " + config + " --resume " + run3);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("cannot resume: the config differs from the run's at 'seed'"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(ReadFile(run3 + "/config.yaml"), other);
  EXPECT_FALSE(FileExists(run3 + "/checkpoint.bin"));
  // Nothing at all and no config: one line saying what to do.
  r = testing::RunCommand(cli + " train --resume " + dir.File("none"));
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("give its config to resume it"), std::string::npos) << r.err;
  // Nothing at all but a config: the run starts.
  r = testing::RunCommand(cli + " train " + config + " --resume " + dir.File("fresh"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(Payload(dir.File("fresh") + "/checkpoint.bin") == Payload(run + "/checkpoint.bin"));
}

}  // namespace
}  // namespace pim
