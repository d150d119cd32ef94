// Replays the fuzz seed corpora (fuzz/corpus/<target>/) and every past fuzzing finding
// (fuzz/regressions/<target>/) through the fuzz harness in the normal test build, so the
// readers' contract (return, or throw a typed one-line pim::Error) is checked on every CI run.
// The findings themselves are also pinned down one by one below, with the error they now give.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>
#include <vector>

#include "../fuzz/harness.h"

namespace pim {
namespace {

namespace fs = std::filesystem;
using Harness = void (*)(const uint8_t*, size_t);

// Every input file of `target`: seeds and regressions.
std::vector<std::string> Inputs(const std::string& target) {
  std::vector<std::string> out;
  for (const char* kind : {"corpus", "regressions"}) {
    fs::path dir = fs::path(PIMTRAIN_SOURCE_DIR) / "fuzz" / kind / target;
    if (!fs::is_directory(dir)) continue;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.is_regular_file()) out.push_back(e.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

void Replay(const std::string& target, Harness harness) {
  auto inputs = Inputs(target);
  EXPECT_FALSE(inputs.empty()) << "no seed corpus for " << target;
  for (const auto& path : inputs) {
    SCOPED_TRACE(path);
    std::string bytes = ReadFile(path);
    EXPECT_NO_THROW(harness(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
  }
}

TEST(FuzzRegressionTest, ConfigCorpus) { Replay("config", fuzz::ConfigInput); }
TEST(FuzzRegressionTest, IdxCorpus) { Replay("idx", fuzz::IdxInput); }
TEST(FuzzRegressionTest, Cifar10Corpus) { Replay("cifar10", fuzz::Cifar10Input); }
TEST(FuzzRegressionTest, CheckpointCorpus) { Replay("checkpoint", fuzz::CheckpointInput); }
TEST(FuzzRegressionTest, ResultsCorpus) { Replay("results", fuzz::ResultsInput); }

// --- the sweep results reader (new with the fuzz target; its unit tests live here) ---

TEST(ResultsReaderTest, KeepsTheLastRecordPerPointAndDropsATornTail) {
  SweepResults r = ParseSweepResults(
      "{\"point\":\"a\",\"status\":\"failed\"}\n\n"
      "{\"point\":\"b\",\"status\":\"ok\",\"metrics\":{\"acc\":0.9}}\r\n"
      "{\"point\":\"a\",\"status\":\"ok\"}\n"
      "{\"point\":\"c\",\"sta",
      "results.jsonl");
  ASSERT_EQ(r.points.size(), 2u);
  EXPECT_EQ(r.points[0].point, "a");
  EXPECT_EQ(r.points[0].line, 4);
  EXPECT_TRUE(r.Finished("a"));
  EXPECT_TRUE(r.Finished("b"));
  EXPECT_FALSE(r.Finished("c"));
  EXPECT_DOUBLE_EQ(r.Find("b")->record["metrics"]["acc"].get<double>(), 0.9);
  EXPECT_TRUE(r.dropped_torn_tail);
}

TEST(ResultsReaderTest, MalformedLinesAreTypedOneLineErrorsNamingTheLine) {
  auto error = [](const std::string& text) {
    try {
      ParseSweepResults(text, "r.jsonl");
    } catch (const DataError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_EQ(error("{\"point\":\"a\",\"status\":\"ok\"}\n[1,2]\n"),
            "r.jsonl:2: expected a JSON object per line, got array");
  EXPECT_EQ(error("{\"status\":\"ok\"}\n"),
            "r.jsonl:1: 'point' must be a non-empty string naming the sweep point");
  EXPECT_EQ(error("{\"point\":\"\",\"status\":\"ok\"}\n"),
            "r.jsonl:1: 'point' must be a non-empty string naming the sweep point");
  EXPECT_EQ(error("{\"point\":\"a\",\"status\":\"done\"}\n"),
            "r.jsonl:1: unknown status 'done' (expected \"ok\" or \"failed\")");
  EXPECT_EQ(error("{\"point\":\"a\"}\n"), "r.jsonl:1: 'status' must be \"ok\" or \"failed\"");
  std::string bad = error("{\"point\":\"a\",\"status\":\"ok\"}\n{\"point\":\x01}\n");
  EXPECT_EQ(bad.rfind("r.jsonl:2: not valid JSON (", 0), 0u) << bad;
  EXPECT_EQ(bad.find('\x01'), std::string::npos) << "control bytes must not reach the terminal";
  EXPECT_THROW(ReadSweepResults("/nonexistent/results.jsonl"), IoError);
}

}  // namespace
}  // namespace pim
