// Data-parallel training under mpirun (docs/scaling.md): the same checkpoint and metrics as one
// process, for 1, 2 and 3 ranks, on FP32 and on a bit-serial macro, through resume; refusals.
#include <gtest/gtest.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "pimtrain/base/io.h"
#include "test_util.h"

namespace pim {
namespace {

using testing::RunCommand;

std::string Cli() { return PIMTRAIN_CLI; }

// Root may run mpirun only when it says so; three ranks on a two-core machine need
// --oversubscribe; no binding, so a rank's threads may use any core.
std::string Mpirun(int ranks) {
  return "OMPI_MCA_btl_vader_single_copy_mechanism=none mpirun --allow-run-as-root "
         "--oversubscribe --bind-to none -np " +
         std::to_string(ranks) + " ";
}

// The checkpoint's tensors (weights, BN statistics, optimizer state) without its header, whose
// config names the thread count.
std::string CheckpointTensors(const std::string& dir) {
  const std::string blob = ReadFile(dir + "/checkpoint.bin");
  uint32_t header = 0;
  for (int i = 0; i < 4; ++i) {
    header |= static_cast<uint32_t>(static_cast<uint8_t>(blob.at(8 + i))) << (8 * i);
  }
  return blob.substr(12 + header, blob.size() - 12 - header - 4);
}

// metrics.jsonl without the wall-clock fields: losses, accuracies, counts, cost.
std::string MetricsWithoutTimes(const std::string& dir) {
  std::istringstream in(ReadFile(dir + "/metrics.jsonl"));
  std::string out;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::ordered_json::parse(line);
    j.erase("seconds");
    j.erase("eval_seconds");
    out += j.dump() + "\n";
  }
  return out;
}

class MpiTrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (RunCommand("command -v mpirun").exit_code != 0) {
      GTEST_SKIP() << "mpirun not found (apt-get install openmpi-bin): data-parallel training "
                      "not tested";
    }
    // Sanitizer builds link no MPI (CMakeLists.txt): such a pimtrain refuses mpirun in one
    // line, which is all there is to test then. Probed once per test binary.
    static const std::string without_mpi = [] {
      const auto r =
          RunCommand(Mpirun(2) + Cli() + " train --set train.epochs=0 --out /dev/null/x");
      return r.err.find("built without MPI") != std::string::npos ? r.err : std::string();
    }();
    if (!without_mpi.empty()) {
      GTEST_SKIP() << "this pimtrain was built without MPI (a sanitizer build): " << without_mpi;
    }
    // 130 training samples in batches of 32: the last batch (2 samples) is smaller than 3
    // ranks, so 3-rank runs use batches of 25 (last 5).
    testing::WriteTinyMnist(dir_.path(), 130, 40, 12, /*gzip=*/false);
    WriteFileAtomic(dir_.File("mlp.yaml"),
                    "seed: 7\nthreads: 1\ndata: {impl: fashion_mnist, dir: " + dir_.path() +
                        "}\nmodel: {impl: mlp, layers: [144, 24, 10]}\n"
                        "train: {epochs: 2, batch_size: 25, eval_batch_size: 15}\n");
    // A CNN with the layers that couple a batch (batch norm, dropout) between per-sample ones.
    WriteFileAtomic(dir_.File("cnn.yaml"),
                    "seed: 9\nthreads: 1\ndata: {impl: fashion_mnist, dir: " + dir_.path() +
                        "}\nmodel:\n  impl: sequential\n  layers:\n"
                        "    - {impl: conv2d, out_channels: 4, kernel: 3, padding: 1}\n"
                        "    - {impl: batch_norm}\n    - {impl: relu}\n"
                        "    - {impl: max_pool2d, kernel: 2}\n    - {impl: flatten}\n"
                        "    - {impl: dropout, p: 0.2}\n"
                        "    - {impl: linear, out_features: 10}\n"
                        "train: {epochs: 1, batch_size: 25, eval_batch_size: 15}\n");
    // A graph with every multi-input layer: c1 fans out to three consumers (a residual body,
    // its addition and c2), concat, a pre-norm self-attention block (layer norm, attention: run
    // whole on every rank), softmax, add and global pooling (per sample: run on the shards).
    WriteFileAtomic(dir_.File("graph.yaml"),
                    "seed: 5\nthreads: 1\ndata: {impl: fashion_mnist, dir: " + dir_.path() +
                        "}\nmodel:\n  impl: graph\n  nodes:\n"
                        "  - {name: c1, impl: conv2d, out_channels: 4, kernel: 3, padding: 1}\n"
                        "  - impl: residual\n    name: r1\n"
                        "    body: [{impl: conv2d, out_channels: 4, kernel: 3, padding: 1},\n"
                        "           {impl: batch_norm}, {impl: gelu},\n"
                        "           {impl: conv2d, out_channels: 4, kernel: 3, padding: 1}]\n"
                        "    shortcut: [{impl: conv2d, out_channels: 4, kernel: 1, bias: false}]\n"
                        "  - {name: c2, impl: conv2d, out_channels: 4, kernel: 1, inputs: c1}\n"
                        "  - {name: cat, impl: concat, inputs: [r1, c2]}\n"
                        "  - {name: pool, impl: max_pool2d, kernel: 2}\n"
                        "  - {name: tok, impl: position_embedding}\n"
                        "  - {name: proj, impl: linear, over: last, out_features: 8}\n"
                        "  - impl: residual\n    name: att\n    activation: none\n"
                        "    body: [{impl: layer_norm}, {impl: self_attention, dim: 8, heads: 2}]\n"
                        "  - {name: sm, impl: softmax, dim: 0}\n"
                        "  - {name: both, impl: add, inputs: [sm, att]}\n"
                        "  - {name: gap, impl: global_avg_pool}\n"
                        "  - {name: fc, impl: linear, out_features: 10}\n"
                        "train: {epochs: 1, batch_size: 25, eval_batch_size: 15}\n");
    // T-PIM's macro (a small array so that several tiles and counts are exercised).
    WriteFileAtomic(dir_.File("macro.yaml"),
                    "pim:\n  macro: {impl: digital_bitserial, rows: 32, cols: 8, input_bits: 8, "
                    "weight_bits: 8, weight_bits_backward: 16, gradient_bits: 16, signed: true, "
                    "master_weights: false}\ncost: {impl: bitserial_sram, tech: 28nm}\n");
  }

  // Trains `configs` with `ranks` MPI ranks (0: one process, no mpirun) into a fresh directory.
  std::string Train(const std::string& configs, int ranks, const std::string& extra = "") {
    const std::string out = dir_.File("run" + std::to_string(++runs_));
    const auto r = RunCommand((ranks > 0 ? Mpirun(ranks) : std::string()) + Cli() + " train " +
                              configs + " --out " + out + " " + extra);
    if (r.err.find("built without MPI") != std::string::npos) {
      ADD_FAILURE() << "this pimtrain was built without MPI: " << r.err;
    }
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    return out;
  }

  void ExpectSameAsOneProcess(const std::string& configs, const std::string& sets) {
    const std::string one = Train(configs, 0, sets);
    const std::string tensors = CheckpointTensors(one), metrics = MetricsWithoutTimes(one);
    ASSERT_FALSE(tensors.empty());
    for (int ranks : {1, 2, 3}) {
      SCOPED_TRACE(std::to_string(ranks) + " ranks");
      // Each rank over 2 threads for 2 ranks: threads and ranks both split the work.
      const std::string run =
          Train(configs, ranks, sets + (ranks == 2 ? " --set threads=2" : ""));
      EXPECT_EQ(CheckpointTensors(run) == tensors, true) << "checkpoint tensors differ";
      EXPECT_EQ(MetricsWithoutTimes(run), metrics);
    }
  }

  testing::TempDir dir_;
  int runs_ = 0;
};

TEST_F(MpiTrainTest, MlpOnFp32MatchesOneProcessBitForBit) {
  ExpectSameAsOneProcess(dir_.File("mlp.yaml"), "");
}

// Counts (per layer and stage) and the cost block are in the metrics: they match too.
TEST_F(MpiTrainTest, MlpOnTheBitSerialMacroMatchesOneProcessCountsIncluded) {
  ExpectSameAsOneProcess(dir_.File("mlp.yaml") + " " + dir_.File("macro.yaml"), "");
  const std::string metrics = MetricsWithoutTimes(Train(
      dir_.File("mlp.yaml") + " " + dir_.File("macro.yaml"), 2));
  EXPECT_NE(metrics.find("\"bitserial_cycles\""), std::string::npos) << metrics;
}

TEST_F(MpiTrainTest, CnnWithBatchNormAndDropoutOnTheMacroMatchesOneProcess) {
  ExpectSameAsOneProcess(dir_.File("cnn.yaml") + " " + dir_.File("macro.yaml"), "");
}

// Graph models: fan-out errors summed on the shards, coupled nodes run whole, GC split.
TEST_F(MpiTrainTest, GraphModelOnTheMacroMatchesOneProcess) {
  ExpectSameAsOneProcess(dir_.File("graph.yaml") + " " + dir_.File("macro.yaml"), "");
}

TEST_F(MpiTrainTest, GraphModelOnFp32MatchesOneProcess) {
  ExpectSameAsOneProcess(dir_.File("graph.yaml"), "");
}

// Rank 0 writes, and only the files of a run; a run killed after a checkpoint and resumed
// under mpirun with 3 ranks ends with the checkpoint of an uninterrupted one-process run.
TEST_F(MpiTrainTest, ResumeUnderMpirunMatchesAnUninterruptedRun) {
  const std::string cfg = dir_.File("mlp.yaml") + " " + dir_.File("macro.yaml");
  const std::string sets = " --set train.epochs=4";
  const std::string whole = Train(cfg, 0, sets);
  const std::string two = Train(cfg, 2, sets);
  EXPECT_EQ(RunCommand("ls " + two).out,
            "checkpoint.bin\nconfig.yaml\nmetrics.jsonl\nsummary.json\n");
  const std::string cut = dir_.File("cut");
  const std::string script = Cli() + " train " + cfg + sets + " --out " + cut +
                             " >/dev/null & pid=$!; while [ ! -f " + cut +
                             "/checkpoint.bin ] && kill -0 $pid 2>/dev/null; do sleep 0.01; "
                             "done; kill -9 $pid 2>/dev/null; wait $pid; true";
  RunCommand("bash -c '" + script + "'");
  const auto r = RunCommand(Mpirun(3) + Cli() + " train --resume " + cut);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(CheckpointTensors(cut) == CheckpointTensors(whole), true);
  EXPECT_EQ(MetricsWithoutTimes(cut), MetricsWithoutTimes(whole));
}

TEST_F(MpiTrainTest, RefusesWhatCannotBeSplitInOneLine) {
  // A batch with fewer samples than ranks: 130 samples in batches of 32 leave 2 for 3 ranks.
  auto small = RunCommand(Mpirun(3) + Cli() + " train " + dir_.File("mlp.yaml") +
                          " --set train.batch_size=32 --out " + dir_.File("small"));
  EXPECT_EQ(small.exit_code, 2) << small.err;
  EXPECT_NE(small.err.find("train.batch_size: batches of 32 over 130 samples leave 2 sample(s) "
                           "for 3 MPI ranks"),
            std::string::npos)
      << small.err;
  // A macro whose draws depend on the rows of a call.
  auto analog = RunCommand(Mpirun(2) + Cli() + " train " + dir_.File("mlp.yaml") +
                           " --set pim.macro.impl=analog_crossbar --out " + dir_.File("analog"));
  EXPECT_EQ(analog.exit_code, 2) << analog.err;
  EXPECT_NE(analog.err.find("pim.macro.impl: analog_crossbar cannot be split over 2 MPI ranks"),
            std::string::npos)
      << analog.err;
  EXPECT_FALSE(FileExists(dir_.File("analog") + "/checkpoint.bin"));
}

}  // namespace
}  // namespace pim
