// Reliability: runs killed with SIGKILL at random points resume to bit-identical weights;
// NaN/Inf stops a run (or skips the step) naming layer, stage and step; saturation counts are
// summed per epoch; oversized configs are refused up front with an estimate.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/sim/limits.h"
#include "pimtrain/sim/session.h"
#include "pimtrain/train/numeric_guard.h"
#include "test_util.h"

extern char** environ;

namespace pim {
namespace {

using testing::RunCommand;

// Synthetic data (no files), a small MLP and many short epochs, so a run spends its time in
// training steps and checkpoint writes rather than start-up, and random kill times land in
// every phase of an epoch.
const char* kTinyConfig = R"(
seed: 4
threads: 1
data: {impl: synthetic, train_size: 480, test_size: 64, height: 6, width: 6, classes: 5}
model: {impl: mlp, layers: [36, 48, 5]}
train:
  epochs: 12
  batch_size: 16
  optimizer: {impl: sgd, learning_rate: 0.05, momentum: 0.9}
)";

ConfigNode Resolve(const std::string& yaml, const std::vector<std::string>& sets = {}) {
  ConfigNode merged = ParseYaml(yaml, "test.yaml");
  for (const auto& s : sets) ApplySet(merged, s);
  return ValidateRoot(merged);
}

// --- crash safety ---

// Starts the CLI with `args`, output discarded; returns its pid.
pid_t Spawn(const std::vector<std::string>& args) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  EXPECT_EQ(rc, 0);
  return pid;
}

// What a checkpoint pins down: progress, every tensor's bytes, and the metrics so far without
// their wall-clock fields.
struct RunState {
  int64_t epochs_done = -1;
  std::string tensors;  // header's tensor list + the raw payload
  std::string metrics;
  bool operator==(const RunState& o) const {
    return epochs_done == o.epochs_done && tensors == o.tensors && metrics == o.metrics;
  }
};

RunState ReadState(const std::string& ckpt) {
  // ReadCheckpointInfo verifies magic, lengths and CRC: a torn file would throw here.
  CheckpointInfo info = ReadCheckpointInfo(ckpt);
  std::string bytes = ReadFile(ckpt);
  uint32_t header_len = 0;
  for (int i = 0; i < 4; ++i) {
    header_len |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[8 + i])) << (8 * i);
  }
  auto header = nlohmann::json::parse(bytes.substr(12, header_len));
  RunState s;
  s.epochs_done = info.epochs_done;
  s.tensors = header.at("tensors").dump() + "|" +
              bytes.substr(12 + header_len, bytes.size() - 16 - header_len);
  std::istringstream lines(info.metrics_jsonl);
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line);
    j.erase("seconds");
    j.erase("eval_seconds");
    s.metrics += j.dump() + "\n";
  }
  return s;
}

// A run's progress as its checkpoint tells it: epochs done, -1 before the first checkpoint.
// Checkpoints are replaced by rename, so the file is read again only when its inode, size or
// modification time changes and polling stays cheap; every read verifies the CRC, so a torn
// checkpoint would throw here.
class CheckpointWatch {
 public:
  explicit CheckpointWatch(std::string path) : path_(std::move(path)) {}
  int64_t EpochsDone() {
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) return -1;
    const auto id = std::make_tuple(st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    if (id != id_) {
      id_ = id;
      done_ = ReadCheckpointInfo(path_).epochs_done;
    }
    return done_;
  }

 private:
  std::string path_;
  std::tuple<ino_t, off_t, time_t, long> id_{};
  int64_t done_ = -1;
};

// True once `pid` has exited (reaped); a run that ends on its own must succeed.
bool Exited(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, WNOHANG) != pid) return false;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  return true;
}

void Pause(double seconds) { std::this_thread::sleep_for(std::chrono::duration<double>(seconds)); }

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// How long the uninterrupted run takes to reach its first checkpoint (start-up plus one
// epoch) and each later epoch. Measured, not asserted: it only spreads the kill points.
struct RunTiming {
  double first_checkpoint = 0;
  double per_epoch = 0;
};

// Starts `args` (a run writing `out`/checkpoint.bin) and SIGKILLs it at a random point: a
// target epoch drawn uniformly from those the run still has to train, then a uniform delay
// within that epoch (start-up included for the run's first). Returns the epochs done per the
// checkpoint at the kill (-1: none yet), or `epochs` when the run finished before the kill.
int64_t KillAtRandomPoint(const std::vector<std::string>& args, const std::string& out,
                          int64_t epochs, const RunTiming& timing, std::mt19937& rng) {
  CheckpointWatch watch(out + "/checkpoint.bin");
  const int64_t from = std::max<int64_t>(watch.EpochsDone(), 0);
  const int64_t target = std::uniform_int_distribution<int64_t>(from, epochs - 1)(rng);
  const double fraction = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  const pid_t pid = Spawn(args);
  bool finished = false;
  double delay = fraction * timing.first_checkpoint;
  if (target > from) {
    while (!(finished = Exited(pid)) && watch.EpochsDone() < target) Pause(0.001);
    delay = fraction * timing.per_epoch;
  }
  if (!finished) {
    const auto t1 = std::chrono::steady_clock::now();
    while (!(finished = Exited(pid)) && Since(t1) < delay) Pause(0.0005);
  }
  if (!finished) {
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
  return finished ? epochs : watch.EpochsDone();
}

// Number of SIGKILL/resume trials: 20 by default, PIMTRAIN_SIGKILL_TRIALS to change it.
int TrialCount() {
  const char* env = std::getenv("PIMTRAIN_SIGKILL_TRIALS");
  return env != nullptr ? std::max(1, std::atoi(env)) : 20;
}

// Metrics lines without their wall-clock fields.
std::string MetricsWithoutTimes(const std::string& jsonl) {
  std::string out;
  std::istringstream lines(jsonl);
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line);
    j.erase("seconds");
    j.erase("eval_seconds");
    out += j.dump() + "\n";
  }
  return out;
}

// `trials` runs, each SIGKILLed twice at random points (the fresh run, then the run that takes
// over from it: resumed from the last checkpoint, or started again when none was written yet)
// and then brought to its end the same way: every one must end with the uninterrupted run's
// exact weights, optimizer state and metrics (in the checkpoint and in metrics.jsonl).
void KillAndResumeTrials(int trials, uint32_t seed) {
  testing::TempDir dir;
  const std::string config = dir.File("tiny.yaml");
  WriteFileAtomic(config, kTinyConfig);
  const std::string cli = PIMTRAIN_CLI;
  const int64_t epochs = 12;

  // The uninterrupted run, timed through its checkpoints.
  RunTiming timing;
  {
    const std::string out = dir.File("full");
    CheckpointWatch watch(out + "/checkpoint.bin");
    const auto t0 = std::chrono::steady_clock::now();
    const pid_t pid = Spawn({cli, "train", config, "--out", out});
    int status = 0;
    double last_checkpoint = 0;  // both seen by the same polling, so its lag cancels
    while (::waitpid(pid, &status, WNOHANG) != pid) {
      const int64_t done = watch.EpochsDone();
      if (timing.first_checkpoint == 0 && done >= 1) timing.first_checkpoint = Since(t0);
      if (last_checkpoint == 0 && done >= epochs) last_checkpoint = Since(t0);
      Pause(0.0005);
    }
    const double total = Since(t0);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (timing.first_checkpoint == 0) timing.first_checkpoint = total / 2;
    if (last_checkpoint == 0) last_checkpoint = total;
    timing.per_epoch = std::max(0.0, last_checkpoint - timing.first_checkpoint) / (epochs - 1);
  }
  const RunState expected = ReadState(dir.File("full/checkpoint.bin"));
  ASSERT_EQ(expected.epochs_done, epochs);

  std::mt19937 rng(seed);
  std::map<int64_t, int> killed_after;  // epochs done at a kill (-1: no checkpoint yet)
  int identical = 0, resumed = 0, torn_writes = 0;
  for (int t = 0; t < trials; ++t) {
    SCOPED_TRACE("trial " + std::to_string(t));
    const std::string out = dir.File("trial" + std::to_string(t));
    const std::string ckpt = out + "/checkpoint.bin";
    // The command that carries the run on from whatever the last one left.
    auto next = [&] {
      return FileExists(ckpt) ? std::vector<std::string>{cli, "train", "--resume", out}
                              : std::vector<std::string>{cli, "train", config, "--out", out};
    };
    std::set<std::string> temporaries;
    for (int kill = 0; kill < 2; ++kill) {
      ++killed_after[KillAtRandomPoint(next(), out, epochs, timing, rng)];
      // A kill inside WriteFileAtomic leaves its temporary file (the target is never torn).
      if (FileExists(out)) {
        for (const auto& e : std::filesystem::directory_iterator(out)) {
          std::string name = e.path().filename().string();
          if (name.find(".tmp.") != std::string::npos) temporaries.insert(name);
        }
      }
    }
    torn_writes += static_cast<int>(temporaries.size());
    const bool has_checkpoint = FileExists(ckpt);
    std::string command;
    for (const auto& a : next()) command += a + " ";
    auto r = RunCommand(command);
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    if (has_checkpoint) {
      EXPECT_NE(r.out.find("resumed from"), std::string::npos) << r.out;
      ++resumed;
    }
    RunState got = ReadState(ckpt);
    const bool same = got == expected &&
                      MetricsWithoutTimes(ReadFile(out + "/metrics.jsonl")) == expected.metrics;
    EXPECT_TRUE(same);
    identical += same;
  }
  std::string histogram;
  for (const auto& [done, n] : killed_after) {
    histogram += " " + (done < 0 ? std::string("none") : done == epochs ? std::string("finished")
                                                                        : std::to_string(done)) +
                 ":" + std::to_string(n);
  }
  std::printf("[ reliability ] %d/%d SIGKILL trials bit-identical (2 kills each, %d finished by "
              "--resume, %d kills left a temporary file); first checkpoint %.3f s, epoch %.4f s; "
              "epochs done at the kills:%s\n",
              identical, trials, resumed, torn_writes, timing.first_checkpoint, timing.per_epoch,
              histogram.c_str());
  EXPECT_EQ(identical, trials);
}

TEST(ReliabilityTest, TwentyRandomSigkillsResumeBitIdentical) {
  KillAndResumeTrials(TrialCount(), 2024);
}

TEST(ReliabilityTest, CorruptCheckpointIsRefusedNeverLoaded) {
  testing::TempDir dir;
  WriteFileAtomic(dir.File("tiny.yaml"), kTinyConfig);
  const std::string cli = PIMTRAIN_CLI;
  const std::string out = dir.File("run");
  ASSERT_EQ(RunCommand(cli + " train " + dir.File("tiny.yaml") + " --set train.epochs=2 --out " +
                       out).exit_code,
            0);
  const std::string ckpt = out + "/checkpoint.bin";
  const std::string good = ReadFile(ckpt);
  // Every 97th byte flipped in turn (header, payload and CRC alike) is caught.
  for (size_t at = 0; at < good.size(); at += 97) {
    std::string bad = good;
    bad[at] ^= 0x01;
    WriteFileAtomic(ckpt, bad);
    EXPECT_THROW(ReadCheckpointInfo(ckpt), DataError) << "byte " << at;
  }
  std::string bad = good;
  bad[good.size() / 2] ^= 0x40;
  WriteFileAtomic(ckpt, bad);
  auto r = RunCommand(cli + " train --resume " + out);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("checksum mismatch"), std::string::npos) << r.err;
  EXPECT_EQ(ReadFile(ckpt), bad) << "a refused checkpoint must be left as it was";
}

// --- numeric faults ---

// Puts a NaN into one training sample (sample 7 of the split, so one batch per epoch).
void PoisonSample(Session& s, int64_t sample) {
  auto& data = const_cast<LoadedData&>(s.data());
  data.train.images.data()[sample * data.sample_shape.numel() + 3] = NAN;
}

std::string OneLine(const std::string& s) {
  EXPECT_EQ(s.find('\n'), std::string::npos) << s;
  return s;
}

TEST(NumericFaultTest, ExplodingLearningRateStopsNamingLayerStageAndStep) {
  Session s(Resolve(kTinyConfig,
                    {"train.optimizer={impl: sgd, learning_rate: 100, momentum: 0.9}",
                     "train.schedule.impl=constant"}));
  try {
    s.Train("", false, {});
    FAIL() << "a learning rate of 100 should overflow";
  } catch (const NumericError& e) {
    std::string m = OneLine(e.what());
    EXPECT_NE(m.find(" in layer "), std::string::npos) << m;
    EXPECT_NE(m.find(" at stage "), std::string::npos) << m;
    EXPECT_NE(m.find(", step "), std::string::npos) << m;
    EXPECT_NE(m.find("train.on_nonfinite: skip_step"), std::string::npos) << m;
  }
}

TEST(NumericFaultTest, NanInputStopsAtTheFirstLayerThatCarriesIt) {
  Session s(Resolve(kTinyConfig, {"train.epochs=1"}));
  PoisonSample(s, 7);
  try {
    s.Train("", false, {});
    FAIL() << "the NaN sample should stop the run";
  } catch (const NumericError& e) {
    std::string m = OneLine(e.what());
    EXPECT_EQ(m.rfind("NaN in layer 0 (flatten", 0), 0u) << m;
    EXPECT_NE(m.find("output"), std::string::npos) << m;
    EXPECT_NE(m.find("at stage FP (forward)"), std::string::npos) << m;
    EXPECT_NE(m.find("(epoch 1)"), std::string::npos) << m;
  }
}

TEST(NumericFaultTest, SkipStepSkipsOnlyTheBadStepAndTrainsOn) {
  testing::TempDir dir;
  Session s(Resolve(kTinyConfig, {"train.epochs=3", "train.on_nonfinite=skip_step"}));
  PoisonSample(s, 7);
  TrainSummary summary = s.Train(dir.path(), false, {});
  ASSERT_EQ(summary.epochs.size(), 3u);
  for (const auto& m : summary.epochs) {
    EXPECT_EQ(m.skipped_steps, 1);  // sample 7 is in exactly one batch per epoch
    EXPECT_TRUE(std::isfinite(m.train_loss));
  }
  EXPECT_GT(summary.test_accuracy, 0.5);  // 5 classes: chance is 0.2
  for (auto& [name, t] : s.trainer().StateTensors()) {
    EXPECT_EQ(FirstNonfinite(t->data(), t->numel()), -1) << name;
  }
  std::string metrics = ReadFile(dir.File("metrics.jsonl"));
  EXPECT_NE(metrics.find("\"skipped_steps\":1"), std::string::npos) << metrics;
}

TEST(NumericFaultTest, SkipIsRefusedOnceBatchNormStatisticsTookTheValue) {
  Session s(Resolve(kTinyConfig, {"model.batch_norm=true", "train.on_nonfinite=skip_step"}));
  PoisonSample(s, 7);
  try {
    s.Train("", false, {});
    FAIL() << "running statistics cannot be rolled back";
  } catch (const NumericError& e) {
    std::string m = OneLine(e.what());
    EXPECT_NE(m.find("cannot be skipped"), std::string::npos) << m;
    EXPECT_NE(m.find("batch_norm"), std::string::npos) << m;
    EXPECT_NE(m.find("running_"), std::string::npos) << m;
  }
}

TEST(NumericFaultTest, FirstNonfiniteFindsEveryKindAnywhere) {
  std::mt19937 rng(5);
  for (int64_t n : {1, 7, 4095, 4096, 4097, 20000}) {
    std::vector<float> x(n);
    for (auto& v : x) v = std::uniform_real_distribution<float>(-1e30f, 1e30f)(rng);
    EXPECT_EQ(FirstNonfinite(x.data(), n), -1);
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      for (int64_t at : {int64_t{0}, n / 2, n - 1}) {
        std::vector<float> y = x;
        y[at] = bad;
        if (at + 1 < n) y[n - 1] = bad;  // a later one must not win
        EXPECT_EQ(FirstNonfinite(y.data(), n), at) << n << " " << at;
      }
    }
  }
  const float largest = 3.4028235e38f, denormal = 1e-45f;
  std::vector<float> edge = {largest, -largest, denormal, -0.0f};
  EXPECT_EQ(FirstNonfinite(edge.data(), 4), -1);
}

TEST(NumericFaultTest, SaturationCountsAreSummedPerLayerAndEpoch) {
  EpochMetrics m;
  m.hardware_json =
      R"([{"layer":1,"saturation":{"adc_clipped":5}},{"layer":2},)"
      R"({"layer":3,"saturation":{"adc_clipped":2,"accumulator_saturated":1}}])";
  auto j = nlohmann::json::parse(m.ToJsonLine());
  EXPECT_EQ(j["saturation"]["adc_clipped"], 7);
  EXPECT_EQ(j["saturation"]["accumulator_saturated"], 1);
  EXPECT_EQ(j["layers"][2]["saturation"]["adc_clipped"], 2);
  m.hardware_json = R"([{"layer":1}])";
  EXPECT_TRUE(nlohmann::json::parse(m.ToJsonLine())["saturation"].empty());
}

// Runs a chip preset on synthetic data through the CLI (with `sets`) and returns the per-epoch
// saturation objects of metrics.jsonl followed by summary.json's total.
std::vector<nlohmann::json> SaturationOfPresetRun(const std::string& preset,
                                                  const std::string& sets) {
  testing::TempDir dir;
  WriteFileAtomic(dir.File("syn.yaml"),
                  "threads: 1\n"
                  "data: {impl: synthetic, train_size: 128, test_size: 32, height: 6, width: 6, "
                  "classes: 5}\n"
                  "model: {impl: mlp, layers: [36, 16, 5]}\n"
                  "train: {epochs: 2, batch_size: 32}\n");
  auto r = RunCommand(std::string(PIMTRAIN_CLI) + " train " + PIMTRAIN_SOURCE_DIR +
                      "/presets/chips/" + preset + " " + dir.File("syn.yaml") + " " + sets +
                      " --out " + dir.File("out"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::vector<nlohmann::json> out;
  std::istringstream lines(ReadFile(dir.File("out/metrics.jsonl")));
  for (std::string line; std::getline(lines, line);) {
    out.push_back(nlohmann::json::parse(line).value("saturation", nlohmann::json::object()));
  }
  out.push_back(nlohmann::json::parse(ReadFile(dir.File("out/summary.json")))
                    .value("saturation", nlohmann::json::object()));
  return out;
}

// The counts reach metrics.jsonl (per epoch) and summary.json (the run's total).
void ExpectCountedAndTotalled(const std::vector<nlohmann::json>& s, const std::string& name) {
  ASSERT_EQ(s.size(), 3u);  // 2 epochs + the summary
  int64_t sum = 0;
  for (size_t e = 0; e < 2; ++e) {
    EXPECT_GT(s[e].value(name, int64_t{0}), 0) << "epoch " << e + 1 << ": " << s[e].dump();
    sum += s[e].value(name, int64_t{0});
  }
  EXPECT_EQ(s[2].value(name, int64_t{-1}), sum) << s[2].dump();
}

TEST(NumericFaultTest, AdcClippingIsCountedInMetricsAndSummary) {
  // An ADC whose full scale is 5% of the largest partial sum clips the larger sums.
  ExpectCountedAndTotalled(
      SaturationOfPresetRun("isaac.yaml", "--set pim.macro.adc.bits=4 "
                                          "--set pim.macro.adc.full_scale=0.05"),
      "adc_clipped");
}

TEST(NumericFaultTest, AlignmentSaturationIsCountedInMetricsAndSummary) {
  // Nearest rounding of a pre-aligned mantissa can carry out of the datapath's top binade.
  ExpectCountedAndTotalled(
      SaturationOfPresetRun("isscc25.yaml", "--set pim.macro.align_rounding=nearest "
                                            "--set pim.macro.input_bits=4"),
      "alignment_saturations");
}

// --- limits ---

TEST(LimitsTest, EstimateMatchesTheBuiltNetwork) {
  const std::vector<std::vector<std::string>> variants = {
      {},
      {"model.batch_norm=true", "model.dropout=0.1", "train.optimizer={impl: adam}"},
      {"data.channels=3", "data.height=9", "data.width=9",
       "model={impl: sequential, layers: [{impl: conv2d, out_channels: 4, kernel: 3, "
       "padding: 1}, {impl: batch_norm}, {impl: relu}, {impl: max_pool2d, kernel: 2}, "
       "{impl: conv2d, out_channels: 6, kernel: 2, stride: 2, bias: false}, "
       "{impl: avg_pool2d, kernel: 2, stride: 1}, {impl: flatten}, {impl: dropout, p: 0.2}, "
       "{impl: linear, out_features: 5}]}"},
      // A graph: residual block (fan-out, add), batch norm, global pooling.
      {"data.channels=3", "data.height=9", "data.width=9",
       "model={impl: graph, nodes: [{name: c, impl: conv2d, out_channels: 4, kernel: 3, "
       "padding: 1}, {impl: residual, body: [{impl: conv2d, out_channels: 4, kernel: 3, "
       "padding: 1}, {impl: batch_norm}]}, {impl: global_avg_pool}, "
       "{impl: linear, out_features: 5}]}"}};
  for (const auto& sets : variants) {
    std::vector<std::string> all = sets;
    all.push_back("train.epochs=0");
    Session s(Resolve(kTinyConfig, all));
    ResourceEstimate e = EstimateResources(s.config(), s.data());
    SCOPED_TRACE(s.network().Summary());
    EXPECT_TRUE(e.complete) << e.stopped_at;
    int64_t params = 0;
    for (auto* p : s.network().Parameters()) params += p->value.numel();
    EXPECT_EQ(e.parameters, static_cast<double>(params));
    EXPECT_EQ(e.forward_macs_per_sample, static_cast<double>(s.network().ForwardMacsPerSample()));
    EXPECT_EQ(e.macs_per_epoch, e.forward_macs_per_sample * (3 * 480 + 64));
    EXPECT_GE(e.model_bytes, 4.0 * 3 * static_cast<double>(params));  // value, grad, state
  }
}

TEST(LimitsTest, HugeLayerIsRefusedBeforeAllocationWithAnEstimate) {
  auto config = Resolve(kTinyConfig, {"model.layers=[36, 1000000, 1000000, 5]"});
  try {
    Session s(config);
    FAIL() << "a 10^6 x 10^6 layer cannot fit";
  } catch (const ConfigError& e) {
    std::string m = OneLine(e.what());
    EXPECT_NE(m.find("needs at least 10.9 TiB of memory"), std::string::npos) << m;
    EXPECT_NE(m.find("1e+12 parameters"), std::string::npos) << m;
    EXPECT_NE(m.find("limits.max_memory_bytes"), std::string::npos) << m;
  }
}

TEST(LimitsTest, ConfiguredLimitsApply) {
  EXPECT_THROW(Session(Resolve(kTinyConfig, {"limits.max_memory_bytes=50000"})), ConfigError);
  EXPECT_NO_THROW(Session(Resolve(kTinyConfig, {"limits.max_memory_bytes=1e9"})));
  // 36*48 + 48*5 = 1968 MACs per sample; 3 * 480 + 64 samples: 2,959,872 per epoch.
  EXPECT_THROW(Session(Resolve(kTinyConfig, {"limits.max_macs_per_epoch=2.9e6"})), ConfigError);
  EXPECT_NO_THROW(Session(Resolve(kTinyConfig, {"limits.max_macs_per_epoch=3e6"})));
  EXPECT_NO_THROW(Session(Resolve(kTinyConfig, {"limits.max_macs_per_epoch=0"})));
}

}  // namespace
}  // namespace pim

namespace pim {
namespace {

// A writer killed between writing PATH.tmp.PID and renaming it leaves the temp file; resuming
// removes those of dead processes and nothing else.
TEST(ReliabilityTest, StaleTempFilesOfDeadWritersAreRemoved) {
  testing::TempDir dir;
  // A PID above any pid_max (2^22 at most on Linux) is no process.
  const std::string dead = dir.File("metrics.jsonl.tmp.99999999");
  const std::string alive = dir.File("summary.json.tmp." + std::to_string(::getpid()));
  const std::string other = dir.File("notes.tmp.txt");
  const std::string kept = dir.File("metrics.jsonl");
  for (const auto& f : {dead, alive, other, kept}) WriteFileAtomic(f, "x");
  EXPECT_EQ(RemoveStaleTempFiles(dir.path()), 1);
  EXPECT_FALSE(FileExists(dead));
  EXPECT_TRUE(FileExists(alive));
  EXPECT_TRUE(FileExists(other));
  EXPECT_TRUE(FileExists(kept));
  EXPECT_EQ(RemoveStaleTempFiles(dir.File("missing")), 0);
}

}  // namespace
}  // namespace pim
