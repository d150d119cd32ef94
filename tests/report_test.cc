// `pimtrain report`: the HTML page and its PNGs for a tiny run on a chip preset (curves, cost
// breakdowns, sparsity, the paper-vs-model table), for a sweep, and one-line errors (exit 2)
// for directories that are not runs and for a Python without matplotlib.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <fstream>
#include <string>

#include "pimtrain/base/io.h"
#include "test_util.h"

namespace pim {
namespace {

using testing::RunCommand;

std::string Cli() { return PIMTRAIN_CLI; }

bool HaveMatplotlib() {
  return RunCommand("/usr/bin/python3 -c 'import matplotlib' 2>/dev/null").exit_code == 0;
}

#define REQUIRE_MATPLOTLIB()                                                             \
  if (!HaveMatplotlib()) {                                                               \
    GTEST_SKIP() << "/usr/bin/python3 has no matplotlib (apt-get install python3-matplotlib)"; \
  }

// A PNG file: its 8-byte signature, and more than a header.
void ExpectPng(const std::string& path) {
  ASSERT_TRUE(FileExists(path)) << path;
  std::string bytes = ReadFile(path);
  EXPECT_GT(bytes.size(), 2000u) << path;
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << path;
}

void ExpectUserError(const testing::CommandResult& r, const std::string& part) {
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  std::string err = r.err;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  EXPECT_EQ(err.find('\n'), std::string::npos) << "one line expected: " << r.err;
  EXPECT_EQ(err.rfind("pimtrain: error: ", 0), 0u) << r.err;
  EXPECT_NE(err.find(part), std::string::npos) << r.err;
}

// The T-PIM preset (its MLP on a bit-serial macro, with a cost model and published figures),
// two epochs on a tiny generated data set.
struct PresetRun {
  testing::TempDir dir;
  std::string run;
  PresetRun() {
    testing::WriteTinyMnist(dir.path(), 120, 60, 28, /*gzip=*/false);
    run = dir.File("run");
    auto r = RunCommand(Cli() + " train " + PIMTRAIN_SOURCE_DIR +
                        "/presets/chips/tpim.yaml --set data.dir=" + dir.path() +
                        " --set data.train_limit=120 --set data.test_limit=60"
                        " --set train.epochs=2 --set threads=1 --out " + run);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  }
};

TEST(ReportTest, RunPageHasCurvesCostSparsityAndThePresetsPublishedFigures) {
  REQUIRE_MATPLOTLIB();
  PresetRun p;
  const std::string out = p.dir.File("report");
  auto r = RunCommand(Cli() + " report " + p.run + " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("index.html"), std::string::npos) << r.out;
  const std::string page = ReadFile(out + "/index.html");
  for (const char* section :
       {"id=\"summary\"", "id=\"curves\"", "id=\"cost\"", "id=\"sparsity\"", "id=\"paper\"",
        "id=\"config\"", "Paper vs model", "tops_per_watt", "high_speed", "Sparsity per layer"}) {
    EXPECT_NE(page.find(section), std::string::npos) << section;
  }
  // Every plot is a PNG beside the page and embedded in it.
  for (const char* png : {"curves.png", "learning_rate.png", "cost_stages.png", "cost_layers.png",
                          "cost_components.png", "cost_epochs.png", "sparsity.png",
                          "figures_vs_paper.png"}) {
    ExpectPng(out + "/" + png);
    EXPECT_NE(page.find(std::string("data-file=\"") + png + "\""), std::string::npos) << png;
  }
  EXPECT_NE(page.find("data:image/png;base64,iVBORw0KGgo"), std::string::npos);
  EXPECT_EQ(page.rfind("</html>"), page.size() - 8);

  // Run again into the same place: the earlier report is replaced, and the default is
  // RUN_DIR/report.
  auto again = RunCommand(Cli() + " report " + p.run + " --out " + out);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  ASSERT_EQ(RunCommand(Cli() + " report " + p.run).exit_code, 0);
  EXPECT_TRUE(FileExists(p.run + "/report/index.html"));
}

// A device-mode run (Tiki-Taka on soft-bounds devices) writes devices.json, `eval --drift-time`
// writes drift.json beside the checkpoint, and the page plots both: the conductance
// distribution of C and A per layer, and the accuracy against drift time.
TEST(ReportTest, DeviceRunPlotsConductanceDistributionAndAccuracyAgainstDrift) {
  REQUIRE_MATPLOTLIB();
  testing::TempDir dir;
  testing::WriteTinyMnist(dir.path(), 128, 64, 28, /*gzip=*/false);
  const std::string config = dir.File("dev.yaml");
  WriteFileAtomic(config, "seed: 3\nthreads: 1\ndata: {impl: fashion_mnist, dir: " + dir.path() +
                              "}\nmodel: {impl: mlp, layers: [784, 16, 10]}\n"
                              "train: {epochs: 1, batch_size: 32, algorithm: {impl: tiki_taka, "
                              "rows_per_transfer: 16}}\n"
                              "pim: {macro: {impl: analog_crossbar, decomposition: native, "
                              "device: {impl: soft_bounds}, update: {impl: stochastic_pulses}, "
                              "io: {}}}\n");
  const std::string run = dir.File("run");
  auto r = RunCommand(Cli() + " train " + config + " --out " + run);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string devices = ReadFile(run + "/devices.json");
  EXPECT_NE(devices.find("\"weights (C)\""), std::string::npos) << devices;
  EXPECT_NE(devices.find("\"fast array A\""), std::string::npos) << devices;
  EXPECT_NE(devices.find("\"conductance\""), std::string::npos) << devices;
  auto e = RunCommand(Cli() + " eval " + run + "/config.yaml --checkpoint " + run +
                      " --drift-time 1 3600 86400 --repeats 2");
  ASSERT_EQ(e.exit_code, 0) << e.out << e.err;
  const std::string drift = ReadFile(run + "/drift.json");
  EXPECT_NE(drift.find("\"compensated\""), std::string::npos) << drift;
  auto rep = RunCommand(Cli() + " report " + run);
  ASSERT_EQ(rep.exit_code, 0) << rep.out << rep.err;
  const std::string page = ReadFile(run + "/report/index.html");
  EXPECT_NE(page.find("id=\"devices\""), std::string::npos);
  for (const char* png : {"device_states.png", "drift.png"}) {
    ExpectPng(run + "/report/" + png);
    EXPECT_NE(page.find(std::string("data-file=\"") + png + "\""), std::string::npos) << png;
  }
}

// A graph model's page lists its nodes, their inputs and output shapes.
TEST(ReportTest, GraphRunPageShowsTheGraph) {
  REQUIRE_MATPLOTLIB();
  testing::TempDir dir;
  testing::WriteTinyMnist(dir.path(), 60, 30, 12, /*gzip=*/false);
  const std::string run = dir.File("run");
  auto t = RunCommand(
      Cli() + " train --set data.dir=" + dir.path() +
      " --set 'model={impl: graph, nodes: [{name: stem, impl: conv2d, out_channels: 4, "
      "kernel: 3, padding: 1}, {impl: residual, name: blk, body: [{impl: conv2d, "
      "out_channels: 4, kernel: 3, padding: 1}]}, {name: gap, impl: global_avg_pool}, "
      "{name: fc, impl: linear, out_features: 10}]}' --set train.epochs=1 --set threads=1 "
      "--out " + run);
  ASSERT_EQ(t.exit_code, 0) << t.out << t.err;
  auto r = RunCommand(Cli() + " report " + run);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string page = ReadFile(run + "/report/index.html");
  EXPECT_NE(page.find("id=\"network\""), std::string::npos);
  EXPECT_NE(page.find("1 of them read by more than one node"), std::string::npos);
  for (const char* cell : {"<td>stem</td>", "<td>gap</td>", "<td>12x12x4</td>", "<td>10</td>"}) {
    EXPECT_NE(page.find(cell), std::string::npos) << cell;
  }
}

TEST(ReportTest, SweepPagePlotsTheMetricsAgainstTheVariedKey) {
  REQUIRE_MATPLOTLIB();
  testing::TempDir dir;
  const std::string sweep = dir.File("sweep.yaml"), out = dir.File("sweep");
  WriteFileAtomic(sweep, "base: [tpim]\nset: {threads: 1}\ngrid:\n  pim.macro.input_bits: "
                         "[2, 4, 8]\nmode: cost\nout: " + out + "\n");
  auto s = RunCommand(Cli() + " sweep " + sweep);
  ASSERT_EQ(s.exit_code, 0) << s.out << s.err;
  auto r = RunCommand(Cli() + " report " + out);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string page = ReadFile(out + "/report/index.html");
  EXPECT_NE(page.find("Results against the varied keys"), std::string::npos);
  EXPECT_NE(page.find("pim.macro.input_bits"), std::string::npos);
  EXPECT_NE(page.find("3 (3 ok, 0 failed)"), std::string::npos);
  ExpectPng(out + "/report/sweep_0.png");
}

TEST(ReportTest, BadDirectoriesAreOneLineErrors) {
  testing::TempDir dir;
  ExpectUserError(RunCommand(Cli() + " report " + dir.File("nowhere")), "no such directory");
  ExpectUserError(RunCommand(Cli() + " report " + dir.path()), "not a pimtrain run");
  // A run whose metrics.jsonl was cut short in the middle of a line.
  const std::string run = dir.File("run");
  MakeDirs(run);
  WriteFileAtomic(run + "/config.yaml", "seed: 1\n");
  WriteFileAtomic(run + "/metrics.jsonl",
                  "{\"epoch\": 1, \"train_loss\": 1, \"train_accuracy\": 0.5, \"test_loss\": 1, "
                  "\"test_accuracy\": 0.5}\n{\"epoch\": 2, \"train_lo");
  ExpectUserError(RunCommand(Cli() + " report " + run), "metrics.jsonl:2: truncated");
  WriteFileAtomic(run + "/metrics.jsonl", "{\"epoch\": 1}\n");
  ExpectUserError(RunCommand(Cli() + " report " + run), "metrics.jsonl:1: no number");
  // Only the config: not a complete run.
  ::unlink((run + "/metrics.jsonl").c_str());
  ExpectUserError(RunCommand(Cli() + " report " + run), "metrics.jsonl: missing");
  EXPECT_FALSE(FileExists(run + "/report")) << "nothing written for a bad run";
  // A sweep whose results file was cut short.
  const std::string sweep = dir.File("sweep");
  MakeDirs(sweep);
  WriteFileAtomic(sweep + "/results.jsonl",
                  "{\"point\": \"a=1\", \"status\": \"ok\"}\n{\"point\": \"a=2\", \"sta");
  ExpectUserError(RunCommand(Cli() + " report " + sweep), "results.jsonl: truncated");
}

TEST(ReportTest, NoPythonOrNoMatplotlibIsAOneLineError) {
  testing::TempDir dir;
  const std::string run = dir.File("run");
  MakeDirs(run);
  WriteFileAtomic(run + "/config.yaml", "seed: 1\n");
  WriteFileAtomic(run + "/metrics.jsonl",
                  "{\"epoch\": 1, \"train_loss\": 1, \"train_accuracy\": 0.5, \"test_loss\": 1, "
                  "\"test_accuracy\": 0.5}\n");
  ExpectUserError(
      RunCommand("PIMTRAIN_PYTHON=" + dir.File("no-python") + " " + Cli() + " report " + run),
      "no Python");
  // A matplotlib that cannot be imported, ahead of the real one on the path.
  MakeDirs(dir.File("fake/matplotlib"));
  WriteFileAtomic(dir.File("fake/matplotlib/__init__.py"), "raise ImportError('not here')\n");
  ExpectUserError(RunCommand("PYTHONPATH=" + dir.File("fake") + " " + Cli() + " report " + run),
                  "matplotlib is not installed");
  EXPECT_FALSE(FileExists(run + "/report"));
}

}  // namespace
}  // namespace pim
