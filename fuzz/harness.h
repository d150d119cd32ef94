// The bodies of pimtrain's fuzz targets, shared by the libFuzzer binaries (fuzz/*_fuzzer.cc) and
// the regression test that replays the seed corpora and past findings in the normal test suite
// (tests/fuzz_regressions_test.cc).
//
// The contract each reader must keep on ANY input: return normally, or throw a typed pim::Error
// (ConfigError / IoError / DataError / UnsupportedError) whose message is one line. Anything else
// (another exception type, a crash, a sanitizer report, a hang, a multi-line message) is a bug.
// The harness lets other exceptions escape, so libFuzzer reports them as crashes.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "pimtrain/base/config.h"
#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/nn/dataset.h"
#include "pimtrain/nn/datasets/idx.h"
#include "pimtrain/sim/results_reader.h"
#include "pimtrain/sim/session.h"
#include "pimtrain/train/checkpoint.h"

namespace pim::fuzz {

// A reader failed in a way the contract forbids (reported as a crash by libFuzzer).
class ContractViolation : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// Typed errors are the expected outcome of bad input; their message must be one line.
inline void CheckMessage(const Error& e) {
  std::string_view m = e.what();
  if (m.empty() || m.find('\n') != std::string_view::npos) {
    throw ContractViolation(std::string("error message is not one line: ") + e.what());
  }
}

// A scratch directory for the process (tmpfs when there is one), removed at exit.
inline const std::string& ScratchDir() {
  static const std::string dir = [] {
    std::string base = ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    std::string tmpl = base + "/pimtrain_fuzz_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    static std::string for_atexit = tmpl;
    std::atexit([] { std::system(("rm -rf '" + for_atexit + "'").c_str()); });
    return tmpl;
  }();
  return dir;
}

// Replaces the contents of `path` (on tmpfs this costs a few microseconds per input).
inline void WriteScratch(const std::string& path, const void* data, size_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot write " + path);
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t w = ::write(fd, p, size);
    if (w <= 0) {
      ::close(fd);
      throw std::runtime_error("write failed: " + path);
    }
    p += w;
    size -= static_cast<size_t>(w);
  }
  ::close(fd);
}

// gzip-compresses `in` (for the targets that fuzz the contents behind a valid gzip stream).
inline std::string Gzip(const uint8_t* in, size_t size) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    throw std::runtime_error("deflateInit2");
  }
  std::string out(deflateBound(&zs, static_cast<uLong>(size)) + 32, '\0');
  zs.next_in = const_cast<Bytef*>(in);
  zs.avail_in = static_cast<uInt>(size);
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&zs, Z_FINISH);
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) throw std::runtime_error("deflate");
  out.resize(zs.total_out);
  return out;
}

// Runs `body`, accepting a typed pim::Error as a valid outcome.
template <class F>
void ExpectTypedOutcome(F&& body) {
  try {
    body();
  } catch (const Error& e) {
    CheckMessage(e);
  }
}

// --- config: YAML text -> ConfigNode -> root-schema validation (components included). A
// validated config must also survive a YAML round trip unchanged.
inline void ConfigInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  ExpectTypedOutcome([&] {
    ConfigNode n = ParseYaml(text, "fuzz.yaml");
    if (!n.IsMap() && !n.IsNull()) return;  // LoadYamlFile refuses these with a ConfigError
    ConfigNode v = ValidateRoot(n);
    ConfigNode again = ValidateRoot(ParseYaml(ToYaml(v), "roundtrip.yaml"));
    if (!(again == v)) {
      throw ContractViolation("config changed in a YAML round trip:\n" + ToYaml(v) + "---\n" +
                              ToYaml(again));
    }
  });
}

// --- IDX: the first byte picks the expected rank (bit 0: 1 = labels, 0 = images) and whether
// the rest is stored raw (bit 1 clear; it may itself be gzip, corrupt or not) or wrapped in a
// valid gzip stream (bit 1 set), so the fuzzer explores the decoded header too.
inline void IdxInput(const uint8_t* data, size_t size) {
  if (size < 1) return;
  const int ndim = (data[0] & 1) ? 1 : 3;
  const std::string path = ScratchDir() + "/input.idx";
  if (data[0] & 2) {
    std::string gz = Gzip(data + 1, size - 1);
    WriteScratch(path, gz.data(), gz.size());
  } else {
    WriteScratch(path, data + 1, size - 1);
  }
  ExpectTypedOutcome([&] {
    IdxArray a = ReadIdx(path, ndim);
    uint64_t n = 1;
    for (int64_t d : a.dims) n *= static_cast<uint64_t>(d);
    if (a.dims.size() != static_cast<size_t>(ndim) || n != a.data.size()) {
      throw ContractViolation("ReadIdx returned dims that do not match its payload");
    }
  });
}

// --- CIFAR-10: the input is data_batch_1.bin (first byte: bit 0 set = gzip-wrap the rest) of a
// data directory whose other batches are empty; loads the whole data set through the registry.
inline void Cifar10Input(const uint8_t* data, size_t size) {
  if (size < 1) return;
  static const ConfigNode params = [] {
    const std::string& dir = ScratchDir();
    const std::string empty;
    for (const char* f : {"data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin",
                          "data_batch_5.bin", "test_batch.bin"}) {
      WriteScratch(dir + "/" + f, empty.data(), 0);
    }
    return ValidateComponent(ParseYaml("{impl: cifar10, dir: '" + dir + "'}", "fuzz"), "dataset");
  }();
  const std::string path = ScratchDir() + "/data_batch_1.bin";
  if (data[0] & 1) {
    std::string gz = Gzip(data + 1, size - 1);
    WriteScratch(path, gz.data(), gz.size());
  } else {
    WriteScratch(path, data + 1, size - 1);
  }
  ExpectTypedOutcome([&] {
    LoadedData d = Registry<Dataset>::Create(params)->Load();
    if (d.train.images.numel() != d.train.size() * 32 * 32 * 3) {
      throw ContractViolation("cifar10 returned images that do not match its labels");
    }
    for (int32_t label : d.train.labels) {
      if (label < 0 || label >= 10) throw ContractViolation("cifar10 label out of range");
    }
  });
}

// --- checkpoint: the first byte's bit 0 asks the harness to recompute the trailing CRC-32 (so
// mutations reach the header and payload checks behind it); bit 1 loads by name (eval) instead
// of exactly (resume). The live tensors are those of a tiny linear layer and its SGD state.
inline void CheckpointInput(const uint8_t* data, size_t size) {
  if (size < 1) return;
  std::string bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  if ((data[0] & 1) && bytes.size() >= 4) {
    uint32_t crc = Crc32(bytes.data(), bytes.size() - 4);
    for (int i = 0; i < 4; ++i) bytes[bytes.size() - 4 + i] = static_cast<char>(crc >> (8 * i));
  }
  const std::string path = ScratchDir() + "/checkpoint.bin";
  WriteScratch(path, bytes.data(), bytes.size());
  Tensor w(Shape{3, 4}), b(Shape{4}), v(Shape{3, 4});
  NamedTensors live = {{"layers.1.weight", &w}, {"layers.1.bias", &b}, {"optimizer.0", &v}};
  const TensorMatch match = (data[0] & 2) ? TensorMatch::kByName : TensorMatch::kExact;
  ExpectTypedOutcome([&] {
    CheckpointInfo info = ReadCheckpointInfo(path);
    CheckpointInfo loaded = LoadCheckpoint(path, live, match);
    if (loaded.epochs_done != info.epochs_done) {
      throw ContractViolation("header and load disagree on epochs_done");
    }
  });
}

// --- sweep results: the JSONL text.
inline void ResultsInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  ExpectTypedOutcome([&] {
    SweepResults r = ParseSweepResults(text, "fuzz.jsonl");
    for (const auto& p : r.points) {
      if (p.point.empty() || r.Find(p.point) != &p) {
        throw ContractViolation("results reader kept an empty or duplicate point");
      }
      (void)r.Finished(p.point);
    }
  });
}

}  // namespace pim::fuzz
