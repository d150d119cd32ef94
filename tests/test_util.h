// Shared test helpers: temporary directories, small IDX writers, running the CLI.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pimtrain/base/config.h"

namespace pim {
class Session;
}

namespace pim::testing {

// A fresh empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes an IDX file (big-endian header, uint8 payload); gzip-compressed when `gzip`.
void WriteIdx(const std::string& path, const std::vector<int32_t>& dims,
              const std::vector<uint8_t>& payload, bool gzip);

// Writes a tiny Fashion-MNIST-shaped data set (train-/t10k- images and labels) into `dir`:
// `n_train` and `n_test` samples of `side` x `side` pixels, 10 classes, learnable (each class
// lights up its own block of pixels, plus noise).
void WriteTinyMnist(const std::string& dir, int n_train, int n_test, int side, bool gzip);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs a shell command, capturing stdout and stderr.
CommandResult RunCommand(const std::string& command);

// A config from YAML text (`origin` names it in errors) with `--set` overrides applied, validated.
ConfigNode ResolveYaml(const std::string& yaml, const std::string& origin,
                       const std::vector<std::string>& sets = {});
// Every training-state tensor of a session (weights, buffers, optimizer state), copied, for
// bit-identity comparisons.
std::vector<std::vector<float>> StateValues(Session& s);
// Trains `config` into `out_dir` and stops it right after epoch `epoch` ended (its checkpoint
// written), as a run killed there would stop. False if the run ended some other way.
bool TrainAndStopAfterEpoch(const ConfigNode& config, const std::string& out_dir, int64_t epoch);

}  // namespace pim::testing
