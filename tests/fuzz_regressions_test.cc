// Replays the fuzz seed corpora (fuzz/corpus/<target>/) and every past fuzzing finding
// (fuzz/regressions/<target>/) through the fuzz harness in the normal test build, so the
// readers' contract (return, or throw a typed one-line pim::Error) is checked on every CI run.
// The findings themselves are also pinned down one by one below, with the error they now give.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../fuzz/harness.h"
#include "test_util.h"

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

// --- findings, one by one ---

// The message a typed error carries, or "(no error)".
template <class E, class F>
std::string ErrorOf(F&& body) {
  try {
    body();
  } catch (const E& e) {
    return e.what();
  }
  return "(no error)";
}

// Finding (config): bytes that are not UTF-8 in a YAML string were read, but written back as
// U+FFFD, so a run's saved config.yaml differed from its config (and JSON output would throw).
// They are now refused where they are read.
TEST(FuzzFindingTest, ConfigTextMustBeUtf8) {
  EXPECT_EQ(ErrorOf<ConfigError>([] { ParseYaml("a: 1\nname: \"Ki\xff\xffm\"\n", "c.yaml"); }),
            "c.yaml:2: not valid UTF-8 (byte 0xFF at offset 2 of a value); save the file as UTF-8");
  EXPECT_EQ(ErrorOf<ConfigError>([] { ParseYaml("k\xc3: 1\n", "c.yaml"); }),
            "c.yaml:1: not valid UTF-8 (byte 0xC3 at offset 1 of a key); save the file as UTF-8");
  // Overlong forms, surrogates and code points above U+10FFFF are not UTF-8 either.
  for (const char* bad : {"\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf8"}) {
    EXPECT_THROW(ParseYaml(std::string("a: \"") + bad + "\"\n", "c.yaml"), ConfigError) << bad;
  }
  // Well-formed text in any script survives the round trip byte for byte.
  const std::string text = "name: \"Jos\xc3\xa9 \xc2\xb5m \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\"\n";
  ConfigNode n = ParseYaml(text, "c.yaml");
  EXPECT_TRUE(ParseYaml(ToYaml(n), "again.yaml") == n);
  EXPECT_EQ(n.At("name").text(), "Jos\xc3\xa9 \xc2\xb5m \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80");
}

// Finding (config): yaml-cpp's message for a bad escape quotes the character, a line break
// included, so the error took two lines. Every pim::Error now writes control characters as
// escapes.
TEST(FuzzFindingTest, ErrorMessagesAreOneLineWhateverTheyQuote) {
  std::string m = ErrorOf<ConfigError>([] { ParseYaml("a: \"\\\x01\"\n", "c.yaml"); });
  EXPECT_EQ(m, "c.yaml:1: malformed YAML: unknown escape character: \\x01");
  EXPECT_EQ(std::string(DataError("a\nb\r\tc\x7f").what()), "a\\nb\\r\\tc\\x7F");
  m = ErrorOf<ConfigError>([] { ValidateRoot(ParseYaml("\"tra\\nin\": 1\n", "c.yaml")); });
  EXPECT_NE(m.find("unknown key 'tra\\nin'"), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

// Finding (config): a recursive anchor ("a: &x {b: *x}") is a cycle in yaml-cpp's node graph,
// and converting it recursed until the stack overflowed. Depth and the number of values one
// text expands to are now bounded (aliases inside aliases could otherwise expand a few lines
// to billions of values).
TEST(FuzzFindingTest, RecursiveAndExplodingAliasesAreRefused) {
  EXPECT_EQ(ErrorOf<ConfigError>([] { ParseYaml("a: &x {itr: *x}\n", "c.yaml"); }),
            "c.yaml:1: nested more than 64 levels deep (a recursive alias?)");
  std::string bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n";
  for (char c = 'b'; c <= 'h'; ++c) {
    std::string prev(1, static_cast<char>(c - 1));
    bomb += std::string(1, c) + ": &" + c + " [*" + prev + ", *" + prev + ", *" + prev + ", *" +
            prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev + ", *" + prev +
            ", *" + prev + "]\n";
  }
  std::string m = ErrorOf<ConfigError>([&] { ParseYaml(bomb, "c.yaml"); });
  EXPECT_NE(m.find("expands to more than 100000 values"), std::string::npos) << m;
  // Plain nesting: 64 levels are fine, 65 are not.
  EXPECT_NO_THROW(ParseYaml(std::string(63, '[') + "1" + std::string(63, ']'), "c.yaml"));
  m = ErrorOf<ConfigError>(
      [] { ParseYaml(std::string(64, '[') + "1" + std::string(64, ']'), "c.yaml"); });
  EXPECT_NE(m.find("nested more than 64 levels deep"), std::string::npos) << m;
}

// A checkpoint with a valid CRC around `header` (JSON) and `payload_floats` zero floats.
std::string Checkpoint(const nlohmann::json& header, size_t payload_floats) {
  std::string h = header.dump();
  std::string out = "PIMCKPT1";
  for (int i = 0; i < 4; ++i) out += static_cast<char>((h.size() >> (8 * i)) & 0xff);
  out += h;
  out += std::string(payload_floats * sizeof(float), '\0');
  uint32_t crc = Crc32(out.data(), out.size());
  for (int i = 0; i < 4; ++i) out += static_cast<char>((crc >> (8 * i)) & 0xff);
  return out;
}

// Loads `bytes` as a checkpoint into a 3 x 4 weight (exact match) and returns the error.
std::string CheckpointError(const std::string& bytes) {
  testing::TempDir dir;
  WriteFileAtomic(dir.File("c.bin"), bytes);
  Tensor w(Shape{3, 4});
  NamedTensors live = {{"w", &w}};
  std::string m = ErrorOf<DataError>([&] { LoadCheckpoint(dir.File("c.bin"), live); });
  const std::string prefix = dir.File("c.bin") + ": ";
  return m.rfind(prefix, 0) == 0 ? m.substr(prefix.size()) : m;
}

nlohmann::json Header(nlohmann::json tensors, nlohmann::json epochs = 1) {
  return {{"epochs_done", epochs}, {"metrics_jsonl", ""}, {"config_yaml", ""},
          {"tensors", std::move(tensors)}};
}

// Finding (checkpoint): a tensor entry without "shape" escaped as a JSON library exception
// (the reader checked the header's keys, not each tensor's). A CRC only catches damage, so
// every field is now checked, with arithmetic that cannot overflow: element counts whose byte
// size wrapped around 2^64 used to pass the payload-length check and move later tensors'
// offsets outside the file (an out-of-bounds read on load).
TEST(FuzzFindingTest, CheckpointHeadersAreCheckedFieldByField) {
  auto w = [](nlohmann::json shape, nlohmann::json numel) {
    return nlohmann::json{{"name", "w"}, {"shape", std::move(shape)}, {"numel", std::move(numel)}};
  };
  EXPECT_EQ(CheckpointError(Checkpoint(Header({w({3, 4}, 12)}), 12)), "(no error)");
  // A rank-0 shape holds no elements (Shape::numel), as SaveCheckpoint writes it.
  EXPECT_EQ(CheckpointError(Checkpoint(Header({{{"name", "s"}, {"shape", nlohmann::json::array()},
                                                 {"numel", 0}},
                                                w({3, 4}, 12)}),
                                       12)),
            "checkpoint holds 2 tensors, the configured run has 1 (was it saved from a different "
            "config?)");
  std::string m = CheckpointError(Checkpoint(Header({{{"name", "w"}, {"numel", 12}}}), 12));
  EXPECT_EQ(m.rfind("not a valid pimtrain checkpoint (header: ", 0), 0u) << m;
  EXPECT_NE(m.find("'shape' not found"), std::string::npos) << m;
  const std::string inconsistent = "not a valid pimtrain checkpoint (tensor w has an inconsistent shape)";
  EXPECT_EQ(CheckpointError(Checkpoint(Header({w({3, 4}, 11)}), 12)), inconsistent);
  EXPECT_EQ(CheckpointError(Checkpoint(Header({w({3, -4}, -12)}), 12)), inconsistent);
  EXPECT_EQ(CheckpointError(Checkpoint(Header({w({3, 4.5}, 12)}), 12)), inconsistent);
  EXPECT_EQ(CheckpointError(Checkpoint(Header({w({1, 1, 1, 3, 4}, 12)}), 12)), inconsistent);
  EXPECT_EQ(CheckpointError(Checkpoint(Header({w("3x4", 12)}), 12)), inconsistent);
  EXPECT_EQ(CheckpointError(Checkpoint(Header(w({3, 4}, 12)), 12)),
            "not a valid pimtrain checkpoint (header: tensors is not a list)");
  EXPECT_EQ(CheckpointError(Checkpoint(Header({w({3, 4}, 12)}, -1), 12)),
            "not a valid pimtrain checkpoint (header: epochs_done is not a count)");
  EXPECT_EQ(CheckpointError(Checkpoint(Header({w({3, 4}, 12)}, 1.5), 12)),
            "not a valid pimtrain checkpoint (header: epochs_done is not a count)");
  // 2^62 + 12 elements: 4 bytes each wraps to 48 bytes, which is the payload.
  const int64_t wraps = (int64_t{1} << 62) + 12;
  EXPECT_EQ(CheckpointError(Checkpoint(Header({w({wraps}, wraps)}), 12)),
            "not a valid pimtrain checkpoint (payload length)");
  // A first tensor of 10^6 elements and a third whose size wraps so that the sum is the
  // payload: the 3 x 4 tensor in between would have been read 4 MB past the file's end.
  const int64_t third = static_cast<int64_t>((uint64_t{0} - 4000000 + 48) / 4);
  EXPECT_EQ(CheckpointError(Checkpoint(Header({{{"name", "a"}, {"shape", {1000000}}, {"numel", 1000000}},
                                               w({3, 4}, 12),
                                               {{"name", "b"}, {"shape", {third}}, {"numel", third}}}),
                                        24)),
            "not a valid pimtrain checkpoint (payload length)");
  // Names are shown without their control characters.
  m = CheckpointError(Checkpoint(Header({{{"name", "x\ny"}, {"shape", {2}}, {"numel", 3}}}), 3));
  EXPECT_EQ(m, "not a valid pimtrain checkpoint (tensor x?y has an inconsistent shape)");
}

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
