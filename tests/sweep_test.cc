// `pimtrain sweep`: a small grid trains every point once, writes one row per point with the
// varied keys, skips finished points when run again, and refuses a bad key before running any.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/sim/results_reader.h"
#include "pimtrain/sim/sweep.h"
#include "test_util.h"

namespace pim {
namespace {

using testing::RunCommand;

std::string Cli() { return PIMTRAIN_CLI; }

// A tiny MNIST-shaped set, a base config training a small MLP on it, on a digital bit-serial
// macro priced by a cost model (so each row has energy and latency).
struct TinySweep {
  testing::TempDir dir;
  std::string base, sweep, out;
  TinySweep() {
    testing::WriteTinyMnist(dir.path(), 120, 60, 28, /*gzip=*/false);
    base = dir.File("base.yaml");
    WriteFileAtomic(base,
                    "seed: 3\nthreads: 1\ndata: {impl: fashion_mnist, dir: " + dir.path() +
                        ", normalize: unit}\nmodel: {impl: mlp, layers: [784, 16, 10]}\n"
                        "train: {epochs: 1, batch_size: 30, optimizer: {impl: sgd,"
                        " learning_rate: 0.05, momentum: 0.9}}\n"
                        "pim:\n  macro: {impl: digital_bitserial, rows: 128, cols: 8, cores: 4,"
                        " input_bits: 4, weight_bits: 4, error_bits: 8, weight_bits_backward: 8,"
                        " gradient_bits: 8, signed: true}\n"
                        "cost: {impl: bitserial_sram, tech: 28nm, voltage: 1.0,"
                        " frequency_mhz: 200}\n");
    sweep = dir.File("sweep.yaml");
    out = dir.File("out");
  }
  void WriteSweep(const std::string& grid, const std::string& extra = "") const {
    WriteFileAtomic(sweep, "base: [" + base + "]\nset: [train.batch_size=20]\n" + grid +
                               "out: " + out + "\n" + extra);
  }
};

std::vector<nlohmann::json> Rows(const std::string& path) {
  std::vector<nlohmann::json> rows;
  std::istringstream in(ReadFile(path));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  }
  return rows;
}

TEST(SweepTest, GridRunsEveryPointOnceAndResumes) {
  TinySweep s;
  s.WriteSweep("grid:\n  pim.macro.input_bits: [2, 6]\n  train.optimizer.learning_rate: "
               "[0.05, 0.2]\n");
  auto r = RunCommand(Cli() + " sweep " + s.sweep + " --jobs 2");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("4 ran, 0 skipped, 0 failed"), std::string::npos) << r.out;

  auto rows = Rows(s.out + "/results.jsonl");
  ASSERT_EQ(rows.size(), 4u);
  std::set<std::pair<int64_t, double>> seen;
  for (const auto& row : rows) {
    EXPECT_EQ(row["status"], "ok") << row.dump();
    // The varied keys are columns, typed as the schema types them.
    ASSERT_TRUE(row["pim.macro.input_bits"].is_number_integer()) << row.dump();
    ASSERT_TRUE(row["train.optimizer.learning_rate"].is_number()) << row.dump();
    seen.insert({row["pim.macro.input_bits"].get<int64_t>(),
                 row["train.optimizer.learning_rate"].get<double>()});
    EXPECT_GT(row["test_accuracy"].get<double>(), 0.0) << row.dump();
    EXPECT_GT(row["energy_j"].get<double>(), 0.0) << row.dump();
    EXPECT_GT(row["latency_s"].get<double>(), 0.0) << row.dump();
    EXPECT_GT(row["tops_per_watt"].get<double>(), 0.0) << row.dump();
    // Each point is a full run in its own directory, with the fixed `set:` applied.
    const std::string dir = s.out + "/" + row["dir"].get<std::string>();
    auto summary = nlohmann::json::parse(ReadFile(dir + "/summary.json"));
    EXPECT_EQ(summary["config"]["train"]["batch_size"], 20);
    EXPECT_EQ(summary["config"]["pim"]["macro"]["input_bits"], row["pim.macro.input_bits"]);
    EXPECT_DOUBLE_EQ(summary["test_accuracy"].get<double>(), row["test_accuracy"].get<double>());
  }
  EXPECT_EQ(seen.size(), 4u);
  // Fewer input bits cost less energy for the same work: the rows are not copies of each other.
  std::map<int64_t, double> energy;
  for (const auto& row : rows) {
    if (row["train.optimizer.learning_rate"].get<double>() == 0.05) {
      energy[row["pim.macro.input_bits"].get<int64_t>()] = row["energy_j"].get<double>();
    }
  }
  EXPECT_LT(energy.at(2), energy.at(6));

  // The CSV: a header with the varied keys first, then one line per point.
  std::string csv = ReadFile(s.out + "/results.csv");
  EXPECT_EQ(csv.rfind("pim.macro.input_bits,train.optimizer.learning_rate,status,test_accuracy,"
                      "energy_j,latency_s,tops_per_watt,seconds,dir",
                      0),
            0u)
      << csv;
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 5);

  // Run again: every point is already finished and nothing is retrained.
  const std::string before = ReadFile(s.out + "/results.jsonl");
  auto again = RunCommand(Cli() + " sweep " + s.sweep);
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_NE(again.out.find("0 ran, 4 skipped, 0 failed"), std::string::npos) << again.out;
  EXPECT_EQ(ReadFile(s.out + "/results.jsonl"), before);
  // The project's results reader agrees that the points are finished.
  SweepResults read = ReadSweepResults(s.out + "/results.jsonl");
  for (const auto& row : rows) EXPECT_TRUE(read.Finished(row["point"].get<std::string>()));
}

TEST(SweepTest, BadKeyFailsBeforeAnyPointRuns) {
  TinySweep s;
  // The bad key is in the last value only: still refused before the first point starts.
  s.WriteSweep("points:\n  - {train.epochs: 1}\n  - {pim.macro.input_bitz: 4}\n");
  auto r = RunCommand(Cli() + " sweep " + s.sweep);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  std::string err = r.err;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  EXPECT_EQ(err.find('\n'), std::string::npos) << "one line expected: " << r.err;
  EXPECT_NE(err.find("point 1"), std::string::npos) << err;
  EXPECT_NE(err.find("input_bitz"), std::string::npos) << err;
  EXPECT_FALSE(FileExists(s.out)) << "nothing may run (or be created) before validation";
}

TEST(SweepTest, MalformedSweepFilesAreOneLineUserErrors) {
  TinySweep s;
  struct Case {
    std::string grid, extra, expect;
  };
  const Case cases[] = {
      {"grid:\n  train.epochs: 2\n", "", "must be a non-empty list"},
      {"grid:\n  train.epochs: []\n", "", "must be a non-empty list"},
      {"", "", "exactly one of grid"},
      {"grid:\n  train.epochs: [1]\n", "mode: fit\n", "mode must be 'train' or 'cost'"},
      {"grid:\n  train.epochs: [1]\n", "jobs: 2\n", "unknown sweep key 'jobs'"},
      {"points:\n  - {train.epochs: 1}\n  - {train.epochs: 1}\n", "", "same design point"},
  };
  for (const auto& c : cases) {
    s.WriteSweep(c.grid, c.extra);
    auto r = RunCommand(Cli() + " sweep " + s.sweep);
    EXPECT_EQ(r.exit_code, 2) << c.expect << ": " << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
  }
}

TEST(SweepTest, LoadSweepExpandsTheGridLastKeyFastest) {
  TinySweep s;
  s.WriteSweep("grid:\n  train.epochs: [1, 2]\n  model.layers: [[784, 8, 10], [784, 4, 10]]\n",
               "mode: cost\n");
  SweepSpec spec = LoadSweep(s.sweep);
  ASSERT_EQ(spec.points.size(), 4u);
  EXPECT_EQ(spec.mode, SweepMode::kCost);
  EXPECT_EQ(spec.keys, (std::vector<std::string>{"train.epochs", "model.layers"}));
  EXPECT_EQ(spec.points[1].overrides,
            (std::vector<std::string>{"train.epochs=1", "model.layers=[784, 4, 10]"}));
  EXPECT_EQ(spec.points[2].resolved.At("train").GetInt("epochs"), 2);
  EXPECT_EQ(spec.points[3].resolved.At("model").At("layers").AsIntList(),
            (std::vector<int64_t>{784, 4, 10}));
  // Identity is independent of the order the keys are written in.
  EXPECT_EQ(spec.points[1].id, "model.layers=[784, 4, 10] train.epochs=1");
  EXPECT_EQ(spec.points[0].dir, s.out + "/point-0000");
  // --out overrides out:.
  EXPECT_EQ(LoadSweep(s.sweep, s.dir.File("elsewhere")).points[0].dir,
            s.dir.File("elsewhere") + "/point-0000");
}

TEST(SweepTest, CostModeGivesTheChipFiguresWithoutTraining) {
  TinySweep s;
  s.WriteSweep("grid:\n  pim.macro.input_bits: [2, 8]\n", "mode: cost\n");
  auto r = RunCommand(Cli() + " sweep " + s.sweep);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  auto rows = Rows(s.out + "/results.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& row : rows) {
    EXPECT_TRUE(row["test_accuracy"].is_null()) << row.dump();
    EXPECT_GT(row["tops_per_watt"].get<double>(), 0.0) << row.dump();
    EXPECT_FALSE(FileExists(s.out + "/" + row["dir"].get<std::string>() + "/checkpoint.bin"));
  }
  // 2-bit inputs take a quarter of the bit-serial cycles of 8-bit ones: higher TOPS/W.
  EXPECT_GT(rows[0]["tops_per_watt"].get<double>(), rows[1]["tops_per_watt"].get<double>());
}

TEST(SweepTest, AFailedPointIsRecordedAndRetriedOnTheNextRun) {
  TinySweep s;
  s.WriteSweep("points:\n  - {train.epochs: 1}\n  - {data.dir: " + s.dir.File("missing") + "}\n");
  auto r = RunCommand(Cli() + " sweep " + s.sweep);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  auto rows = Rows(s.out + "/results.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["status"], "ok");
  EXPECT_EQ(rows[1]["status"], "failed");
  EXPECT_NE(rows[1]["error"].get<std::string>().find("missing"), std::string::npos)
      << rows[1].dump();
  // The data appears: only the failed point runs again.
  MakeDirs(s.dir.File("missing"));
  testing::WriteTinyMnist(s.dir.File("missing"), 60, 30, 28, false);
  auto again = RunCommand(Cli() + " sweep " + s.sweep);
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_NE(again.out.find("1 ran, 1 skipped, 0 failed"), std::string::npos) << again.out;
  rows = Rows(s.out + "/results.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1]["status"], "ok");
}

TEST(SweepTest, ExtendingTheGridRunsOnlyNewPointsAndKeepsOldDirectories) {
  TinySweep s;
  s.WriteSweep("grid:\n  pim.macro.input_bits: [8]\n", "mode: cost\n");
  ASSERT_EQ(RunCommand(Cli() + " sweep " + s.sweep).exit_code, 0);
  // The new value comes first: its expansion index (0) names the directory of the old point.
  s.WriteSweep("grid:\n  pim.macro.input_bits: [2, 8]\n", "mode: cost\n");
  auto r = RunCommand(Cli() + " sweep " + s.sweep);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("1 ran, 1 skipped, 0 failed"), std::string::npos) << r.out;
  auto rows = Rows(s.out + "/results.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0]["dir"], "point-0000");
  EXPECT_NE(rows[1]["dir"], "point-0000");
  for (const auto& row : rows) {
    std::string point_yaml = ReadFile(s.out + "/" + row["dir"].get<std::string>() + "/point.yaml");
    EXPECT_NE(point_yaml.find("input_bits: " + row["pim.macro.input_bits"].dump()),
              std::string::npos)
        << row.dump();
  }
  // The CSV lists this sweep's points in expansion order.
  std::string csv = ReadFile(s.out + "/results.csv");
  EXPECT_LT(csv.find("\n2,ok"), csv.find("\n8,ok")) << csv;
}

TEST(SweepTest, AWorkerThatDiesIsAFailedPointNotAFailedSweep) {
  TinySweep s;
  s.WriteSweep("grid:\n  pim.macro.input_bits: [2, 8]\n", "mode: cost\n");
  // A stand-in worker binary that is killed as a crash or the OOM killer would kill it.
  const std::string exe = s.dir.File("dying-worker");
  WriteFileAtomic(exe, "#!/bin/sh\necho dying >&2\nkill -9 $$\n");
  ASSERT_EQ(::chmod(exe.c_str(), 0755), 0);
  SweepOptions options;
  options.jobs = 2;
  options.executable = exe;
  SweepOutcome o = RunSweep(LoadSweep(s.sweep), options);
  EXPECT_EQ(o.total, 2);
  EXPECT_EQ(o.failed, 2);
  EXPECT_EQ(o.ran, 0);
  auto rows = Rows(s.out + "/results.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& row : rows) {
    EXPECT_EQ(row["status"], "failed");
    EXPECT_EQ(row["error"], "worker killed by signal 9: dying") << row.dump();
  }
}

// Under `mpirun -np 2` the points are dealt over the two ranks: each runs exactly once, and the
// results file has the same rows, in the same order, as a one-process run of the same sweep
// (only the wall-clock seconds differ); a rerun skips them all, and a lost row is run again.
TEST(SweepTest, MpiRanksRunEachPointOnceWithTheResultsOfOneProcess) {
  if (RunCommand("command -v mpirun").exit_code != 0) {
    GTEST_SKIP() << "mpirun not found (apt-get install openmpi-bin): MPI sweeps not tested";
  }
  TinySweep s;
  s.WriteSweep("grid:\n  pim.macro.input_bits: [2, 4, 6]\n  train.optimizer.learning_rate: "
               "[0.05, 0.2]\n");
  const std::string one = s.dir.File("one"), two = s.dir.File("two");
  auto r1 = RunCommand(Cli() + " sweep " + s.sweep + " --out " + one);
  ASSERT_EQ(r1.exit_code, 0) << r1.out << r1.err;
  // Root may run mpirun only when it says so; two ranks on a two-core machine need
  // --oversubscribe; no binding, so each rank's workers may use any core.
  const std::string mpirun =
      "OMPI_MCA_btl_vader_single_copy_mechanism=none mpirun --allow-run-as-root --oversubscribe "
      "--bind-to none -np 2 ";
  auto r2 = RunCommand(mpirun + Cli() + " sweep " + s.sweep + " --out " + two);
  if (r2.err.find("built without MPI") != std::string::npos) {
    GTEST_SKIP() << "this pimtrain was built without MPI (no libopenmpi-dev, or a sanitizer "
                    "build): " << r2.err;
  }
  ASSERT_EQ(r2.exit_code, 0) << r2.out << r2.err;
  EXPECT_NE(r2.out.find("on each of 2 MPI ranks"), std::string::npos) << r2.out;
  EXPECT_NE(r2.out.find("6 ran, 0 skipped, 0 failed"), std::string::npos) << r2.out;

  auto without_seconds = [](std::vector<nlohmann::json> rows) {
    for (auto& r : rows) r.erase("seconds");
    return rows;
  };
  const auto rows1 = without_seconds(Rows(one + "/results.jsonl"));
  const auto rows2 = without_seconds(Rows(two + "/results.jsonl"));
  ASSERT_EQ(rows1.size(), 6u);
  EXPECT_EQ(rows2, rows1);
  EXPECT_EQ(ReadFile(two + "/results.csv").substr(0, 200),
            ReadFile(one + "/results.csv").substr(0, 200));
  // Both ranks ran points, three each, and each point ran once: its log has one training run.
  size_t by_rank[2] = {0, 0};
  for (size_t pos = 0; (pos = r2.out.find("rank ", pos)) != std::string::npos; ++pos) {
    if (r2.out.compare(pos, 9, "rank 0: [") == 0) ++by_rank[0];
    if (r2.out.compare(pos, 9, "rank 1: [") == 0) ++by_rank[1];
  }
  EXPECT_EQ(by_rank[0], 3u) << r2.out;
  EXPECT_EQ(by_rank[1], 3u) << r2.out;
  for (const auto& row : rows2) {
    const std::string log = ReadFile(two + "/" + row["dir"].get<std::string>() + "/log.txt");
    size_t epochs = 0;
    for (size_t pos = 0; (pos = log.find("epoch 1 ", pos)) != std::string::npos; ++pos) ++epochs;
    EXPECT_EQ(epochs, 1u) << row.dump() << "\n" << log;
  }

  // Resumable as a one-process sweep: nothing runs again; rows lost (the last two) run again
  // and the file ends as before.
  auto again = RunCommand(mpirun + Cli() + " sweep " + s.sweep + " --out " + two);
  ASSERT_EQ(again.exit_code, 0) << again.out << again.err;
  EXPECT_NE(again.out.find("0 ran, 6 skipped, 0 failed"), std::string::npos) << again.out;
  std::string text = ReadFile(two + "/results.jsonl");
  for (int i = 0; i < 2; ++i) text.erase(text.rfind('\n', text.size() - 2) + 1);
  WriteFileAtomic(two + "/results.jsonl", text);
  auto resumed = RunCommand(mpirun + Cli() + " sweep " + s.sweep + " --out " + two);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.out << resumed.err;
  EXPECT_NE(resumed.out.find("2 ran, 4 skipped, 0 failed"), std::string::npos) << resumed.out;
  EXPECT_EQ(without_seconds(Rows(two + "/results.jsonl")), rows1);

  // A mistake in the sweep file is reported once, by rank 0, and every rank exits.
  s.WriteSweep("grid:\n  pim.macro.input_bitz: [2]\n");
  auto bad = RunCommand(mpirun + Cli() + " sweep " + s.sweep + " --out " + two);
  EXPECT_NE(bad.exit_code, 0);
  size_t errors = 0;
  for (size_t pos = 0; (pos = bad.err.find("pimtrain: error:", pos)) != std::string::npos; ++pos) {
    ++errors;
  }
  EXPECT_EQ(errors, 1u) << bad.err;
  EXPECT_NE(bad.err.find("input_bitz"), std::string::npos) << bad.err;
}

TEST(SweepTest, TheExampleSweepsValidate) {
  for (const char* name : {"adc_bits.yaml", "mpi_bench.yaml"}) {
    SweepSpec spec = LoadSweep(std::string(PIMTRAIN_SOURCE_DIR) + "/sweeps/" + name);
    EXPECT_GT(spec.points.size(), 1u) << name;
  }
}

TEST(SweepTest, AChangedBaseConfigIsNotMixedIntoFinishedResults) {
  TinySweep s;
  s.WriteSweep("grid:\n  train.epochs: [1]\n", "mode: cost\n");
  ASSERT_EQ(RunCommand(Cli() + " sweep " + s.sweep).exit_code, 0);
  std::string text = ReadFile(s.base);
  text.replace(text.find("seed: 3"), 7, "seed: 4");
  WriteFileAtomic(s.base, text);
  auto r = RunCommand(Cli() + " sweep " + s.sweep);
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("different config"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pim
