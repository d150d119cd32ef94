// Shared test helpers implementation.
#include "test_util.h"

#include "pimtrain/sim/session.h"

#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <stdexcept>

namespace pim::testing {

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "pimtrain_test_XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void WriteIdx(const std::string& path, const std::vector<int32_t>& dims,
              const std::vector<uint8_t>& payload, bool gzip) {
  std::string bytes;
  bytes += '\0';
  bytes += '\0';
  bytes += static_cast<char>(0x08);
  bytes += static_cast<char>(dims.size());
  for (int32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) bytes += static_cast<char>((d >> s) & 0xff);
  }
  bytes.append(reinterpret_cast<const char*>(payload.data()), payload.size());
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    if (f == nullptr) throw std::runtime_error("gzopen " + path);
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream out(path, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
}

void WriteTinyMnist(const std::string& dir, int n_train, int n_test, int side, bool gzip) {
  std::mt19937 rng(1234);
  auto make = [&](int n, const std::string& prefix) {
    std::vector<uint8_t> images(static_cast<size_t>(n) * side * side);
    std::vector<uint8_t> labels(n);
    int block = side * side / 10;
    for (int i = 0; i < n; ++i) {
      int label = static_cast<int>(rng() % 10);
      labels[i] = static_cast<uint8_t>(label);
      for (int p = 0; p < side * side; ++p) {
        int v = static_cast<int>(rng() % 60);
        if (p / std::max(1, block) == label) v += 150;
        images[static_cast<size_t>(i) * side * side + p] = static_cast<uint8_t>(std::min(v, 255));
      }
    }
    std::string ext = gzip ? ".gz" : "";
    WriteIdx(dir + "/" + prefix + "-images-idx3-ubyte" + ext, {n, side, side}, images, gzip);
    WriteIdx(dir + "/" + prefix + "-labels-idx1-ubyte" + ext, {n}, labels, gzip);
  };
  make(n_train, "train");
  make(n_test, "t10k");
}

CommandResult RunCommand(const std::string& command) {
  char out_tmpl[] = "/tmp/pimtrain_out_XXXXXX";
  char err_tmpl[] = "/tmp/pimtrain_err_XXXXXX";
  int out_fd = ::mkstemp(out_tmpl);
  int err_fd = ::mkstemp(err_tmpl);
  ::close(out_fd);
  ::close(err_fd);
  std::string full = command + " >" + out_tmpl + " 2>" + err_tmpl;
  int status = std::system(full.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  auto slurp = [](const char* p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  r.out = slurp(out_tmpl);
  r.err = slurp(err_tmpl);
  ::unlink(out_tmpl);
  ::unlink(err_tmpl);
  return r;
}

ConfigNode ResolveYaml(const std::string& yaml, const std::string& origin,
                       const std::vector<std::string>& sets) {
  ConfigNode merged = ParseYaml(yaml, origin);
  for (const auto& s : sets) ApplySet(merged, s);
  return ValidateRoot(merged);
}

std::vector<std::vector<float>> StateValues(Session& s) {
  std::vector<std::vector<float>> out;
  for (auto& [name, t] : s.trainer().StateTensors()) {
    out.emplace_back(t->data(), t->data() + t->numel());
  }
  return out;
}

bool TrainAndStopAfterEpoch(const ConfigNode& config, const std::string& out_dir, int64_t epoch) {
  struct Stop {};
  Session s(config);
  SessionCallbacks cb;
  cb.on_epoch = [epoch](const EpochMetrics& m) {
    if (m.epoch == epoch) throw Stop{};
  };
  try {
    s.Train(out_dir, false, cb);
  } catch (const Stop&) {
    return true;
  }
  return false;
}

}  // namespace pim::testing
