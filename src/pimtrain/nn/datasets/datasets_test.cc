// Tests of the data sets: IDX and CIFAR-10 readers (round trips and every malformed case),
// normalization, limits, the synthetic set, epoch shuffling and batch gathering.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "pimtrain/base/error.h"
#include "pimtrain/base/io.h"
#include "pimtrain/base/registry.h"
#include "pimtrain/nn/dataset.h"
#include "pimtrain/nn/datasets/idx.h"
#include "test_util.h"

namespace pim {
namespace {

using testing::TempDir;
using testing::WriteIdx;

const char* kFashionDir = "/usr/share/datasets/fashion-mnist";

// The message of the E thrown by fn (failing the test if none is), checked to be one line.
template <class E, class Fn>
std::string ErrorOf(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line expected: " << msg;
    return msg;
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

bool Contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

std::unique_ptr<Dataset> MakeDataset(const std::string& yaml) {
  return Registry<Dataset>::CreateFrom(ParseYaml(yaml, "test"));
}

std::vector<uint8_t> Pattern(size_t n, int mul = 37, int add = 11) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * mul + add) % 256);
  return v;
}

// Mean and (population) std of a float range, in double.
std::pair<double, double> MeanStd(const float* x, int64_t n, int64_t stride = 1,
                                  int64_t offset = 0) {
  double sum = 0, sum_sq = 0;
  int64_t count = 0;
  for (int64_t i = offset; i < n; i += stride, ++count) {
    sum += x[i];
    sum_sq += static_cast<double>(x[i]) * x[i];
  }
  double mean = sum / count;
  return {mean, std::sqrt(std::max(0.0, sum_sq / count - mean * mean))};
}

// Writes an MNIST-shaped set whose pixels and labels are known: train/test image i has pixel p
// equal to Pattern()[i * side * side + p] and label i % 10.
void WriteKnownMnist(const std::string& dir, int n_train, int n_test, int side) {
  for (auto [prefix, n] : {std::pair<std::string, int>{"train", n_train}, {"t10k", n_test}}) {
    std::vector<uint8_t> labels(n);
    for (int i = 0; i < n; ++i) labels[i] = static_cast<uint8_t>(i % 10);
    WriteIdx(dir + "/" + prefix + "-images-idx3-ubyte", {n, side, side},
             Pattern(static_cast<size_t>(n) * side * side), false);
    WriteIdx(dir + "/" + prefix + "-labels-idx1-ubyte", {n}, labels, false);
  }
}

// ---------------------------------------------------------------------------------------------
// IDX reader

TEST(IdxTest, RawAndGzipFilesRoundTripExactly) {
  TempDir dir;
  const std::vector<uint8_t> payload = Pattern(3 * 4 * 5);
  for (bool gzip : {false, true}) {
    const std::string path = dir.File(gzip ? "a.gz" : "a");
    WriteIdx(path, {3, 4, 5}, payload, gzip);
    IdxArray a = ReadIdx(path, 3);
    EXPECT_EQ(a.dims, (std::vector<int64_t>{3, 4, 5}));
    EXPECT_EQ(a.data, payload);
  }
  WriteIdx(dir.File("labels"), {7}, Pattern(7), false);
  EXPECT_EQ(ReadIdx(dir.File("labels"), 1).data, Pattern(7));
  WriteIdx(dir.File("empty"), {0, 28, 28}, {}, true);
  EXPECT_TRUE(ReadIdx(dir.File("empty"), 3).data.empty());
}

// A limit inflates only the first items: the same bytes as the whole file's first items, the
// file's dims, and the whole file's errors when its size disagrees with its header.
TEST(IdxTest, PrefixReadsTheFirstItemsAndKeepsTheErrors) {
  TempDir dir;
  const std::vector<uint8_t> payload = Pattern(50 * 6 * 7);
  for (bool gzip : {false, true}) {
    const std::string path = dir.File(gzip ? "p.gz" : "p");
    WriteIdx(path, {50, 6, 7}, payload, gzip);
    for (int64_t limit : {1, 13, 49, 50, 80}) {
      IdxArray a = ReadIdxPrefix(path, 3, limit);
      EXPECT_EQ(a.dims, (std::vector<int64_t>{50, 6, 7}));
      const size_t n = static_cast<size_t>(std::min<int64_t>(limit, 50)) * 42;
      EXPECT_EQ(a.data, std::vector<uint8_t>(payload.begin(), payload.begin() + n)) << limit;
    }
    const std::string bad = dir.File(gzip ? "long.gz" : "long");
    WriteIdx(bad, {2, 3, 3}, Pattern(21), gzip);
    const std::string msg = ErrorOf<DataError>([&] { ReadIdxPrefix(bad, 3, 1); });
    EXPECT_EQ(msg, ErrorOf<DataError>([&] { ReadIdx(bad, 3); }));
    EXPECT_TRUE(Contains(msg, "21 bytes")) << msg;
  }
}

TEST(IdxTest, WrongMagicIsADataErrorNamingTheFile) {
  TempDir dir;
  const std::string path = dir.File("bad-magic");
  // Type code 0x0D (float) instead of 0x08 (unsigned byte).
  std::string bytes("\x00\x00\x0D\x01\x00\x00\x00\x01\x05", 9);
  WriteFileAtomic(path, bytes);
  std::string msg = ErrorOf<DataError>([&] { ReadIdx(path, 1); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "magic 0x00000D01")) << msg;
  WriteFileAtomic(path, std::string("\x1f\x00\x08\x01\x00\x00\x00\x00", 8));
  EXPECT_TRUE(Contains(ErrorOf<DataError>([&] { ReadIdx(path, 1); }), "magic")) << path;
}

TEST(IdxTest, WrongDimensionCountIsADataError) {
  TempDir dir;
  const std::string path = dir.File("two-dims");
  WriteIdx(path, {2, 3}, Pattern(6), false);
  std::string msg = ErrorOf<DataError>([&] { ReadIdx(path, 3); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "2 dimensions, expected 3")) << msg;
}

TEST(IdxTest, TruncatedPayloadIsADataErrorWithBothSizes) {
  TempDir dir;
  const std::string path = dir.File("short");
  WriteIdx(path, {2, 3, 3}, Pattern(17), false);
  std::string msg = ErrorOf<DataError>([&] { ReadIdx(path, 3); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "17 bytes")) << msg;
  EXPECT_TRUE(Contains(msg, "need 18")) << msg;
  EXPECT_TRUE(Contains(msg, "truncated")) << msg;
}

TEST(IdxTest, TrailingBytesAreADataError) {
  TempDir dir;
  const std::string path = dir.File("long.gz");
  WriteIdx(path, {2, 3, 3}, Pattern(21), true);
  std::string msg = ErrorOf<DataError>([&] { ReadIdx(path, 3); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "21 bytes")) << msg;
  EXPECT_TRUE(Contains(msg, "3 trailing bytes")) << msg;
}

TEST(IdxTest, TruncatedHeaderOrEmptyFileIsADataError) {
  TempDir dir;
  const std::string path = dir.File("tiny");
  WriteFileAtomic(path, "");
  EXPECT_TRUE(Contains(ErrorOf<DataError>([&] { ReadIdx(path, 1); }), path));
  WriteFileAtomic(path, std::string("\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00", 10));
  std::string msg = ErrorOf<DataError>([&] { ReadIdx(path, 3); });
  EXPECT_TRUE(Contains(msg, path)) << msg;
  EXPECT_TRUE(Contains(msg, "header")) << msg;
}

TEST(IdxTest, HugeDimensionsDoNotOverflowOrCrash) {
  TempDir dir;
  const std::string path = dir.File("huge");
  WriteIdx(path, {-1, -1, -1}, Pattern(10), false);  // 0xFFFFFFFF each: product > 2^64
  EXPECT_TRUE(Contains(ErrorOf<DataError>([&] { ReadIdx(path, 3); }), "truncated"));
  WriteIdx(path, {65536, 65536, 4}, Pattern(10), false);
  EXPECT_TRUE(Contains(ErrorOf<DataError>([&] { ReadIdx(path, 3); }), "need 17179869184"));
}

TEST(IdxTest, TruncatedGzipStreamIsADataError) {
  TempDir dir;
  const std::string path = dir.File("cut.gz");
  WriteIdx(path, {50, 10, 10}, Pattern(5000, 13, 5), true);
  std::string gz = ReadFile(path);
  for (size_t keep : {gz.size() / 2, gz.size() - 3}) {
    WriteFileAtomic(path, gz.substr(0, keep));
    std::string msg = ErrorOf<DataError>([&] { ReadIdx(path, 3); });
    EXPECT_TRUE(Contains(msg, path)) << msg;
  }
}

TEST(IdxTest, MissingFileIsAnIoError) {
  TempDir dir;
  const std::string path = dir.File("absent");
  EXPECT_TRUE(Contains(ErrorOf<IoError>([&] { ReadIdx(path, 1); }), path));
}

TEST(IdxTest, LabelOutOfRangeIsADataErrorNamingTheLabelFile) {
  TempDir dir;
  WriteIdx(dir.File("img"), {3, 2, 2}, Pattern(12), false);
  WriteIdx(dir.File("lab"), {3}, {1, 10, 2}, false);
  std::string msg =
      ErrorOf<DataError>([&] { ReadIdxPair(dir.File("img"), dir.File("lab"), 10, 0); });
  EXPECT_TRUE(Contains(msg, dir.File("lab"))) << msg;
  EXPECT_TRUE(Contains(msg, "label 10 at index 1")) << msg;
}

TEST(IdxTest, ImageAndLabelCountMismatchIsADataError) {
  TempDir dir;
  WriteIdx(dir.File("img"), {3, 2, 2}, Pattern(12), false);
  WriteIdx(dir.File("lab"), {4}, {1, 2, 3, 4}, false);
  std::string msg =
      ErrorOf<DataError>([&] { ReadIdxPair(dir.File("img"), dir.File("lab"), 10, 0); });
  EXPECT_TRUE(Contains(msg, dir.File("img"))) << msg;
  EXPECT_TRUE(Contains(msg, dir.File("lab"))) << msg;
  EXPECT_TRUE(Contains(msg, "3 images")) << msg;
  EXPECT_TRUE(Contains(msg, "4 labels")) << msg;
}

TEST(IdxTest, PairKeepsTheFirstSamplesUnderALimit) {
  TempDir dir;
  WriteIdx(dir.File("img"), {5, 2, 3}, Pattern(30), false);
  WriteIdx(dir.File("lab"), {5}, {4, 3, 2, 1, 0}, false);
  ByteImages b = ReadIdxPair(dir.File("img"), dir.File("lab"), 10, 2);
  EXPECT_EQ(b.sample_shape, (Shape{2, 3, 1}));
  EXPECT_EQ(b.labels, (std::vector<int32_t>{4, 3}));
  EXPECT_EQ(b.pixels, Pattern(12));
  EXPECT_EQ(ReadIdxPair(dir.File("img"), dir.File("lab"), 10, 99).size(), 5);
}

// ---------------------------------------------------------------------------------------------
// IDX data sets through the registry

TEST(DatasetTest, LoadsAGzipMnistSetThroughTheRegistry) {
  TempDir dir;
  testing::WriteTinyMnist(dir.path(), 50, 20, 28, /*gzip=*/true);
  LoadedData d = MakeDataset("{impl: fashion_mnist, dir: " + dir.path() + "}")->Load();
  EXPECT_EQ(d.name, "fashion_mnist");
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.sample_shape, (Shape{28, 28, 1}));
  EXPECT_EQ(d.train.images.shape(), (Shape{50, 28, 28, 1}));
  EXPECT_EQ(d.test.images.shape(), (Shape{20, 28, 28, 1}));
  EXPECT_EQ(d.train.size(), 50);
  EXPECT_EQ(d.test.size(), 20);
  for (int32_t l : d.train.labels) EXPECT_TRUE(l >= 0 && l < 10) << l;
  LoadedData m = MakeDataset("{impl: mnist, dir: " + dir.path() + "}")->Load();
  EXPECT_EQ(m.name, "mnist");
  EXPECT_EQ(m.train.labels, d.train.labels);
}

TEST(DatasetTest, UnitAndNoneNormalizationKeepKnownPixels) {
  TempDir dir;
  WriteKnownMnist(dir.path(), 6, 4, 5);
  LoadedData raw = MakeDataset("{impl: mnist, normalize: none, dir: " + dir.path() + "}")->Load();
  LoadedData unit = MakeDataset("{impl: mnist, normalize: unit, dir: " + dir.path() + "}")->Load();
  const std::vector<uint8_t> train = Pattern(6 * 25), test = Pattern(4 * 25);
  for (size_t i = 0; i < train.size(); ++i) {
    ASSERT_EQ(raw.train.images[i], static_cast<float>(train[i])) << i;
    ASSERT_EQ(unit.train.images[i], static_cast<float>(train[i] / 255.0)) << i;
  }
  for (size_t i = 0; i < test.size(); ++i) ASSERT_EQ(raw.test.images[i], test[i]) << i;
  EXPECT_EQ(raw.train.labels, (std::vector<int32_t>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(raw.sample_shape, (Shape{5, 5, 1}));
}

TEST(DatasetTest, StandardNormalizationGivesTrainMeanZeroStdOne) {
  TempDir dir;
  testing::WriteTinyMnist(dir.path(), 40, 30, 28, /*gzip=*/false);
  LoadedData d = MakeDataset("{impl: fashion_mnist, dir: " + dir.path() + "}")->Load();
  auto [mean, stddev] = MeanStd(d.train.images.data(), d.train.images.numel());
  EXPECT_NEAR(mean, 0.0, 1e-5);
  EXPECT_NEAR(stddev, 1.0, 1e-5);
  // The test split uses the training statistics: near, but not exactly, standardized.
  auto [test_mean, test_std] = MeanStd(d.test.images.data(), d.test.images.numel());
  EXPECT_NEAR(test_mean, 0.0, 0.1);
  EXPECT_NEAR(test_std, 1.0, 0.1);
  // The statistics come from the loaded subset, so a limit re-standardizes.
  LoadedData few =
      MakeDataset("{impl: fashion_mnist, train_limit: 7, dir: " + dir.path() + "}")->Load();
  EXPECT_NEAR(MeanStd(few.train.images.data(), few.train.images.numel()).first, 0.0, 1e-5);
}

TEST(DatasetTest, LimitsTakeTheFirstSamples) {
  TempDir dir;
  WriteKnownMnist(dir.path(), 30, 20, 4);
  const std::string base = "{impl: mnist, normalize: unit, dir: " + dir.path();
  LoadedData all = MakeDataset(base + "}")->Load();
  LoadedData few = MakeDataset(base + ", train_limit: 7, test_limit: 3}")->Load();
  EXPECT_EQ(few.train.images.shape(), (Shape{7, 4, 4, 1}));
  EXPECT_EQ(few.test.images.shape(), (Shape{3, 4, 4, 1}));
  EXPECT_EQ(few.train.labels,
            std::vector<int32_t>(all.train.labels.begin(), all.train.labels.begin() + 7));
  EXPECT_TRUE(std::equal(few.train.images.data(), few.train.images.data() + 7 * 16,
                         all.train.images.data()));
  EXPECT_EQ(MakeDataset(base + ", train_limit: 1000}")->Load().train.size(), 30);
}

TEST(DatasetTest, PrefersTheGzipFileWhenBothExist) {
  TempDir dir;
  WriteKnownMnist(dir.path(), 10, 5, 4);
  WriteIdx(dir.File("train-images-idx3-ubyte.gz"), {3, 4, 4}, Pattern(48), true);
  WriteIdx(dir.File("train-labels-idx1-ubyte.gz"), {3}, {7, 8, 9}, true);
  LoadedData d = MakeDataset("{impl: mnist, dir: " + dir.path() + "}")->Load();
  EXPECT_EQ(d.train.labels, (std::vector<int32_t>{7, 8, 9}));
  EXPECT_EQ(d.test.size(), 5);
}

TEST(DatasetTest, MissingDirectoryOrFileIsAnIoErrorWithAHint) {
  TempDir dir;
  const std::string absent = dir.File("nowhere");
  std::string msg =
      ErrorOf<IoError>([&] { MakeDataset("{impl: fashion_mnist, dir: " + absent + "}")->Load(); });
  EXPECT_TRUE(Contains(msg, absent)) << msg;
  EXPECT_TRUE(Contains(msg, "dataset-fashion-mnist")) << msg;
  EXPECT_TRUE(Contains(msg, "data.dir")) << msg;
  WriteKnownMnist(dir.path(), 4, 4, 4);
  std::filesystem::remove(dir.File("t10k-labels-idx1-ubyte"));
  msg = ErrorOf<IoError>([&] { MakeDataset("{impl: mnist, dir: " + dir.path() + "}")->Load(); });
  EXPECT_TRUE(Contains(msg, dir.File("t10k-labels-idx1-ubyte"))) << msg;
  EXPECT_TRUE(Contains(msg, "data.dir")) << msg;
}

TEST(DatasetTest, MalformedFileInADirectoryIsADataErrorNamingIt) {
  TempDir dir;
  WriteKnownMnist(dir.path(), 4, 4, 4);
  WriteIdx(dir.File("t10k-labels-idx1-ubyte"), {4}, {0, 1, 200, 3}, false);
  std::string msg =
      ErrorOf<DataError>([&] { MakeDataset("{impl: mnist, dir: " + dir.path() + "}")->Load(); });
  EXPECT_TRUE(Contains(msg, dir.File("t10k-labels-idx1-ubyte"))) << msg;
  // Train and test images of different sizes cannot share a model.
  WriteKnownMnist(dir.path(), 4, 4, 4);
  WriteIdx(dir.File("t10k-images-idx3-ubyte"), {4, 5, 5}, Pattern(100), false);
  msg = ErrorOf<DataError>([&] { MakeDataset("{impl: mnist, dir: " + dir.path() + "}")->Load(); });
  EXPECT_TRUE(Contains(msg, dir.File("t10k-images-idx3-ubyte"))) << msg;
}

TEST(DatasetTest, SchemaRejectsBadParamsAndFillsDefaults) {
  EXPECT_TRUE(Contains(ErrorOf<ConfigError>([] { MakeDataset("{impl: mnist, dri: /x}"); }),
                       "did you mean 'dir'"));
  EXPECT_TRUE(Contains(ErrorOf<ConfigError>([] { MakeDataset("{impl: mnist, normalize: z}"); }),
                       "standard"));
  EXPECT_TRUE(Contains(ErrorOf<ConfigError>([] { MakeDataset("{impl: mnist, train_limit: -1}"); }),
                       "train_limit"));
  ConfigNode f = ValidateComponent(ParseYaml("{impl: fashion_mnist}", "test"), "dataset");
  EXPECT_EQ(f.GetString("dir"), kFashionDir);
  EXPECT_EQ(f.GetString("normalize"), "standard");
  EXPECT_EQ(f.GetInt("train_limit"), 0);
  ConfigNode m = ValidateComponent(ParseYaml("mnist", "test"), "dataset");
  EXPECT_EQ(m.GetString("dir"), "/usr/share/datasets/mnist");
  ConfigNode c = ValidateComponent(ParseYaml("cifar10", "test"), "dataset");
  EXPECT_EQ(c.GetString("dir"), "/usr/share/datasets/cifar10");
}

TEST(DatasetTest, RealFashionMnistLoadsWhenInstalled) {
  if (!std::filesystem::is_directory(kFashionDir)) GTEST_SKIP() << kFashionDir << " absent";
  LoadedData d = MakeDataset("{impl: fashion_mnist, train_limit: 1000}")->Load();
  EXPECT_EQ(d.train.images.shape(), (Shape{1000, 28, 28, 1}));
  EXPECT_EQ(d.test.images.shape(), (Shape{10000, 28, 28, 1}));
  EXPECT_EQ(d.sample_shape, (Shape{28, 28, 1}));
  std::set<int32_t> seen(d.train.labels.begin(), d.train.labels.end());
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(*seen.begin(), 0);
  EXPECT_EQ(*seen.rbegin(), 9);
  std::vector<int64_t> per_class(10, 0);
  for (int32_t l : d.test.labels) ++per_class[l];
  EXPECT_EQ(per_class, std::vector<int64_t>(10, 1000));  // the test set is balanced
  auto [mean, stddev] = MeanStd(d.train.images.data(), d.train.images.numel());
  EXPECT_NEAR(mean, 0.0, 1e-5);
  EXPECT_NEAR(stddev, 1.0, 1e-5);
  // The whole set: the published pixel statistics (mean 0.2860, std 0.3530 of x / 255).
  LoadedData all = MakeDataset("{impl: fashion_mnist, normalize: unit}")->Load();
  EXPECT_EQ(all.train.size(), 60000);
  EXPECT_EQ(all.test.size(), 10000);
  auto [all_mean, all_std] = MeanStd(all.train.images.data(), all.train.images.numel());
  EXPECT_NEAR(all_mean, 0.2860, 5e-4);
  EXPECT_NEAR(all_std, 0.3530, 5e-4);
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10

// The byte of record r, channel c, pixel p (p = y * 32 + x) in the generated files.
uint8_t CifarPixel(int batch, int r, int c, int p) {
  return static_cast<uint8_t>((batch * 101 + r * 53 + c * 89 + p * 7) % 256);
}

// Writes data_batch_1..5.bin and test_batch.bin (batch 6) with `records` records each.
void WriteCifar(const std::string& dir, int records) {
  for (int batch = 1; batch <= 6; ++batch) {
    std::string bytes;
    for (int r = 0; r < records; ++r) {
      bytes += static_cast<char>((batch + r) % 10);
      for (int c = 0; c < 3; ++c) {
        for (int p = 0; p < 1024; ++p) bytes += static_cast<char>(CifarPixel(batch, r, c, p));
      }
    }
    std::string name =
        batch == 6 ? "test_batch.bin" : "data_batch_" + std::to_string(batch) + ".bin";
    WriteFileAtomic(dir + "/" + name, bytes);
  }
}

TEST(CifarTest, ReadsRecordsIntoChannelsLast) {
  TempDir dir;
  WriteCifar(dir.path(), 2);
  LoadedData d = MakeDataset("{impl: cifar10, normalize: none, dir: " + dir.path() + "}")->Load();
  EXPECT_EQ(d.name, "cifar10");
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.sample_shape, (Shape{32, 32, 3}));
  ASSERT_EQ(d.train.images.shape(), (Shape{10, 32, 32, 3}));
  ASSERT_EQ(d.test.images.shape(), (Shape{2, 32, 32, 3}));
  EXPECT_EQ(d.train.labels, (std::vector<int32_t>{1, 2, 2, 3, 3, 4, 4, 5, 5, 6}));
  EXPECT_EQ(d.test.labels, (std::vector<int32_t>{6, 7}));
  // Every pixel of sample (batch, r) at (y, x, c) comes from plane c, index y * 32 + x.
  for (int n = 0; n < 10; ++n) {
    for (int y = 0; y < 32; ++y) {
      for (int x = 0; x < 32; ++x) {
        for (int c = 0; c < 3; ++c) {
          float got = d.train.images[((n * 32 + y) * 32 + x) * 3 + c];
          ASSERT_EQ(got, CifarPixel(n / 2 + 1, n % 2, c, y * 32 + x)) << n << y << x << c;
        }
      }
    }
  }
  EXPECT_EQ(d.test.images[(1 * 1024 + 5 * 32 + 7) * 3 + 2], CifarPixel(6, 1, 2, 5 * 32 + 7));
}

TEST(CifarTest, LimitsAndPerChannelStandardization) {
  TempDir dir;
  WriteCifar(dir.path(), 4);
  const std::string base = "{impl: cifar10, dir: " + dir.path();
  LoadedData few = MakeDataset(base + ", train_limit: 5, test_limit: 1}")->Load();
  EXPECT_EQ(few.train.size(), 5);
  EXPECT_EQ(few.test.size(), 1);
  EXPECT_EQ(few.train.labels, (std::vector<int32_t>{1, 2, 3, 4, 2}));
  LoadedData d = MakeDataset(base + "}")->Load();
  EXPECT_EQ(d.train.size(), 20);
  for (int c = 0; c < 3; ++c) {
    auto [mean, stddev] = MeanStd(d.train.images.data(), d.train.images.numel(), 3, c);
    EXPECT_NEAR(mean, 0.0, 1e-5) << c;
    EXPECT_NEAR(stddev, 1.0, 1e-5) << c;
  }
}

TEST(CifarTest, BadLengthOrLabelIsADataErrorNamingTheFile) {
  TempDir dir;
  WriteCifar(dir.path(), 2);
  const std::string bad = dir.File("data_batch_3.bin");
  WriteFileAtomic(bad, ReadFile(bad) + "xyz");
  const std::string yaml = "{impl: cifar10, dir: " + dir.path() + "}";
  std::string msg = ErrorOf<DataError>([&] { MakeDataset(yaml)->Load(); });
  EXPECT_TRUE(Contains(msg, bad)) << msg;
  EXPECT_TRUE(Contains(msg, "3073")) << msg;
  EXPECT_TRUE(Contains(msg, "6149 bytes")) << msg;
  WriteCifar(dir.path(), 2);
  std::string bytes = ReadFile(dir.File("test_batch.bin"));
  bytes[3073] = 10;  // the second record's label
  WriteFileAtomic(dir.File("test_batch.bin"), bytes);
  msg = ErrorOf<DataError>([&] { MakeDataset(yaml)->Load(); });
  EXPECT_TRUE(Contains(msg, dir.File("test_batch.bin"))) << msg;
  EXPECT_TRUE(Contains(msg, "record 1")) << msg;
  std::filesystem::remove(dir.File("data_batch_5.bin"));
  msg = ErrorOf<IoError>([&] { MakeDataset(yaml)->Load(); });
  EXPECT_TRUE(Contains(msg, dir.File("data_batch_5.bin"))) << msg;
}

// ---------------------------------------------------------------------------------------------
// Synthetic

TEST(SyntheticTest, IsDeterministicAndShapedByItsParams) {
  const std::string yaml =
      "{impl: synthetic, train_size: 40, test_size: 12, height: 3, width: 5, "
      "channels: 2, classes: 4}";
  LoadedData a = MakeDataset(yaml)->Load();
  LoadedData b = MakeDataset(yaml)->Load();
  EXPECT_EQ(a.name, "synthetic");
  EXPECT_EQ(a.sample_shape, (Shape{3, 5, 2}));
  EXPECT_EQ(a.num_classes, 4);
  ASSERT_EQ(a.train.images.shape(), (Shape{40, 3, 5, 2}));
  ASSERT_EQ(a.test.images.shape(), (Shape{12, 3, 5, 2}));
  EXPECT_EQ(a.train.labels, b.train.labels);
  EXPECT_TRUE(std::equal(a.train.images.data(), a.train.images.data() + a.train.images.numel(),
                         b.train.images.data()));
  EXPECT_TRUE(std::equal(a.test.images.data(), a.test.images.data() + a.test.images.numel(),
                         b.test.images.data()));
  for (int32_t l : a.train.labels) EXPECT_TRUE(l >= 0 && l < 4) << l;
  LoadedData other = MakeDataset(yaml.substr(0, yaml.size() - 1) + ", seed: 8}")->Load();
  EXPECT_FALSE(std::equal(a.train.images.data(), a.train.images.data() + a.train.images.numel(),
                          other.train.images.data()));
  LoadedData def = MakeDataset("synthetic")->Load();
  EXPECT_EQ(def.train.images.shape(), (Shape{512, 8, 8, 1}));
  EXPECT_EQ(def.test.images.shape(), (Shape{256, 8, 8, 1}));
  EXPECT_EQ(def.num_classes, 10);
}

TEST(SyntheticTest, IsLearnableWellAboveChance) {
  // A nearest-class-mean classifier fitted on the training split stands in for a small MLP.
  LoadedData d = MakeDataset("synthetic")->Load();
  const int64_t dim = d.sample_shape.numel();
  std::vector<double> means(static_cast<size_t>(d.num_classes * dim), 0.0);
  std::vector<int64_t> counts(d.num_classes, 0);
  for (int64_t i = 0; i < d.train.size(); ++i) {
    const int32_t l = d.train.labels[i];
    ++counts[l];
    for (int64_t j = 0; j < dim; ++j) means[l * dim + j] += d.train.images[i * dim + j];
  }
  for (int k = 0; k < d.num_classes; ++k) {
    ASSERT_GT(counts[k], 20) << "class " << k << " is nearly absent";
    for (int64_t j = 0; j < dim; ++j) means[k * dim + j] /= counts[k];
  }
  int64_t correct = 0;
  for (int64_t i = 0; i < d.test.size(); ++i) {
    int best = 0;
    double best_dist = 1e300;
    for (int k = 0; k < d.num_classes; ++k) {
      double dist = 0;
      for (int64_t j = 0; j < dim; ++j) {
        double diff = d.test.images[i * dim + j] - means[k * dim + j];
        dist += diff * diff;
      }
      if (dist < best_dist) best_dist = dist, best = k;
    }
    correct += best == d.test.labels[i];
  }
  EXPECT_GT(static_cast<double>(correct) / d.test.size(), 0.9);
}

// ---------------------------------------------------------------------------------------------
// Epoch order and batches

TEST(EpochOrderTest, IsAPermutation) {
  for (int64_t n : {0, 1, 2, 17, 1000}) {
    std::vector<int64_t> order = EpochOrder(3, 0, n);
    ASSERT_EQ(static_cast<int64_t>(order.size()), n);
    std::sort(order.begin(), order.end());
    std::vector<int64_t> identity(n);
    std::iota(identity.begin(), identity.end(), int64_t{0});
    EXPECT_EQ(order, identity) << n;
  }
}

TEST(EpochOrderTest, DependsOnlyOnSeedAndEpoch) {
  EXPECT_EQ(EpochOrder(3, 4, 500), EpochOrder(3, 4, 500));
  EXPECT_NE(EpochOrder(3, 4, 500), EpochOrder(3, 5, 500));
  EXPECT_NE(EpochOrder(3, 4, 500), EpochOrder(2, 4, 500));
  std::vector<int64_t> identity(500);
  std::iota(identity.begin(), identity.end(), int64_t{0});
  EXPECT_NE(EpochOrder(3, 4, 500), identity);
}

TEST(EpochOrderTest, AllOrdersOfThreeAreEquallyLikely) {
  // An off-by-one in Fisher-Yates (drawing from [0, i) or [0, n)) skews this distribution.
  std::map<std::vector<int64_t>, int> counts;
  const int trials = 6000;
  for (int e = 0; e < trials; ++e) ++counts[EpochOrder(11, e, 3)];
  ASSERT_EQ(counts.size(), 6u);
  for (const auto& [order, count] : counts) EXPECT_NEAR(count, trials / 6, 120) << order[0];
}

TEST(DatasetTest, GatherBatchCopiesTheIndexedSamples) {
  Split split;
  split.images = Tensor(Shape{5, 2, 1, 3});
  for (int64_t i = 0; i < split.images.numel(); ++i) split.images[i] = static_cast<float>(i);
  split.labels = {10, 11, 12, 13, 14};
  const std::vector<int64_t> order = {4, 0, 3, 1, 2};
  Tensor x;
  std::vector<int32_t> y;
  GatherBatch(split, order, 1, 4, x, y);
  EXPECT_EQ(x.shape(), (Shape{3, 2, 1, 3}));
  EXPECT_EQ(y, (std::vector<int32_t>{10, 13, 11}));
  for (int64_t b = 0; b < 3; ++b) {
    for (int64_t j = 0; j < 6; ++j) EXPECT_EQ(x[b * 6 + j], order[1 + b] * 6 + j) << b << j;
  }
  GatherBatch(split, order, 4, 5, x, y);  // a short last batch reuses the buffers
  EXPECT_EQ(x.shape(), (Shape{1, 2, 1, 3}));
  EXPECT_EQ(y, (std::vector<int32_t>{12}));
  EXPECT_EQ(x[5], 17.0f);
}

}  // namespace
}  // namespace pim
