// CIFAR-10, binary version: 32x32 colour images in 10 classes, converted to channels last.
#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/nn/dataset.h"
#include "pimtrain/nn/datasets/idx.h"

namespace pim {
namespace {

constexpr int kClasses = 10;
constexpr int64_t kSide = 32;
constexpr int64_t kChannels = 3;
constexpr int64_t kPlane = kSide * kSide;            // one colour plane
constexpr int64_t kRecord = 1 + kChannels * kPlane;  // label byte, then R, G, B planes
constexpr const char* kHint =
    "set data.dir to the directory holding the CIFAR-10 binary files data_batch_1.bin to "
    "data_batch_5.bin and test_batch.bin";

// Appends the records of one batch file to `out` (channels last), stopping once `out` holds
// `limit` samples (0 = no limit). Checks the length and every label of the file.
void ReadBatch(const std::string& path, int64_t limit, ByteImages& out) {
  const std::vector<uint8_t> bytes = ReadFileMaybeGzip(path);
  const int64_t size = static_cast<int64_t>(bytes.size());
  if (size % kRecord != 0) {
    throw DataError(path + ": " + std::to_string(size) + " bytes is not a whole number of " +
                    std::to_string(kRecord) + "-byte records (" + std::to_string(size / kRecord) +
                    " records and " + std::to_string(size % kRecord) + " bytes left over)");
  }
  const int64_t records = size / kRecord;
  for (int64_t r = 0; r < records; ++r) {
    const int label = bytes[static_cast<size_t>(r * kRecord)];
    if (label >= kClasses) {
      throw DataError(path + ": record " + std::to_string(r) + " has label " +
                      std::to_string(label) + ", outside [0, " + std::to_string(kClasses) + ")");
    }
  }
  int64_t take = records;
  if (limit > 0) take = std::min(take, std::max<int64_t>(0, limit - out.size()));
  const size_t first = out.pixels.size();
  out.pixels.resize(first + static_cast<size_t>(take * kChannels * kPlane));
  uint8_t* dst = out.pixels.data() + first;
  for (int64_t r = 0; r < take; ++r) {
    const uint8_t* rec = bytes.data() + r * kRecord;
    out.labels.push_back(rec[0]);
    // The file stores planes (CHW); the simulator keeps channels last (HWC).
    for (int64_t c = 0; c < kChannels; ++c) {
      const uint8_t* plane = rec + 1 + c * kPlane;
      for (int64_t p = 0; p < kPlane; ++p) dst[p * kChannels + c] = plane[p];
    }
    dst += kChannels * kPlane;
  }
}

class Cifar10 final : public Dataset {
 public:
  explicit Cifar10(const ConfigNode& params) : options_(ImageDatasetOptions::FromParams(params)) {}

  static Schema GetSchema() {
    Schema s;
    AddImageDatasetParams(s, "/usr/share/datasets/cifar10");
    return s;
  }

  LoadedData Load() override {
    // The official archive unpacks into cifar-10-batches-bin/; accept its parent directory too.
    std::string dir = options_.dir;
    const std::string nested = dir + "/cifar-10-batches-bin";
    if (!FileExists(dir + "/data_batch_1.bin") && !FileExists(dir + "/data_batch_1.bin.gz") &&
        std::filesystem::is_directory(nested)) {
      dir = nested;
    }
    std::vector<std::string> train_files;
    for (int b = 1; b <= 5; ++b) {
      train_files.push_back(FindDataFile(dir, "data_batch_" + std::to_string(b) + ".bin", kHint));
    }
    const std::string test_file = FindDataFile(dir, "test_batch.bin", kHint);

    ByteImages train, test;
    train.sample_shape = test.sample_shape = Shape{kSide, kSide, kChannels};
    for (const auto& f : train_files) {
      if (options_.train_limit > 0 && train.size() >= options_.train_limit) break;
      ReadBatch(f, options_.train_limit, train);
    }
    ReadBatch(test_file, options_.test_limit, test);

    LoadedData out;
    out.name = "cifar10";
    out.num_classes = kClasses;
    ConvertSplits(train, test, options_.normalize, out);
    return out;
  }

 private:
  ImageDatasetOptions options_;
};

PIM_REGISTER(Dataset, Cifar10, "cifar10",
             "CIFAR-10 binary version: 32x32 colour images, 10 classes (data_batch_*.bin)");

}  // namespace
}  // namespace pim
