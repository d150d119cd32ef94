// Errors as users see them: every kind of bad input the CLI is known to meet, each giving exit
// code 2 and ONE line "pimtrain: error: ..." that names what is wrong and where. docs/
// reliability.md tabulates these messages; run with PIMTRAIN_PRINT_ERRORS=1 to print them all
// ("ERROR-TABLE|case|message" lines) when the table needs refreshing.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "pimtrain/base/io.h"
#include "test_util.h"

namespace pim {
namespace {

using testing::CommandResult;
using testing::RunCommand;

std::string Cli() { return PIMTRAIN_CLI; }

// A run directory with a synthetic-data config (no files needed) and, on request, a small
// Fashion-MNIST-shaped IDX set that individual tests then damage.
class ErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = dir_.File("run.yaml");
    Write("run.yaml",
          "seed: 2\nthreads: 1\n"
          "data: {impl: synthetic, train_size: 64, test_size: 32, height: 4, width: 4}\n"
          "model: {impl: mlp, layers: [16, 8, 10]}\n"
          "train: {epochs: 1, batch_size: 16}\n");
  }

  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_.File(name), std::ios::binary) << text;
  }

  // Writes the IDX set (raw files, so single bytes are easy to patch) and a config using it.
  std::string IdxConfig() {
    testing::WriteTinyMnist(dir_.path(), 40, 20, 4, /*gzip=*/false);
    Write("idx.yaml", "threads: 1\ndata: {impl: mnist, dir: " + dir_.path() +
                          "}\nmodel: {impl: mlp, layers: [16, 10]}\ntrain: {epochs: 1}\n");
    return dir_.File("idx.yaml");
  }

  // Expects exit code 2 and one "pimtrain: error: " line holding every part of `parts`.
  void ExpectError(const std::string& what, const CommandResult& r,
                   std::initializer_list<std::string> parts) {
    SCOPED_TRACE(what);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    std::string err = r.err;
    while (!err.empty() && err.back() == '\n') err.pop_back();
    EXPECT_EQ(err.find('\n'), std::string::npos) << "one line expected:\n" << r.err;
    EXPECT_EQ(err.rfind("pimtrain: error: ", 0), 0u) << r.err;
    for (const auto& p : parts) EXPECT_NE(err.find(p), std::string::npos) << p << " in " << err;
    if (std::getenv("PIMTRAIN_PRINT_ERRORS") != nullptr) {
      // Temporary paths vary from run to run; the table shows them as DIR.
      std::string shown = err;
      for (size_t at; (at = shown.find(dir_.path())) != std::string::npos;) {
        shown.replace(at, dir_.path().size(), "DIR");
      }
      std::cout << "ERROR-TABLE|" << what << "|" << shown << "\n";
    }
  }

  CommandResult Train(const std::string& args) {
    return RunCommand(Cli() + " train " + args + " --out " + dir_.File("out"));
  }

  testing::TempDir dir_;
  std::string config_;
};

// --- configs ---

TEST_F(ErrorsTest, MalformedYaml) {
  Write("bad.yaml", "train: {epochs: [\n");
  ExpectError("malformed YAML", Train(dir_.File("bad.yaml")), {"bad.yaml:", "malformed YAML"});
}

TEST_F(ErrorsTest, TopLevelNotAMap) {
  Write("list.yaml", "- 1\n- 2\n");
  ExpectError("top level not a map", Train(dir_.File("list.yaml")),
              {"list.yaml", "must be a map"});
}

TEST_F(ErrorsTest, DuplicateKey) {
  Write("dup.yaml", "seed: 1\nseed: 2\n");
  ExpectError("duplicate key", Train(dir_.File("dup.yaml")), {"dup.yaml:2", "duplicate key"});
}

TEST_F(ErrorsTest, UnknownKey) {
  ExpectError("unknown key", Train(config_ + " --set train.epocs=2"),
              {"unknown key 'train.epocs'", "did you mean 'epochs'"});
}

TEST_F(ErrorsTest, UnknownImplementation) {
  ExpectError("unknown implementation", Train(config_ + " --set train.optimizer.impl=adamw"),
              {"unknown optimizer 'adamw'", "adam"});
}

TEST_F(ErrorsTest, WrongType) {
  ExpectError("wrong type", Train(config_ + " --set train.epochs=three"),
              {"train.epochs", "expected an integer", "'three'"});
}

TEST_F(ErrorsTest, OutOfRange) {
  ExpectError("out-of-range value", Train(config_ + " --set train.batch_size=0"),
              {"train.batch_size", "outside [1,"});
}

TEST_F(ErrorsTest, BadSetSyntax) {
  ExpectError("--set without =", Train(config_ + " --set train.epochs"),
              {"expected KEY=VALUE"});
}

TEST_F(ErrorsTest, ConfigNotUtf8) {
  Write("latin1.yaml", "seed: 2\nname: \"Ki\xff\"\n");  // Latin-1, not UTF-8
  ExpectError("config not UTF-8", Train(config_ + " " + dir_.File("latin1.yaml")),
              {"latin1.yaml:2", "not valid UTF-8", "0xFF"});
}

TEST_F(ErrorsTest, RecursiveYamlAlias) {
  // Used to recurse until the stack overflowed (a crash, found by fuzz_config).
  Write("alias.yaml", "seed: 2\nx: &a {b: *a}\n");
  ExpectError("recursive YAML alias", Train(config_ + " " + dir_.File("alias.yaml")),
              {"alias.yaml:2", "nested more than 64 levels deep"});
}

TEST_F(ErrorsTest, NumberOutOfItsType) {
  Write("big.yaml", "seed: 99999999999999999999\n");
  ExpectError("integer too large", Train(config_ + " " + dir_.File("big.yaml")),
              {"big.yaml:1", "seed", "expected an integer", "'99999999999999999999'"});
  ExpectError("not-a-number value",
              Train(config_ + " --set 'train.optimizer={impl: sgd, learning_rate: .nan}'"),
              {"train.optimizer.learning_rate", "expected a number", "'.nan'"});
}

TEST_F(ErrorsTest, ConfigIsADirectory) {
  ASSERT_EQ(::mkdir(dir_.File("adir").c_str(), 0755), 0);
  ExpectError("config path is a directory", RunCommand(Cli() + " train " + dir_.File("adir")),
              {"adir", "directory"});
}

TEST_F(ErrorsTest, MissingConfigFile) {
  ExpectError("missing config file", RunCommand(Cli() + " train " + dir_.File("none.yaml")),
              {"none.yaml"});
}

TEST_F(ErrorsTest, ModelDoesNotFitTheData) {
  ExpectError("model does not fit the data", Train(config_ + " --set model.layers=[15,10]"),
              {"model.layers[0]", "15 inputs", "16 features"});
}

// --- limits ---

TEST_F(ErrorsTest, AbsurdMemoryIsRefusedUpFront) {
  ExpectError("absurd memory (10^6 x 10^6 layer)",
              Train(config_ + " --set model.layers=[16,1000000,1000000,10]"),
              {"model", "memory", "TiB", "limits.max_memory_bytes"});
}

TEST_F(ErrorsTest, AbsurdTimeIsRefusedUpFront) {
  ExpectError("absurd time (MACs per epoch over the cap)",
              Train(config_ + " --set limits.max_macs_per_epoch=1000"),
              {"multiply-accumulates", "limits.max_macs_per_epoch"});
}

// --- data files ---

TEST_F(ErrorsTest, MissingDataDirectory) {
  IdxConfig();
  ExpectError("missing data directory",
              Train(dir_.File("idx.yaml") + " --set data.dir=" + dir_.File("nodata")),
              {"nodata", "data directory not found"});
}

TEST_F(ErrorsTest, MissingDataFile) {
  std::string config = IdxConfig();
  ::unlink(dir_.File("t10k-labels-idx1-ubyte").c_str());
  ExpectError("missing data file", Train(config),
              {"t10k-labels-idx1-ubyte[.gz]", "file not found"});
}

TEST_F(ErrorsTest, TruncatedIdx) {
  std::string config = IdxConfig();
  std::string f = dir_.File("train-images-idx3-ubyte");
  ASSERT_EQ(::truncate(f.c_str(), 16 + 40 * 16 - 5), 0);
  ExpectError("truncated IDX file", Train(config), {"train-images-idx3-ubyte", "truncated"});
}

TEST_F(ErrorsTest, WrongMagicIdx) {
  std::string config = IdxConfig();
  std::string f = dir_.File("train-labels-idx1-ubyte");
  std::string bytes = ReadFile(f);
  bytes[2] = 0x0D;  // float32 element type instead of unsigned byte
  WriteFileAtomic(f, bytes);
  ExpectError("wrong magic number (IDX)", Train(config),
              {"train-labels-idx1-ubyte", "bad magic 0x00000D01", "expected 0x00000801"});
}

TEST_F(ErrorsTest, LabelOutOfRange) {
  std::string config = IdxConfig();
  std::string f = dir_.File("train-labels-idx1-ubyte");
  std::string bytes = ReadFile(f);
  bytes[8 + 5] = 12;
  WriteFileAtomic(f, bytes);
  ExpectError("label out of range", Train(config),
              {"train-labels-idx1-ubyte", "label 12 at index 5", "outside [0, 10)"});
}

TEST_F(ErrorsTest, MismatchedImageAndLabelCounts) {
  std::string config = IdxConfig();
  testing::WriteIdx(dir_.File("t10k-labels-idx1-ubyte"), {19}, std::vector<uint8_t>(19, 1),
                    false);
  ExpectError("mismatched image and label counts", Train(config),
              {"holds 20 images but", "t10k-labels-idx1-ubyte holds 19 labels"});
}

TEST_F(ErrorsTest, CorruptGzip) {
  testing::WriteTinyMnist(dir_.path(), 40, 20, 4, /*gzip=*/true);
  std::string f = dir_.File("train-images-idx3-ubyte.gz");
  std::string bytes = ReadFile(f);
  WriteFileAtomic(f, bytes.substr(0, bytes.size() / 2));
  Write("gz.yaml", "data: {impl: mnist, dir: " + dir_.path() +
                       "}\nmodel: {impl: mlp, layers: [16, 10]}\n");
  ExpectError("truncated gzip file", Train(dir_.File("gz.yaml")),
              {"train-images-idx3-ubyte.gz", "corrupt or truncated gzip"});
}

TEST_F(ErrorsTest, CifarFileNotWholeRecords) {
  for (const char* f : {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                        "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"}) {
    Write(f, std::string(3073, '\1'));
  }
  Write("data_batch_3.bin", std::string(3073 + 100, '\1'));
  Write("c.yaml", "data: {impl: cifar10, dir: " + dir_.path() + "}\n"
                  "model: {impl: mlp, layers: [3072, 10]}\n");
  ExpectError("CIFAR-10 file not whole records", Train(dir_.File("c.yaml")),
              {"data_batch_3.bin", "not a whole number of 3073-byte records"});
}

TEST_F(ErrorsTest, CifarLabelOutOfRange) {
  for (const char* f : {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                        "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"}) {
    Write(f, std::string(3073, '\1'));
  }
  Write("test_batch.bin", std::string(3073, '\1') + std::string(1, '\x0A') +
                              std::string(3072, '\1'));
  Write("c.yaml", "data: {impl: cifar10, dir: " + dir_.path() + "}\n"
                  "model: {impl: mlp, layers: [3072, 10]}\n");
  ExpectError("CIFAR-10 label out of range", Train(dir_.File("c.yaml")),
              {"test_batch.bin", "record 1 has label 10"});
}

// --- checkpoints and run directories ---

class CheckpointErrorsTest : public ErrorsTest {
 protected:
  void SetUp() override {
    ErrorsTest::SetUp();
    auto r = Train(config_);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ckpt_ = dir_.File("out/checkpoint.bin");
    bytes_ = ReadFile(ckpt_);
  }
  std::string ckpt_, bytes_;
};

TEST_F(CheckpointErrorsTest, CorruptCheckpoint) {
  bytes_[bytes_.size() / 2] ^= 0x10;
  WriteFileAtomic(ckpt_, bytes_);
  ExpectError("corrupted checkpoint (one bit flipped)",
              RunCommand(Cli() + " train --resume " + dir_.File("out")),
              {"checkpoint.bin", "checksum mismatch"});
  ExpectError("corrupted checkpoint (eval)",
              RunCommand(Cli() + " eval " + config_ + " --checkpoint " + dir_.File("out")),
              {"checkpoint.bin", "checksum mismatch"});
}

TEST_F(CheckpointErrorsTest, TruncatedCheckpoint) {
  WriteFileAtomic(ckpt_, bytes_.substr(0, bytes_.size() - 100));
  ExpectError("truncated checkpoint", RunCommand(Cli() + " train --resume " + dir_.File("out")),
              {"checkpoint.bin", "corrupt or truncated"});
}

TEST_F(CheckpointErrorsTest, NotACheckpoint) {
  WriteFileAtomic(ckpt_, "PK\x03\x04 this is a zip file, not a checkpoint");
  ExpectError("wrong magic number (checkpoint)",
              RunCommand(Cli() + " train --resume " + dir_.File("out")),
              {"checkpoint.bin", "bad magic"});
}

// The checkpoint `bytes` with its JSON header passed through `edit`, and a valid CRC: what a
// tool other than pimtrain might write.
std::string WithHeader(const std::string& bytes,
                       const std::function<void(nlohmann::json&)>& edit) {
  uint32_t len = 0;
  for (int i = 0; i < 4; ++i) len |= uint32_t{static_cast<uint8_t>(bytes[8 + i])} << (8 * i);
  nlohmann::json header = nlohmann::json::parse(bytes.substr(12, len));
  edit(header);
  const std::string h = header.dump();
  std::string out = bytes.substr(0, 8);
  for (int i = 0; i < 4; ++i) out += static_cast<char>((h.size() >> (8 * i)) & 0xff);
  out += h + bytes.substr(12 + len, bytes.size() - 16 - len);
  const uint32_t crc = Crc32(out.data(), out.size());
  for (int i = 0; i < 4; ++i) out += static_cast<char>((crc >> (8 * i)) & 0xff);
  return out;
}

TEST_F(CheckpointErrorsTest, CheckpointWithAValidChecksumButABadHeader) {
  WriteFileAtomic(ckpt_, WithHeader(bytes_, [](nlohmann::json& h) {
                    h["tensors"][0].erase("shape");
                  }));
  ExpectError("checkpoint header missing a field (valid CRC)",
              RunCommand(Cli() + " train --resume " + dir_.File("out")),
              {"checkpoint.bin", "not a valid pimtrain checkpoint", "'shape' not found"});
  WriteFileAtomic(ckpt_, WithHeader(bytes_, [](nlohmann::json& h) {
                    h["metrics_jsonl"] = "{\"epoch\": 1}\n";
                  }));
  ExpectError("checkpoint metrics malformed (valid CRC)",
              RunCommand(Cli() + " train --resume " + dir_.File("out")),
              {"checkpoint.bin", "metrics are not valid", "'train_loss' not found"});
}

TEST_F(CheckpointErrorsTest, ResumeWithADifferentConfig) {
  ExpectError("resume with a different config",
              RunCommand(Cli() + " train " + config_ + " --set train.batch_size=8 --resume " +
                         dir_.File("out")),
              {"cannot resume", "train.batch_size"});
}

TEST_F(CheckpointErrorsTest, EvalWithADifferentModel) {
  ExpectError("eval with a different model",
              RunCommand(Cli() + " eval " + config_ + " --set model.layers=[16,9,10] " +
                         "--checkpoint " + dir_.File("out")),
              {"model differs", "model.layers[1]"});
}

// A directory with a config but no checkpoint starts again (tests/resume_kill_test.cc); one
// without even a config, and no config given, is an error saying what to do.
TEST_F(ErrorsTest, ResumeWithoutACheckpointOrAConfig) {
  ASSERT_EQ(::mkdir(dir_.File("empty").c_str(), 0755), 0);
  ExpectError("resume without a checkpoint or a config",
              RunCommand(Cli() + " train --resume " + dir_.File("empty")),
              {"empty/config.yaml", "give its config to resume it"});
}

TEST_F(ErrorsTest, OutputPathIsAFile) {
  Write("taken", "a file\n");
  ExpectError("output path is a file",
              RunCommand(Cli() + " train " + config_ + " --out " + dir_.File("taken")),
              {"taken", "cannot create directory"});
}

TEST_F(ErrorsTest, ReadOnlyOutputDirectory) {
  ASSERT_EQ(::mkdir(dir_.File("ro").c_str(), 0555), 0);
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(config_.c_str(), 0644), 0);
  // Root ignores permission bits: run the command as nobody then.
  std::string as_user = ::geteuid() == 0 ? "setpriv --reuid=65534 --regid=65534 --clear-groups "
                                         : "";
  ExpectError("read-only output directory",
              RunCommand(as_user + Cli() + " train " + config_ + " --out " + dir_.File("ro")),
              {"ro/config.yaml", "cannot write", "Permission denied"});
}

TEST_F(ErrorsTest, DiskFullWhileWritingACheckpoint) {
  // A file-size limit makes write() fail (EFBIG) as a full disk would (ENOSPC): the 12 KiB
  // allow config.yaml and metrics.jsonl but not the checkpoint. SIGXFSZ is ignored so that the
  // write fails instead of killing the process.
  Write("big.yaml", "model: {layers: [16, 256, 10]}\n");
  ExpectError("disk full (file-size limit) writing the checkpoint",
              RunCommand("bash -c \"trap '' XFSZ; ulimit -f 12; exec " + Cli() + " train " +
                         config_ + " " + dir_.File("big.yaml") + " --out " + dir_.File("out") +
                         "\""),
              {"out/checkpoint.bin", "write failed", "File too large"});
  // Atomic writes: no partial checkpoint and no temporary file is left behind.
  EXPECT_FALSE(FileExists(dir_.File("out/checkpoint.bin")));
  for (const auto& e : std::filesystem::directory_iterator(dir_.File("out"))) {
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  }
}

// --- numeric faults ---

TEST_F(ErrorsTest, ExplodingLearningRateStopsTheRun) {
  ExpectError("NaN/Inf during training (learning rate 100)",
              Train(config_ + " --set 'train.optimizer={impl: sgd, learning_rate: 100, "
                              "momentum: 0.9}' --set train.schedule.impl=constant "
                              "--set train.epochs=20"),
              {"layer ", "stage ", "step ", "train.on_nonfinite"});
}

}  // namespace
}  // namespace pim
